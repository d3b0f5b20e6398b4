"""Vouchers and recharge cards over the payments API (signed by a channel like every /v1 request):

* ``POST /v1/vouchers``: a voucher channel (kind ``voucher``: the channels allowed to vend) vends a
  20-digit keypad token for a local-cost-control meter; its ``txn_id`` makes it idempotent.
* ``POST /v1/cards/{serial}/redemption``: any channel redeems a prepaid recharge card (serial +
  PIN) into a customer's account or meter, once; a wrong PIN is counted even though the request
  is refused, and five lock the card.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from headend.api.models import CHANNEL_PATTERN, CUSTOMER_PATTERN, TXN_PATTERN
from headend.api.problems import ApiProblem
from headend.api.service import receipt
from headend.keys import KeyStore
from headend.payments import PaymentError
from headend.store import Store

__all__ = ["add_voucher_routes", "VendIn", "RedeemIn"]


class VendIn(BaseModel):
    """A voucher as a vending channel orders it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    channel_id: str = Field(pattern=CHANNEL_PATTERN, description="the vending channel (must be the signing channel)")
    txn_id: str = Field(pattern=TXN_PATTERN, description="the channel's transaction id (idempotency key)")
    meter_no: str = Field(pattern=CUSTOMER_PATTERN, description="12-digit address of a local-cost-control meter")
    amount_fen: int = Field(ge=1, description="whole fen; above 163.83 yuan in whole jiao, above 1,638.30 in yuan")


class RedeemIn(BaseModel):
    """A recharge card's PIN and where its money goes."""

    model_config = ConfigDict(extra="forbid", strict=True)

    channel_id: str = Field(pattern=CHANNEL_PATTERN, description="the channel asking (must be the signing channel)")
    pin: str = Field(pattern=r"^[0-9]{16}$", description="the 16-digit PIN under the card's scratch panel")
    customer_no: str | None = Field(default=None, pattern=CUSTOMER_PATTERN, description="12-digit customer number")
    meter_no: str | None = Field(default=None, pattern=CUSTOMER_PATTERN, description="or the meter to top up")


def _problem(exc: PaymentError) -> ApiProblem:
    field = {"customer": "customer_no", "meter": "meter_no", "channel": "channel_id"}.get(exc.field or "", exc.field)
    return ApiProblem(exc.http_status, exc.code, exc.message, field)


def add_voucher_routes(app: FastAPI, store: Store, keys: KeyStore | None, responses: dict[int | str, Any]) -> None:
    """Add the voucher and recharge-card endpoints to the API app (see the module docstring)."""
    from headend.vouchers.cards import CardError, redeem
    from headend.vouchers.issue import issue_voucher

    api = app.state.api

    async def signed(request: Request, model: type[BaseModel], work: Any) -> Any:
        headers, body = await api.read(request)
        with api.port.transaction():
            channel = api.authenticate(request, headers, body)
            return work(channel, api.parse(body, model, headers))

    def own(channel: Any, claimed: str) -> None:
        if claimed != channel.channel_id:
            raise ApiProblem(403, "channel_mismatch", f"channel {channel.channel_id} cannot act as channel {claimed}",
                             "channel_id")

    def need_keys() -> KeyStore:
        if keys is None:
            raise ApiProblem(503, "unavailable", "this server was started without the key store: tokens and cards"
                             " need it")
        return keys

    @app.post("/v1/vouchers", status_code=201, responses=responses, tags=["vouchers"],
              summary="Vend a keypad voucher (voucher channels only; txn_id is the idempotency key)",
              openapi_extra={"security": [{"channelSignature": []}]})
    async def post_voucher(request: Request) -> Any:
        def work(channel: Any, v: VendIn) -> JSONResponse:
            request.state.target = v.meter_no
            own(channel, v.channel_id)
            created = store.payment_by_txn(channel.channel_id, v.txn_id) is None
            try:
                vo, p, token = issue_voucher(store, need_keys(), meter=v.meter_no, amount_fen=v.amount_fen,
                                             actor=f"channel:{channel.channel_id}", channel_id=channel.channel_id,
                                             txn_id=v.txn_id)
            except PaymentError as exc:
                raise _problem(exc) from None
            return JSONResponse({"voucher_id": vo.id, "meter_no": vo.meter, "tid": vo.tid, "amount_fen": vo.amount_fen,
                                 "token": token, "state": vo.state, "payment": receipt(p)},
                                status_code=201 if created else 200)

        return await signed(request, VendIn, work)

    @app.post("/v1/cards/{serial}/redemption", status_code=201, responses=responses, tags=["cards"],
              summary="Redeem a prepaid recharge card into an account or meter (once)",
              openapi_extra={"security": [{"channelSignature": []}]})
    async def post_redemption(serial: str, request: Request) -> Any:
        request.state.target = serial[:32]

        def work(channel: Any, r: RedeemIn) -> JSONResponse:
            own(channel, r.channel_id)
            if not serial.isdigit() or len(serial) != 12:
                raise ApiProblem(404, "card_unknown", f"no recharge card {serial[:32]!r}: serials are 12 digits",
                                 "serial")
            try:
                card, p, created = redeem(store, need_keys(), serial=serial, pin=r.pin, customer=r.customer_no,
                                          meter=r.meter_no, actor=f"channel:{channel.channel_id}")
            except CardError as exc:
                raise ApiProblem(exc.http_status, exc.code, exc.message, "pin" if exc.code == "card_pin_wrong"
                                 else "serial") from None
            except PaymentError as exc:
                raise _problem(exc) from None
            return JSONResponse({"serial": card.serial, "face_fen": card.face_fen, "state": card.state,
                                 "payment": receipt(p)}, status_code=201 if created else 200)

        try:
            return await signed(request, RedeemIn, work)
        except ApiProblem as p:
            if p.code == "card_pin_wrong":
                store.card_bad_pin(serial)  # after the request's rollback: a wrong PIN always counts
            raise

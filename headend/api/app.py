"""The payments API as an ASGI app: `create_app(store, config)`.

Every endpoint under /v1 except /v1/health is signed by a channel (headend/api/signing.py).  The
order of checks is fixed so a caller learns nothing it should not: the headers' form, then the
key (unknown key), the signature, the timestamp window, the channel's enabled flag, and last
the nonce.  Only then is the body parsed.

A signed request is one part of a store transaction: its nonce, the checks and the payment
commit together.  The requests that reach the store in one turn of the event loop share the
transaction, one commit for all of them (group commit, headend/api/commit.py): their nonces
recorded in one statement, then each request's work in a savepoint of its own (a payment's work
writes nothing itself and needs none); none is answered before the commit.  A refusal rolls back
its own part only; the refusal is then written as its own small transaction, the audit row (with
the nonce again, should the round that recorded it have failed: a refused request cannot be
replayed either).  So every refusal is a problem detail
(headend/api/problems.py) and an audit row, and moves no money.

Store calls run on the event loop thread: each request is one short SQLite transaction, and a
thread hand-off per request would cost more than it saves (the outbox worker in the same
`serve` works the store the same way).
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from headend.api import models
from headend.api.commit import GroupCommit, Later
from headend.api.config import ApiConfig
from headend.api.problems import ApiProblem
from headend.api.reports import add_report_routes
from headend.api.service import ChannelKey, PaymentAsk, PaymentsPort, StorePayments
from headend.payments import PaymentRequest
from headend.api.signing import (HEADER_KEY, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, SignatureFormError,
                                 check_signature, read_signature_headers)
from headend.api.vouchers import add_voucher_routes
from headend.keys import KeyStore
from headend.store import Store

__all__ = ["create_app", "API_VERSION"]

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
_PROBLEM = "application/problem+json"
_PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": desc, "content": {_PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    for code, desc in (
        (400, "the connection closed before the body ended"),
        (401, "not signed, bad signature, stale timestamp, replayed nonce or unknown key"),
        (403, "channel disabled, or another channel's id space"),
        (404, "no such customer, meter or payment"),
        (409, "conflict: same transaction id with a different body, or a state that forbids it"),
        (413, "body too large"),
        (415, "the body is not declared application/json"),
        (422, "a field is missing, has the wrong type or is out of range"),
    )
}
_SIGNED = [{"channelSignature": []}]
_CUSTOMER_RE = re.compile(models.CUSTOMER_PATTERN)
# ASCII digits only, one spelling per payment (str.isdigit takes "¹", which int() refuses, and "١");
# \Z, as $ would let a trailing newline through
_PAYMENT_ID_RE = re.compile(r"[1-9][0-9]{0,17}\Z")


# ASGI header names are lower case; the first of a repeated header counts (as Headers.get has it)
_CONTENT_LENGTH = "content-length"
_CONTENT_TYPE = "content-type"
_SIGNED_HEADERS = {h.lower().encode("latin-1"): h for h in (HEADER_KEY, HEADER_TIMESTAMP, HEADER_NONCE,
                                                             HEADER_SIGNATURE, _CONTENT_LENGTH, _CONTENT_TYPE)}


def _signed_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The signature headers and the body's length of a request, read in one pass (Headers.get
    scans all of them per name)."""
    out: dict[str, str] = {}
    for name, value in raw:
        h = _SIGNED_HEADERS.get(name)
        if h is not None and h not in out:
            out[h] = value.decode("latin-1")
    return out


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        key = next(k for i, (k, _) in enumerate(pairs) if any(k == other for other, _ in pairs[:i]))
        raise ApiProblem(422, "duplicate_key", f"key {key!r} appears twice in one JSON object: parsers differ on"
                         " which one counts, so send each key once", key)
    return obj


def _shown(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters: every refusal is an audit row, unsigned ones too, and a
    request's path (or an id in it) may be tens of kilobytes."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _problem_response(p: ApiProblem) -> JSONResponse:
    return JSONResponse(p.body(), status_code=p.status, media_type=_PROBLEM)


def _request_body_schema(model: type) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema(
        ref_template="#/components/schemas/{model}")}}}}


_HEALTH_OK = to_json({"status": "ok"})


def _receipt_response(result: tuple[dict[str, Any], bool]) -> Response:
    receipt, created = result
    # the same JSON text JSONResponse writes, from pydantic's encoder (in Rust): ~3% less CPU a payment
    return Response(to_json(receipt), status_code=201 if created else 200, media_type="application/json")


def _serve_plainly(app: FastAPI, endpoint: Callable[[Request], Any]) -> None:
    """Serve a declared endpoint that takes the Request alone and returns a Response through a
    plain Starlette route placed first in the router (matched before every other route: each
    route passed costs a request ~1 us); the APIRoute stays, for /openapi.json (it never matches
    first). FastAPI's per-request work around an endpoint (solving its dependencies, none here,
    and wrapping it) was ~16% of a payment's CPU in-process; the app's middleware and exception
    handlers are the same for both routes."""
    routes = app.router.routes
    declared = next(r for r in routes if isinstance(r, APIRoute) and r.endpoint is endpoint)
    routes.insert(0, Route(declared.path, endpoint, methods=sorted(declared.methods or ()), name=declared.name))


def _unix(dt: datetime) -> int:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ApiProblem(422, "invalid_field", "paid_at needs a time zone (e.g. 2026-12-05T08:30:00+08:00)",
                         "paid_at")
    return int(dt.timestamp())


class _Api:
    """State shared by the endpoints of one app."""

    def __init__(self, port: PaymentsPort, config: ApiConfig, clock: Callable[[], float]) -> None:
        self.port = port
        self.config = config
        self.clock = clock
        self.commits = GroupCommit(port.transaction, port.part, self.claim_nonces, hold_s=config.commit_hold_ms / 1000)

    # ------------------------------------------------------------------ authentication
    async def read(self, request: Request) -> tuple[dict[str, str], bytes]:
        """The signature headers (for ``identify``) and the raw body (what the signature covers),
        or 413 when the body is too large."""
        headers = _signed_headers(request.scope["headers"])
        return headers, await self._body(request, headers)

    async def _body(self, request: Request, headers: dict[str, str]) -> bytes:
        # read from the ASGI messages as they come (a signed request's body is one message):
        # Request.body's stream generator cost a payment ~3% of its CPU
        length = headers.get(_CONTENT_LENGTH)
        if length is not None and length.isdigit() and int(length) > self.config.max_body_bytes:
            raise ApiProblem(413, "body_too_large", f"body of {length} bytes; at most {self.config.max_body_bytes}")
        body = b""
        receive = request.receive
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away before it sent the body
                raise ClientDisconnect()
            body += message.get("body", b"")
            if len(body) > self.config.max_body_bytes:
                raise ApiProblem(413, "body_too_large",
                                 f"body of {len(body)} bytes; at most {self.config.max_body_bytes}")
            if not message.get("more_body", False):
                return body

    def authenticate(self, request: Request, headers: dict[str, str], body: bytes) -> ChannelKey:
        """The signing channel, its nonce recorded, or ApiProblem (see the module docstring for the order)."""
        channel, nonce = self.identify(request, headers, body)
        [refused] = self.claim_nonces([nonce])
        if refused is not None:
            raise refused
        self.signed_by(request, channel, nonce)
        return channel

    def signed_by(self, request: Request, channel: ChannelKey, nonce: tuple[str, str, int]) -> None:
        """Note the request's channel and recorded nonce (a refusal from here on is audited as the
        channel's, and records the nonce again should the transaction that recorded it fail)."""
        request.state.nonce = nonce
        request.state.channel = channel

    def identify(self, request: Request, headers: dict[str, str],
                 body: bytes) -> tuple[ChannelKey, tuple[str, str, int]]:
        """The signing channel and the nonce to record for it, every check but the nonce's done
        (``claim_nonces`` does that one, for many requests at once); or ApiProblem."""
        try:
            parts = read_signature_headers(headers)
        except SignatureFormError as exc:
            code = "signature_missing" if "missing" in str(exc) else "signature_malformed"
            raise ApiProblem(401, code, str(exc), exc.field) from None
        channel = self.port.channel_for_key(parts.key_id)
        if channel is None:
            raise ApiProblem(401, "channel_unknown", f"no channel has key id {parts.key_id!r}", "X-PP645-Key")
        path = request.scope.get("raw_path") or request.url.path.encode()
        target = path.decode("latin-1")
        if request.scope.get("query_string"):
            target += "?" + request.scope["query_string"].decode("latin-1")
        if not check_signature(channel.secret, parts, request.method, target, body):
            raise ApiProblem(401, "signature_invalid",
                             "the signature does not match this request under the channel's secret: sign method,"
                             " path, timestamp, nonce and SHA-256 of the body exactly as sent", "X-PP645-Signature",
                             extra={"channel_id": channel.channel_id})
        now = int(self.clock())
        skew = self.config.clock_skew_s
        if abs(now - parts.timestamp) > skew:
            raise ApiProblem(401, "timestamp_stale",
                             f"timestamp {parts.timestamp} is {now - parts.timestamp:+d} s from the server's clock;"
                             f" allowed: within {skew} s (check the channel's clock)", "X-PP645-Timestamp",
                             extra={"channel_id": channel.channel_id, "server_time": now})
        if not channel.enabled:
            raise ApiProblem(403, "channel_disabled", f"channel {channel.channel_id} is disabled; ask the operator"
                             " to enable it", extra={"channel_id": channel.channel_id})
        # kept until its timestamp could no longer pass the window, so a replay always meets it
        return channel, (channel.channel_id, parts.nonce, parts.timestamp + skew + 1)

    def claim_nonces(self, nonces: list[tuple[str, str, int]]) -> list[ApiProblem | None]:
        """Record the nonces in one go: for each, None, or the refusal of its request (a replay)."""
        return [None if fresh else ApiProblem(401, "nonce_replayed", f"nonce {n} was already used by channel"
                                              f" {channel_id}: every request needs a fresh nonce", "X-PP645-Nonce",
                                              extra={"channel_id": channel_id})
                for (channel_id, n, _), fresh in zip(nonces, self.port.use_nonces(nonces))]

    # ------------------------------------------------------------------ bodies
    def parse(self, body: bytes, model: type[Any], headers: dict[str, str]) -> Any:
        """Parse and check a JSON body (``headers`` as ``read`` gave them); ApiProblem names the
        first bad field."""
        media = headers.get(_CONTENT_TYPE, "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise ApiProblem(415, "unsupported_media_type", f"Content-Type {headers.get(_CONTENT_TYPE)!r}: send the"
                             " body as application/json", "Content-Type")
        if not body:
            raise ApiProblem(422, "invalid_json", "the body is empty; send a JSON object")
        try:
            # JSON mode: datetimes from RFC 3339 text, everything else strict; a body it takes
            # passes every check below, so those read the body only to name what is wrong
            parsed = model.model_validate_json(body)
        except ValidationError as exc:
            refused = exc
        else:
            # the model's parser lets the last of a repeated key win, silently; this second parse
            # took 4.0 us beside the model's 1.8 us on a 160-byte payment body (timeit, one core)
            json.loads(body, object_pairs_hook=_no_repeated_keys)
            return parsed
        try:
            data = json.loads(body, object_pairs_hook=_no_repeated_keys)
        except (ValueError, RecursionError) as exc:
            raise ApiProblem(422, "invalid_json", f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiProblem(422, "invalid_json", "the body must be a JSON object")
        if model is models.PaymentIn and "amount_fen" in data:
            self._check_amount(data["amount_fen"])
        err = refused.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or None
        if err["type"] == "json_invalid":  # what json.loads lets pass, e.g. an unpaired surrogate
            raise ApiProblem(422, "invalid_json", f"the body is not valid JSON: {err['msg']}") from None
        if err["type"] == "extra_forbidden":
            raise ApiProblem(422, "unknown_field", f"unknown field {field!r}", field) from None
        raise ApiProblem(422, "invalid_field", f"{field}: {err['msg']}", field) from None

    def _check_amount(self, amount: Any) -> None:
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise ApiProblem(422, "amount_not_integer",
                             f"amount_fen must be a whole number of fen (a JSON integer), got {amount!r}", "amount_fen")
        if amount <= 0:  # the service refuses it too; the schema's minimum must not answer first
            raise ApiProblem(422, "amount_invalid", f"amount_fen must be at least 1 fen, got {amount}", "amount_fen")

    # ------------------------------------------------------------------ refusals
    def refuse(self, request: Request, p: ApiProblem) -> JSONResponse:
        """Audit the refusal, then answer it."""
        channel = getattr(request.state, "channel", None)
        actor = f"channel:{channel.channel_id}" if channel is not None else "api:unauthenticated"
        p.detail = _shown(p.detail, 300)
        detail = {"code": p.code, "status": p.status, "method": request.method,
                  "path": _shown(request.url.path, 200), "detail": p.detail}
        if p.field:
            detail["field"] = p.field
        if channel is None:
            key = request.headers.get("X-PP645-Key")
            if key:
                detail["key_id"] = key[:128]
        try:
            self.port.audit_refusal(actor, getattr(request.state, "target", None), detail,
                                    nonce=getattr(request.state, "nonce", None))
        except Exception:  # noqa: BLE001 - the refusal still goes out; the log says the audit failed
            log.exception("could not audit refused %s %s (%s)", request.method, request.url.path, p.code)
        return _problem_response(p)


def create_app(store: Store, config: ApiConfig | None = None, *, keys: KeyStore | None = None,
               clock: Callable[[], float] = time.time, port: PaymentsPort | None = None) -> FastAPI:
    """The payments API on a store (see the README's "Payments API"); ``keys`` opens the channels'
    sealed secrets (or give ``port``, the service the endpoints use)."""
    cfg = config or ApiConfig()
    if port is None:
        if keys is None:
            raise ValueError("the payments API needs the key store to open the channels' secrets")
        port = StorePayments(store, keys, clock=clock)
    api = _Api(port, cfg, clock)
    app = FastAPI(
        title="prepaid645 payments API",
        version=API_VERSION,
        description="Payments from every channel: look up an account, pay, follow a payment, void it. Every"
                    " request under /v1 (but /v1/health) is signed by the channel: see the README's signing recipe.",
        docs_url=None,
        redoc_url=None,
        # a redirect is no problem detail and leaves no audit row, and its Location comes from the
        # request's Host header: a path with a trailing slash is simply not found
        redirect_slashes=False,
    )
    app.state.api = api

    @app.exception_handler(ApiProblem)
    async def _on_problem(request: Request, exc: ApiProblem) -> Response:
        return api.refuse(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_field")
        detail = {404: f"no endpoint {request.url.path}; see /openapi.json",
                  405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return api.refuse(request, ApiProblem(exc.status_code, code, detail))

    @app.exception_handler(ClientDisconnect)
    async def _on_gone(request: Request, exc: ClientDisconnect) -> Response:
        # the client went away (or its connection broke) mid-body: its doing, not a server failure
        return api.refuse(request, ApiProblem(400, "body_incomplete", "the connection closed before the body ended"
                                              " (Content-Length promised more): send the whole body"))

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> Response:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(x) for x in err["loc"][1:]) or None
        return api.refuse(request, ApiProblem(422, "invalid_field", f"{field}: {err['msg']}", field))

    @app.exception_handler(Exception)
    async def _on_error(request: Request, exc: Exception) -> Response:
        log.exception("payments API: %s %s failed", request.method, request.url.path)
        return api.refuse(request, ApiProblem(500, "internal_error", "the server failed; the request may be retried"
                                              " with the same txn_id (it is idempotent)"))

    async def signed(request: Request, work: Callable[[ChannelKey, bytes, dict[str, str]], Any],
                     row_locked: bool = False, writes: bool = True) -> Any:
        # one part of a shared transaction per request: the nonce, the checks and the payment
        # commit together, answered once committed (row_locked: the work takes a payment, which
        # locks what it changes; see Store.atomic). The round records its requests' nonces in one
        # statement (identify, then claim_nonces); writes=False: the work writes nothing itself.
        # The work is given the channel, the body and the headers ``read`` gave
        headers, body = await api.read(request)

        def first() -> tuple[tuple[str, str, int], tuple[ChannelKey, tuple[str, str, int]]]:
            channel, nonce = api.identify(request, headers, body)
            return nonce, (channel, nonce)

        def then(signer: tuple[ChannelKey, tuple[str, str, int]]) -> Any:
            api.signed_by(request, *signer)
            return work(signer[0], body, headers)

        return await api.commits.run(then, first=first, row_locked=row_locked, writes=writes)

    def own_payment(channel: ChannelKey, payment_id: str) -> dict[str, Any]:
        if not _PAYMENT_ID_RE.match(payment_id):
            raise ApiProblem(404, "unknown_payment", f"no payment {payment_id!r}: payment ids are whole numbers",
                             "payment_id")
        found = api.port.get(int(payment_id))
        # another channel's payment is answered exactly like a missing one: ids are not probed
        if found is None or found.get("channel_id") != channel.channel_id:
            raise ApiProblem(404, "unknown_payment", f"channel {channel.channel_id} has no payment {payment_id}",
                             "payment_id")
        return found

    @app.get("/v1/health", response_model=models.Health, tags=["service"],
             summary="No-op: answers without touching the store (unsigned)")
    async def health(request: Request) -> Response:
        return Response(_HEALTH_OK, media_type="application/json")

    @app.get("/v1/accounts/{customer_no}", response_model=models.AccountOut, responses=_PROBLEM_RESPONSES,
             tags=["accounts"], summary="What to show before the customer pays", openapi_extra={"security": _SIGNED})
    async def get_account(customer_no: str, request: Request) -> dict[str, Any]:
        request.state.target = customer_no[:32]

        def work(channel: ChannelKey, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
            if not _CUSTOMER_RE.fullmatch(customer_no):  # the pattern's $ would let a trailing newline through
                raise ApiProblem(422, "invalid_field", f"customer_no {customer_no[:32]!r} is not a 12-digit customer"
                                 " number", "customer_no")
            return api.port.account(customer_no)

        return await signed(request, work)

    @app.post("/v1/payments", response_model=models.PaymentOut, status_code=201,
              responses={200: {"model": models.PaymentOut, "description": "the same payment again: the first receipt"},
                         **_PROBLEM_RESPONSES},
              tags=["payments"], summary="Take a payment (txn_id is the idempotency key)",
              openapi_extra={"security": _SIGNED, **_request_body_schema(models.PaymentIn)})
    async def post_payment(request: Request) -> Response:
        def work(channel: ChannelKey, body: bytes, headers: dict[str, str]) -> Later:
            pay = api.parse(body, models.PaymentIn, headers)
            request.state.target = pay.customer_no or pay.meter_no
            if pay.channel_id != channel.channel_id:
                raise ApiProblem(403, "channel_mismatch", f"channel {channel.channel_id} cannot post under channel"
                                 f" {pay.channel_id}'s transaction ids", "channel_id")
            # the payment itself is taken with the round's others, in one pass (headend/api/commit.py)
            ask = PaymentAsk(PaymentRequest(channel.channel_id, pay.txn_id, pay.amount_fen, _unix(pay.paid_at),
                                            pay.customer_no, pay.meter_no, pay.tender),
                             f"channel:{channel.channel_id}", channel.record)
            return Later(api.port.accept_many, ask, _receipt_response)

        return await signed(request, work, row_locked=True, writes=False)

    _serve_plainly(app, post_payment)
    # the no-op is served the same plain way, first of all: it is the ceiling payments are measured against
    _serve_plainly(app, health)

    @app.get("/v1/payments/{payment_id}", response_model=models.PaymentOut, responses=_PROBLEM_RESPONSES,
             tags=["payments"], summary="A payment by its id (the signing channel's own only)",
             openapi_extra={"security": _SIGNED})
    async def get_payment(payment_id: str, request: Request) -> dict[str, Any]:
        request.state.target = payment_id[:32]
        return await signed(request, lambda channel, body, headers: own_payment(channel, payment_id))

    @app.get("/v1/channels/{channel_id}/payments/{txn_id:path}", response_model=models.PaymentOut,
             responses=_PROBLEM_RESPONSES, tags=["payments"],
             summary="A payment by the channel's transaction id", openapi_extra={"security": _SIGNED})
    async def get_payment_by_txn(channel_id: str, txn_id: str, request: Request) -> dict[str, Any]:
        request.state.target = txn_id[:64]

        def work(channel: ChannelKey, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
            if channel_id != channel.channel_id:
                raise ApiProblem(403, "channel_mismatch", f"channel {channel.channel_id} cannot read channel"
                                 f" {channel_id}'s payments", "channel_id")
            found = api.port.find(channel.channel_id, txn_id)
            if found is None:
                raise ApiProblem(404, "unknown_payment", f"channel {channel_id} has no payment with txn_id"
                                 f" {txn_id!r}", "txn_id")
            return found

        return await signed(request, work)

    @app.post("/v1/payments/{payment_id}/reversal", response_model=models.PaymentOut,
              responses=_PROBLEM_RESPONSES, tags=["payments"],
              summary="Void a payment the same day, before it reaches the meter",
              openapi_extra={"security": _SIGNED, **_request_body_schema(models.ReversalIn)})
    async def post_reversal(payment_id: str, request: Request) -> dict[str, Any]:
        request.state.target = payment_id[:32]

        def work(channel: ChannelKey, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
            rev = api.parse(body, models.ReversalIn, headers)
            own_payment(channel, payment_id)
            return api.port.reverse(int(payment_id), channel_id=channel.channel_id,
                                    actor=f"channel:{channel.channel_id}", reason=rev.reason)

        return await signed(request, work)

    add_report_routes(app, store, _PROBLEM_RESPONSES)
    add_voucher_routes(app, store, keys, _PROBLEM_RESPONSES)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["channelSignature"] = {
                "type": "apiKey", "in": "header", "name": "X-PP645-Signature",
                "description": "HMAC-SHA256 request signature with X-PP645-Key, X-PP645-Timestamp and X-PP645-Nonce;"
                               " see the README's signing recipe"}
            schema["components"]["securitySchemes"]["operatorBasic"] = {
                "type": "http", "scheme": "basic", "description": "an operator's name and password (reports)"}
            for name in ("PaymentIn", "ReversalIn", "Problem"):
                schema["components"].setdefault("schemas", {})[name] = getattr(models, name).model_json_schema(
                    ref_template="#/components/schemas/{model}")
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app

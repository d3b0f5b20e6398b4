"""The bodies the payments API takes and gives, as pydantic models (they are the OpenAPI schema).

Request bodies are parsed by the endpoints themselves, after the signature over the raw bytes
has been checked; these models give the schema and the field checks.  Amounts are JSON
integers in fen: ``12.5`` or ``"1250"`` are refused, never rounded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AccountOut",
    "PaymentIn",
    "PaymentOut",
    "Problem",
    "ReversalIn",
    "CHANNEL_PATTERN",
    "CUSTOMER_PATTERN",
    "TXN_PATTERN",
]

CUSTOMER_PATTERN = r"^[0-9]{12}$"
CHANNEL_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,39}$"
TXN_PATTERN = r"^[A-Za-z0-9_.:/-]{1,64}$"


class PaymentIn(BaseModel):
    """A payment as a channel posts it.  ``txn_id`` is the channel's own transaction id and the
    idempotency key: the same id with the same body returns the first receipt."""

    model_config = ConfigDict(extra="forbid", strict=True)

    channel_id: str = Field(pattern=CHANNEL_PATTERN, description="the channel posting (must be the signing channel)")
    txn_id: str = Field(pattern=TXN_PATTERN, description="the channel's transaction id (idempotency key)")
    customer_no: str | None = Field(default=None, pattern=CUSTOMER_PATTERN,
                                    description="12-digit customer number (or meter_no, or both if they agree)")
    meter_no: str | None = Field(default=None, pattern=CUSTOMER_PATTERN,
                                 description="12-digit meter number: which meter to top up when the customer has"
                                             " several")
    amount_fen: int = Field(ge=1, description="whole fen (0.01 yuan), at least 1, at most the configured maximum")
    paid_at: datetime = Field(description="when the customer paid (RFC 3339 with a time zone)")
    tender: dict[str, Any] | None = Field(default=None, description="how it was paid (e.g. POS terminal and trace)")


class ReversalIn(BaseModel):
    """A same-day void of a payment that has not reached the meter."""

    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(min_length=1, max_length=200)


class PaymentOut(BaseModel):
    """A payment receipt: its id, state, and when it reached each state (Unix seconds)."""

    payment_id: int
    channel_id: str
    txn_id: str
    customer_no: str
    meter_no: str | None = Field(description="the local-cost-control meter topped up, if any")
    amount_fen: int
    fee_fen: int
    state: Literal["accepted", "sent_to_meter", "confirmed_on_meter", "credited", "reversed"]
    day: str = Field(description="business day it is booked on (YYYY-MM-DD)")
    paid_at: int
    accepted_at: int
    sent_at: int | None
    confirmed_at: int | None
    credited_at: int | None
    reversed_at: int | None


class AccountOut(BaseModel):
    """What a bank or app shows before the customer pays."""

    customer_no: str
    name: str = Field(description="masked: the first character of each word")
    balance_fen: int = Field(description="account plus, for local cost control, the meter's last known wallet")
    arrears_fen: int
    state: Literal["credit", "alarm", "cut"]
    minimum_fen: int = Field(description="the least payment that helps (restores supply when cut)")
    suggested_fen: int
    max_fen: int | None = Field(description="the most a local meter can take now (hoarding headroom)")
    mode: Literal["local", "remote"]


class Problem(BaseModel):
    """RFC 9457 problem detail with a machine-readable ``code`` (and the ``field`` at fault)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None


class Health(BaseModel):
    """The no-op endpoint's answer."""

    status: Literal["ok"]

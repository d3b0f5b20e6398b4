"""The one error a payment operation raises: a machine-readable code, a message for people,
the HTTP status an API answers with, and the request field at fault."""

from __future__ import annotations

__all__ = ["ERROR_CODES", "PaymentError"]

# code -> HTTP status
ERROR_CODES: dict[str, int] = {
    "unknown_channel": 403,
    "channel_disabled": 403,
    "unknown_customer": 404,
    "unknown_meter": 404,
    "unknown_payment": 404,
    "meter_required": 422,
    "meter_customer_mismatch": 422,
    "amount_invalid": 422,
    "amount_too_large": 422,
    "hoarding_headroom": 422,
    "txn_id_invalid": 422,
    "paid_at_invalid": 422,
    "reason_required": 422,
    "duplicate_conflict": 409,
    "not_reversible": 409,
    "day_closed": 409,
    "vouchers_outstanding": 409,
}


class PaymentError(Exception):
    """A refused payment operation; nothing was moved."""

    def __init__(self, code: str, message: str, http_status: int | None = None, field: str | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown payment error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = ERROR_CODES[code] if http_status is None else http_status
        self.field = field
        self.index: int | None = None   # which request of a batch (accept_payments) was refused

    def to_dict(self) -> dict[str, object]:
        """The error as data (code, message, http_status, field)."""
        return {"code": self.code, "message": self.message, "http_status": self.http_status, "field": self.field}

    def __repr__(self) -> str:
        return f"PaymentError({self.code!r}, {self.message!r}, {self.http_status}, field={self.field!r})"

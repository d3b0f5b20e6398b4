"""Refusals as RFC 9457 problem details, with a machine-readable ``code`` and the ``field`` at fault.

Every refusal the API gives is an :class:`ApiProblem`; the app turns it into
``application/problem+json``::

    {"type": "/problems/amount_invalid", "title": "Amount must be above zero",
     "status": 422, "detail": "amount_fen must be at least 1 fen, got 0",
     "code": "amount_invalid", "field": "amount_fen"}

The titles below are the catalogue of the API's own codes (the README lists them); the payments
service adds its own codes through ``PaymentError`` and they pass through unchanged.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiProblem", "PROBLEM_TYPE", "TITLES", "problem_body"]

PROBLEM_TYPE = "/problems/{code}"

TITLES: dict[str, str] = {
    "signature_missing": "Request is not signed",
    "signature_malformed": "Signature header is malformed",
    "signature_invalid": "Signature does not match",
    "timestamp_stale": "Timestamp outside the allowed window",
    "nonce_replayed": "Nonce already used",
    "channel_unknown": "Unknown channel key",
    "channel_disabled": "Channel is disabled",
    "channel_mismatch": "Another channel's id space",
    "unknown_payment": "No such payment",
    "invalid_json": "Body is not valid JSON",
    "duplicate_key": "A key appears twice in one JSON object",
    "invalid_field": "A field is missing or has the wrong type",
    "unknown_field": "Unknown field",
    "amount_not_integer": "Amount is not a whole number of fen",
    "amount_invalid": "Amount must be above zero",
    "body_too_large": "Body too large",
    "body_incomplete": "Body ended early",
    "not_found": "No such endpoint",
    "operator_auth_missing": "Reports need an operator's name and password",
    "operator_refused": "Operator not allowed",
    "method_not_allowed": "Method not allowed",
    "unsupported_media_type": "Body must be application/json",
    "not_acceptable": "Responses are JSON only",
    "unavailable": "Service temporarily unavailable",
    "internal_error": "Internal error",
}


class ApiProblem(Exception):
    """A refusal: HTTP status, machine-readable code, human detail, and the field at fault."""

    def __init__(self, status: int, code: str, detail: str, field: str | None = None,
                 title: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.title = title or TITLES.get(code) or code.replace("_", " ").capitalize()
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        """The problem detail object."""
        return problem_body(self.status, self.code, self.detail, self.field, self.title, self.extra)


def problem_body(status: int, code: str, detail: str, field: str | None = None, title: str | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """An RFC 9457 problem detail object with our ``code`` and ``field`` members."""
    out: dict[str, Any] = {
        "type": PROBLEM_TYPE.format(code=code),
        "title": title or TITLES.get(code) or code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if field is not None:
        out["field"] = field
    if extra:
        out.update({k: v for k, v in extra.items() if k not in out})
    return out

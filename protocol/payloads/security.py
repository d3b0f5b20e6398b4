"""The 03H security family of protocol/SECURITY.md: challenge, identity authentication,
validity, end of session, account opening and recharge, key update, status query; requests,
replies and the sealed SERR refusal."""

from __future__ import annotations

from typing import Any

from construct import Bytes, Computed, Const, GreedyBytes, Int8ul, Int16ul, Int32sl, Int32ul, Select, Struct, Switch, Terminated, this

from protocol.formats import Bcd, Digits
from protocol.payloads._blocks import DI, SECURITY, IfMore, Mac, Operator, _Fmt, build_with

__all__ = [
    "IDENTITY_AUTH",
    "SET_VALIDITY",
    "END_SESSION",
    "CHALLENGE",
    "OPEN_ACCOUNT",
    "RECHARGE",
    "KEY_UPDATE",
    "STATUS_QUERY",
    "SecuritySerrReply",
    "Customer",
    "SecurityRequest",
    "SecurityReply",
    "challenge_request",
    "identity_auth_request",
    "set_validity_request",
    "end_session_request",
    "recharge_request",
    "status_query_request",
    "key_update_request",
]

# Security DIs (03H sub-commands)
IDENTITY_AUTH, SET_VALIDITY, END_SESSION, CHALLENGE = 0x070000FF, 0x070001FF, 0x070002FF, 0x070003FF
OPEN_ACCOUNT, RECHARGE, KEY_UPDATE, STATUS_QUERY = 0x070101FF, 0x070102FF, 0x070301FF, 0x078102FF

# 03H refusals of a command whose MAC held carry the meter's MAC over SERR and the seq
SecuritySerrReply = Struct("serr" / Int16ul, "mac" / IfMore(Mac), Terminated)



# 03H family: DI + operator + per-DI body (SECURITY.md)
Customer = _Fmt(Digits(6))
_SECURITY_REQUEST_BODIES = {
    CHALLENGE: Struct(),
    IDENTITY_AUTH: Struct("c1" / Bytes(8), "r1" / Bytes(8), "dispersion" / Bytes(8)),
    SET_VALIDITY: Struct("minutes" / _Fmt(Bcd("NNNN")), "mac" / Mac),
    END_SESSION: Struct("mac" / Mac),
    OPEN_ACCOUNT: Struct(
        "amount" / Int32ul, "count" / Int32ul, "mac1" / Mac, "customer" / Customer, "mac2" / Mac
    ),  # amount in fen, binary
    RECHARGE: Struct("amount" / Int32ul, "count" / Int32ul, "mac1" / Mac, "customer" / Customer, "mac2" / Mac),
    KEY_UPDATE: Struct("krn" / Int8ul, Const(b"\x00\x00\x00"), "wrapped" / Bytes(16), "mac" / Mac),
    STATUS_QUERY: Struct("mac" / Mac),
}
SecurityRequest = Struct(
    "di" / DI,
    "operator" / Operator,
    "body" / Switch(this.di, _SECURITY_REQUEST_BODIES, default=Struct("raw" / GreedyBytes, "unknown" / Computed(True))),
    Terminated,
)

# the wallet as the status query and the end of a session report it, under the meter's MAC
_WALLET = Struct(
    "balance" / Int32sl,  # fen, signed (overdraft is negative)
    "count" / Int32ul,
    "customer" / Customer,
    "krn" / Int8ul,
    Const(b"\x00\x00\x00"),
    "mac" / Mac,
)
_SECURITY_REPLY_BODIES = {
    CHALLENGE: Struct("challenge" / Bytes(8)),
    # this project's meters prove themselves (C2); the standard's ESAM reply (R2(4) + serial)
    # still parses, so a log from another meter reads
    IDENTITY_AUTH: Select(
        Struct("c2" / Bytes(8), "serial" / Bytes(8), Terminated),
        Struct("r2" / Bytes(4), "serial" / Bytes(8), Terminated),
    ),
    SET_VALIDITY: Struct("mac" / Mac),
    END_SESSION: _WALLET,
    OPEN_ACCOUNT: Struct("mac" / Mac),
    RECHARGE: Struct("mac" / Mac),
    KEY_UPDATE: Struct("mac" / Mac),
    STATUS_QUERY: _WALLET,
}
SecurityReply = Struct(
    "di" / DI,
    "body" / Switch(this.di, _SECURITY_REPLY_BODIES, default=Struct("raw" / GreedyBytes, "unknown" / Computed(True))),
    Terminated,
)

def _security(di: int, operator: int, body: dict[str, Any]) -> bytes:
    return build_with(SECURITY, SecurityRequest, {"di": di, "operator": operator, "body": body})


def challenge_request(operator: int) -> bytes:
    """03H 070003FF: operator only, L = 8; the meter answers a fresh 8-byte challenge."""
    return _security(CHALLENGE, operator, {})


def identity_auth_request(operator: int, c1: bytes, r1: bytes, dispersion: bytes) -> bytes:
    """03H 070000FF: operator + C1(8) + R1(8) + dispersion(8), L = 32."""
    return _security(IDENTITY_AUTH, operator, {"c1": c1, "r1": r1, "dispersion": dispersion})


def set_validity_request(operator: int, minutes: int, mac: bytes) -> bytes:
    """03H 070001FF: operator + minutes (BCD) + MAC, L = 14."""
    return _security(SET_VALIDITY, operator, {"minutes": minutes, "mac": mac})


def end_session_request(operator: int, mac: bytes) -> bytes:
    """03H 070002FF: operator + MAC, L = 12."""
    return _security(END_SESSION, operator, {"mac": mac})


def recharge_request(
    operator: int, amount: int, count: int, mac1: bytes, customer: str, mac2: bytes, open_account: bool = False
) -> bytes:
    """03H 070102FF (or 070101FF to open the account): amount in fen and count binary, L = 30."""
    return _security(
        OPEN_ACCOUNT if open_account else RECHARGE,
        operator,
        {"amount": amount, "count": count, "mac1": mac1, "customer": customer, "mac2": mac2},
    )


def status_query_request(operator: int, mac: bytes) -> bytes:
    """03H 078102FF: operator + MAC, L = 12."""
    return _security(STATUS_QUERY, operator, {"mac": mac})


def key_update_request(operator: int, krn: int, wrapped: bytes, mac: bytes) -> bytes:
    """03H 070301FF: operator + new KRN + 000000 + wrapped key(16) + MAC, L = 32."""
    return _security(KEY_UPDATE, operator, {"krn": krn, "wrapped": wrapped, "mac": mac})



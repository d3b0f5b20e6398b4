"""Client side of a meter's security session (protocol/SECURITY.md), with no I/O.

Theory of operation
-------------------
One :class:`SecuritySession` per meter.  Authentication is challenge-response both ways:
``challenge_request()`` asks the meter for a fresh random Rm; ``auth_request(reply)`` takes
that 83H reply, draws R1 and proves the key over Rm + R1 (a captured proof is worth nothing
once Rm is used); ``accept_auth_reply()`` checks the meter's own proof C2 over R1 + Rm (a man
in the middle cannot stand in for the meter), derives the session key S and starts the
sequence at 0.  The frames' bytes come from ``protocol.payloads``; this module adds only the
MACs and the sequence.

Every protected command is then built with ``seq = last + 1``; the builder does *not* advance
``last`` because the frame may be lost and must be re-sent byte-identical (the meter answers a
byte-identical retry of ``last`` from its cache and executes nothing).  The caller reports the
outcome:

* ``confirm(seq)`` when the meter executed the command (any reply that is not an
  authentication or sequence refusal), so the next command uses ``seq + 1``;
* ``invalidate()`` when the meter refused on authentication/sequence grounds, or when the
  outcome is ambiguous: the next command authenticates again and starts a fresh sequence,
  which can never be mistaken for a replay of an earlier one.

Every 03H reply inside a session carries the meter's MAC over the reply and the request's
seq: ``check_reply()`` verifies it, so an old reply played back (an old wallet, an old
"repeat recharge") or a made-up one raises :class:`SecurityError`.  A refusal without that MAC
(no session, locked, the request's MAC failed) is never taken as a result.

Sessions are trusted for a little less than the meter's validity window (``margin``), so a
command is never sent into a session that expires on the way.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any, Callable

from protocol import payloads
from protocol.errors import ProtocolError
from protocol.formats import Digits
from protocol.frame import address_to_wire

__all__ = [
    "DI_AUTH",
    "DI_CHALLENGE",
    "DI_SET_VALIDITY",
    "DI_END_SESSION",
    "DI_OPEN_ACCOUNT",
    "DI_RECHARGE",
    "DI_STATUS_QUERY",
    "SecurityError",
    "SecuritySession",
    "WalletStatus",
    "customer_wire",
    "di_wire",
]

DI_AUTH = payloads.IDENTITY_AUTH
DI_CHALLENGE = payloads.CHALLENGE
DI_SET_VALIDITY = payloads.SET_VALIDITY
DI_END_SESSION = payloads.END_SESSION
DI_OPEN_ACCOUNT = payloads.OPEN_ACCOUNT
DI_RECHARGE = payloads.RECHARGE
DI_STATUS_QUERY = payloads.STATUS_QUERY

C_SECURITY = payloads.SECURITY
C_WRITE = payloads.WRITE
C_WRITE_ADDRESS = payloads.WRITE_ADDRESS
C_CONTROL = payloads.CONTROL
LEVEL_99 = bytes((payloads.LEVEL_MAC, 0, 0, 0))
_NO_DI = b"\x00\x00\x00\x00"
_DIGITS6 = Digits(6)
# SERR bits a meter sends before (or instead of) checking a request's MAC: other (length),
# MAC failed, authentication failed / no session / locked. Anything else needs the reply MAC.
_UNSEALED_SERR = 0b1101


class SecurityError(ValueError):
    """A meter's security reply that does not check out (bad MAC, wrong layout, no session)."""


def customer_wire(customer: str) -> bytes:
    """A customer or meter number (up to 12 digits) as 6 BCD bytes in wire order."""
    if not isinstance(customer, str) or not customer.isdigit() or len(customer) > 12:
        raise ValueError(f"customer number {customer!r} must be up to 12 decimal digits")
    return _DIGITS6.encode(customer.rjust(12, "0"))


def di_wire(di: int) -> bytes:
    """A data identifier DI3..DI0 as sent (DI0 first)."""
    return di.to_bytes(4, "little")


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


@dataclass(frozen=True)
class WalletStatus:
    """What the meter's MAC-checked status query (07 81 02 FF) says about its wallet."""

    balance_fen: int
    purchase_count: int
    customer: str
    krn: int

    @classmethod
    def from_reply(cls, data: bytes) -> WalletStatus:
        """The wallet in a status-query (or end-session) 83H reply; check its MAC first."""
        try:
            body = payloads.parse_payload(0x83, data)["body"]
            return cls(body["balance"], body["count"], body["customer"], body["krn"])
        except (ProtocolError, KeyError) as exc:
            raise SecurityError(f"the meter's wallet reply does not parse: {exc}") from None


class SecuritySession:
    """One meter's identity-authentication session, seen from the head-end."""

    def __init__(
        self,
        address: str,
        key: bytes,
        *,
        meter_number: str | None = None,
        operator: int = 0,
        validity_s: float = 300.0,
        margin_s: float = 20.0,
        rand: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if len(key) != 16:
            raise ValueError("a meter key is 16 bytes; derive it from the key store")
        self.address = address
        self._addr = address_to_wire(address)
        self._key = key
        self._number = customer_wire(meter_number or address)
        self.operator = operator
        self.validity_s = validity_s
        self.margin_s = margin_s
        self._rand = rand
        self._rm: bytes | None = None
        self._r1: bytes | None = None
        self._s: bytes | None = None
        self.last = 0
        self.expires = 0.0
        self.krn = 0  # the key revision ``key`` belongs to (set by the owner)

    # -- session ------------------------------------------------------------------------
    def valid(self, now: float) -> bool:
        """True while a session exists and is comfortably inside its validity window."""
        return self._s is not None and now < self.expires - self.margin_s

    def invalidate(self) -> None:
        """Forget the session; the next protected command authenticates first."""
        self._s = self._r1 = self._rm = None
        self.last = 0
        self.expires = 0.0

    def challenge_request(self) -> bytes:
        """Plain 03H data asking the meter for a fresh challenge (07 00 03 FF)."""
        return payloads.challenge_request(self.operator)

    def auth_request(self, challenge_reply: bytes) -> bytes:
        """Plain 03H identity authentication answering the meter's challenge reply; draws R1."""
        try:
            reply = payloads.parse_payload(0x83, challenge_reply)
            rm = reply["body"]["challenge"]
        except (ProtocolError, KeyError):
            raise SecurityError("the meter's challenge reply is not DI 070003FF + 8 bytes") from None
        if reply["di"] != DI_CHALLENGE:
            raise SecurityError(f"expected the challenge reply, got DI {reply['di']:08X}")
        self._rm = rm
        self._r1 = self._rand(8)
        disp = b"\x00\x00" + self._number
        c1 = _hmac(self._key, b"auth" + rm + self._r1 + disp)[:8]
        return payloads.identity_auth_request(self.operator, c1, self._r1, disp)

    def accept_auth_reply(self, data: bytes, now: float) -> None:
        """Take the 83H reply (DI + C2 + serial): check the meter's proof, derive S, seq 0."""
        rm, r1 = self._rm, self._r1
        if rm is None or r1 is None:
            raise SecurityError("an authentication reply arrived with no request outstanding")
        self._rm = None
        if len(data) != 20 or data[:4] != di_wire(DI_AUTH):
            raise SecurityError(f"authentication reply has {len(data)} bytes, expected DI + C2 + serial (20)")
        disp = b"\x00\x00" + self._number
        if data[12:20] != disp:
            raise SecurityError("the meter answered with another meter number: check the registry")
        if not hmac.compare_digest(data[4:12], _hmac(self._key, b"meter" + r1 + rm + disp)[:8]):
            raise SecurityError("the meter's proof (C2) does not verify: not this meter's key, or a forged reply")
        self._s = _hmac(self._key, b"session" + rm + r1)[:16]
        self.last = 0
        self.expires = now + self.validity_s

    # -- MACs ---------------------------------------------------------------------------
    def _mac(self, control: int, di4: bytes, fields: bytes, seq: int) -> bytes:
        if self._s is None:
            raise SecurityError("no session: authenticate first")
        msg = self._addr + bytes([control]) + di4 + fields + seq.to_bytes(4, "little")
        return _hmac(self._s, msg)[:4]

    def next_seq(self) -> int:
        """The sequence number the next protected command carries."""
        return self.last + 1

    def confirm(self, seq: int) -> None:
        """The meter executed the command carrying ``seq``."""
        if seq > self.last:
            self.last = seq

    def check_reply(self, control: int, data: bytes, di: int, seq: int) -> None:
        """Verify the meter's MAC on its reply to the 03H command ``di`` sent with ``seq``.

        Raises SecurityError for a reply that was not made for this request (played back from
        an earlier one, or made up); a refusal made before the meter checked the request's MAC
        (no session, locked, MAC failed) carries no MAC and is let through as a refusal."""
        if control == 0xC3 and len(data) == 2:
            if int.from_bytes(data, "little") & ~_UNSEALED_SERR:
                raise SecurityError("a refusal that claims a result carries no meter MAC: forged reply")
            return
        body = data[4:-4] if control == 0x83 else data[:-4]
        if control == 0x83 and data[:4] != di_wire(di):
            raise SecurityError(f"reply for DI {data[:4][::-1].hex().upper()}, expected {di:08X}")
        if len(data) < (8 if control == 0x83 else 6) or not hmac.compare_digest(
                data[-4:], self._mac(control, di_wire(di), body, seq)):
            raise SecurityError("the meter's reply MAC does not verify: a replayed or forged reply")

    # -- protected commands ---------------------------------------------------------------
    def recharge_request(self, amount_fen: int, count: int, customer: str, *, open_account: bool = False) -> tuple[bytes, int]:
        """Plain data of an 03H recharge (or account opening) and the implicit seq it uses."""
        if not 0 < amount_fen < 2**32:
            raise ValueError(f"recharge amount {amount_fen} fen must be positive and fit 4 bytes")
        if not 0 < count < 2**32:
            raise ValueError(f"purchase count {count} must be positive")
        di = DI_OPEN_ACCOUNT if open_account else DI_RECHARGE
        seq = self.next_seq()
        ac = amount_fen.to_bytes(4, "little") + count.to_bytes(4, "little")
        cust = customer_wire(customer)
        mac1 = self._mac(C_SECURITY, di_wire(di), ac, seq)
        mac2 = self._mac(C_SECURITY, di_wire(di), ac + cust, seq)
        data = payloads.recharge_request(self.operator, amount_fen, count, mac1, _DIGITS6.decode(cust), mac2,
                                         open_account=open_account)
        return data, seq

    def set_validity_request(self, minutes: int) -> tuple[bytes, int]:
        """Plain data of 03H 07 00 01 FF (this session's validity in minutes, 1..9999)."""
        if not 1 <= minutes <= 9999:
            raise ValueError("session validity must be 1..9999 minutes")
        seq = self.next_seq()
        plain = payloads.set_validity_request(self.operator, minutes, bytes(4))  # the schema's BCD minutes
        return plain[:-4] + self._mac(C_SECURITY, di_wire(DI_SET_VALIDITY), plain[8:10], seq), seq

    def end_session_request(self) -> tuple[bytes, int]:
        """Plain data of 03H 07 00 02 FF (ends the session; the reply reports the wallet)."""
        seq = self.next_seq()
        return payloads.end_session_request(self.operator, self._mac(C_SECURITY, di_wire(DI_END_SESSION), b"", seq)), seq

    def status_request(self) -> tuple[bytes, int]:
        """Plain data of the 03H status query (07 81 02 FF) and the seq its reply is bound to."""
        seq = self.next_seq()
        return payloads.status_query_request(self.operator, self._mac(C_SECURITY, di_wire(DI_STATUS_QUERY), b"", seq)), seq

    def parse_status_reply(self, data: bytes, seq: int) -> WalletStatus:
        """Check the meter's MAC on a status-query reply to ``seq`` and return the wallet it reports."""
        if self._s is None:
            raise SecurityError("no session: authenticate before a status query")
        if len(data) != 26:
            raise SecurityError(f"status reply has {len(data)} bytes, expected 26")
        self.check_reply(0x83, data, DI_STATUS_QUERY, seq)
        return WalletStatus.from_reply(data)

    def write_request(self, di: int, value: bytes) -> tuple[bytes, int]:
        """Plain data of a 14H level-99 write of ``value`` (already encoded) to ``di``."""
        seq = self.next_seq()
        mac = self._mac(C_WRITE, di_wire(di), LEVEL_99 + self.operator.to_bytes(4, "little") + value, seq)
        return payloads.write_request(di, value, LEVEL_99, self.operator, seq=seq, mac=mac), seq

    def control_request(self, n: bytes) -> tuple[bytes, int]:
        """Plain data of a 1CH level-99 control command with N1..N8 = ``n`` (N3..N8 the BCD deadline)."""
        if len(n) != 8:
            raise ValueError("a control command carries exactly 8 bytes N1..N8")
        seq = self.next_seq()
        mac = self._mac(C_CONTROL, _NO_DI, LEVEL_99 + self.operator.to_bytes(4, "little") + n, seq)
        data = payloads.build_payload(C_CONTROL, _control_fields(n, self.operator, seq, mac))
        return data, seq

    def write_address_request(self, new_address: str) -> tuple[bytes, int]:
        """Plain data of a 15H address write inside the session (send it to the meter's own address)."""
        seq = self.next_seq()
        mac = self._mac(C_WRITE_ADDRESS, _NO_DI, address_to_wire(new_address), seq)
        return payloads.write_address_request(new_address, seq, mac), seq


def _control_fields(n: bytes, operator: int, seq: int, mac: bytes) -> dict[str, Any]:
    """The 1CH schema's fields for N1..N8 as given (the deadline parsed from its BCD)."""
    try:
        deadline = payloads.Deadline.parse(n[2:8])
    except Exception as exc:  # construct's errors: the BCD deadline is not a real instant
        raise ValueError(f"control deadline {n[2:8].hex(' ')} is not ss mm hh DD MM YY BCD: {exc}") from None
    return {"password": LEVEL_99, "operator": operator, "cipher": None, "n1": n[0], "n2": n[1], "deadline": deadline,
            "seq": seq, "mac": mac}

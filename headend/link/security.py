"""Client side of a meter's security session (protocol/SECURITY.md), with no I/O.

Theory of operation
-------------------
One :class:`SecuritySession` per meter. ``auth_request()`` draws R1 and returns the plain
data of an 03H identity authentication; ``accept_auth_reply()`` takes the 83H reply, derives
the session key S and starts the sequence at 0.  Every protected command is then built with
``seq = last + 1``; the builder does *not* advance ``last`` because the frame may be lost and
must be re-sent byte-identical (the meter answers a byte-identical retry of ``last`` from its
cache and executes nothing).  The caller reports the outcome:

* ``confirm(seq)`` when the meter executed the command (any reply that is not an
  authentication or sequence refusal), so the next command uses ``seq + 1``;
* ``invalidate()`` when the meter refused on authentication/sequence grounds, or when the
  outcome is ambiguous: the next command authenticates again and starts a fresh sequence,
  which can never be mistaken for a replay of an earlier one.

Sessions are trusted for a little less than the meter's validity window (``margin``), so a
command is never sent into a session that expires on the way.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Callable

__all__ = [
    "DI_AUTH",
    "DI_SET_VALIDITY",
    "DI_END_SESSION",
    "DI_OPEN_ACCOUNT",
    "DI_RECHARGE",
    "DI_STATUS_QUERY",
    "SecurityError",
    "SecuritySession",
    "WalletStatus",
    "address_wire",
    "customer_wire",
    "derive_meter_key",
    "di_wire",
]

DI_AUTH = 0x070000FF
DI_SET_VALIDITY = 0x070001FF
DI_END_SESSION = 0x070002FF
DI_OPEN_ACCOUNT = 0x070101FF
DI_RECHARGE = 0x070102FF
DI_STATUS_QUERY = 0x078102FF

C_SECURITY = 0x03
C_WRITE = 0x14
C_CONTROL = 0x1C
LEVEL_99 = b"\x99\x00\x00\x00"


class SecurityError(ValueError):
    """A meter's security reply that does not check out (bad MAC, wrong layout, no session)."""


def _bcd_wire(digits: str, n: int, what: str) -> bytes:
    if not digits.isdigit() or len(digits) > 2 * n:
        raise ValueError(f"{what} {digits!r} must be up to {2 * n} decimal digits")
    digits = digits.rjust(2 * n, "0")
    pairs = [int(digits[i : i + 2], 16) for i in range(0, 2 * n, 2)]
    return bytes(reversed(pairs))


def address_wire(address: str) -> bytes:
    """The 6 address bytes in wire order (low byte first): "123456789012" -> 12 90 78 56 34 12."""
    return _bcd_wire(address, 6, "meter address")


def customer_wire(customer: str) -> bytes:
    """A customer or meter number as 6 BCD bytes in wire order."""
    return _bcd_wire(customer, 6, "customer number")


def di_wire(di: int) -> bytes:
    """A data identifier DI3..DI0 as sent (DI0 first)."""
    return di.to_bytes(4, "little")


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def derive_meter_key(master: bytes, address: str, krn: int) -> bytes:
    """Meter key K = HMAC(master, "prepaid645/meter" + addr + KRN)[:16] (SECURITY.md)."""
    return _hmac(master, b"prepaid645/meter" + address_wire(address) + bytes([krn]))[:16]


@dataclass(frozen=True)
class WalletStatus:
    """What the meter's MAC-checked status query (07 81 02 FF) says about its wallet."""

    balance_fen: int
    purchase_count: int
    customer: str
    krn: int


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
        self._addr = address_wire(address)
        self._key = key
        self._number = customer_wire(meter_number or address)
        self.operator = operator
        self.validity_s = validity_s
        self.margin_s = margin_s
        self._rand = rand
        self._r1: bytes | None = None
        self._r2: bytes | None = None
        self._s: bytes | None = None
        self.last = 0
        self.expires = 0.0
        self.krn = 0  # the key revision ``key`` belongs to (set by the owner)

    # -- session ------------------------------------------------------------------------
    @property
    def _op(self) -> bytes:
        return self.operator.to_bytes(4, "little")

    def valid(self, now: float) -> bool:
        """True while a session exists and is comfortably inside its validity window."""
        return self._s is not None and now < self.expires - self.margin_s

    def invalidate(self) -> None:
        """Forget the session; the next protected command authenticates first."""
        self._s = self._r1 = self._r2 = None
        self.last = 0
        self.expires = 0.0

    def auth_request(self) -> bytes:
        """Plain 03H data for identity authentication; draws a fresh R1."""
        self._r1 = self._rand(8)
        disp = b"\x00\x00" + self._number
        c1 = _hmac(self._key, b"auth" + self._r1 + disp)[:8]
        return di_wire(DI_AUTH) + self._op + c1 + self._r1 + disp

    def accept_auth_reply(self, data: bytes, now: float) -> None:
        """Take the 83H reply (DI + R2 + serial), derive S and start the sequence at 0."""
        if self._r1 is None:
            raise SecurityError("an authentication reply arrived with no request outstanding")
        if len(data) != 16 or data[:4] != di_wire(DI_AUTH):
            raise SecurityError(f"authentication reply has {len(data)} bytes, expected DI + R2 + serial (16)")
        serial = data[8:16]
        if serial != b"\x00\x00" + self._number:
            raise SecurityError("the meter answered with another meter number: check the registry")
        self._r2 = data[4:8]
        self._s = _hmac(self._key, b"session" + self._r1 + self._r2)[:16]
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
        return di_wire(di) + self._op + ac + mac1 + cust + mac2, seq

    def set_validity_request(self, minutes: int) -> tuple[bytes, int]:
        """Plain data of 03H 07 00 01 FF (session validity in minutes, 1..9999)."""
        if not 1 <= minutes <= 9999:
            raise ValueError("session validity must be 1..9999 minutes")
        seq = self.next_seq()
        digits = f"{minutes:04d}"
        bcd = bytes([int(digits[2:], 16), int(digits[:2], 16)])
        return di_wire(DI_SET_VALIDITY) + self._op + bcd + self._mac(C_SECURITY, di_wire(DI_SET_VALIDITY), bcd, seq), seq

    def end_session_request(self) -> bytes:
        """Plain data of 03H 07 00 02 FF (needs no MAC)."""
        return di_wire(DI_END_SESSION) + self._op

    def status_request(self) -> bytes:
        """Plain data of the 03H status query (07 81 02 FF)."""
        return di_wire(DI_STATUS_QUERY) + self._op

    def parse_status_reply(self, data: bytes) -> WalletStatus:
        """Check the meter's MACs on balance and count and return the wallet it reports."""
        if self._s is None or self._r2 is None:
            raise SecurityError("no session: authenticate before a status query")
        if len(data) != 30 or data[:4] != di_wire(DI_STATUS_QUERY):
            raise SecurityError(f"status reply has {len(data)} bytes, expected 30")
        bal, macb, cnt, macc = data[4:8], data[8:12], data[12:16], data[16:20]
        want_b = _hmac(self._s, b"bal" + self._addr + bal + self._r2)[:4]
        want_c = _hmac(self._s, b"cnt" + self._addr + cnt + self._r2)[:4]
        if not (hmac.compare_digest(macb, want_b) and hmac.compare_digest(macc, want_c)):
            raise SecurityError("the meter's balance/count MAC does not verify: wrong key or tampered reply")
        cust = data[20:26]
        return WalletStatus(
            balance_fen=int.from_bytes(bal, "little", signed=True),
            purchase_count=int.from_bytes(cnt, "little"),
            customer="".join(f"{b:02X}" for b in reversed(cust)),
            krn=data[26],
        )

    def write_request(self, di: int, value: bytes) -> tuple[bytes, int]:
        """Plain data of a 14H level-99 write of ``value`` (already encoded) to ``di``."""
        seq = self.next_seq()
        fields = LEVEL_99 + self._op + value
        mac = self._mac(C_WRITE, di_wire(di), fields, seq)
        return di_wire(di) + fields + seq.to_bytes(4, "little") + mac, seq

    def control_request(self, n: bytes) -> tuple[bytes, int]:
        """Plain data of a 1CH level-99 control command with N1..N8 = ``n``."""
        if len(n) != 8:
            raise ValueError("a control command carries exactly 8 bytes N1..N8")
        seq = self.next_seq()
        fields = LEVEL_99 + self._op + n
        mac = self._mac(C_CONTROL, b"\x00\x00\x00\x00", fields, seq)
        return fields + seq.to_bytes(4, "little") + mac, seq

"""Talking to one meter: reads, authenticated commands, and what a reply means.

:class:`MeterClient` turns a head-end intention ("read remaining money", "recharge 50 yuan
with purchase count 7", "trip") into DL/T 645 requests over the front-end, opening and reusing
the meter's security session, and turns replies into values or into :class:`MeterRefused`
(the meter answered no, with its decoded ERR/SERR flags).  Comms failures surface as the
transport's :class:`~headend.transports.LinkError` subclasses.  It holds no outbox state: the
outbox worker decides what to retry.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, NamedTuple

from headend.link.security import (
    SecurityError,
    SecuritySession,
    WalletStatus,
    di_wire,
)
from headend.link.session import Request
from headend.transports import FrontEnd
from protocol import ProtocolError
from protocol import di as dis
from protocol.cache import remember
from protocol.di import STATUS3
from protocol.frame import BROADCAST, Frame
from protocol.payloads import ERR_FLAGS, SERR_FLAGS, Deadline, broadcast_time_request, decode_err, decode_serr

__all__ = [
    "DEFAULT_READ_DIS",
    "ERR_FLAGS",
    "SERR_FLAGS",
    "MeterClient",
    "MeterRefused",
    "MeterTarget",
    "RELAY_ACTIONS",
    "ReadItem",
    "ReadValue",
    "UNIT_SCALE",
    "decode_err",
    "decode_serr",
    "parse_di",
    "read_item",
    "read_request",
    "reading_row",
]

DATETIME_WEEK = 0x0400010C
DATE_WEEK = 0x04000101
TIME = 0x04000102

CONTROL_VALIDITY = timedelta(minutes=10)  # a relay command not acted on by then must not act at all

# what each ERR/SERR flag (protocol.payloads names them) means to an operator
_SERR_TEXT = {
    "repeat_recharge": "repeat recharge (this purchase count was already applied)",
    "mac_failed": "MAC check failed (wrong key or KRN in the key store?)",
    "auth_failed": "identity authentication failed or expired, or the meter holds proofs back for up to 10 minutes after repeated failures",
    "customer_mismatch": "customer number does not match the meter's account",
    "count_error": "purchase count is not the meter's count + 1",
    "hoarding_exceeded": "the balance would exceed the meter's hoarding limit",
    "suspended": "meter security suspended",
    "address_error": "address error",
    "other": "refused (other error)",
}
_ERR_TEXT = {
    "unauthorised": "refused: unauthorised, or not allowed now (power hold refuses trips; stale command deadline)",
    "no_data": "no such data item on this meter",
    "other": "refused: invalid data or not allowed now",
}

# N1 codes of the 1CH control command
RELAY_ACTIONS = {
    "trip": 0x1A,
    "close_permitted": 0x1B,
    "close_direct": 0x1C,
    "alarm_on": 0x2A,
    "alarm_off": 0x2B,
    "hold_on": 0x3A,
    "hold_off": 0x3B,
}



class MeterRefused(Exception):
    """The meter answered with an error reply; ``flags`` are the decoded ERR/SERR bits."""

    def __init__(self, address: str, what: str, flags: list[str], code: int, security: bool) -> None:
        texts = _SERR_TEXT if security else _ERR_TEXT
        detail = "; ".join(texts.get(f, f) for f in flags) or "refused"
        super().__init__(f"meter {address} refused {what}: {detail}")
        self.address = address
        self.flags = flags
        self.code = code
        self.security = security

    @property
    def auth_problem(self) -> bool:
        """The refusal may be about the session (re-authenticating could help once)."""
        if self.security:
            return bool({"auth_failed", "mac_failed"} & set(self.flags))
        return "unauthorised" in self.flags


@dataclass(frozen=True)
class MeterTarget:
    """What the client needs to know about a meter (from the registry)."""

    address: str
    link: str
    krn: int = 0
    meter_number: str = ""
    customer: str = ""


class ReadValue(NamedTuple):
    """One decoded value from a read."""

    di: int
    value: Any
    unit: str
    name: str


def parse_di(text: str) -> int:
    """A DI given as 8 hex digits ("00010000", "0001 0000") or a registry name ("remaining_money")."""
    t = text.strip()
    compact = t.replace(" ", "").replace("_", "") if all(c in "0123456789abcdefABCDEF _" for c in t) else ""
    if len(compact) == 8:
        return int(compact, 16)
    try:
        return dis.by_name(t).di
    except KeyError as exc:
        raise ValueError(f"{text!r} is neither an 8-hex-digit DI nor a data item name: {exc.args[0]}") from None


# -- the read path: the one place a read reply becomes a value (or a refusal) and a store row -----
# Reads by the outbox worker, by MeterClient.read and by read cycles (headend.commands.collect)
# all go through ReadItem, so a reply is decoded and refused the same way whoever asked.

# What the head-end reads when nobody names items (`headend read`, serve's periodic collection):
# forward active energy, remaining money, status word 3.
DEFAULT_READ_DIS = (0x00010000, 0x00900200, 0x04000503)

# What a decimal reading in each unit is multiplied by to store it as an integer in its base
# unit (Wh, fen, 0.0001 yuan/kWh, W, 0.1 V, mA, 0.01 Hz).
UNIT_SCALE = {"kWh": 1000, "yuan": 100, "yuan/kWh": 10000, "kW": 1000, "V": 10, "A": 1000, "Hz": 100}

Row = tuple[str, str, int | None, int, str | None]


def _row(address: str, di_hex: str, value: Any, at: int, scale: int | None) -> Row:
    t = type(value)
    if t is int:
        return (address, di_hex, value, at, None)
    if t is Decimal:
        if scale is not None:
            x = value * scale
            if x == x.to_integral_value():
                return (address, di_hex, int(x), at, None)
        return (address, di_hex, None, at, str(value))
    if t is bool:
        return (address, di_hex, int(value), at, None)
    if isinstance(value, (bytes, bytearray)):
        return (address, di_hex, None, at, bytes(value).hex())
    return (address, di_hex, None, at, str(value))


class ReadItem:
    """One data item as reads see it: its wire bytes, registry name and unit, how a reply to
    its read becomes a value or a :class:`MeterRefused`, and how a value becomes a store row."""

    __slots__ = ("di", "hex", "wire", "unit", "name", "text", "scale", "block")

    def __init__(self, di: int) -> None:
        item = dis.lookup(di)
        self.di = di
        self.hex = f"{di:08X}"
        self.wire = di_wire(di)
        self.text = dis.di_text(di)
        self.unit = item.unit if item else ""
        self.name = item.name if item else self.text
        self.scale = UNIT_SCALE.get(self.unit)
        # a block read may come in several replies (B1/B2 follow-ups with 12H)
        self.block = (di & 0xFF) == 0xFF or (di >> 8 & 0xFF) == 0xFF

    def refused(self, address: str, f: Frame, what: str | None = None) -> MeterRefused:
        """The meter's abnormal answer to a read (11H) or follow-up (12H): one error byte."""
        code = f.data[0] if f.data else 0
        return MeterRefused(address, what or f"read of {self.text}", decode_err(code), code, False)

    def decode(self, address: str, raw: bytes) -> Any:
        """The value of the item's bytes; MeterRefused naming the meter if they do not decode."""
        try:
            return dis.decode_value(self.di, raw)
        except ProtocolError as exc:
            raise MeterRefused(address, f"read of {self.text}: the value does not decode ({exc})",
                               ["other"], 0, False) from None

    def value(self, address: str, f: Frame) -> Any:
        """The decoded value of a single read reply; MeterRefused for an error reply."""
        if f.control & 0x40:
            raise self.refused(address, f)
        return self.decode(address, f.data[4:])

    def read_value(self, value: Any) -> ReadValue:
        """``value`` with the item's DI, unit and name."""
        return ReadValue(self.di, value, self.unit, self.name)

    def row(self, address: str, value: Any, at: int) -> Row:
        """The store reading (meter, DI, integer value in base unit, at, text) for a decoded value."""
        return _row(address, self.hex, value, at, self.scale)


_READ_ITEMS: dict[int, ReadItem] = {}
# (address, DI) -> the read request: the same objects every cycle, so the link's wire cache hits
_READ_REQUESTS: OrderedDict[tuple[str, int], Request] = OrderedDict()
_READ_REQUESTS_MAX = 1 << 18


def read_item(di: int) -> ReadItem:
    """The (cached) :class:`ReadItem` of ``di``."""
    it = _READ_ITEMS.get(di)
    if it is None:
        it = _READ_ITEMS[di] = ReadItem(di)
    return it


def read_request(address: str, item: ReadItem) -> Request:
    """The 11H read of ``item`` from ``address``, built once and reused (a cycle asks the same questions)."""
    key = (address, item.di)
    req = _READ_REQUESTS.get(key)
    if req is None:
        req = Request(address, 0x11, item.wire)
        # the oldest makes room: never a cold cache for all
        remember(_READ_REQUESTS, key, req, _READ_REQUESTS_MAX)
    return req


def reading_row(address: str, rv: ReadValue, at: int) -> Row:
    """A store reading (meter, DI, integer value in base unit, at, text) for a decoded value.

    kWh are stored as Wh, yuan as fen, prices in 0.0001 yuan/kWh; words and counts as ints;
    anything else (times, tables, blocks, unknown bytes) as text.
    """
    return _row(address, f"{rv.di:08X}", rv.value, at, UNIT_SCALE.get(rv.unit))


def deadline_bytes(when: datetime) -> bytes:
    """N3..N8 of a control command: ss mm hh DD MM YY (BCD), whole seconds."""
    return Deadline.build(when.replace(microsecond=0))


class MeterClient:
    """Reads and commands for many meters over one front-end, with cached security sessions."""

    def __init__(
        self,
        frontend: FrontEnd,
        key_for: Callable[[MeterTarget], bytes],
        *,
        operator: int = 0,
        control_validity: timedelta = CONTROL_VALIDITY,
        meter_clock: Callable[[], datetime] = datetime.now,
        session_validity_s: float = 300.0,
        security_timeout: float | None = None,
        rand: Callable[[int], bytes] | None = None,
    ) -> None:
        self.frontend = frontend
        self.key_for = key_for
        self.operator = operator
        self.control_validity = control_validity
        self.meter_clock = meter_clock
        self.session_validity_s = session_validity_s
        # meters work their security chip on 03H/14H/1CH and answer later than reads (2-5 s)
        self._sec_kw: dict[str, Any] = {} if security_timeout is None else {"timeout": security_timeout}
        self._rand = rand
        self._sessions: dict[str, SecuritySession] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- plumbing -----------------------------------------------------------------------
    async def _ask(self, m: MeterTarget, control: int, data: bytes = b"", **kw: Any) -> Frame:
        reply = await self.frontend.request(m.link, Request(m.address, control, data, **kw))
        assert reply is not None
        return reply.frame

    def _lock(self, address: str) -> asyncio.Lock:
        lock = self._locks.get(address)
        if lock is None:
            lock = self._locks[address] = asyncio.Lock()
        return lock

    def _session(self, m: MeterTarget) -> SecuritySession:
        s = self._sessions.get(m.address)
        if s is not None and s.krn != m.krn:
            s = None  # the key was rotated (or the registry corrected): the old session is useless
        if s is None:
            kw: dict[str, Any] = {}
            if self._rand is not None:
                kw["rand"] = self._rand
            s = SecuritySession(
                m.address,
                self.key_for(m),
                meter_number=m.meter_number or None,
                operator=self.operator,
                validity_s=self.session_validity_s,
                **kw,
            )
            s.krn = m.krn
            self._sessions[m.address] = s
        return s

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def _authenticate(self, m: MeterTarget, s: SecuritySession) -> None:
        s.invalidate()
        try:
            # challenge-response: the meter's fresh challenge first, then the proof over it
            f = await self._ask(m, 0x03, s.challenge_request(), **self._sec_kw)
            if not f.is_abnormal:
                f = await self._ask(m, 0x03, s.auth_request(f.data), **self._sec_kw)
            if f.is_abnormal:
                s.invalidate()
                if len(f.data) < 2:
                    # an ERR byte, not a security word: this meter has no DL/T 645 security at all,
                    # so no key or KRN would help
                    err = f.data[0] if f.data else 0
                    raise MeterRefused(m.address, "identity authentication (the meter answered 03H without a "
                                       "security word: it has no DL/T 645 security, so it takes no recharge, relay "
                                       "or write commands from this head-end)", decode_err(err), err, False)
                word = int.from_bytes(f.data[:2], "little")
                flags = decode_serr(word)
                hint = " (check the key store and the meter's KRN)" if {"mac_failed", "auth_failed"} & set(flags) else ""
                raise MeterRefused(m.address, f"identity authentication{hint}", flags, word, True)
            s.accept_auth_reply(f.data, self._now())
        except SecurityError as exc:
            s.invalidate()
            raise MeterRefused(m.address, f"identity authentication: {exc}", ["other"], 0, True) from None

    async def _protected(self, m: MeterTarget, what: str, build: Callable[[SecuritySession], tuple[int, bytes, int]],
                         *, fresh: bool = False) -> Frame:
        """Send a protected command inside a session (a new one with ``fresh``); one
        re-authentication on a session refusal."""
        async with self._lock(m.address):
            s = self._session(m)
            if fresh:
                s.invalidate()
            for attempt in (1, 2):
                if not s.valid(self._now()):
                    await self._authenticate(m, s)
                control, data, seq = build(s)
                try:
                    f = await self._ask(m, control, data, **self._sec_kw)
                except BaseException:
                    # outcome unknown: a later command must not reuse this seq with other bytes
                    s.invalidate()
                    raise
                security = control == 0x03
                if security:
                    try:
                        s.check_reply(f.control, f.data, int.from_bytes(data[:4], "little"), seq)
                    except SecurityError as exc:
                        # not the meter's answer to this request: as good as no answer
                        s.invalidate()
                        if attempt == 1:
                            continue
                        raise MeterRefused(m.address, f"{what}: {exc}", ["mac_failed"], 4, True) from None
                if not f.is_abnormal:
                    s.confirm(seq)
                    return f
                code = int.from_bytes(f.data[:2], "little") if security else (f.data[0] if f.data else 0)
                err = MeterRefused(m.address, what, decode_serr(code) if security else decode_err(code), code, security)
                if err.auth_problem:
                    # the session or sequence was refused (it expired, the meter restarted, or
                    # a rule refusal shares the bit): one fresh session settles which it was
                    s.invalidate()
                    if attempt == 1:
                        continue
                else:
                    s.confirm(seq)
                raise err
        raise AssertionError("unreachable")

    # -- reads --------------------------------------------------------------------------
    async def read_raw(self, m: MeterTarget, di: int) -> bytes:
        """Value bytes of ``di`` (block reads follow B1/B2 replies with 12H follow-ups)."""
        item = read_item(di)
        reply = await self.frontend.request(m.link, read_request(m.address, item))
        assert reply is not None
        f = reply.frame
        if f.is_abnormal:
            raise item.refused(m.address, f)
        value = bytearray(f.data[4:])
        seq = 0
        # D5 on a short single item can mean "events pending" (2013 meters): follow only blocks
        while f.has_more and item.block and seq < 255:
            seq += 1
            f = await self._ask(m, 0x12, item.wire + bytes([seq]))
            if f.is_abnormal:
                raise item.refused(m.address, f, f"follow-up {seq} of {item.text}")
            part = f.data[4:]
            if part and part[-1] == seq and len(part) > 0:
                part = part[:-1]  # the follow-up reply echoes SEQ after the data
            value += part
        return bytes(value)

    async def read(self, m: MeterTarget, di: int) -> ReadValue:
        """Read and decode one DI (unknown DIs come back as raw bytes)."""
        item = read_item(di)
        return item.read_value(item.decode(m.address, await self.read_raw(m, di)))

    async def status3(self, m: MeterTarget) -> int:
        """Status word 3 (relay actual/commanded, pre-trip alarm, power hold ...)."""
        raw = await self.read_raw(m, STATUS3)
        return int.from_bytes(raw[:2], "little")

    async def read_address(self, link: str) -> str:
        """13H read address of the one meter on ``link`` (point to point only)."""
        reply = await self.frontend.request(link, Request("AAAAAAAAAAAA", 0x13))
        assert reply is not None
        return reply.frame.address

    # -- security ------------------------------------------------------------------------
    async def wallet(self, m: MeterTarget, *, fresh: bool = False) -> WalletStatus:
        """The meter's balance and purchase count, with the meter's MAC on its reply checked;
        ``fresh`` authenticates anew first, so the answer belongs to a session opened just now
        (what settles a recharge whose outcome is unknown)."""

        def build(s: SecuritySession) -> tuple[int, bytes, int]:
            data, seq = s.status_request()
            return 0x03, data, seq

        f = await self._protected(m, "status query", build, fresh=fresh)
        try:
            return WalletStatus.from_reply(f.data)
        except SecurityError as exc:
            raise MeterRefused(m.address, f"status query: {exc}", ["other"], 0, True) from None

    async def recharge(self, m: MeterTarget, amount_fen: int, count: int, customer: str, *, open_account: bool = False) -> str:
        """Send one recharge; returns "credited" or "repeat" (already applied: success)."""

        def build(s: SecuritySession) -> tuple[int, bytes, int]:
            data, seq = s.recharge_request(amount_fen, count, customer, open_account=open_account)
            return 0x03, data, seq

        what = "account opening" if open_account else f"recharge of {amount_fen} fen (purchase count {count})"
        try:
            await self._protected(m, what, build)
        except MeterRefused as exc:
            if exc.flags == ["repeat_recharge"]:
                return "repeat"
            raise
        return "credited"

    async def write(self, m: MeterTarget, di: int, value: Any) -> None:
        """Authenticated 14H write (level 99) of a registry value."""
        raw = value if isinstance(value, (bytes, bytearray)) else dis.encode_value(di, value)

        def build(s: SecuritySession) -> tuple[int, bytes, int]:
            data, seq = s.write_request(di, bytes(raw))
            return 0x14, data, seq

        await self._protected(m, f"write of {dis.di_text(di)}", build)

    async def control(self, m: MeterTarget, action: str, n2: int = 0) -> None:
        """Authenticated 1CH relay/alarm/power-hold command, valid for ``control_validity``."""
        n1 = RELAY_ACTIONS[action]
        deadline = deadline_bytes(self.meter_clock() + self.control_validity)

        def build(s: SecuritySession) -> tuple[int, bytes, int]:
            data, seq = s.control_request(bytes([n1, n2]) + deadline)
            return 0x1C, data, seq

        await self._protected(m, action.replace("_", " "), build)

    async def broadcast_time(self, link: str, when: datetime) -> None:
        """08H broadcast time on ``link`` (no reply; meters accept only small corrections)."""
        await self.frontend.request(link, Request(BROADCAST, 0x08, broadcast_time_request(when.replace(microsecond=0)), reply=False))

    async def meter_time(self, m: MeterTarget) -> datetime:
        """The meter's clock (date-weekday-time item, or date and time read separately)."""
        try:
            v = (await self.read(m, DATETIME_WEEK)).value
            return v.datetime if hasattr(v, "datetime") else v
        except MeterRefused as exc:
            if "no_data" not in exc.flags:
                raise
        d = (await self.read(m, DATE_WEEK)).value
        t = (await self.read(m, TIME)).value
        day = d.date if hasattr(d, "date") else d
        return datetime.combine(day, t)


def money_value(fen: int) -> Decimal:
    """Fen as the yuan Decimal the registry encodes (XXXXXX.XX)."""
    return Decimal(fen).scaleb(-2)

"""Records the store hands out, and the checks on what goes in.

Every record is a frozen dataclass so callers cannot mistake a snapshot for a live row: to change
something, call the store. Times are integer Unix seconds (UTC); money is integer fen plus an
integer sub-fen remainder (see headend/tariff/README.md); energy is integer Wh.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from headend.money import yuan  # noqa: F401 - the store speaks yuan in its refusals; callers import it from here

__all__ = [
    "MODES",
    "RESTORE_POLICIES",
    "SUPPLY_STATES",
    "COMMAND_STATUSES",
    "COMMAND_TRANSITIONS",
    "FINAL_STATUSES",
    "NOTIFICATION_STATUSES",
    "DELIVERY_STATES",
    "SUBFEN",
    "CHANNEL_KINDS",
    "PAYMENT_STATES",
    "LEDGER_KINDS",
    "ROLES",
    "TENDERS",
    "CHINA_UTC_OFFSET_S",
    "business_day",
    "Account",
    "Meter",
    "Command",
    "Reading",
    "Event",
    "AuditEntry",
    "Notification",
    "Delivery",
    "Outage",
    "LedgerEntry",
    "Channel",
    "Payment",
    "Operator",
    "Shift",
    "JSONText",
    "StoreError",
    "NotFound",
    "Conflict",
    "InvalidInput",
    "TransitionError",
    "TransactionLost",
    "check_address",
    "check_customer",
    "check_di",
    "check_link",
    "check_limit",
    "yuan",
    "LIMIT_MAX_FEN",
    "split_phones",
]

SUBFEN = 100_000  # sub-fen units per fen: w Wh * p (0.0001 yuan/kWh) is in 1e-5 fen

MODES = ("local", "remote")
RESTORE_POLICIES = ("close_permitted", "direct")
SUPPLY_STATES = ("on", "cut", "close_permitted")
COMMAND_STATUSES = ("queued", "sent", "unresolved", "confirmed", "failed", "rejected", "cancelled")
# Allowed command state changes.
# - "sent -> queued": a retry that goes back into the queue (a timeout, a lost link) before
#   anything could have changed at the meter.
# - "unresolved": a recharge whose frame may have reached the meter and whose outcome is not
#   known yet; only the meter's purchase count, read in a fresh session, settles it (the worker
#   claims it again: "unresolved -> sent"). It never ends failed: credited -> confirmed,
#   provably not applied -> sent again with the same count, or rejected.
# - confirmed, failed, rejected and cancelled are final; an operator may put a failed,
#   rejected or cancelled command back in the queue (`headend commands retry`).
#   failed: tried, and the meter or link refused it; rejected: it can never succeed as
#   written; cancelled: an operator took it out of the queue before it was sent.
COMMAND_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "queued": ("sent", "failed", "rejected", "cancelled"),
    "sent": ("sent", "queued", "unresolved", "confirmed", "failed", "rejected"),
    "unresolved": ("sent",),
    "confirmed": (),
    "failed": ("queued",),
    "rejected": ("queued",),
    "cancelled": ("queued",),
}
FINAL_STATUSES = ("confirmed", "failed", "rejected", "cancelled")
NOTIFICATION_STATUSES = ("queued", "sent", "failed")
# one notice to one phone: accepted by the provider (a receipt follows), delivered, undelivered
# (the receipt said so), or refused for good (bad number, rejected)
DELIVERY_STATES = ("accepted", "delivered", "undelivered", "bad_number", "rejected")
# Every way money comes in (the source paper's channels). A counter channel without API
# credentials serves the business hall and the operator's `headend recharge`.
CHANNEL_KINDS = ("counter", "unionpay_pos", "online_banking", "phone_banking", "mobile_app", "third_party", "agent",
                 "kiosk", "door_to_door", "bank_withholding", "voucher", "recharge_card")
# A payment is accepted, then either sent to the meter (local cost control) and confirmed there,
# or credited to the account (remote cost control, or a top-up the meter refused); a reversal
# ends it.
PAYMENT_STATES = ("accepted", "sent_to_meter", "confirmed_on_meter", "credited", "reversed")
# Journal kinds. amount_fen is what the row does to the account's balance; meter_fen what it
# does to the money the head-end has put on a local-cost-control meter's wallet.
LEDGER_KINDS = (
    "payment",          # + money in through a channel
    "reversal",         # - a payment voided the same day, before it reached the meter
    "topup_sent",       # - local cost control: the money leaves the account for the meter
    "topup_confirmed",  # 0 on the account, + on the meter: the meter applied the recharge
    "topup_returned",   # + the meter refused the recharge: the money is back on the account
    "charge",           # - remote cost control: energy rated by the tariff core (with the day's fixed charge)
    "fixed_charge",     # - remote cost control: a fixed charge booked on its own
    "rerate",           # +/- re-rating after a tariff correction
    "refund",           # - money paid back to the customer (operator and reason)
    "adjustment",       # +/- a correction (operator and reason)
)
ROLES = ("admin", "operator", "cashier", "auditor")
TENDERS = ("cash", "cheque", "unionpay_pos")
CHINA_UTC_OFFSET_S = 8 * 3600

_ADDRESS_RE = re.compile(r"^[0-9]{12}$")
_DI_RE = re.compile(r"^[0-9A-F]{8}$")


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class NotFound(StoreError):
    """The meter, customer or command named does not exist."""


class Conflict(StoreError):
    """The row exists already, or changed under us (a compare-and-set lost)."""


class TransactionLost(StoreError):
    """A failed part of a transaction (``Store.part``) could not be undone: the whole
    transaction must roll back."""


class InvalidInput(StoreError, ValueError):
    """A value that cannot be stored as given (bad address, unknown mode, negative limit...)."""


class TransitionError(Conflict):
    """A command state change that is not allowed, or whose expected state no longer holds."""


def check_address(address: str) -> str:
    """Return a meter address as 12 decimal digits, or raise InvalidInput saying what is wrong."""
    if not isinstance(address, str):
        raise InvalidInput(f"meter address must be a string of 12 digits, got {type(address).__name__}")
    a = address.strip()
    if not _ADDRESS_RE.match(a):
        raise InvalidInput(
            f"bad meter address {address!r}: need exactly 12 decimal digits as printed on the meter, e.g. 000000000001"
        )
    return a


def check_customer(number: str) -> str:
    """Return a customer number as 12 decimal digits (the meter's 6-byte BCD customer number)."""
    if not isinstance(number, str) or not _ADDRESS_RE.match(number.strip()):
        raise InvalidInput(f"bad customer number {number!r}: need exactly 12 decimal digits, e.g. 000000000042")
    return number.strip()


def check_link(url: str) -> str:
    """Return a meter's link URL if the front-end can open it (the transports' own parser decides)."""
    from headend.transports.base import parse_link_url

    try:
        parse_link_url(str(url))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return str(url).strip()


# A meter keeps its money limits as XXXXXX.XX yuan (8 BCD digits of fen): the head-end allows the same.
LIMIT_MAX_FEN = 99_999_999


def check_limit(name: str, fen: Any) -> int:
    """A money limit (alarm, overdraft, restore amount) in fen, 0 .. LIMIT_MAX_FEN; the refusal
    speaks yuan, as operators write limits."""
    if not isinstance(fen, int) or isinstance(fen, bool):
        raise InvalidInput(f"{name} must be a whole number of fen, got {fen!r}")
    if not 0 <= fen <= LIMIT_MAX_FEN:
        raise InvalidInput(f"{name} must be 0 .. {yuan(LIMIT_MAX_FEN)} yuan, got {yuan(fen)} yuan")
    return fen


def split_phones(value: Any) -> list[str]:
    """Phone numbers as written, in order: a list, or text with several separated by , or ;.
    They are kept as given: the notice sender reports (and flags) a number it cannot use."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.replace(";", ",").split(",")
    phones = [str(p).strip() for p in value if str(p).strip()]
    for p in phones:
        if len(p) > 40:
            raise InvalidInput(f"phone number {p[:20]!r}... is longer than 40 characters")
    return phones


def check_di(di: str) -> str:
    """Return a data identifier as 8 upper-case hex digits in printed order (DI3 DI2 DI1 DI0)."""
    d = str(di).replace(" ", "").upper()
    if not _DI_RE.match(d):
        raise InvalidInput(f"bad data identifier {di!r}: need 8 hex digits, e.g. 00010000")
    return d


def business_day(at: int, utc_offset_s: int = CHINA_UTC_OFFSET_S) -> str:
    """The calendar day (YYYY-MM-DD, local time at utc_offset_s) a time belongs to."""
    return time.strftime("%Y-%m-%d", time.gmtime(int(at) + utc_offset_s))


class JSONText(str):
    """Text that is already JSON (as ``dumps`` would write it): stored as it is.

    For bulk writers (a cost-control cycle's million audit details) that build the same shape
    of detail many times and can format it faster than the encoder."""

    __slots__ = ()


def dumps(obj: Any) -> str | None:
    """JSON text for a params/reply/detail column (None stays NULL)."""
    if obj is None:
        return None
    if type(obj) is JSONText:
        return str(obj)
    return "".join(_ENCODE(obj, 0))


def _not_json(obj: Any) -> Any:
    raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")


# one C encoder for every row, made once: json.dumps with options builds a new JSONEncoder per
# call (a third of the cost of the audit and notice rows a million-account cost-control cycle
# writes), and JSONEncoder.encode a new C encoder per call (~1 us of ~2.5 a detail). The same text
# as JSONEncoder(sort_keys=True, separators=(",", ":")) writes, without its check for circular
# containers (a row's detail has none)
_ENCODE = json.encoder.c_make_encoder(  # type: ignore[attr-defined]  # C, not in the stubs
    None, _not_json, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, True)


def loads(text: str | None) -> Any:
    """Inverse of dumps."""
    return None if text is None else json.loads(text)


@dataclass(frozen=True)
class Account:
    """A customer's account: the head-end's balance for remote cost control, and its limits.

    balance_fen and rem follow headend/tariff/README.md; ladder_wh is the ladder energy of the
    current ladder period; limits are in fen (overdraft_fen >= 0: the meter trips at
    balance <= -overdraft_fen); version goes up by one on every money change (compare-and-set).

    Remote cost-control state (kept by the cost-control loop, see Store.set_account_state):
    rated_until = start of the last interval already rated into the balance, in the rating
    loop's own time unit (None: never rated); notice_level = highest notice sent since the
    balance was last healthy (0 none, 1 alarm 1, 2 alarm 2, 3 cut notice) and notice_at when;
    supply = what cost control last made of the supply ("on", "cut", "close_permitted") and
    supply_at when.
    """

    customer: str
    name: str = ""
    phone: str = ""
    balance_fen: int = 0
    rem: int = 0
    ladder_wh: int = 0
    alarm1_fen: int = 0
    alarm2_fen: int = 0
    overdraft_fen: int = 0
    close_ok_fen: int = 0
    protected: bool = False
    restore_policy: str = "close_permitted"
    tariff: str | None = None
    version: int = 0
    created_at: int = 0
    updated_at: int = 0
    rated_until: int | None = None
    notice_level: int = 0
    notice_at: int | None = None
    supply: str = "on"
    supply_at: int | None = None
    phones: tuple[str, ...] = ()
    address: str = ""
    district: str = ""
    segment: str = ""
    language: str = ""
    important: bool = False
    withholding: Any = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for --json output."""
        d = dict(self.__dict__)
        d["phones"] = list(self.phones)
        return d


@dataclass(frozen=True)
class Meter:
    """A registered meter: where to reach it and what the head-end knows about it.

    purchase_count is the count the head-end last saw confirmed by the meter; the next recharge
    uses purchase_count + 1. balance_fen / relay / last_seen are the meter's last reported state
    (None until first read).
    """

    address: str
    link: str
    customer: str
    mode: str = "local"
    krn: int = 0
    purchase_count: int = 0
    protected: bool = False
    meter_number: str = ""
    balance_fen: int | None = None
    relay: str | None = None
    last_seen: int | None = None
    created_at: int = 0
    updated_at: int = 0
    hoarding_fen: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for --json output."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Command:
    """One entry of the command outbox."""

    id: int
    meter: str
    kind: str
    params: Any
    status: str
    attempts: int
    last_error: str | None
    reply: Any
    created_at: int
    updated_at: int
    idem_key: str | None
    actor: str
    not_before: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for --json output."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Reading:
    """One value read from a meter: value is an integer in the DI's base unit (Wh, fen...);
    text carries values that are not numbers (status words, date-times) and may be None."""

    meter: str
    di: str
    value: int | None
    read_at: int
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for --json output."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Event:
    """Something that happened at a meter (from its event records or seen by the head-end)."""

    id: int
    meter: str
    at: int
    kind: str
    detail: Any = None
    source: str = "headend"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for --json output."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class AuditEntry:
    """Who did what, when."""

    id: int
    at: int
    actor: str
    action: str
    target: str | None
    detail: Any = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for --json output."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Notification:
    """A message waiting to be sent to a customer (low balance, cut, restore, outage)."""

    id: int
    customer: str
    channel: str
    kind: str
    message: str
    status: str
    attempts: int
    last_error: str | None
    created_at: int
    updated_at: int
    idem_key: str | None
    detail: Any = None
    not_before: int = 0          # not sent before (quiet hours, rate limit, backoff, outage lead time)
    priority: int = 0            # higher first (important and protected customers)
    sent_at: int | None = None
    sent_text: str | None = None  # the text as it went out, in the customer's language
    in_doubt: bool = False       # claimed after an earlier sender's lease ran out mid-send

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for --json output."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Delivery:
    """One notice to one phone: the key the gateway saw, the provider's message id, the receipt."""

    notice_id: int
    phone: str
    key: str
    provider: str | None
    provider_id: str | None
    state: str
    error: str | None
    sent_at: int
    receipt_at: int | None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for --json output."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Outage:
    """A planned outage on a feeder or a transformer area (exactly one of them set).

    version goes up by one on each change; synced_at is when the affected meters' clocks were
    queued for a time sync after it ended (None: not yet)."""

    id: int
    feeder: str | None
    area: str | None
    start_at: int
    end_at: int
    reason: str
    status: str
    version: int
    actor: str
    created_at: int
    updated_at: int
    synced_at: int | None = None

    @property
    def scope(self) -> str:
        """``feeder F`` or ``area A``."""
        return f"feeder {self.feeder}" if self.feeder is not None else f"area {self.area}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for --json output."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class LedgerEntry:
    """One money movement on an account; balance_after makes the ledger self-checking."""

    id: int
    customer: str
    at: int
    kind: str
    amount_fen: int
    balance_after: int
    idem_key: str | None
    actor: str
    detail: Any = field(default=None)
    meter: str | None = None
    channel: str | None = None
    txn_id: str | None = None
    payment_id: int | None = None
    ref: str | None = None
    day: str | None = None
    meter_fen: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for --json output."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Channel:
    """A configured payment channel. ``secret`` is sealed under the head-end master key (see
    headend.keys.KeyStore.unseal); a channel without key_id has no API access (counter use only).
    fee_rule: "none", "fixed:FEN", "bp:BASIS_POINTS[,min:FEN][,max:FEN]"; settle_days: T+N."""

    id: str
    kind: str
    name: str = ""
    key_id: str | None = None
    secret: str | None = None
    fee_rule: str = "none"
    settle_days: int = 0
    max_amount_fen: int | None = None
    callback_url: str | None = None
    enabled: bool = True
    created_at: int = 0
    updated_at: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for --json output (the sealed secret left out)."""
        d = dict(self.__dict__)
        d.pop("secret")
        return d


@dataclass(frozen=True)
class Payment:
    """One payment through a channel, with its state and when each state was reached."""

    id: int
    channel_id: str
    txn_id: str
    customer: str
    meter: str | None
    amount_fen: int
    fee_fen: int
    state: str
    paid_at: int
    accepted_at: int
    sent_at: int | None = None
    confirmed_at: int | None = None
    credited_at: int | None = None
    reversed_at: int | None = None
    command_id: int | None = None
    day: str = ""
    actor: str = ""
    tender: Any = None
    shift_id: int | None = None
    request: Any = None
    extra: Any = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Operator:
    """A named operator account; the password hash never leaves the store in to_dict()."""

    name: str
    role: str
    full_name: str
    pw_hash: str
    enabled: bool
    created_at: int
    updated_at: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for --json output (without the password hash)."""
        d = dict(self.__dict__)
        d.pop("pw_hash")
        return d


@dataclass(frozen=True)
class Shift:
    """A cashier's shift at a counter channel; expected/counted/differences by tender when closed."""

    id: int
    cashier: str
    channel: str
    state: str
    opened_at: int
    closed_at: int | None = None
    expected: Any = None
    counted: Any = None
    differences: Any = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for --json output."""
        return dict(self.__dict__)


def decision_state(customer: str, level: Any, notice_at: Any, supply: Any, supply_at: Any) -> tuple[Any, ...]:
    """A cost-control decision's account state checked and as stored: (notice level 0..3, notice
    time or None, supply, supply time or None)."""
    if level not in (0, 1, 2, 3) or supply not in SUPPLY_STATES:
        raise InvalidInput(f"customer {customer}: notice level is 0..3 and supply one of"
                           f" {', '.join(SUPPLY_STATES)}, got {level!r} / {supply!r}")
    return (int(level), None if notice_at is None else int(notice_at), supply,
            None if supply_at is None else int(supply_at))

"""Data-identifier registry: DI -> name, value format, unit, access.

DIs are ints written DI3..DI0 as people read them: ``0x00010000`` is forward active energy,
total, sent on the wire as ``00 00 01 00`` (DI0 first).  ``lookup`` returns the ``DataItem``;
``decode_value``/``encode_value`` turn value bytes (PLAIN) into exact Python values and back.
An unknown DI is not an error: its value decodes to ``UnknownValue`` (bytes with ``.unknown``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from protocol.errors import ProtocolError
from protocol.formats import Bcd, Binary, Block, Clock, Digits, Format, Record, Table, Word

__all__ = [
    "DataItem",
    "UnknownValue",
    "Reading",
    "lookup",
    "by_name",
    "items",
    "encode_value",
    "decode_value",
    "decode",
    "di_to_wire",
    "di_from_wire",
    "di_text",
    "status_flags",
    "STATUS_WORDS",
    "STATUS3",
]

STATUS3 = 0x04000503  # meter running status word 3: relay, power hold, meter type ...

READ, WRITE, READ_WRITE = "r", "w", "rw"


@dataclass(frozen=True, slots=True)
class DataItem:
    """One data identifier: what it is called, how its value is written and who may touch it."""

    di: int
    name: str
    fmt: Format
    unit: str
    access: str  # "r" read only, "w" write only (passwords, commands), "rw"
    title: str

    @property
    def length(self) -> int | None:
        """Nominal value length in bytes (None: variable, e.g. blocks and tables)."""
        return self.fmt.length


class UnknownValue(bytes):
    """Value bytes of a DI the registry does not know: raw bytes, flagged."""

    unknown = True
    di: int = 0

    def __new__(cls, raw: bytes, di: int = 0) -> UnknownValue:
        obj = super().__new__(cls, raw)
        obj.di = di
        return obj

    def __repr__(self) -> str:
        return f"UnknownValue(di={self.di:08X}, {bytes(self)!r})"


class Reading(NamedTuple):
    """A decoded value: the item (None if unknown), the value, and whether the DI was unknown."""

    di: int
    item: DataItem | None
    value: Any
    unknown: bool


_REGISTRY: dict[int, DataItem] = {}
_BY_NAME: dict[str, DataItem] = {}


def _add(di: int, name: str, fmt: Format, unit: str, access: str, title: str) -> None:
    if di in _REGISTRY or name in _BY_NAME:
        raise ValueError(f"duplicate DI {di:08X} / {name}")
    item = DataItem(di, name, fmt, unit, access, title)
    _REGISTRY[di] = item
    _BY_NAME[name] = item


def di_to_wire(di: int) -> bytes:
    """0x00010000 -> b'\\x00\\x00\\x01\\x00' (DI0 first)."""
    if isinstance(di, bool) or not isinstance(di, int) or not 0 <= di <= 0xFFFFFFFF:
        raise ProtocolError("value", f"DI must be an int 0..FFFFFFFF written DI3..DI0, got {di!r}")
    return di.to_bytes(4, "little")


def di_from_wire(raw: bytes) -> int:
    """4 wire bytes (DI0 first) -> int written DI3..DI0."""
    if len(raw) < 4:
        raise ProtocolError("truncated", f"a DI takes 4 bytes, got {len(raw)}")
    return int.from_bytes(raw[:4], "little")


def di_text(di: int) -> str:
    """0x00010000 -> '00 01 00 00' (as people read it)."""
    return " ".join(f"{b:02X}" for b in di.to_bytes(4, "big"))


# --------------------------------------------------------------------------------------
# The registry (dlt645.md section 5, plus the prepaid parameters of prepaid-meter.md)

KWH = Bcd("XXXXXX.XX")
YUAN = Bcd("XXXXXX.XX")
PRICE = Bcd("XXXX.XXXX")
SIGNED_KWH = Bcd("XXXXXX.XX", signed=True)  # also yuan: balances before/after a purchase
_TARIFFS = 63

for _base, _nm, _ttl in (
    (0x00000000, "combined_active", "combined active energy"),
    (0x00010000, "forward_active", "forward active energy"),
    (0x00020000, "reverse_active", "reverse active energy"),
):
    _add(_base, f"{_nm}_total", KWH, "kWh", READ, f"{_ttl}, total")
    for _t in range(1, _TARIFFS + 1):
        _add(_base | _t << 8, f"{_nm}_t{_t}", KWH, "kWh", READ, f"{_ttl}, tariff {_t}")
    _add(_base | 0xFF00, f"{_nm}_block", Block(KWH), "kWh", READ, f"{_ttl}: total, tariff 1..n")

# Maximum demand and when it occurred (class 01): DI2 the quantity, DI1 00 total / 01..3F tariff n
# / FF all of them, DI0 00 the current period / 01..0C the n-th last settlement
for _kind, _nm, _ttl, _unit in (
    (0x01, "forward_active", "forward active", "kW"),
    (0x02, "reverse_active", "reverse active", "kW"),
    (0x03, "combined_reactive_1", "combined reactive 1", "kvar"),
    (0x04, "combined_reactive_2", "combined reactive 2", "kvar"),
):
    _demand = Record(("demand", Bcd("XX.XXXX")), ("time", Clock("YYMMDDhhmm")))
    for _n in range(13):
        _base = 0x01000000 | _kind << 16 | _n
        _when = "" if _n == 0 else f", last-{_n} settlement"
        _sfx = "" if _n == 0 else f"_last{_n}"
        _add(_base, f"{_nm}_max_demand_total{_sfx}", _demand, _unit, READ,
             f"{_ttl} maximum demand and its time, total{_when}")
        for _t in range(1, _TARIFFS + 1):
            _add(_base | _t << 8, f"{_nm}_max_demand_t{_t}{_sfx}", _demand, _unit, READ,
                 f"{_ttl} maximum demand and its time, tariff {_t}{_when}")
        _add(_base | 0xFF00, f"{_nm}_max_demand_block{_sfx}", Block(_demand), _unit, READ,
             f"{_ttl} maximum demand and its time: total, tariff 1..n{_when}")

_add(0x00900100, "remaining_energy", KWH, "kWh", READ, "remaining energy (energy-prepaid)")
_add(0x00900101, "overdraft_energy", KWH, "kWh", READ, "overdraft energy (energy-prepaid)")
_add(0x00900200, "remaining_money", YUAN, "yuan", READ, "remaining money")
_add(0x00900201, "overdraft_money", YUAN, "yuan", READ, "overdraft money")

for _base, _nm, _ttl, _fmt, _unit in (
    (0x02010000, "voltage", "voltage", Bcd("XXX.X"), "V"),
    (0x02020000, "current", "current", Bcd("XXX.XXX", signed=True), "A"),
    (0x02030000, "active_power", "active power", Bcd("XX.XXXX", signed=True), "kW"),
    (0x02060000, "power_factor", "power factor", Bcd("X.XXX", signed=True), ""),
):
    if _base in (0x02030000, 0x02060000):
        _add(_base, f"{_nm}_total", _fmt, _unit, READ, f"{_ttl}, total")
    for _k, _ph in enumerate("abc", start=1):
        _add(_base | _k << 8, f"{_nm}_{_ph}", _fmt, _unit, READ, f"phase {_ph.upper()} {_ttl}")
    _add(_base | 0xFF00, f"{_nm}_block", Block(_fmt), _unit, READ, f"{_ttl} block")

_add(0x02800002, "frequency", Bcd("XX.XX"), "Hz", READ, "grid frequency")
_add(0x02800020, "current_price", PRICE, "yuan/kWh", READ, "current price")
_add(0x02800021, "current_tariff_price", PRICE, "yuan/kWh", READ, "current tariff price")

_add(0x04000101, "date_week", Clock("YYMMDDWW"), "", READ_WRITE, "date and weekday (0 = Sunday)")
_add(0x04000102, "time", Clock("hhmmss"), "", READ_WRITE, "time of day")
_add(0x0400010C, "datetime_week", Clock("YYMMDDWWhhmmss"), "", READ_WRITE, "date, weekday and time")
for _k, _nm, _ttl in (
    (6, "zone_set2_switch_time", "switch-over time to year-zone set 2"),
    (7, "day_table_set2_switch_time", "switch-over time to day-table set 2"),
    (8, "price_set2_switch_time", "switch-over time to tariff-price set 2"),
    (9, "ladder_set2_switch_time", "switch-over time to ladder set 2"),
):
    _add(0x04000100 | _k, _nm, Clock("YYMMDDhhmm"), "", READ_WRITE, _ttl)

for _k, _nm, _ttl in (
    (1, "year_zone_count", "year time-zone count"),
    (2, "day_table_count", "day-table count"),
    (3, "slots_per_day", "time slots per day"),
    (4, "tariff_count", "tariff count"),
    (5, "holiday_count", "public holiday count"),
    (7, "ladder_count", "ladder (step) count"),
):
    _add(0x04000200 | _k, _nm, Bcd("NN"), "", READ_WRITE, _ttl)

_add(0x04000306, "ct_ratio", Bcd("XXXXXX"), "", READ_WRITE, "current transformer ratio")
_add(0x04000307, "pt_ratio", Bcd("XXXXXX"), "", READ_WRITE, "voltage transformer ratio")
_add(0x04000401, "comm_address", Digits(6), "", READ_WRITE, "communication address")
_add(0x04000402, "meter_number", Digits(6), "", READ_WRITE, "meter number")
_add(0x0400040E, "customer_number", Digits(6), "", READ_WRITE, "customer number")

for _k in range(1, 8):
    _add(0x04000500 | _k, f"status_word_{_k}", Word(2), "", READ, f"running status word {_k}")
_add(0x040005FF, "status_words", Block(Word(2), 7), "", READ, "running status words 1..7")

for _k, _nm, _ttl, _unit in (
    (0x04000F01, "alarm_energy_1", "alarm energy limit 1", "kWh"),
    (0x04000F02, "alarm_energy_2", "alarm energy limit 2", "kWh"),
    (0x04000F03, "hoarding_energy_limit", "hoarding energy limit", "kWh"),
    (0x04000F04, "overdraft_energy_limit", "overdraft energy limit", "kWh"),
    (0x04001001, "alarm_money_1", "alarm money limit 1", "yuan"),
    (0x04001002, "alarm_money_2", "alarm money limit 2", "yuan"),
    (0x04001003, "overdraft_money_limit", "overdraft money limit", "yuan"),
    (0x04001004, "hoarding_money_limit", "hoarding (maximum balance) money limit", "yuan"),
    (0x04001005, "close_permitted_money", "close-permitted money threshold", "yuan"),
):
    _add(_k, _nm, KWH if _unit == "kWh" else YUAN, _unit, READ_WRITE, _ttl)
_add(0x04001006, "refund_amount", YUAN, "yuan", WRITE, "refund amount")
_add(0x04001401, "trip_delay", Bcd("NNNN"), "min", READ_WRITE, "trip delay")

for _k in range(10):
    _add(0x04000C01 + _k, f"password_level_{_k}", Binary(4), "", WRITE, f"password of level {_k:02d}")

for _set in (1, 2):
    _base = 0x04000000 | _set << 16
    _add(_base, f"zone_table_set{_set}", Table("MMDDNN"), "", READ_WRITE, f"year time-zone table, set {_set}")
    for _k in range(1, 9):
        _add(_base | _k, f"day_table_set{_set}_{_k}", Table("hhmmNN"), "", READ_WRITE, f"day table {_k}, set {_set}")
    _base = 0x04050000 | _set << 8
    for _t in range(1, _TARIFFS + 1):
        _add(_base | _t, f"price_set{_set}_t{_t}", PRICE, "yuan/kWh", READ_WRITE, f"tariff {_t} price, set {_set}")
    _add(_base | 0xFF, f"price_set{_set}_block", Block(PRICE), "yuan/kWh", READ_WRITE, f"tariff prices, set {_set}")
    _thr = 0x04060000 | (2 * _set - 2) << 8
    _prc = 0x04060000 | (2 * _set - 1) << 8
    for _k in range(1, 7):
        _add(_thr | _k, f"ladder_set{_set}_threshold_{_k}", KWH, "kWh", READ_WRITE, f"ladder threshold {_k}, set {_set}")
    for _k in range(1, 8):
        _add(_prc | _k, f"ladder_set{_set}_price_{_k}", PRICE, "yuan/kWh", READ_WRITE, f"ladder price {_k}, set {_set}")
    _add(_thr | 0xFF, f"ladder_set{_set}_thresholds", Block(KWH, 6), "kWh", READ_WRITE, f"ladder thresholds, set {_set}")
    _add(_prc | 0xFF, f"ladder_set{_set}_prices", Block(PRICE, 7), "yuan/kWh", READ_WRITE, f"ladder prices, set {_set}")

# Purchase records: 0333 money purchases, 0332 energy purchases; DI0 = last 1..10
for _cls, _kind, _unit in ((0x03330000, "purchase", "yuan"), (0x03320000, "energy_purchase", "kWh")):
    for _n in range(1, 11):
        _add(_cls | 0x0100 | _n, f"{_kind}_{_n}_time", Clock("YYMMDDhhmm"), "", READ, f"last-{_n} {_kind.replace('_', ' ')} time")
        _add(_cls | 0x0200 | _n, f"{_kind}_{_n}_count", Bcd("NNNN"), "", READ, f"purchase count after last-{_n} {_kind.replace('_', ' ')}")
        for _k, _what in ((3, "amount"), (4, "before"), (5, "after"), (6, "cumulative")):
            _add(
                _cls | _k << 8 | _n,
                f"{_kind}_{_n}_{_what}",
                SIGNED_KWH if _what in ("before", "after") else KWH,  # a balance may be overdrawn
                _unit,
                READ,
                f"last-{_n} {_kind.replace('_', ' ')}: {dict(amount='amount', before='balance before', after='balance after', cumulative='cumulative purchased')[_what]}",
            )

# Trip (1D) and close (1E) event records; DI0 = last 1..10
_TIME6 = Clock("YYMMDDhhmmss")
for _cls, _kind in ((0x1D000000, "trip"), (0x1E000000, "close")):
    _add(_cls | 0x0001, f"{_kind}_count", Bcd("NNNNNN"), "", READ, f"{_kind} event count")
    for _n in range(1, 11):
        _add(_cls | 0x0100 | _n, f"{_kind}_{_n}_time", _TIME6, "", READ, f"last-{_n} {_kind}: time")
        _add(_cls | 0x0200 | _n, f"{_kind}_{_n}_operator", Word(4), "", READ, f"last-{_n} {_kind}: operator code")
        _add(_cls | 0x0300 | _n, f"{_kind}_{_n}_forward", KWH, "kWh", READ, f"last-{_n} {_kind}: forward active total")
        _add(_cls | 0x0400 | _n, f"{_kind}_{_n}_reverse", KWH, "kWh", READ, f"last-{_n} {_kind}: reverse active total")
        _add(
            _cls | 0xFF00 | _n,
            f"{_kind}_{_n}_record",
            Record(("time", _TIME6), ("operator", Word(4)), ("forward", KWH), ("reverse", KWH)),
            "",
            READ,
            f"last-{_n} {_kind}: whole record",
        )

for _k, _nm in (
    (0x00, "programming"),
    (0x01, "meter_clear"),
    (0x02, "demand_clear"),
    (0x03, "event_clear"),
    (0x04, "time_set"),
    (0x05, "table_programming"),
    (0x0D, "cover_open"),
    (0x0E, "terminal_open"),
):
    _add(0x03300000 | _k << 8, f"{_nm}_count", Bcd("NNNNNN"), "", READ, f"{_nm.replace('_', ' ')} event count")

# The meter image's own records (firmware/meter/dis.py): programming events (the first ten
# DIs written; FFFFFFFF = unused slot) and MAC failures
for _n in range(1, 11):
    _add(
        0x03300000 | _n,
        f"programming_{_n}",
        Record(("time", _TIME6), ("operator", Word(4)), ("dis", Block(Word(4), count=10))),
        "",
        READ,
        f"last-{_n} programming event",
    )
_add(0x033E0000, "mac_failure_count", Bcd("NNNNNN"), "", READ, "MAC failure count")
for _n in range(1, 11):
    _add(
        0x033E0000 | _n,
        f"mac_failure_{_n}",
        Record(("time", _TIME6), ("operator", Word(4)), ("control", Word(1)), ("di", Word(4))),
        "",
        READ,
        f"last-{_n} MAC failure",
    )

# Keypad tokens the meter accepted (protocol/TOKENS.md, firmware/meter/token.py): kind = class << 4 |
# subclass (00 credit, 20 clear MAC lock, 21 set hoarding limit, 22 key change), the token's TID
# (0 for a key change), the value (fen for credit and a hoarding limit, the new token-key revision
# for a key change) and the balance before and after. The head-end reads them to learn which
# vouchers were used.
_TOKEN_RECORD = Record(("time", _TIME6), ("kind", Word(1)), ("tid", Word(4)), ("value", YUAN), ("before", SIGNED_KWH),
                       ("after", SIGNED_KWH))
_add(0x033D0000, "token_count", Bcd("NNNNNN"), "", READ, "accepted keypad token count")
for _n in range(1, 11):
    _add(0x033D0000 | _n, f"token_{_n}", _TOKEN_RECORD, "", READ, f"last-{_n} accepted keypad token")

# The meter's own faults (firmware/meter/events.py FAULT): code 1 = the newest state record was
# damaged and the one before it used (status word 1 memory_fault), 2 = the main loop failed and
# the meter restarted (internal_program_error; info = CRC-32 of the text in the board's fault log)
_add(0x033F0000, "fault_count", Bcd("NNNNNN"), "", READ, "meter fault count")
for _n in range(1, 11):
    _add(
        0x033F0000 | _n,
        f"fault_{_n}",
        Record(("time", _TIME6), ("code", Word(1)), ("info", Word(4))),
        "",
        READ,
        f"last-{_n} meter fault",
    )

# Daily freezes (class 05, 0506): the meter freezes at its daily freeze time (midnight unless a
# 16H 9999hhmm moved it) and on a 16H 99999999 instant freeze; DI0 = last 1..10
for _n in range(1, 11):
    _add(0x05060000 | _n, f"daily_freeze_{_n}_time", Clock("YYMMDDhhmm"), "", READ, f"last-{_n} daily freeze: time")
    _add(
        0x05060100 | _n,
        f"daily_freeze_{_n}_forward_active",
        Block(KWH, count=5),
        "kWh",
        READ,
        f"last-{_n} daily freeze: forward active energy, total and tariffs 1..4",
    )

# 03H security sub-commands (only meaningful inside 03H frames; payloads/security.py has their layouts)
for _k, _nm, _ttl in (
    (0x070000FF, "identity_auth", "identity authentication"),
    (0x070001FF, "set_auth_validity", "set authentication validity"),
    (0x070002FF, "end_auth", "end authentication"),
    (0x070101FF, "open_account", "open account"),
    (0x070102FF, "recharge", "recharge"),
    (0x070301FF, "key_update", "key update"),
    (0x078102FF, "status_query", "security status query"),
):
    _add(_k, _nm, Binary(), "", WRITE, _ttl)


# --------------------------------------------------------------------------------------
# Status words: bit -> flag name

STATUS_WORD_1 = {
    2: "clock_battery_low",
    3: "reading_battery_low",
    4: "active_power_reverse",
    5: "reactive_power_reverse",
    8: "control_circuit_error",
    9: "esam_error",
    12: "internal_program_error",
    13: "memory_fault",
    14: "overdraft",
    15: "clock_fault",
}
STATUS_WORD_3 = {
    0: "slot_set_2",
    3: "programming_allowed",
    4: "relay_open",
    5: "zone_set_2",
    6: "relay_command_open",
    7: "pre_trip_alarm",
    10: "price_set_2",
    11: "ladder_set_2",
    12: "power_hold",
    13: "authenticated",
    14: "account_not_opened",
    15: "remote_account_open",
}
# Word 2: power flow direction per phase (set = reverse)
STATUS_WORD_2 = {
    0: "phase_a_active_reverse",
    1: "phase_b_active_reverse",
    2: "phase_c_active_reverse",
    4: "phase_a_reactive_reverse",
    5: "phase_b_reactive_reverse",
    6: "phase_c_reactive_reverse",
}
# Words 4, 5, 6: the faults of phase A, B, C (the same bits for each phase)
STATUS_WORD_PHASE = {
    0: "loss_of_voltage",
    1: "under_voltage",
    2: "over_voltage",
    3: "loss_of_current",
    4: "over_current",
    5: "overload",
    6: "power_reverse",
    7: "phase_break",
    8: "current_break",
}
# Word 7: faults across the phases
STATUS_WORD_7 = {
    0: "voltage_reverse_sequence",
    1: "current_reverse_sequence",
    2: "voltage_imbalance",
    3: "current_imbalance",
    4: "auxiliary_supply_lost",
    5: "power_down",
    6: "demand_over_limit",
    7: "power_factor_low",
    8: "current_severe_imbalance",
}
_SUPPLY = {0: "supply_mains", 1: "supply_auxiliary", 2: "supply_battery", 3: "supply_reserved"}
_METER_TYPE = {0: "non_prepaid", 1: "energy_prepaid", 2: "money_prepaid", 3: "meter_type_reserved"}


_WORD_BITS = {
    0x04000501: STATUS_WORD_1,
    0x04000502: STATUS_WORD_2,
    0x04000504: STATUS_WORD_PHASE,
    0x04000505: STATUS_WORD_PHASE,
    0x04000506: STATUS_WORD_PHASE,
    0x04000507: STATUS_WORD_7,
}
STATUS_WORDS = (0x04000501, 0x04000502, 0x04000503, 0x04000504, 0x04000505, 0x04000506, 0x04000507)


def status_flags(di: int, word: int) -> list[str]:
    """Named flags of running status word 1..7 (bits the standard reserves: 'bitN')."""
    if di == STATUS3:
        flags = [name for bit, name in STATUS_WORD_3.items() if word >> bit & 1]
        return flags + [_SUPPLY[word >> 1 & 3], _METER_TYPE[word >> 8 & 3]]
    names = _WORD_BITS.get(di, {})
    return [names.get(b, f"bit{b}") for b in range(16) if word >> b & 1]


# --------------------------------------------------------------------------------------
# Public lookups and codecs


def lookup(di: int) -> DataItem | None:
    """The DataItem for ``di`` (int written DI3..DI0), or None if the registry does not know it."""
    return _REGISTRY.get(di)


def by_name(name: str) -> DataItem:
    """The DataItem called ``name`` (e.g. 'remaining_money'); KeyError names close matches."""
    try:
        return _BY_NAME[name]
    except KeyError:
        close = [n for n in _BY_NAME if name in n or n in name][:5]
        raise KeyError(f"no data item named {name!r}" + (f"; did you mean {close}?" if close else "")) from None


def items() -> list[DataItem]:
    """Every registered DataItem, in DI order."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def decode_value(di: int, raw: bytes) -> Any:
    """Value bytes (PLAIN, low byte first) -> exact value; unknown DI -> UnknownValue(raw)."""
    item = _REGISTRY.get(di)
    if item is None:
        return UnknownValue(bytes(raw), di)
    return item.fmt.decode(bytes(raw))


def encode_value(di: int, value: Any, length: int | None = None) -> bytes:
    """Exact value -> value bytes (PLAIN); an unknown DI takes bytes as they are."""
    item = _REGISTRY.get(di)
    if item is None:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        raise ProtocolError("unknown-di", f"DI {di_text(di)} is not in the registry; pass its value as raw bytes")
    return item.fmt.encode(value, length)


def decode(di: int, raw: bytes) -> Reading:
    """Like decode_value, but also says which item it was and whether the DI was unknown."""
    item = _REGISTRY.get(di)
    if item is None:
        return Reading(di, None, UnknownValue(bytes(raw), di), True)
    return Reading(di, item, item.fmt.decode(bytes(raw)), False)

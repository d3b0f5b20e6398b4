"""What each command kind's parameters may be: checked when a command is queued and again by
the worker, with the same rules (and the same encoders) the worker and the meter apply.

A command that passes here can still be refused by a meter (its hoarding limit, its account), but
never for a value that could not have worked anywhere: nothing an operator types can sit in a
meter's queue failing forever.  ``check`` raises :class:`~headend.store.InvalidInput` naming the
field and its allowed range; money is said in yuan, as the operator typed it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from headend.commands.meter_client import RELAY_ACTIONS, money_value, parse_di
from headend.money import yuan
from headend.store import InvalidInput, check_customer
from protocol import ProtocolError
from protocol import di as dis

__all__ = ["KINDS", "LIMIT_NAMES", "MAX_RECHARGE_FEN", "SYNC_MODES", "check", "limit_items", "tariff_items"]

LIMIT_NAMES = {
    "alarm1": 0x04001001,
    "alarm2": 0x04001002,
    "overdraft": 0x04001003,
    "hoarding": 0x04001004,
    "close_ok": 0x04001005,
}
KINDS = ("read", "recharge", "sync_time", "set_limits", "set_tariff", *RELAY_ACTIONS)
SYNC_MODES = ("auto", "broadcast", "set")
MAX_RECHARGE_FEN = 2**32 - 1  # the recharge frame carries the amount in 4 bytes of fen
_MAX_READ_ITEMS = 64
_TARIFFS = 4  # sharp, peak, flat, valley: the meter's day-table tariff numbers are 1..4
_MAX_SLOTS = 14
_MAX_LADDER = 6


def _whole(params: dict[str, Any], name: str, what: str) -> int:
    v = params.get(name)
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidInput(f"{what}: {name} must be a whole number, got {v!r}")
    return v


def _encodes(di: int, value: Any, field: str) -> tuple[int, Any]:
    try:
        dis.encode_value(di, value)
    except (ProtocolError, ValueError, TypeError) as exc:
        raise InvalidInput(f"{field} {value}: {exc}") from None
    return di, value


def limit_items(params: dict[str, Any]) -> list[tuple[int, Any]]:
    """The (DI, value) writes of a set_limits command; InvalidInput names a bad field and its range."""
    items = []
    for name, di in LIMIT_NAMES.items():
        key = f"{name}_fen"
        if params.get(key) is None:
            continue
        fen = _whole(params, key, "money limit")
        if not 0 <= fen <= 99_999_999:
            raise InvalidInput(f"{name.replace('_', '-')} {yuan(fen)} yuan is out of range: "
                               "a meter holds 0.00 to 999999.99 yuan")
        items.append(_encodes(di, money_value(fen), name))
    if not items:
        raise InvalidInput(f"set_limits needs at least one of {', '.join(n + '_fen' for n in LIMIT_NAMES)}")
    return items


def tariff_items(params: dict[str, Any]) -> list[tuple[int, Any]]:
    """The (DI, value) writes of a set_tariff command; InvalidInput names a bad field and its range."""
    s = params.get("set", 1)
    if s not in (1, 2) or isinstance(s, bool):
        raise InvalidInput(f"tariff set must be 1 or 2, got {s!r}")
    items: list[tuple[int, Any]] = []
    prices = params.get("prices") or []
    if len(prices) > _TARIFFS:
        raise InvalidInput(f"prices: a meter has {_TARIFFS} tariffs, got {len(prices)} prices")
    for k, p in enumerate(prices, start=1):
        items.append(_encodes(0x04050000 | s << 8 | k, Decimal(int(p)).scaleb(-4), f"price {k} (yuan/kWh)"))
    thresholds = params.get("ladder_thresholds_wh") or []
    if len(thresholds) > _MAX_LADDER:
        raise InvalidInput(f"ladder thresholds: at most {_MAX_LADDER}, got {len(thresholds)}")
    if any(b <= a for a, b in zip(thresholds, thresholds[1:])):
        raise InvalidInput(f"ladder thresholds must rise: {thresholds}")
    for k, wh in enumerate(thresholds, start=1):
        items.append(_encodes(0x04060000 | (2 * s - 2) << 8 | k, Decimal(int(wh)).scaleb(-3),
                              f"ladder threshold {k} (kWh)"))
    ladder = params.get("ladder_prices") or []
    if len(ladder) > _MAX_LADDER + 1:
        raise InvalidInput(f"ladder prices: at most {_MAX_LADDER + 1}, got {len(ladder)}")
    for k, p in enumerate(ladder, start=1):
        items.append(_encodes(0x04060000 | (2 * s - 1) << 8 | k, Decimal(int(p)).scaleb(-4),
                              f"ladder price {k} (yuan/kWh)"))
    if params.get("day_table"):
        from protocol.formats import SlotEntry

        table = [SlotEntry(*map(int, e)) for e in params["day_table"]]
        if len(table) > _MAX_SLOTS:
            raise InvalidInput(f"day table: at most {_MAX_SLOTS} slots, got {len(table)}")
        for e in table:
            if not 1 <= e.tariff <= _TARIFFS:
                raise InvalidInput(f"day table {e.hour:02d}:{e.minute:02d}={e.tariff}: tariff must be 1..{_TARIFFS}")
        starts = [e.hour * 60 + e.minute for e in table]
        if any(b <= a for a, b in zip(starts, starts[1:])):
            raise InvalidInput("day table: slot start times must rise through the day")
        items.append(_encodes(0x04000000 | s << 16 | 1, table, "day table"))
    if not items:
        raise InvalidInput("set_tariff needs prices, ladder_thresholds_wh/ladder_prices or day_table")
    return items


def check(kind: str, params: Any) -> None:
    """Refuse (InvalidInput) parameters that no meter could ever carry out, naming the field and range."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown command kind {kind!r}; known: {', '.join(KINDS)}")
    p = params if params is not None else {}
    if not isinstance(p, dict):
        raise InvalidInput(f"{kind} parameters must be a JSON object, got {params!r}")
    if kind == "recharge":
        fen = _whole(p, "amount_fen", "recharge")
        if not 1 <= fen <= MAX_RECHARGE_FEN:
            raise InvalidInput(f"recharge amount {yuan(fen)} yuan is out of range: "
                               f"0.01 to {yuan(MAX_RECHARGE_FEN)} yuan")
        if p.get("customer"):
            check_customer(str(p["customer"]))
    elif kind == "read":
        names = p.get("dis") or ([p["di"]] if "di" in p else [])
        if len(names) > _MAX_READ_ITEMS:
            raise InvalidInput(f"read: at most {_MAX_READ_ITEMS} data items at once, got {len(names)}")
        for name in names:
            try:
                parse_di(str(name))
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
    elif kind == "sync_time":
        if p.get("mode", "auto") not in SYNC_MODES:
            raise InvalidInput(f"sync_time mode must be one of {', '.join(SYNC_MODES)}, got {p.get('mode')!r}")
        if "max_broadcast_s" in p and not 0 <= _whole(p, "max_broadcast_s", "sync_time") <= 300:
            raise InvalidInput("sync_time max_broadcast_s must be 0..300 (meters take at most 5 minutes by broadcast)")
    elif kind == "set_limits":
        limit_items(p)
    elif kind == "set_tariff":
        try:
            tariff_items(p)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInput):
                raise
            raise InvalidInput(f"set_tariff parameters: {exc}") from None

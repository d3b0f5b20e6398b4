"""Head-end commands with certain outcomes: the meter client, the outbox worker, read cycles.

Queue a command with ``store.enqueue(meter, kind, params, actor=..., idem_key=...)``; `headend
serve` (:class:`OutboxWorker`) carries it out and leaves it ``confirmed`` (reply stored) or
``failed`` (``last_error`` says why).  Kinds and params:

=================  =========================================================  ==========================================
kind               params                                                     reply (when confirmed)
=================  =========================================================  ==========================================
read               {"dis": ["00010000", "remaining_money", ...]}              {"values": {DI: {name, value, unit[, flags]}},
                                                                              "read_at"}; readings stored (Wh, fen, ...)
recharge           {"amount_fen": int}                                        {"purchase_count", "result": "credited" |
                                                                              "repeat", "balance_fen", "balance_before_fen"}
trip, close_permitted, close_direct, hold_on, hold_off, alarm_on, alarm_off   {"status_word_3", "flags", "relay"}
sync_time          {"mode": "auto" | "broadcast" | "set"}                    {"method", "offset_s", "offset_after_s"}
set_limits         {"alarm1_fen", "alarm2_fen", "overdraft_fen",              {"written": {DI: value read back}}
                   "hoarding_fen", "close_ok_fen"} (any subset)
set_tariff         {"set": 1|2, "prices": [0.0001 yuan/kWh], "day_table":     {"set", "written"}
                   [[hh, mm, tariff]], "ladder_thresholds_wh", "ladder_prices"}
=================  =========================================================  ==========================================

Recharges are never failed for lack of an answer (queued, or unresolved once sent, until the
meter's purchase count settles them) and credit exactly once; other kinds fail after
``max_attempts``.  For bulk collection without
one command per meter use :func:`headend.commands.collect.read_cycle`.
"""

from headend.commands.meter_client import (
    DEFAULT_READ_DIS,
    RELAY_ACTIONS,
    MeterClient,
    MeterRefused,
    MeterTarget,
    ReadValue,
    decode_err,
    decode_serr,
    parse_di,
    reading_row,
)
from headend.commands.worker import KINDS, LIMIT_NAMES, OutboxWorker, target_of

__all__ = [
    "DEFAULT_READ_DIS",
    "KINDS",
    "LIMIT_NAMES",
    "RELAY_ACTIONS",
    "MeterClient",
    "MeterRefused",
    "MeterTarget",
    "OutboxWorker",
    "ReadValue",
    "decode_err",
    "decode_serr",
    "parse_di",
    "reading_row",
    "target_of",
]

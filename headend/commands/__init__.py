"""Head-end commands with certain outcomes: the meter client and the outbox worker."""

from headend.commands.meter_client import (
    RELAY_ACTIONS,
    MeterClient,
    MeterRefused,
    MeterTarget,
    ReadValue,
    decode_err,
    decode_serr,
    parse_di,
)
from headend.commands.worker import KINDS, LIMIT_NAMES, OutboxWorker, reading_row, target_of

__all__ = [
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

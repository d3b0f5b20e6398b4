"""What the head-end learns from a meter's token records (DIs 033D00nn, protocol/README.md 25b):
a credit record marks the voucher with that meter and TID used (its money is on the meter), a
key-change record confirms the key change. Records are read more than once; each counts once."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Iterable

from headend.store import NotFound, Store
from protocol import di

__all__ = ["TOKEN_RECORDS", "TOKEN_BLOCK", "note_token_records"]

log = logging.getLogger(__name__)

TOKEN_RECORDS = range(0x033D0001, 0x033D000B)  # the last-1 .. last-10 token records
TOKEN_BLOCK = 0x033D00FF  # the count and all ten at once (a block read with follow-ups)
_CREDIT, _KEY_CHANGE = 0x00, 0x22


def note_token_records(store: Store, meter: str, values: Iterable[tuple[int, Any]], *, actor: str) -> int:
    """Apply the token records among (DI, decoded value) pairs read from ``meter``; how many
    vouchers this marked used. A record of a TID no voucher of ours carries is logged and skipped
    (a token vended before this store, or a test token)."""
    n = 0
    pairs: list[tuple[int, Any]] = []
    for d, v in values:
        if d == TOKEN_BLOCK and isinstance(v, (bytes, bytearray)):
            # a DI0 block answers index 00 first (the count, 3 bytes), then the ten 23-byte records;
            # the registry lists the records, not the block (it takes follow-up reads)
            pairs += [(TOKEN_RECORDS[0], di.decode_value(TOKEN_RECORDS[0], bytes(v[k:k + 23])))
                      for k in range(3, len(v) - 22, 23)]
        else:
            pairs.append((d, v))
    for d, rec in pairs:
        if d not in TOKEN_RECORDS or not isinstance(rec, dict) or rec.get("time") is None:
            continue  # not a record, or an empty slot (all zeros)
        at = rec["time"]
        used_at = int(at.timestamp()) if isinstance(at, datetime) else int(store.now())
        if rec["kind"] == _CREDIT:
            try:
                before = store.get_voucher_by_tid(meter, rec["tid"])
                if before.state != "used":
                    store.mark_voucher_used(meter, rec["tid"], used_at=used_at, actor=actor)
                    n += 1
            except NotFound:
                log.warning("meter %s reports token TID %s, which no voucher of this head-end carries", meter,
                            rec["tid"])
        elif rec["kind"] == _KEY_CHANGE:
            store.confirm_voucher_key(meter, int(rec["value"] * 100), at=used_at, actor=actor)
    return n

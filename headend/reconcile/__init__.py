"""Channel statements checked against the journal (对账), line by line, and the day marked reconciled.

    from headend.reconcile import reconcile_day
    result = reconcile_day(store, "icbc-online", "2026-12-04", Path("stmt.csv").read_bytes(),
                           profile="csv", actor="alice")
    result.counts      # {"matched": 998, "ours_only": 1, "theirs_only": 0, "amount_mismatch": 1, ...}

Every line of the statement and every payment of that channel and business day lands in exactly
one class: ``matched`` (same transaction id, amount and state), ``amount_mismatch``,
``state_mismatch`` (reversed on one side only), ``ours_only`` (单边账: we have it, they do not),
``theirs_only``.  A run with no discrepancy marks the day reconciled; otherwise each discrepancy is
resolved by an operator (``resolve``: a reason, and where money must move a journal adjustment),
and the day is reconciled when the last one is.  The report of every run is kept.
"""

from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, Callable, Mapping

from headend.flatfile import no_cycle_collection
from headend.reconcile.statement import Line, Statement, StatementError, load_profile, parse_statement
from headend.store import Store

__all__ = ["CLASSES", "DISCREPANCIES", "Result", "StatementError", "classify", "reconcile_day", "resolve"]

CLASSES = ("matched", "amount_mismatch", "state_mismatch", "ours_only", "theirs_only")
DISCREPANCIES = CLASSES[1:]
# Channels whose money arrives by a statement; cash at the counter is counted at the shift close.
STATEMENT_KINDS = ("unionpay_pos", "online_banking", "phone_banking", "mobile_app", "third_party", "agent",
                   "kiosk", "bank_withholding")


_NO_PAYMENT = (None, None, None, None)
_REVERSED = {"paid": 0, "reversed": 1}


@dataclass
class Result:
    """A reconciliation run: counts and totals, and the discrepancies (``problems``); ``rows``
    lists every line and payment with its class (the matched ones are made when asked for, from
    the store, which must still be open)."""

    channel: str
    day: str
    problems: list[dict[str, Any]]
    counts: dict[str, int]
    totals: dict[str, int]
    reconciled: bool
    file_sha256: str = ""
    notes: list[str] = field(default_factory=list)
    _matched: Callable[[], list[dict[str, Any]]] | None = field(default=None, repr=False)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every statement line and every payment of the day, each with its class."""
        return (self._matched() if self._matched else []) + self.problems

    def to_dict(self, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The run as data, with ``rows`` (default: every row)."""
        return {"channel": self.channel, "day": self.day, "counts": self.counts, "totals": self.totals,
                "reconciled": self.reconciled, "file_sha256": self.file_sha256,
                "rows": self.rows if rows is None else rows}


def _key(fen: int, state: str) -> int:
    """How one payment is matched: its amount and whether it is reversed, as one int (see
    Store.statement_keys)."""
    return fen * 2 + _REVERSED[state]


def _split(ours: Mapping[str, int], theirs: Statement) -> tuple[list[int], list[tuple[str, int | None, str]]]:
    """Match the statement against our payments' keys (txn id -> ``_key``): the indexes of the
    matched lines, and (class, line index or None, txn id) for every other line and payment.

    Each step is one pass of a builtin over a column (map, compress): no Python step per line."""
    theirs_keys = map(operator.add, map(operator.add, theirs.amount_fen, theirs.amount_fen),
                      map(_REVERSED.__getitem__, theirs.state))
    same = list(map(operator.eq, map(ours.get, theirs.txn_id), theirs_keys))
    matched = list(compress(range(len(same)), same))
    problems: list[tuple[str, int | None, str]] = []
    for i in compress(range(len(same)), map(operator.not_, same)):
        txn = theirs.txn_id[i]
        k = ours.get(txn)
        cls = ("theirs_only" if k is None else "amount_mismatch" if k >> 1 != theirs.amount_fen[i]
               else "state_mismatch")
        problems.append((cls, i, txn))
    found = len(matched) + sum(c != "theirs_only" for c, _, _ in problems)
    if found < len(ours):    # payments the statement does not have
        problems += [("ours_only", None, txn) for txn in sorted(ours.keys() - set(theirs.txn_id))]
    return matched, problems


def _row(cls: str, i: int | None, theirs: Statement, txn: str, o: tuple[Any, ...] | None) -> dict[str, Any]:
    o = o or _NO_PAYMENT
    return {"txn_id": txn, "class": cls,
            "line": None if i is None else theirs.line_no[i],
            "their_fen": None if i is None else theirs.amount_fen[i],
            "their_fee_fen": None if i is None else theirs.fee_fen[i],
            "their_state": None if i is None else theirs.state[i],
            "our_fen": o[0], "our_state": o[1], "payment": o[2], "customer": o[3]}


def classify(ours: Mapping[str, tuple[int, str, int, str]], theirs: list[Line] | Statement) -> list[dict[str, Any]]:
    """One row per transaction id found on either side, with its class.

    ``ours``: txn id -> (amount fen, "paid"/"reversed", payment id, customer); ``theirs``: the
    statement's lines.  Pure: a dict join."""
    st = theirs if isinstance(theirs, Statement) else Statement.of(theirs)
    matched, problems = _split({t: _key(o[0], o[1]) for t, o in ours.items()}, st)
    return ([_row("matched", i, st, st.txn_id[i], ours[st.txn_id[i]]) for i in matched]
            + [_row(c, i, st, t, ours.get(t)) for c, i, t in problems])


def reconcile_day(store: Store, channel: str, day: str, data: bytes, *, profile: str, actor: str) -> Result:
    """Check a channel's statement for a business day against our payments; keep the report.

    The day is marked reconciled when nothing is out of line; a statement that cannot be read
    raises StatementError (naming the line) and changes nothing.  One pass over the statement
    and one query of the day's payments; only the discrepancies are made into rows."""
    store.get_channel(channel)  # NotFound for an unknown channel
    with no_cycle_collection():
        theirs = parse_statement(load_profile(profile), data)
        ours = store.statement_keys(channel, day)
        matched, split = _split(ours, theirs)
        paid = list(map(operator.not_, map(_REVERSED.__getitem__, theirs.state)))
        totals = {"their_gross_fen": sum(compress(theirs.amount_fen, paid)),
                  "their_fee_fen": sum(compress(theirs.fee_fen, paid)),
                  "their_net_fen": sum(compress(theirs.net_fen, paid)),
                  "our_gross_fen": sum(k >> 1 for k in ours.values() if not k & 1)}
    detail = store.statement_payments(channel, day, [t for c, _, t in split if c != "theirs_only"])
    problems = [_row(c, i, theirs, t, detail.get(t)) for c, i, t in split]
    counts = {c: 0 for c in CLASSES}
    counts["matched"] = len(matched)
    for r in problems:
        counts[r["class"]] += 1
    sha = hashlib.sha256(data).hexdigest()
    reconciled = store.record_reconciliation(channel, day, counts=counts, totals=totals, discrepancies=problems,
                                             file_sha256=sha, actor=actor)

    def matched_rows() -> list[dict[str, Any]]:
        every = store.statement_payments(channel, day)
        return [_row("matched", i, theirs, theirs.txn_id[i], every[theirs.txn_id[i]]) for i in matched]

    return Result(channel, day, problems, counts, totals, reconciled, sha, _matched=matched_rows)


def resolve(store: Store, channel: str, day: str, txn_id: str, *, actor: str, reason: str,
            adjust_fen: int = 0, customer: str | None = None) -> dict[str, Any]:
    """Close one discrepancy with a reason (and, where money must move, a journal adjustment on
    ``customer``). Returns the reconciliation's state (``reconciled`` once none is left open)."""
    return store.resolve_discrepancy(channel, day, txn_id, actor=actor, reason=reason, adjust_fen=adjust_fen,
                                     customer=customer)

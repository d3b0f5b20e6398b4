"""Channel statement reconciliations: each run's report, the discrepancies and their resolutions."""

from __future__ import annotations

from typing import Any, Iterable

from headend.store.ledger import Ledger
from headend.store.models import Conflict, InvalidInput, NotFound, dumps, loads


class Reconciliations(Ledger):
    def statement_keys(self, channel: str, day: str) -> dict[str, int]:
        """A channel's payments of a business day as the statement matches them: txn id ->
        amount_fen * 2 + 1 if reversed (else + 0): one int per payment, so a day of a million
        payments is one dict made without a Python step per row."""
        with self._tx(write=False) as tx:
            return dict(tx.all("SELECT txn_id, amount_fen * 2 + CASE WHEN state = 'reversed' THEN 1 ELSE 0 END"
                               " FROM payments WHERE channel = ? AND day = ?", (channel, day)))

    def statement_payments(self, channel: str, day: str, txn_ids: Iterable[str] | None = None,
                           ) -> dict[str, tuple[int, str, int, str]]:
        """A channel's payments of a business day (or only those with the given txn ids):
        txn id -> (fen, "paid"/"reversed", payment id, customer)."""
        sql = ("SELECT txn_id, amount_fen, CASE WHEN state = 'reversed' THEN 'reversed' ELSE 'paid' END, id, customer"
               " FROM payments WHERE channel = ? AND day = ?")
        with self._tx(write=False) as tx:
            if txn_ids is None:
                rows = tx.all(sql, (channel, day))
            else:
                ids, rows = list(txn_ids), []
                for lo in range(0, len(ids), 500):   # under every engine's parameter limit
                    chunk = ids[lo:lo + 500]
                    rows += tx.all(f"{sql} AND txn_id IN ({', '.join('?' for _ in chunk)})", (channel, day, *chunk))
        return {t: (int(a), s, int(i), c) for t, a, s, i, c in rows}

    def record_reconciliation(self, channel: str, day: str, *, counts: dict[str, int], totals: dict[str, int],
                              discrepancies: list[dict[str, Any]], file_sha256: str, actor: str) -> bool:
        """Keep a run's report and its open discrepancies (replacing an earlier run's, except
        resolutions already made); return whether the day is now reconciled."""
        now = self.now()
        with self._tx() as tx:
            done = {r[0] for r in tx.all("SELECT txn_id FROM reconcile_items WHERE channel = ? AND day = ?"
                                         " AND resolved_at IS NOT NULL", (channel, day))}
            tx.execute("DELETE FROM reconcile_items WHERE channel = ? AND day = ? AND resolved_at IS NULL",
                       (channel, day))
            tx.executemany("INSERT INTO reconcile_items (channel, day, txn_id, class, detail) VALUES (?, ?, ?, ?, ?)",
                           [(channel, day, d["txn_id"], d["class"], dumps(d)) for d in discrepancies
                            if d["txn_id"] not in done])
            open_left = len([d for d in discrepancies if d["txn_id"] not in done])
            status = "reconciled" if open_left == 0 else "open"
            tx.execute("DELETE FROM reconciliations WHERE channel = ? AND day = ?", (channel, day))
            tx.execute("INSERT INTO reconciliations (channel, day, status, counts, totals, file_sha256, at, actor)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (channel, day, status, dumps(counts), dumps(totals), file_sha256, now, actor))
            self.log_action(actor, "reconcile.run", f"{channel}/{day}", {"counts": counts, "status": status,
                                                                        "sha256": file_sha256})
            return status == "reconciled"

    def reconciliation(self, channel: str, day: str) -> dict[str, Any]:
        """The last run's report for a channel and day, with its discrepancies; NotFound if none."""
        with self._tx(write=False) as tx:
            r = tx.one("SELECT status, counts, totals, file_sha256, at, actor FROM reconciliations"
                       " WHERE channel = ? AND day = ?", (channel, day))
            if r is None:
                raise NotFound(f"channel {channel} has no reconciliation for {day}: run headend reconcile first")
            items = tx.all("SELECT txn_id, class, detail, resolved_at, resolved_by, reason, ledger_id"
                           " FROM reconcile_items WHERE channel = ? AND day = ? ORDER BY txn_id", (channel, day))
        return {"channel": channel, "day": day, "status": r[0], "counts": loads(r[1]), "totals": loads(r[2]),
                "file_sha256": r[3], "at": r[4], "actor": r[5],
                "items": [{"txn_id": t, "class": c, **(loads(d) or {}), "resolved_at": ra, "resolved_by": rb,
                           "reason": rs, "ledger_id": li} for t, c, d, ra, rb, rs, li in items]}

    def resolve_discrepancy(self, channel: str, day: str, txn_id: str, *, actor: str, reason: str,
                            adjust_fen: int = 0, customer: str | None = None) -> dict[str, Any]:
        """Resolve one open discrepancy (reason required; an adjustment books a journal row on the
        customer in the same transaction). The day becomes reconciled with the last one."""
        if not reason or not reason.strip():
            raise InvalidInput("a resolution needs --reason: what explains the difference")
        if adjust_fen and not customer:
            raise InvalidInput("an adjustment needs --customer: whose account the money moves on")
        with self._tx() as tx:
            row = tx.one("SELECT class, resolved_at FROM reconcile_items WHERE channel = ? AND day = ? AND txn_id = ?",
                         (channel, day, txn_id))
            if row is None:
                raise NotFound(f"no discrepancy {txn_id} in {channel}'s statement of {day}")
            if row[1] is not None:
                raise Conflict(f"discrepancy {txn_id} of {channel} {day} is already resolved")
            ledger_id = None
            if adjust_fen and customer:  # (checked above: an adjustment has a customer)
                entry, _ = self.adjust(customer, adjust_fen, actor=actor, reason=f"reconcile {channel} {day} "
                                       f"{txn_id}: {reason}", kind="adjustment",
                                       idem_key=f"reconcile:{channel}:{day}:{txn_id}")
                ledger_id = entry.id
            tx.execute("UPDATE reconcile_items SET resolved_at = ?, resolved_by = ?, reason = ?, ledger_id = ?"
                       " WHERE channel = ? AND day = ? AND txn_id = ?",
                       (self.now(), actor, reason, ledger_id, channel, day, txn_id))
            left = tx.all("SELECT COUNT(*) FROM reconcile_items WHERE channel = ? AND day = ? AND resolved_at IS NULL",
                          (channel, day))[0][0]
            if left == 0:
                tx.execute("UPDATE reconciliations SET status = 'reconciled' WHERE channel = ? AND day = ?",
                           (channel, day))
            self.log_action(actor, "reconcile.resolve", f"{channel}/{day}/{txn_id}",
                            {"reason": reason, "adjust_fen": adjust_fen, "customer": customer})
        return {"txn_id": txn_id, "open_left": int(left), "reconciled": left == 0, "ledger_id": ledger_id}

    def unreconciled_channels(self, day: str, kinds: tuple[str, ...]) -> list[str]:
        """Channels of the given kinds that took payments on a day and have no reconciled statement for it."""
        marks = ", ".join("?" * len(kinds))
        with self._tx(write=False) as tx:
            rows = tx.all("SELECT DISTINCT p.channel FROM payments p JOIN channels c ON c.id = p.channel"
                          f" WHERE p.day = ? AND c.kind IN ({marks}) AND NOT EXISTS (SELECT 1 FROM reconciliations r"
                          " WHERE r.channel = p.channel AND r.day = p.day AND r.status = 'reconciled')"
                          " ORDER BY p.channel", (day, *kinds))
        return [r[0] for r in rows]

    def day_payment_summary(self, day: str) -> list[tuple[Any, ...]]:
        """(channel, tender kind or '', payments, fen, reversed, reversed fen) of a business day."""
        with self._tx(write=False) as tx:
            rows = tx.all("SELECT channel, tender,"
                          " SUM(CASE WHEN state <> 'reversed' THEN 1 ELSE 0 END),"
                          " SUM(CASE WHEN state <> 'reversed' THEN amount_fen ELSE 0 END),"
                          " SUM(CASE WHEN state = 'reversed' THEN 1 ELSE 0 END),"
                          " SUM(CASE WHEN state = 'reversed' THEN amount_fen ELSE 0 END)"
                          " FROM payments WHERE day = ? GROUP BY channel, tender", (day,))
        # a tender keeps its slip (POS terminal, trace, reference; cheque number), so each slip is its
        # own group above: the day is summed per kind of tender, as the cashiers' shifts are
        out: dict[tuple[str, str], list[int]] = {}
        for channel, tender, *sums in rows:
            t = loads(tender) if tender else None
            kind = str(t.get("kind", "")) if isinstance(t, dict) else ""
            acc = out.setdefault((channel, kind), [0, 0, 0, 0])
            for k, v in enumerate(sums):
                acc[k] += int(v or 0)
        return [(ch, kind, *acc) for (ch, kind), acc in sorted(out.items())]

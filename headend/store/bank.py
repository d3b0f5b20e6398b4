"""Bank withholding batches: the exported file of a bank's day, its rows, and the return file applied.

A batch is written once per (bank, day) with the file's bytes, so exporting again gives the same
file; a return file is applied once, its digest kept with a summary of what it did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from headend.store.audit import Audit
from headend.store.models import Conflict, InvalidInput, NotFound, dumps, loads

_BATCH_COLS = "id, bank, day, rows, total_fen, content, created_at, actor"


@dataclass(frozen=True)
class BankBatch:
    """One bank's withholding batch of one day, as exported."""

    id: int
    bank: str
    day: str
    rows: int
    total_fen: int
    content: bytes
    created_at: int
    actor: str


@dataclass(frozen=True)
class BankBatchRow:
    """One debit request of a batch and, once the return file is in, its result."""

    seq: int
    customer: str
    amount_fen: int
    result: str | None = None
    debited_fen: int | None = None
    serial: str | None = None
    payment_id: int | None = None


def _batch(row: Sequence[Any]) -> BankBatch:
    r = list(row)
    r[5] = bytes(r[5])
    return BankBatch(*r)


class BankBatches(Audit):
    """Withholding batches and their return files."""

    def bank_batch(self, bank: str, day: str) -> BankBatch | None:
        """The batch of a bank's day, or None if it was never exported."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_BATCH_COLS} FROM bank_batches WHERE bank = ? AND day = ?", (bank, day))
        return None if row is None else _batch(row)

    def get_bank_batch(self, batch_id: int) -> BankBatch:
        """A batch by its number; NotFound if there is none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_BATCH_COLS} FROM bank_batches WHERE id = ?", (int(batch_id),))
        if row is None:
            raise NotFound(f"no withholding batch {batch_id} (see `headend bank export`)")
        return _batch(row)

    def next_bank_batch_id(self) -> int:
        """The number the next exported batch will get (the file carries it in its header; batches
        are never deleted, so numbers are not reused)."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT COALESCE(MAX(id), 0) + 1 FROM bank_batches")
        assert row is not None
        return int(row[0])

    def save_bank_batch(self, bank: str, day: str, rows: Sequence[tuple[int, str, int]], content: bytes, *,
                        batch_id: int, actor: str) -> BankBatch:
        """Keep an exported batch (its file and its (seq, customer, amount) rows); Conflict if the
        bank's day already has one or the number was taken meanwhile."""
        total = 0
        for seq, customer, amount in rows:
            if not isinstance(amount, int) or amount <= 0:
                raise InvalidInput(f"batch row {seq} for customer {customer}: amount must be fen > 0, got {amount!r}")
            total += amount
        now = self.now()
        with self._tx() as tx:
            if tx.one("SELECT 1 FROM bank_batches WHERE bank = ? AND day = ?", (bank, day)) or \
                    tx.one("SELECT 1 FROM bank_batches WHERE id = ?", (batch_id,)):
                raise Conflict(f"the {bank} batch of {day} (or batch number {batch_id}) already exists:"
                               " export it again to print the kept file")
            tx.execute("INSERT INTO bank_batches (id, bank, day, rows, total_fen, content, created_at, actor)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (batch_id, bank, day, len(rows), total, content, now, actor))
            tx.executemany("INSERT INTO bank_batch_rows (batch_id, seq, customer, amount_fen) VALUES (?, ?, ?, ?)",
                           ((batch_id, s, cu, a) for s, cu, a in rows))
            self.log_action(actor, "bank_export", bank, {"batch": batch_id, "day": day, "rows": len(rows),
                                                         "total_fen": total})
        return self.get_bank_batch(batch_id)

    def bank_batch_rows(self, batch_id: int) -> list[BankBatchRow]:
        """The rows of a batch in sequence order."""
        with self._tx(write=False) as tx:
            rows = tx.all("SELECT seq, customer, amount_fen, result, debited_fen, serial, payment_id"
                          " FROM bank_batch_rows WHERE batch_id = ? ORDER BY seq", (int(batch_id),))
        return [BankBatchRow(*r) for r in rows]

    def bank_return(self, *, digest: str | None = None, batch_id: int | None = None) -> dict[str, Any] | None:
        """The applied return file with this digest (or of this batch): digest, batch, time, actor, summary."""
        col, val = ("digest", digest) if digest is not None else ("batch_id", batch_id)
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT digest, batch_id, imported_at, actor, summary FROM bank_returns WHERE {col} = ?",
                         (val,))
        if row is None:
            return None
        return {"digest": row[0], "batch": row[1], "imported_at": row[2], "actor": row[3], "summary": loads(row[4])}

    def record_bank_return(self, digest: str, batch_id: int,
                           results: Iterable[tuple[str, int, str | None, int | None, int]], *,
                           actor: str, summary: dict[str, Any]) -> None:
        """Keep a return file's results ((result, debited fen, serial, payment id, seq) per row) and
        its digest; Conflict if the batch already has its return file."""
        with self._tx() as tx:
            if tx.one("SELECT 1 FROM bank_returns WHERE digest = ? OR batch_id = ?", (digest, batch_id)):
                raise Conflict(f"batch {batch_id} already has its return file applied")
            tx.executemany("UPDATE bank_batch_rows SET result = ?, debited_fen = ?, serial = ?, payment_id = ?"
                           " WHERE batch_id = ? AND seq = ?", ((r, d, s, p, batch_id, q) for r, d, s, p, q in results))
            tx.execute("INSERT INTO bank_returns (digest, batch_id, imported_at, actor, summary) VALUES (?, ?, ?, ?, ?)",
                       (digest, batch_id, self.now(), actor, dumps(summary)))
            self.log_action(actor, "bank_import", str(batch_id), summary)

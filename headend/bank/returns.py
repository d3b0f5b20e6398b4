"""Return files (回盘): each debit request's result, applied once, all of a file or none of it.

A debited row (or the debited part of a partial one) is a payment through the bank's
``bank_withholding`` channel, transaction ``B<batch>-<seq>``: ``accept_payments`` takes the whole
file as one batch through the payment rules, each payment exactly once, so a local meter gets one
recharge through the outbox and a remote account one credit; money the bank took for a meter that
cannot hold it now (its hoarding headroom) is credited to the customer's account. A row that failed, and the unpaid
part of a partial one, is a ``withholding_failed`` notice. The file's digest is kept: the same
file again changes nothing, and a batch takes one return file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable

from headend.bank.batch import bank_channel_id, file_date
from headend.bank.layout import Parsed, Profile, read_file
from headend.flatfile import check_trailer, no_cycle_collection
from headend.notices import notify_events
from headend.payments import PaymentError, PaymentRequest, accept_payments
from headend.store import NotFound, Store
from headend.store.bank import BankBatch

__all__ = ["BankFileError", "ImportResult", "check_return", "import_return", "pick_profile"]

_REASONS = {"insufficient": "insufficient funds", "closed": "account closed"}


class BankFileError(ValueError):
    """A file that cannot be applied; ``problems`` lists each with its file line number."""

    def __init__(self, source: str, problems: list[str]) -> None:
        shown = problems[:50]
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{source}: nothing applied, {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more)
        self.problems = problems


@dataclass
class ImportResult:
    """What a return file did (or, with ``already``, what it did the first time)."""

    batch: int
    bank: str
    day: str
    already: bool
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Row:
    line: int
    seq: int
    customer: str
    amount_fen: int
    result: str
    debited_fen: int
    serial: str


def pick_profile(profiles: Iterable[Profile], data: bytes) -> Profile:
    """The profile whose return header reads the file's first line and names its own bank."""
    first = data.split(b"\n", 1)[0] + b"\n"
    for p in profiles:
        head = read_file(p, "return", first).header
        if head is not None and str(head.get("bank", "")).upper() == p.bank:
            return p
    raise BankFileError("return file", ["line 1: no bank profile reads this header (give --bank, or add the"
                                        " bank's profile)"])


def check_return(p: Profile, parsed: Parsed, batch: BankBatch | None, requested: dict[int, tuple[str, int]],
                 ) -> tuple[list[_Row], list[str]]:
    """Match a parsed return file against its batch; return its rows and every problem (by line)."""
    errors = list(parsed.errors)
    h = parsed.header
    if h is not None:
        if str(h.get("bank", "")).upper() != p.bank:
            errors.append(f"line 1: the file is for bank {h.get('bank')!r}, not {p.bank}")
        if batch is None:
            errors.append(f"line 1: there is no {p.bank} batch number {h.get('batch')} (see `headend bank export`)")
        else:
            if batch.bank != p.bank:
                errors.append(f"line 1: batch {batch.id} is the {batch.bank} batch of {batch.day}, not {p.bank}'s")
            if h.get("date") != file_date(batch.day):
                errors.append(f"line 1: the file is for day {h.get('date')}, batch {batch.id} is of {batch.day}")
            if h.get("count") is not None and h["count"] != batch.rows:
                errors.append(f"line 1: header says {h['count']} rows, batch {batch.id} has {batch.rows}")
            if h.get("total_fen") is not None and h["total_fen"] != batch.total_fen:
                errors.append(f"line 1: header total {h['total_fen']} fen, batch {batch.id} asked {batch.total_fen}")
    rows: list[_Row] = []
    seen: dict[int, int] = {}
    for ln, d in parsed.details:
        seq, cust = d.get("seq"), d.get("customer")
        if seq is None or d.get("amount_fen") is None or d.get("debited_fen") is None:
            continue  # already reported by the reader
        if seq in seen:
            errors.append(f"line {ln}: sequence {seq} repeats line {seen[seq]}")
            continue
        seen[seq] = ln
        want = requested.get(seq)
        if want is None or want[0] != cust:
            errors.append(f"line {ln}: customer {cust} (sequence {seq}) is not in the batch"
                          + ("" if want is None else f": sequence {seq} is customer {want[0]}"))
            continue
        result = p.results.get(str(d.get("result")))
        if result is None:
            errors.append(f"line {ln}: unknown result code {d.get('result')!r}; the profile knows"
                          f" {', '.join(p.results)}")
            continue
        amount, debited = d["amount_fen"], d["debited_fen"]
        if amount != want[1]:
            errors.append(f"line {ln}: amount {amount} fen, the batch asked {want[1]} for sequence {seq}")
            continue
        ok = {"debited": debited == amount, "partial": 0 < debited < amount}.get(result, debited == 0)
        if not ok:
            errors.append(f"line {ln}: result {result} with {debited} fen debited of {amount} does not add up")
            continue
        rows.append(_Row(ln, seq, str(cust), amount, result, debited, str(d.get("serial") or "")))
    t = parsed.trailer
    last = parsed.details[-1][0] + 1 if parsed.details else 2
    if t is not None:
        errors += check_trailer(last, said_count=t.get("count"), count=len(parsed.details),
                                said_total=t.get("debited_fen"),
                                total=sum(d.get("debited_fen") or 0 for _, d in parsed.details), total_is=" debited")
    if batch is not None and h is not None and not errors:
        missing = sorted(set(requested) - set(seen))
        if missing:
            errors.append(f"line {last}: no result for sequence(s) {', '.join(map(str, missing[:20]))}"
                          f"{' ...' if len(missing) > 20 else ''} of batch {batch.id}")
    return rows, errors


def _paid_at(store: Store, day: str) -> int:
    """Noon of the batch day, local time: when the bank's debits are taken to be paid."""
    d = _dt.date.fromisoformat(day)
    return int(_dt.datetime(d.year, d.month, d.day, 12, tzinfo=_dt.timezone.utc).timestamp()) - store.utc_offset_s


def import_return(store: Store, p: Profile, data: bytes, *, actor: str, source: str = "return file") -> ImportResult:
    """Apply a return file in one transaction (BankFileError lists every problem, nothing applied)."""
    with no_cycle_collection():
        return _import(store, p, data, actor=actor, source=source)


def _import(store: Store, p: Profile, data: bytes, *, actor: str, source: str) -> ImportResult:
    digest = hashlib.sha256(data).hexdigest()
    kept = store.bank_return(digest=digest)
    if kept is not None:
        b = store.get_bank_batch(kept["batch"])
        return ImportResult(b.id, b.bank, b.day, True, kept["summary"])
    parsed = read_file(p, "return", data)
    batch = None
    if parsed.header is not None and isinstance(parsed.header.get("batch"), int):
        try:
            batch = store.get_bank_batch(parsed.header["batch"])
        except NotFound:
            batch = None
    requested = {} if batch is None else {r.seq: (r.customer, r.amount_fen) for r in store.bank_batch_rows(batch.id)}
    rows, errors = check_return(p, parsed, batch, requested)
    if batch is not None and not errors:
        other = store.bank_return(batch_id=batch.id)
        if other is not None:
            errors.append(f"line 1: batch {batch.id} already has its return file (applied at {other['imported_at']},"
                          f" sha256 {other['digest'][:12]}...); this is a different file")
    if errors:
        raise BankFileError(source, errors)
    assert batch is not None
    channel = bank_channel_id(p.bank)
    paid_at = _paid_at(store, batch.day)
    summary: dict[str, Any] = {"rows": len(rows), "debited_fen": 0, "payments": 0, "notices": 0,
                               **{r: 0 for r in ("debited", "partial", "insufficient", "closed")}}
    paid = [r for r in rows if r.debited_fen > 0]
    with store.atomic():
        # one batch through the payment rules: the same steps as one payment at a time, in bulk
        try:
            made = accept_payments(store, [
                PaymentRequest(channel, f"B{batch.id}-{r.seq}", r.debited_fen, paid_at, customer=r.customer,
                               extra={"bank_serial": r.serial, "batch": batch.id, "seq": r.seq},
                               to_account_if_full=True) for r in paid],
                actor=actor)
        except PaymentError as exc:
            r = paid[exc.index or 0]
            raise BankFileError(source, [f"line {r.line}: customer {r.customer}: {exc}"]) from None
        pid = {r.seq: pay.id for r, (pay, _) in zip(paid, made)}
        results, failed = [], []
        for r in rows:
            summary[r.result] += 1
            if r.debited_fen > 0:
                summary["payments"] += 1
                summary["debited_fen"] += r.debited_fen
            if r.result != "debited":
                short = r.amount_fen - r.debited_fen
                reason = _REASONS.get(r.result, f"only {r.debited_fen} of {r.amount_fen} fen debited")
                failed.append((r.customer, "withholding_failed", {"amount_fen": short, "bank": p.name,
                                                                  "reason": reason},
                               f"withholding:{batch.id}:{r.seq}"))
            results.append((r.result, r.debited_fen, r.serial, pid.get(r.seq), r.seq))
        summary["notices"] = len(failed)
        notify_events(store, failed)
        store.record_bank_return(digest, batch.id, results, actor=actor, summary=summary)
    return ImportResult(batch.id, batch.bank, batch.day, False, summary)

"""The day's debit requests of one bank: who is due, the batch file, kept once."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

from headend.bank.agreements import account_number
from headend.bank.layout import Profile, write_file
from headend.keys import KeyStore
from headend.payments import account_view
from headend.store import Channel, InvalidInput, NotFound, Store
from headend.store.bank import BankBatch

__all__ = ["DueRow", "due_rows", "export_batch", "bank_channel_id", "ensure_bank_channel", "check_day", "file_date"]


@dataclass(frozen=True)
class DueRow:
    """One debit request before it is numbered: the customer, what to debit, why."""

    customer: str
    amount_fen: int
    record: dict[str, Any]


def check_day(day: str) -> str:
    """A batch day as YYYY-MM-DD (InvalidInput otherwise)."""
    try:
        return _dt.date.fromisoformat(day).isoformat()
    except (TypeError, ValueError):
        raise InvalidInput(f"bad day {day!r}: write YYYY-MM-DD") from None


def file_date(day: str) -> str:
    """The day as bank files write it (YYYYMMDD)."""
    return day.replace("-", "")


def bank_channel_id(bank: str) -> str:
    """The payment channel a bank's withholding comes in through (kind bank_withholding)."""
    return f"bank-{bank.lower()}"


def ensure_bank_channel(store: Store, profile: Profile, *, actor: str) -> Channel:
    """The bank's withholding channel (made on its first batch)."""
    try:
        return store.get_channel(bank_channel_id(profile.bank))
    except NotFound:
        return store.add_channel(bank_channel_id(profile.bank), "bank_withholding", actor=actor,
                                 name=f"{profile.name} ({profile.bank})")


def due_rows(store: Store, bank: str) -> list[DueRow]:
    """Every account of this bank's agreements that its rule makes due now, by customer number."""
    out = []
    for a in store.list_accounts():
        w = a.withholding
        if not w or w.get("bank") != bank or w.get("rule") is None:
            continue  # no agreement, another bank's, or a bare placeholder without a rule
        balance = account_view(store, a.customer)
        if w["rule"] == "topup":
            if balance["balance_fen"] < w["below_fen"]:
                out.append(DueRow(a.customer, int(w["amount_fen"]), w))
        elif w["rule"] == "settle_month" and balance["mode"] == "remote" and balance["arrears_fen"] > 0:
            out.append(DueRow(a.customer, int(balance["arrears_fen"]), w))
    return out


def export_batch(store: Store, keys: KeyStore, profile: Profile, day: str, *, actor: str) -> tuple[BankBatch, bool]:
    """The bank's batch file of a day: made and kept the first time, the kept one afterwards.
    Return (batch, whether it was made now)."""
    day = check_day(day)
    kept = store.bank_batch(profile.bank, day)
    if kept is not None:
        return kept, False
    with store.atomic():
        ensure_bank_channel(store, profile, actor=actor)
        due = due_rows(store, profile.bank)
        batch_id = store.next_bank_batch_id()
        total = sum(r.amount_fen for r in due)
        details = [{"seq": i, "customer": r.customer, "account": account_number(keys, r.customer, r.record),
                    "holder": r.record["holder"], "amount_fen": r.amount_fen} for i, r in enumerate(due, 1)]
        head = {"bank": profile.bank, "batch": batch_id, "date": file_date(day), "count": len(due),
                "total_fen": total}
        try:
            content = write_file(profile, "request", head, details, {"count": len(due), "total_fen": total})
        except ValueError as exc:
            raise InvalidInput(f"the {profile.bank} batch of {day} cannot be written: {exc}"
                               f" (profile {profile.source})") from None
        batch = store.save_bank_batch(profile.bank, day, [(d["seq"], d["customer"], d["amount_fen"]) for d in details],
                                      content, batch_id=batch_id, actor=actor)
    return batch, True

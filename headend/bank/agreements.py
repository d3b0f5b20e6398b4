"""Withholding agreements: a customer's consent that the utility may debit a bank account.

An agreement lives on the customer's account (its ``withholding`` record): the bank, the account
number sealed with the head-end key store (only its masked form is shown; the export unseals it
for the bank's file), the holder's name, the bank's agreement number and the rule:

* ``topup``: when the balance a customer sees (``headend.payments.account_view``) is below
  ``below_fen`` on the batch day, debit ``amount_fen`` (a prepaid account is topped up, through
  the outbox to a local meter);
* ``settle_month``: debit what a remote (post-paid style) account owes on the batch day, i.e. the
  month's charges not yet paid.
"""

from __future__ import annotations

import re
from typing import Any

from headend.keys import KeyStore
from headend.store import InvalidInput, Store

__all__ = ["RULES", "add_agreement", "remove_agreement", "agreement_of", "account_number", "mask_account", "shown"]

RULES = ("topup", "settle_month")
_ACCOUNT_RE = re.compile(r"^[0-9]{8,32}$")
_BANK_RE = re.compile(r"^[A-Z0-9]{2,6}$")


def mask_account(number: str) -> str:
    """A bank account number as shown: its first 4 and last 4 digits."""
    return number[:4] + "*" * (len(number) - 8) + number[-4:]


def _label(customer: str, bank: str) -> str:
    return f"withholding:{customer}:{bank}"


def add_agreement(store: Store, keys: KeyStore, customer: str, *, bank: str, account: str, holder: str,
                  agreement: str, rule: str, amount_fen: int | None = None, below_fen: int | None = None,
                  actor: str) -> dict[str, Any]:
    """Put a withholding agreement on an account (replacing any earlier one); return it as shown."""
    bank = bank.upper()
    account = account.replace(" ", "")
    if not _BANK_RE.match(bank):
        raise InvalidInput(f"bad bank code {bank!r}: 2-6 letters or digits, as its profile names it (e.g. ICBC)")
    if not _ACCOUNT_RE.match(account):
        raise InvalidInput("a bank account number is 8-32 digits")
    if not holder.strip():
        raise InvalidInput("name the account holder as the bank knows them")
    if not agreement.strip():
        raise InvalidInput("give the bank's agreement (mandate) number")
    if rule == "topup":
        if not isinstance(amount_fen, int) or amount_fen <= 0 or not isinstance(below_fen, int):
            raise InvalidInput("a top-up rule needs the amount to debit (> 0) and the level below which to debit")
    elif rule == "settle_month":
        if amount_fen is not None or below_fen is not None:
            raise InvalidInput("a month-settlement rule debits what the account owes: no amount or level")
    else:
        raise InvalidInput(f"unknown rule {rule!r}; one of {', '.join(RULES)}")
    record: dict[str, Any] = {
        "bank": bank, "account": mask_account(account), "sealed": keys.seal(_label(customer, bank), account.encode()),
        "holder": holder.strip(), "agreement": agreement.strip(), "rule": rule}
    if rule == "topup":
        record.update(amount_fen=amount_fen, below_fen=below_fen)
    store.update_account(customer, actor=actor, withholding=record)
    shown_now = agreement_of(store, customer)
    assert shown_now is not None  # just written
    return shown_now


def shown(record: dict[str, Any]) -> dict[str, Any]:
    """An account's agreement record as it may be shown: the account masked, never the sealed text."""
    return {k: v for k, v in record.items() if k != "sealed"}


def agreement_of(store: Store, customer: str) -> dict[str, Any] | None:
    """The agreement on an account as shown (account masked, never sealed text), or None."""
    w = store.get_account(customer).withholding
    if not w:
        return None
    return {"customer": customer, **shown(w)}


def remove_agreement(store: Store, customer: str, *, actor: str) -> None:
    """End an account's agreement (later batches leave it out); InvalidInput if it has none."""
    if not store.get_account(customer).withholding:
        raise InvalidInput(f"customer {customer} has no withholding agreement")
    store.update_account(customer, actor=actor, withholding={})  # an empty record clears it


def account_number(keys: KeyStore, customer: str, record: dict[str, Any]) -> str:
    """The full account number of an agreement (for the bank's file only)."""
    return keys.unseal(_label(customer, record["bank"]), record["sealed"]).decode()

"""Customer accounts: who they are, their limits and flags (money moves in ledger.py)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from headend.store.audit import Audit
from headend.store.models import (RESTORE_POLICIES, Account, Conflict, InvalidInput, NotFound, check_customer,
                                  check_limit, yuan)

_ACCOUNT_COLS = (
    "customer, name, phone, balance_fen, rem, ladder_wh, alarm1_fen, alarm2_fen, overdraft_fen,"
    " close_ok_fen, protected, restore_policy, tariff, version, created_at, updated_at,"
    " rated_until, notice_level, notice_at, supply, supply_at"
)

_LIMIT_FIELDS = ("alarm1_fen", "alarm2_fen", "overdraft_fen", "close_ok_fen")
_LIMIT_NAMES = {"alarm1_fen": "alarm1", "alarm2_fen": "alarm2", "overdraft_fen": "overdraft", "close_ok_fen": "close-ok"}


def _check_alarms(alarm1: int, alarm2: int, of: str) -> None:
    # alarm 2 is the second, stronger warning: it comes after alarm 1 as the balance falls
    if alarm2 > alarm1:
        raise InvalidInput(f"alarm2 ({yuan(alarm2)} yuan) must not be above alarm1 ({yuan(alarm1)} yuan) for {of}: "
                           "alarm 2 is the second warning, at a lower balance")


def _account(row: Sequence[Any]) -> Account:
    r = list(row)
    r[10] = bool(r[10])
    return Account(*r)


def _account_changes(changes: dict[str, Any], allowed: set[str], of: str) -> dict[str, Any]:
    """Account changes as they are written: allowed fields only, None left out, limits >= 0,
    a known restore policy, protected as 0/1."""
    bad = set(changes) - allowed
    if bad:
        raise InvalidInput(f"cannot change {', '.join(sorted(bad))} of {of}; allowed: {', '.join(sorted(allowed))}")
    out = {k: v for k, v in changes.items() if v is not None}
    for f in _LIMIT_FIELDS:
        if f in out:
            check_limit(_LIMIT_NAMES[f], out[f])
    if "restore_policy" in out and out["restore_policy"] not in RESTORE_POLICIES:
        raise InvalidInput(f"restore policy must be one of {', '.join(RESTORE_POLICIES)}")
    if "protected" in out:
        out["protected"] = int(bool(out["protected"]))
    return out


class Accounts(Audit):
    """Customer accounts."""

    def add_account(
        self,
        customer: str,
        *,
        actor: str,
        name: str = "",
        phone: str = "",
        alarm1_fen: int = 0,
        alarm2_fen: int = 0,
        overdraft_fen: int = 0,
        close_ok_fen: int = 0,
        protected: bool = False,
        restore_policy: str = "close_permitted",
        tariff: str | None = None,
    ) -> Account:
        """Create a customer account with zero balance; Conflict if the number is taken."""
        customer = check_customer(customer)
        for f, v in zip(_LIMIT_FIELDS, (alarm1_fen, alarm2_fen, overdraft_fen, close_ok_fen)):
            check_limit(_LIMIT_NAMES[f], v)
        _check_alarms(alarm1_fen, alarm2_fen, f"customer {customer}")
        if restore_policy not in RESTORE_POLICIES:
            raise InvalidInput(f"restore policy must be one of {', '.join(RESTORE_POLICIES)}, got {restore_policy!r}")
        now = self.now()
        with self._tx() as tx:
            if tx.one("SELECT 1 FROM accounts WHERE customer = ?", (customer,)):
                raise Conflict(f"customer {customer} already exists")
            tx.execute(
                "INSERT INTO accounts (customer, name, phone, balance_fen, rem, ladder_wh, alarm1_fen, alarm2_fen,"
                " overdraft_fen, close_ok_fen, protected, restore_policy, tariff, version, created_at, updated_at)"
                " VALUES (?, ?, ?, 0, 0, 0, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (customer, name, phone, alarm1_fen, alarm2_fen, overdraft_fen, close_ok_fen, int(bool(protected)),
                 restore_policy, tariff, now, now),
            )
            self.log_action(actor, "customer.add", customer, {"name": name, "protected": bool(protected),
                                                              "restore_policy": restore_policy})
            return self.get_account(customer)

    def get_account(self, customer: str) -> Account:
        """The account of a customer number; NotFound if there is none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE customer = ?", (customer,))
        if row is None:
            raise NotFound(f"no customer {customer}: add it with `headend customer add {customer}`")
        return _account(row)

    def list_accounts(self, *, limit: int | None = None) -> list[Account]:
        """Every account, ordered by customer number."""
        sql = f"SELECT {_ACCOUNT_COLS} FROM accounts ORDER BY customer"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (int(limit),)
        with self._tx(write=False) as tx:
            return [_account(r) for r in tx.all(sql, params)]

    def update_account(self, customer: str, *, actor: str, **changes: Any) -> Account:
        """Change an account's name, phone, limits, protected flag, restore policy or tariff (audited).

        Money fields (balance, rem, ladder) are not changed here: use credit/charge_accounts.
        """
        allowed = {"name", "phone", "protected", "restore_policy", "tariff", *_LIMIT_FIELDS}
        changes = _account_changes(changes, allowed, "an account")
        with self._tx() as tx:
            before = self.get_account(customer)
            _check_alarms(changes.get("alarm1_fen", before.alarm1_fen), changes.get("alarm2_fen", before.alarm2_fen),
                          f"customer {customer}")
            if changes:
                sets = ", ".join(f"{k} = ?" for k in changes)
                tx.execute(f"UPDATE accounts SET {sets}, updated_at = ? WHERE customer = ?",
                           (*changes.values(), self.now(), customer))
                self.log_action(actor, "customer.update", customer,
                                {k: [getattr(before, k), v] for k, v in changes.items()})
            return self.get_account(customer)

    def update_accounts(self, customers: Iterable[str], *, actor: str, **changes: Any) -> int:
        """Give many accounts the same limits / flags / tariff in one transaction (one audit row
        each); return how many changed. Unknown customers are an error and nothing changes."""
        allowed = {"protected", "restore_policy", "tariff", *_LIMIT_FIELDS}
        changes = _account_changes(changes, allowed, "many accounts at once")
        custs = list(customers)
        if not changes or not custs:
            return 0
        sets = ", ".join(f"{k} = ?" for k in changes)
        vals = tuple(changes.values())
        now = self.now()
        with self._tx() as tx:
            if "alarm1_fen" in changes or "alarm2_fen" in changes:
                for c in custs:
                    row = tx.one("SELECT alarm1_fen, alarm2_fen FROM accounts WHERE customer = ?", (c,))
                    if row is not None:
                        _check_alarms(changes.get("alarm1_fen", row[0]), changes.get("alarm2_fen", row[1]),
                                      f"customer {c}")
            n = tx.executemany(f"UPDATE accounts SET {sets}, updated_at = ? WHERE customer = ?",
                               ((*vals, now, c) for c in custs))
            if n != len(custs):
                raise NotFound(f"{len(custs) - n} of {len(custs)} customers do not exist (nothing was changed)")
            self.log_actions((actor, "customer.update", c, changes) for c in custs)
        return n

"""Customer accounts: who they are, their limits and flags (money moves in ledger.py)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from headend.store.audit import Audit
from headend.store.models import (
    RESTORE_POLICIES,
    Account,
    Conflict,
    InvalidInput,
    NotFound,
    check_customer,
    check_limit,
    dumps,
    loads,
    split_phones,
    yuan,
)

_ACCOUNT_COLS = (
    "customer, name, phone, balance_fen, rem, ladder_wh, alarm1_fen, alarm2_fen, overdraft_fen,"
    " close_ok_fen, protected, restore_policy, tariff, version, created_at, updated_at,"
    " rated_until, notice_level, notice_at, supply, supply_at,"
    " phones, address, district, segment, language, important, withholding"
)

_LIMIT_FIELDS = ("alarm1_fen", "alarm2_fen", "overdraft_fen", "close_ok_fen")
_LIMIT_NAMES = {"alarm1_fen": "alarm1", "alarm2_fen": "alarm2", "overdraft_fen": "overdraft", "close_ok_fen": "close-ok"}


def _check_alarms(alarm1: int, alarm2: int, of: str) -> None:
    # alarm 2 is the second, stronger warning: it comes after alarm 1 as the balance falls
    if alarm2 > alarm1:
        raise InvalidInput(f"alarm2 ({yuan(alarm2)} yuan) must not be above alarm1 ({yuan(alarm1)} yuan) for {of}: "
                           "alarm 2 is the second warning, at a lower balance")
# What operators know of a customer besides money and limits (for notices and reports).
_PROFILE_FIELDS = ("phones", "address", "district", "segment", "language", "important", "withholding")


def _account(row: Sequence[Any]) -> Account:
    r = list(row)
    r[10] = bool(r[10])
    r[21] = tuple(loads(r[21]) or split_phones(r[2]))
    r[26] = bool(r[26])
    r[27] = loads(r[27])
    return Account(*r)


def _stored(changes: dict[str, Any]) -> dict[str, Any]:
    """Checked account changes as the columns hold them (phones as a JSON list plus the first as
    `phone`, the one notices go to; withholding as JSON; flags as 0/1)."""
    out = dict(changes)
    if "phones" in out:
        out["phone"] = out["phones"][0] if out["phones"] else ""
        out["phones"] = dumps(out["phones"])
    if "withholding" in out:
        out["withholding"] = dumps(out["withholding"]) if out["withholding"] else None
    for flag in ("protected", "important"):
        if flag in out:
            out[flag] = int(bool(out[flag]))
    return out


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
    if "phones" in out:
        out["phones"] = split_phones(out["phones"])
    if "withholding" in out and out["withholding"] is not None and not isinstance(out["withholding"], dict):
        raise InvalidInput("a withholding agreement is a record (bank, account, agreement number), or empty")
    if "important" in out:
        out["important"] = bool(out["important"])
    if "protected" in out:
        out["protected"] = bool(out["protected"])
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


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
        **profile: Any,
    ) -> Account:
        """Create a customer account with zero balance; Conflict if the number is taken.

        ``profile`` may hold phones (a list; the first is where notices go, as ``phone`` alone
        is), address, district, segment, language, important and withholding (a record).
        """
        customer = check_customer(customer)
        for f, v in zip(_LIMIT_FIELDS, (alarm1_fen, alarm2_fen, overdraft_fen, close_ok_fen)):
            check_limit(_LIMIT_NAMES[f], v)
        _check_alarms(alarm1_fen, alarm2_fen, f"customer {customer}")
        if restore_policy not in RESTORE_POLICIES:
            raise InvalidInput(f"restore policy must be one of {', '.join(RESTORE_POLICIES)}, got {restore_policy!r}")
        extra = _account_changes(profile, set(_PROFILE_FIELDS), "a new account")
        if phone and "phones" not in extra:
            extra["phones"] = split_phones(phone)
        extra = _stored(extra)
        phone = extra.pop("phone", phone)
        now = self.now()
        with self._tx() as tx:
            if tx.one("SELECT 1 FROM accounts WHERE customer = ?", (customer,)):
                raise Conflict(f"customer {customer} already exists")
            tx.execute(
                "INSERT INTO accounts (customer, name, phone, balance_fen, rem, ladder_wh, alarm1_fen, alarm2_fen,"
                " overdraft_fen, close_ok_fen, protected, restore_policy, tariff, version, created_at, updated_at"
                + "".join(f", {k}" for k in extra) + ")"
                " VALUES (?, ?, ?, 0, 0, 0, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?" + ", ?" * len(extra) + ")",
                (customer, name, phone, alarm1_fen, alarm2_fen, overdraft_fen, close_ok_fen, int(bool(protected)),
                 restore_policy, tariff, now, now, *extra.values()),
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

    def find_accounts(self, text: str, *, limit: int = 20) -> list[Account]:
        """Accounts a counter clerk may mean by ``text``: the customer number, one of its meters'
        address or number, a phone number, or part of the name (by customer number)."""
        t = str(text).strip()
        if not t:
            return []
        like = "%" + t.replace("%", "").replace("_", "") + "%"
        with self._tx(write=False) as tx:
            rows = tx.all(
                f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE customer = ? OR phone = ? OR phones LIKE ? OR name LIKE ?"
                " OR customer IN (SELECT customer FROM meters WHERE address = ? OR meter_number = ?)"
                " ORDER BY customer LIMIT ?",
                (t, t, f'%"{t}"%', like, t, t, int(limit)))
        return [_account(r) for r in rows]

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
        """Change an account's name, phone(s), address, district, segment, language, limits,
        protected/important flags, restore policy, tariff or withholding agreement (audited).

        ``phone`` alone replaces the first number (where notices go) and keeps the others.
        Money fields (balance, rem, ladder) are not changed here: the ledger moves money.
        """
        allowed = {"name", "phone", "restore_policy", "tariff", "protected", *_PROFILE_FIELDS, *_LIMIT_FIELDS}
        changes = _account_changes(changes, allowed, "an account")
        with self._tx() as tx:
            before = self.get_account(customer)
            _check_alarms(changes.get("alarm1_fen", before.alarm1_fen), changes.get("alarm2_fen", before.alarm2_fen),
                          f"customer {customer}")
            if "phone" in changes and "phones" not in changes:
                changes["phones"] = split_phones(changes.pop("phone")) + list(before.phones[1:])
            changes.pop("phone", None)
            if changes:
                stored = _stored(changes)
                sets = ", ".join(f"{k} = ?" for k in stored)
                tx.execute(f"UPDATE accounts SET {sets}, updated_at = ? WHERE customer = ?",
                           (*stored.values(), self.now(), customer))
                self.log_action(actor, "customer.update", customer,
                                {k: [_plain(getattr(before, k)), v] for k, v in changes.items()})
            return self.get_account(customer)

    def update_accounts(self, customers: Iterable[str], *, actor: str, **changes: Any) -> int:
        """Give many accounts the same limits / flags / tariff in one transaction (one audit row
        each); return how many changed. Unknown customers are an error and nothing changes."""
        allowed = {"protected", "restore_policy", "tariff", *_LIMIT_FIELDS}
        changes = _account_changes(changes, allowed, "many accounts at once")
        custs = list(customers)
        if not changes or not custs:
            return 0
        stored = _stored(changes)
        sets = ", ".join(f"{k} = ?" for k in stored)
        vals = tuple(stored.values())
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

"""Operator accounts: name, role, password hash (argon2, made by headend.operators), enabled."""

from __future__ import annotations

import re
from typing import Any, Sequence

from headend.store.audit import Audit
from headend.store.models import ROLES, Conflict, InvalidInput, NotFound, Operator

_OPERATOR_COLS = "name, role, full_name, pw_hash, enabled, created_at, updated_at"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")


def _operator(row: Sequence[Any]) -> Operator:
    r = list(row)
    r[4] = bool(r[4])
    return Operator(*r)


class Operators(Audit):
    """Named operators with roles; the store keeps only password hashes."""

    def add_operator(self, name: str, role: str, pw_hash: str, *, actor: str, full_name: str = "") -> Operator:
        """Create an operator (enabled); Conflict if the name is taken."""
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise InvalidInput(f"bad operator name {name!r}: 1-32 of a-z 0-9 _ . -, starting with a letter")
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if not pw_hash.startswith("$argon2"):
            raise InvalidInput("store a password hash (headend.operators.hash_password), never a password")
        now = self.now()
        with self._tx() as tx:
            if tx.one("SELECT 1 FROM operators WHERE name = ?", (name,)):
                raise Conflict(f"operator {name} already exists")
            tx.execute(f"INSERT INTO operators ({_OPERATOR_COLS}) VALUES (?, ?, ?, ?, 1, ?, ?)",
                       (name, role, full_name, pw_hash, now, now))
            self.log_action(actor, "operator.add", name, {"role": role, "full_name": full_name})
            return self.get_operator(name)

    def get_operator(self, name: str) -> Operator:
        """An operator by name; NotFound if none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_OPERATOR_COLS} FROM operators WHERE name = ?", (name,))
        if row is None:
            raise NotFound(f"no operator {name!r} (see `headend operator list`)")
        return _operator(row)

    def list_operators(self) -> list[Operator]:
        """Every operator, by name."""
        with self._tx(write=False) as tx:
            return [_operator(r) for r in tx.all(f"SELECT {_OPERATOR_COLS} FROM operators ORDER BY name")]

    def count_operators(self) -> int:
        """How many operators exist (0: the first one may be added without logging in)."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT COUNT(*) FROM operators")
        return int(row[0]) if row else 0

    def update_operator(self, name: str, *, actor: str, **changes: Any) -> Operator:
        """Change an operator's role, full name, password hash or enabled flag (audited, never the hash)."""
        allowed = {"role", "full_name", "pw_hash", "enabled"}
        bad = set(changes) - allowed
        if bad:
            raise InvalidInput(f"cannot change {', '.join(sorted(bad))} of an operator")
        if "role" in changes and changes["role"] not in ROLES:
            raise InvalidInput(f"unknown role {changes['role']!r}; one of {', '.join(ROLES)}")
        if "pw_hash" in changes and not str(changes["pw_hash"]).startswith("$argon2"):
            raise InvalidInput("store a password hash (headend.operators.hash_password), never a password")
        if "enabled" in changes:
            changes["enabled"] = int(bool(changes["enabled"]))
        with self._tx() as tx:
            before = self.get_operator(name)
            if changes:
                sets = ", ".join(f"{k} = ?" for k in changes)
                tx.execute(f"UPDATE operators SET {sets}, updated_at = ? WHERE name = ?",
                           (*changes.values(), self.now(), name))
                self.log_action(actor, "operator.update", name,
                                {k: ("(changed)" if k == "pw_hash" else [getattr(before, k), v])
                                 for k, v in changes.items()})
            return self.get_operator(name)

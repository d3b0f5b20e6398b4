"""Operators and roles: who may do what, and proving who is acting (argon2 password hashes).

Roles: ``admin`` (everything), ``operator`` (meters, recharges, corrections), ``cashier`` (the
business-hall counter), ``auditor`` (reads the books, closes days). Once the first operator
exists, every command that changes something (moves money; queues commands to meters; registers
meters, accounts or the grid; plans outages; sends notices; manages channels, operators, keys or
the database) needs a logged-in operator with a role that allows it; the operator's name is the
actor every audit, command and journal row records. Commands that only read need no login.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from headend.store import NotFound, Operator, Store

__all__ = ["PERMISSIONS", "AuthError", "hash_password", "verify_password", "authenticate", "allowed"]

# action -> roles that may do it
PERMISSIONS: dict[str, frozenset[str]] = {
    "operators": frozenset({"admin"}),
    "channels": frozenset({"admin"}),
    "counter": frozenset({"cashier", "admin"}),
    "close_shift_for": frozenset({"admin"}),          # a shift its cashier cannot close (left, disabled)
    "recharge": frozenset({"operator", "admin"}),
    "correct": frozenset({"operator", "admin"}),      # refunds and adjustments
    "close_day": frozenset({"auditor", "admin"}),
    "reconcile": frozenset({"auditor", "admin"}),     # statements checked, discrepancies resolved
    "bank": frozenset({"operator", "admin"}),         # withholding agreements, batch export, return import
    "read_books": frozenset({"auditor", "operator", "admin", "cashier"}),
    # read now, trip, close, power hold, time sync, limits, tariffs; cancel or retry a command; the
    # registry (meters, accounts, grid); a cost-control cycle by hand (the charges and relay
    # decisions serve's loop would make by the same rules)
    "meters": frozenset({"operator", "admin"}),
    "outages": frozenset({"operator", "admin"}),       # plan, change and cancel planned outages
    # customer notices by hand: resend a failed one, send the due ones now, clear a phone flag
    "notices": frozenset({"operator", "admin"}),
    "keys": frozenset({"admin"}),                      # the master key: create, new passphrase, rotate
    "store": frozenset({"admin"}),                     # the database itself: migrate to another
}
_MIN_PASSWORD = 8


@lru_cache(maxsize=1)
def _hasher() -> Any:
    # argon2id with the library's recommended parameters; imported on first use so that
    # commands that never check a password start without it
    from argon2 import PasswordHasher

    return PasswordHasher()


class AuthError(Exception):
    """Not logged in as an operator who may do this; the message says what to do."""


def hash_password(password: str) -> str:
    """An argon2id hash of a new password (at least 8 characters)."""
    if len(password) < _MIN_PASSWORD:
        raise AuthError(f"a password needs at least {_MIN_PASSWORD} characters")
    return _hasher().hash(password)


def verify_password(pw_hash: str, password: str) -> bool:
    """Whether password matches the hash (constant-time inside argon2)."""
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    try:
        return _hasher().verify(pw_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def allowed(role: str, action: str) -> bool:
    """Whether a role may do an action of PERMISSIONS."""
    return role in PERMISSIONS[action]


def authenticate(store: Store, name: str, password: str, action: str) -> Operator:
    """The enabled operator ``name`` if the password fits and the role allows ``action``;
    AuthError (audited as a refused login) otherwise. The same message for an unknown name and
    a wrong password, so names cannot be probed."""
    try:
        op = store.get_operator(name)
        ok = op.enabled and verify_password(op.pw_hash, password)
    except NotFound:
        op, ok = None, False
    if not ok:
        store.log_action(name or "unknown", "operator.login_refused", name, {"action": action})
        raise AuthError(f"operator {name!r}: wrong name or password, or the operator is disabled")
    assert op is not None
    if not allowed(op.role, action):
        store.log_action(name, "operator.not_allowed", name, {"action": action, "role": op.role})
        roles = ", ".join(sorted(PERMISSIONS[action]))
        raise AuthError(f"operator {name} is {op.role}: {action.replace('_', ' ')} needs one of {roles}")
    return op

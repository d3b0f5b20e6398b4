"""Console sign-in state: server-side sessions (cookie holds only a random id) and the wrong-password limit.

Both live in the memory of the one `headend serve` process: a restart signs everyone out, which is
the safe side.  Time is passed in (``clock``) so expiry and lock-outs are tested without waiting.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Session", "Sessions", "LoginLimiter"]

IDLE_S = 30 * 60          # signed out after this long without a request
MAX_AGE_S = 12 * 3600     # and after a working day, whatever the activity
FAILURES = 5              # wrong passwords within WINDOW_S before sign-in is refused
WINDOW_S = 300
LOCK_S = 120


@dataclass
class Session:
    """One signed-in operator: who, the role, the CSRF token every form must carry."""

    sid: str
    name: str
    role: str
    csrf: str
    started: float
    seen: float
    flash: list[str] = field(default_factory=list)

    def csrf_ok(self, token: str | None) -> bool:
        """Whether a posted form carried this session's CSRF token (compared in constant time)."""
        return bool(token) and hmac.compare_digest(self.csrf, str(token))


class Sessions:
    """Sessions by id, expiring after ``idle_s`` without use or ``max_age_s`` in all."""

    def __init__(self, clock: Callable[[], float] = time.time, idle_s: float = IDLE_S,
                 max_age_s: float = MAX_AGE_S) -> None:
        self.clock = clock
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def start(self, name: str, role: str) -> Session:
        """A new session for an operator who just proved the password."""
        now = self.clock()
        s = Session(secrets.token_urlsafe(32), name, role, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._by_id[s.sid] = s
            self._sweep(now)
        return s

    def get(self, sid: str | None) -> Session | None:
        """The live session of a cookie value (its idle time restarts), or None if none or expired."""
        if not sid:
            return None
        now = self.clock()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None
            if now - s.seen > self.idle_s or now - s.started > self.max_age_s:
                del self._by_id[sid]
                return None
            s.seen = now
            return s

    def end(self, sid: str | None) -> None:
        """Sign out."""
        with self._lock:
            self._by_id.pop(sid or "", None)

    def _sweep(self, now: float) -> None:
        dead = [k for k, s in self._by_id.items() if now - s.seen > self.idle_s or now - s.started > self.max_age_s]
        for k in dead:
            del self._by_id[k]


class LoginLimiter:
    """After ``failures`` wrong passwords for one name or from one client address within
    ``window_s``, sign-in for that name or address is refused for ``lock_s`` without checking
    the password (so guessing costs time, and a locked name learns nothing)."""

    def __init__(self, clock: Callable[[], float] = time.time, failures: int = FAILURES, window_s: float = WINDOW_S,
                 lock_s: float = LOCK_S) -> None:
        self.clock = clock
        self.failures = failures
        self.window_s = window_s
        self.lock_s = lock_s
        self._fails: dict[str, deque[float]] = defaultdict(deque)
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait_s(self, *keys: str) -> int:
        """Seconds before any of ``keys`` (e.g. "name:x", "ip:1.2.3.4") may try again; 0 if now."""
        now = self.clock()
        with self._lock:
            until = max((self._locked_until.get(k, 0.0) for k in keys), default=0.0)
        return max(0, int(until - now + 0.999))

    def failed(self, *keys: str) -> None:
        """Count one wrong password against each key."""
        now = self.clock()
        with self._lock:
            for k in keys:
                q = self._fails[k]
                q.append(now)
                while q and now - q[0] > self.window_s:
                    q.popleft()
                if len(q) >= self.failures:
                    self._locked_until[k] = now + self.lock_s
                    q.clear()

    def succeeded(self, *keys: str) -> None:
        """A right password clears the name's count."""
        with self._lock:
            for k in keys:
                self._fails.pop(k, None)

"""The ``[api]`` config section: where the payments API listens and what it accepts.

The largest payment is a channel's own setting (``headend channel add --max``), with the
payments service's ceiling above it; the API adds no third limit.

```toml
[api]
listen = "tcp://127.0.0.1:8080"   # `headend serve --api URL` overrides; absent: no API
clock_skew_s = 300                # a signed request's timestamp may be this far from our clock
max_body_bytes = 16384
callback_timeout_s = 5.0          # one result callback attempt
callback_backoff_s = [1, 5, 30, 120, 600]   # waits before the 2nd, 3rd, ... attempt (the last repeats)
callback_max_attempts = 20
commit_hold_ms = 2.0              # under load, a group commit waits this long for more requests
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

__all__ = ["ApiConfig", "api_config", "parse_api_url"]

_KNOWN = {"listen", "clock_skew_s", "max_body_bytes", "callback_timeout_s", "callback_backoff_s",
          "callback_max_attempts", "commit_hold_ms"}


@dataclass(frozen=True)
class ApiConfig:
    """How the payments API runs."""

    listen: str | None = None
    clock_skew_s: int = 300
    max_body_bytes: int = 16384
    callback_timeout_s: float = 5.0
    callback_backoff_s: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 600.0)
    callback_max_attempts: int = 20
    commit_hold_ms: float = 2.0


def parse_api_url(url: str) -> tuple[str, int]:
    """(host, port) of ``tcp://HOST:PORT``; ValueError says how to write it."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ValueError(f"--api {url!r}: write it as tcp://HOST:PORT, e.g. tcp://127.0.0.1:8080")
    return parts.hostname, port


def _positive_int(section: Mapping[str, Any], key: str, default: int) -> int:
    v = section.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"[api] {key} = {v!r}: must be a whole number above 0")
    return v


def api_config(section: Mapping[str, Any]) -> ApiConfig:
    """Parse the ``[api]`` section; ValueError names the bad key and what it should be."""
    unknown = set(section) - _KNOWN
    if unknown:
        raise ValueError(f"[api]: unknown key(s) {sorted(unknown)}; known: {sorted(_KNOWN)}")
    listen = section.get("listen")
    if listen is not None:
        parse_api_url(str(listen))
    backoff = section.get("callback_backoff_s", list(ApiConfig.callback_backoff_s))
    if not isinstance(backoff, list) or not backoff or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and b >= 0 for b in backoff):
        raise ValueError(f"[api] callback_backoff_s = {backoff!r}: a non-empty list of seconds >= 0")
    timeout = section.get("callback_timeout_s", ApiConfig.callback_timeout_s)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ValueError(f"[api] callback_timeout_s = {timeout!r}: seconds above 0")
    hold = section.get("commit_hold_ms", ApiConfig.commit_hold_ms)
    if not isinstance(hold, (int, float)) or isinstance(hold, bool) or not 0 <= hold <= 100:
        raise ValueError(f"[api] commit_hold_ms = {hold!r}: milliseconds from 0 (never wait) to 100")
    return ApiConfig(
        listen=None if listen is None else str(listen),
        clock_skew_s=_positive_int(section, "clock_skew_s", ApiConfig.clock_skew_s),
        max_body_bytes=_positive_int(section, "max_body_bytes", ApiConfig.max_body_bytes),
        callback_timeout_s=float(timeout),
        callback_backoff_s=tuple(float(b) for b in backoff),
        callback_max_attempts=_positive_int(section, "callback_max_attempts", ApiConfig.callback_max_attempts),
        commit_hold_ms=float(hold),
    )

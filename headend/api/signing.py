"""Request signing for the payments API: one recipe for channels, the server and callbacks.

Theory of operation.  A channel holds a key id and a secret.  For every request it builds the
*string to sign*, six lines joined by "\\n" (no trailing newline)::

    PP645-HMAC-SHA256
    POST                          <- method, upper case
    /v1/payments                  <- the path as sent, with "?query" when there is one
    1796461200                    <- timestamp, Unix seconds (the X-PP645-Timestamp header)
    3f9c0b8e5d2a4c6f8e1b7a9d0c2e4f6a   <- nonce, 16-64 of [A-Za-z0-9_-], never used twice
    9f86d081884c7d65...           <- hex SHA-256 of the body bytes (of b"" when there is none)

and sends ``hex(HMAC-SHA256(secret, string_to_sign))`` with the key id, timestamp and nonce in
four headers (``X-PP645-Key``, ``X-PP645-Timestamp``, ``X-PP645-Nonce``, ``X-PP645-Signature``).
The server recomputes the signature over the bytes it received, refuses a timestamp further
than the allowed skew from its clock, and refuses a nonce it has seen for that key before (the
store keeps nonces for as long as their timestamp could still pass, so neither a restart nor a
second server accepts a replay).  Result callbacks to a channel are signed the same way with
the channel's own key.

This module does no I/O: `sign` and `check_signature` are pure, `ChannelAuth` plugs the signer
into an httpx client.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Callable, Generator, Mapping, NamedTuple

import httpx

__all__ = [
    "ALGORITHM",
    "HEADER_KEY",
    "HEADER_TIMESTAMP",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "NONCE_RE",
    "ChannelAuth",
    "SignatureFormError",
    "SignatureParts",
    "check_signature",
    "new_nonce",
    "read_signature_headers",
    "sign",
    "sign_headers",
    "string_to_sign",
]

ALGORITHM = "PP645-HMAC-SHA256"
HEADER_KEY = "X-PP645-Key"
HEADER_TIMESTAMP = "X-PP645-Timestamp"
HEADER_NONCE = "X-PP645-Nonce"
HEADER_SIGNATURE = "X-PP645-Signature"
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE_RE = re.compile(r"^[0-9a-f]{64}$")


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret if isinstance(secret, bytes) else secret.encode("utf-8")


def string_to_sign(method: str, path: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    """The exact bytes that are signed (see the module docstring)."""
    return "\n".join(
        (ALGORITHM, method.upper(), path, str(int(timestamp)), nonce, hashlib.sha256(body).hexdigest())
    ).encode("utf-8")


def sign(secret: str | bytes, method: str, path: str, timestamp: int, nonce: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the string to sign under the channel's secret."""
    return hmac.new(_secret_bytes(secret), string_to_sign(method, path, timestamp, nonce, body),
                    hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """A fresh random nonce (32 hex digits)."""
    return secrets.token_hex(16)


def sign_headers(key_id: str, secret: str | bytes, method: str, path: str, body: bytes, *,
                 timestamp: int | None = None, nonce: str | None = None) -> dict[str, str]:
    """The four headers that authenticate one request (fresh nonce and current time by default)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    n = new_nonce() if nonce is None else nonce
    return {
        HEADER_KEY: key_id,
        HEADER_TIMESTAMP: str(ts),
        HEADER_NONCE: n,
        HEADER_SIGNATURE: sign(secret, method, path, ts, n, body),
    }


class SignatureParts(NamedTuple):
    """The authentication headers of one request, checked for form only (a NamedTuple: as
    immutable as a frozen dataclass, and made once per request at a fraction of its cost)."""

    key_id: str
    timestamp: int
    nonce: str
    signature: str


class SignatureFormError(ValueError):
    """A signature header is missing or malformed; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def read_signature_headers(headers: Mapping[str, str]) -> SignatureParts:
    """The four headers, each present and well formed, or SignatureFormError naming the first bad one."""
    key_id, ts, nonce, sig = (headers.get(HEADER_KEY), headers.get(HEADER_TIMESTAMP), headers.get(HEADER_NONCE),
                              headers.get(HEADER_SIGNATURE))
    if not (key_id and ts and nonce and sig):
        missing = next(name for name, v in ((HEADER_KEY, key_id), (HEADER_TIMESTAMP, ts), (HEADER_NONCE, nonce),
                                            (HEADER_SIGNATURE, sig)) if not v)
        raise SignatureFormError(missing, f"header {missing} is missing: every request is signed"
                                          " (see the README's signing recipe)")
    if len(key_id) > 128:
        raise SignatureFormError(HEADER_KEY, f"header {HEADER_KEY} is longer than 128 characters")
    if not _TIMESTAMP_RE.match(ts):
        raise SignatureFormError(HEADER_TIMESTAMP, f"header {HEADER_TIMESTAMP} must be Unix seconds (digits only)")
    if not NONCE_RE.match(nonce):
        raise SignatureFormError(HEADER_NONCE, f"header {HEADER_NONCE} must be 16-64 of A-Z a-z 0-9 _ -")
    sig = sig.lower()
    if not _SIGNATURE_RE.match(sig):
        raise SignatureFormError(HEADER_SIGNATURE, f"header {HEADER_SIGNATURE} must be 64 hex digits (HMAC-SHA256)")
    return SignatureParts(key_id, int(ts), nonce, sig)


def check_signature(secret: str | bytes, parts: SignatureParts, method: str, path: str, body: bytes) -> bool:
    """Whether the signature matches (constant-time comparison)."""
    want = sign(secret, method, path, parts.timestamp, parts.nonce, body)
    return hmac.compare_digest(want, parts.signature)


class ChannelAuth(httpx.Auth):
    """httpx authentication that signs every request as a channel:

        client = httpx.Client(base_url="http://127.0.0.1:8080", auth=ChannelAuth("bank-1", secret))
        client.post("/v1/payments", json={...})

    ``clock`` (Unix seconds) and ``nonces`` (an iterator of nonces) may be injected by tests.
    """

    requires_request_body = True

    def __init__(self, key_id: str, secret: str | bytes, *, clock: Callable[[], float] = time.time,
                 nonce: Callable[[], str] = new_nonce) -> None:
        self.key_id = key_id
        self._secret = _secret_bytes(secret)
        self._clock = clock
        self._nonce = nonce

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the four signature headers (a fresh nonce for every send, retries included)."""
        path = request.url.raw_path.decode("ascii")
        request.headers.update(sign_headers(self.key_id, self._secret, request.method, path, request.content,
                                            timestamp=int(self._clock()), nonce=self._nonce()))
        yield request

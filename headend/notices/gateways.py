"""Gateways: where rendered notices go.  Thin adapters; every decision is the sender's.

The contract (also in headend/notices/README.md), which a real SMS provider's adapter implements:

* ``send(messages)`` takes a batch of :class:`Outgoing` and returns one :class:`Outcome` per
  message, in the same order.  Each message carries ``key``, the notice's event key (plus the
  phone): the gateway passes it to the provider as its idempotency key, so sending the same key
  again returns the first message's provider id and does not deliver it again.  That is what
  makes a crash between "the provider accepted it" and "the store recorded it" harmless.
* An outcome's ``status``: ``accepted`` (the provider took it; a delivery receipt follows),
  ``delivered`` (final already, e.g. the log file), ``transient`` (try again later: timeouts,
  5xx, 429, an answer we cannot read), ``bad_number`` (the number is not deliverable: never
  retried, the account is flagged), ``rejected`` (the provider refuses this message for good).
* ``send`` may raise :class:`GatewayError` (or OSError): every message of the batch is then
  transient, with the error as the reason.  It must never raise for one bad message.
* ``lookup(key)`` (optional, return None when unknown) finds a message already sent with that
  key, for providers whose idempotency does not cover a resend.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence
from urllib.parse import urlsplit, urlencode

__all__ = [
    "Outgoing",
    "Outcome",
    "Gateway",
    "GatewayError",
    "LogGateway",
    "WebhookGateway",
    "SmsRestGateway",
    "check_phone",
    "sign",
    "SIGNATURE_HEADER",
]

OUTCOMES = ("accepted", "delivered", "transient", "bad_number", "rejected")
SIGNATURE_HEADER = "X-Prepaid645-Signature"
_PHONE_RE = re.compile(r"^\+?[0-9]{5,15}$")


class GatewayError(Exception):
    """The gateway could not take the batch (link down, timeout, an answer that makes no sense)."""


@dataclass(frozen=True)
class Outgoing:
    """One message to one phone: ``key`` is the idempotency key the provider sees."""

    key: str
    to: str
    text: str
    kind: str
    customer: str
    notice_id: int
    urgent: bool = False


@dataclass(frozen=True)
class Outcome:
    """What the gateway made of one message (see the module docstring for ``status``)."""

    key: str
    status: str
    provider_id: str | None = None
    error: str | None = None


class Gateway(Protocol):
    """A place notices are handed to (log file, webhook, an SMS provider)."""

    name: str

    def send(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        """One outcome per message, in order."""
        ...

    def lookup(self, key: str) -> Outcome | None:
        """The outcome of a message already sent with this key, or None."""
        ...


def check_phone(text: str) -> str:
    """A phone number as digits with an optional leading +; ValueError if it is not a number."""
    p = re.sub(r"[\s\-().]", "", str(text))
    if not _PHONE_RE.match(p):
        raise ValueError(f"phone {text!r} is not a number (write digits, e.g. 13800138000 or +8613800138000)")
    return p


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The webhook signature header value: ``t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


# ----------------------------------------------------------------------------- log file
class LogGateway:
    """Appends each message as one JSON line to a file: the embedded default, and the audit copy.

    Idempotent by key: a key already in the file is answered with its first line's id and not
    written again (the keys of the file are read once at start)."""

    name = "log"

    def __init__(self, path: str | os.PathLike[str], clock: Any = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._ids: dict[str, str] = {}
        self._lock = threading.Lock()
        if self.path.exists():
            with self.path.open(encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    try:
                        self._ids.setdefault(json.loads(line)["key"], f"log-{n}")
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn last line from a crash: its message is written again
        self._lines = sum(1 for _ in self.path.open("rb")) if self.path.exists() else 0

    def send(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        """Write the messages not yet in the file; every one is delivered (to the file)."""
        out = []
        with self._lock:
            lines = []
            for m in messages:
                pid = self._ids.get(m.key)
                if pid is None:
                    self._lines += 1
                    pid = self._ids[m.key] = f"log-{self._lines}"
                    lines.append(json.dumps({"at": int(self._clock()), "key": m.key, "to": m.to, "kind": m.kind,
                                             "customer": m.customer, "text": m.text}, ensure_ascii=False) + "\n")
                out.append(Outcome(m.key, "delivered", pid))
            if lines:
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write("".join(lines))
                    fh.flush()
                    os.fsync(fh.fileno())
        return out

    def lookup(self, key: str) -> Outcome | None:
        """The line written for this key, if any."""
        pid = self._ids.get(key)
        return None if pid is None else Outcome(key, "delivered", pid)


# ----------------------------------------------------------------------------- HTTP
class _Http:
    """One keep-alive HTTP(S) connection to one base URL, reopened after a failure."""

    def __init__(self, url: str, timeout: float) -> None:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"gateway URL {url!r}: write http://host:port/path or https://...")
        self.scheme, self.host, self.port = u.scheme, u.hostname, u.port
        self.path = u.path or "/"
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self._conn is None:
                cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
                self._conn = cls(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers)
                resp = self._conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                # a kept-alive connection the server closed meanwhile fails at once: one fresh try.
                # The resend is safe: the message keys make the provider drop a repeat.
                if attempt == 2 or not isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError,
                                                        ConnectionResetError)):
                    raise GatewayError(f"{self.host}:{self.port}: {exc or type(exc).__name__}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _json(status: int, body: bytes, who: str) -> Any:
    try:
        return json.loads(body) if body.strip() else None
    except ValueError:
        snippet = body[:60].decode("utf-8", "replace")
        raise GatewayError(f"{who} answered HTTP {status} with something that is not JSON: {snippet!r}") from None


class WebhookGateway:
    """POSTs batches of messages as signed JSON to one URL (the operator's own SMS bridge or bus).

    Body: ``{"messages": [{"key", "to", "text", "kind", "customer", "notice", "urgent"}, ...]}``;
    header ``X-Prepaid645-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.
    The receiver drops keys it has seen (they are idempotency keys) and answers 2xx with
    ``{"results": [{"key", "id", "status", "error"}]}`` (status as in Outcome; a missing entry or
    an empty body means accepted, with the key as its id).  Any other answer leaves the batch
    queued with the reason."""

    name = "webhook"

    def __init__(self, url: str, secret: bytes, *, timeout: float = 10.0, batch: int = 100,
                 clock: Any = time.time) -> None:
        if not secret:
            raise ValueError("the webhook gateway needs a signing secret ([notices] webhook_secret or"
                             " $PREPAID645_WEBHOOK_SECRET)")
        self.url = url
        self.batch = batch
        self._secret = secret
        self._http = _Http(url, timeout)
        self._clock = clock

    def send(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        """Post the messages in batches of ``batch``; outcomes in order."""
        out: list[Outcome] = []
        for lo in range(0, len(messages), self.batch):
            out += self._post(messages[lo:lo + self.batch])
        return out

    def _post(self, chunk: Sequence[Outgoing]) -> list[Outcome]:
        body = json.dumps({"messages": [{"key": m.key, "to": m.to, "text": m.text, "kind": m.kind,
                                         "customer": m.customer, "notice": m.notice_id, "urgent": m.urgent}
                                        for m in chunk]}, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self._secret, int(self._clock()), body)}
        status, reply = self._http.request("POST", self._http.path, body, headers)
        if not 200 <= status < 300:
            raise GatewayError(f"webhook {self.url} answered HTTP {status}: {reply[:80].decode('utf-8', 'replace')!r}")
        data = _json(status, reply, f"webhook {self.url}")
        results: dict[str, Outcome] = {}
        if data is not None:
            try:
                for r in data["results"]:
                    st = r.get("status", "accepted")
                    if st not in OUTCOMES:
                        raise GatewayError(f"webhook {self.url}: unknown status {st!r} for {r.get('key')!r}")
                    results[str(r["key"])] = Outcome(str(r["key"]), st, None if r.get("id") is None else str(r["id"]),
                                                     r.get("error"))
            except (KeyError, TypeError, AttributeError):
                raise GatewayError(f"webhook {self.url}: the answer is JSON but not {{\"results\": [...]}}") from None
        return [results.get(m.key) or Outcome(m.key, "accepted", m.key) for m in chunk]

    def lookup(self, key: str) -> Outcome | None:
        """Webhook receivers drop repeated keys themselves: a resend is the lookup."""
        return None


class SmsRestGateway:
    """A common HTTP SMS API shape: one JSON POST per message, a delivery receipt by callback.

    ``POST {base}/messages`` with ``Authorization: Bearer <token>``, ``Idempotency-Key: <key>`` and
    ``{"to", "text", "reference": <key>, "callback_url"}``; the provider answers 2xx with
    ``{"id": ..., "status": "accepted"|"queued"|"sent"}``, 4xx with ``{"error": {"code": ...,
    "message": ...}}`` (``invalid_number`` and its kin are a bad number), 429/5xx when busy.
    ``GET {base}/messages?reference=<key>`` finds a message sent before.  The provider later POSTs
    ``{"id": ..., "status": "delivered"|"failed"|"undelivered", "error": ...}`` to ``callback_url``
    (see ``headend.notices.receipts``)."""

    name = "sms"
    BAD_NUMBER = {"invalid_number", "invalid_phone", "unknown_subscriber", "not_a_number", "number_blocked"}

    def __init__(self, base_url: str, token: str, *, callback_url: str | None = None, timeout: float = 10.0,
                 concurrency: int = 4) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.callback_url = callback_url
        self._timeout = timeout
        self._prefix = _Http(self.base_url, timeout).path.rstrip("/")
        # one request per message and a provider's round trip of 100 ms or more: a few requests in
        # flight at once, each thread with its own keep-alive connection
        self.concurrency = max(1, int(concurrency))
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def _http(self) -> _Http:
        conn = getattr(self._local, "http", None)
        if conn is None:
            conn = self._local.http = _Http(self.base_url, self._timeout)
        return conn

    def _headers(self, key: str | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        if key:
            h["Idempotency-Key"] = key
        return h

    def send(self, messages: Sequence[Outgoing]) -> list[Outcome]:
        """One request per message, ``concurrency`` at a time; a link failure makes that message transient."""
        if self.concurrency == 1 or len(messages) < 2:
            return [self._try_one(m) for m in messages]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sms-gateway")
        return list(self._pool.map(self._try_one, messages))

    def _try_one(self, m: Outgoing) -> Outcome:
        try:
            return self._send_one(m)
        except GatewayError as exc:
            return Outcome(m.key, "transient", None, str(exc))

    def _send_one(self, m: Outgoing) -> Outcome:
        body = {"to": m.to, "text": m.text, "reference": m.key}
        if self.callback_url:
            body["callback_url"] = self.callback_url
        status, reply = self._http.request("POST", f"{self._prefix}/messages",
                                           json.dumps(body, ensure_ascii=False).encode(), self._headers(m.key))
        who = f"SMS provider {self.base_url}"
        try:
            data = _json(status, reply, who)
        except GatewayError as exc:
            return Outcome(m.key, "transient", None, str(exc))
        if 200 <= status < 300:
            if not isinstance(data, dict) or not data.get("id"):
                return Outcome(m.key, "transient", None, f"{who} answered HTTP {status} without a message id: {data!r}")
            return Outcome(m.key, "accepted", str(data["id"]))
        if status == 429 or status >= 500:
            return Outcome(m.key, "transient", None, f"{who} answered HTTP {status}")
        err = data.get("error") if isinstance(data, dict) else None
        code = str(err.get("code", "")) if isinstance(err, dict) else ""
        text = str(err.get("message", code)) if isinstance(err, dict) else repr(data)
        if code in self.BAD_NUMBER:
            return Outcome(m.key, "bad_number", None, f"{who}: {code}: {text}")
        if 400 <= status < 500 and status not in (401, 403, 408):
            return Outcome(m.key, "rejected", None, f"{who} refused the message: HTTP {status} {code} {text}".strip())
        # 401/403/408 and anything else: our setup or the link, not the message: keep it queued
        return Outcome(m.key, "transient", None, f"{who} answered HTTP {status} {code} {text}".strip())

    def lookup(self, key: str) -> Outcome | None:
        """The provider's record of a message sent with this reference, if any."""
        status, reply = self._http.request("GET", f"{self._prefix}/messages?{urlencode({'reference': key})}", None,
                                           self._headers())
        data = _json(status, reply, f"SMS provider {self.base_url}")
        if status != 200 or not isinstance(data, dict) or not data.get("messages"):
            return None
        first = data["messages"][0]
        return Outcome(key, "accepted", str(first["id"]))

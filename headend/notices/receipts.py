"""Delivery receipts: a small HTTP endpoint the SMS provider (or the webhook bridge) calls back.

``POST /receipts/<token>`` with ``{"id": <provider message id>, "status": "delivered" | "failed" |
"undelivered" | "expired" | ..., "error": "..."}`` (JSON, or the same fields form-encoded).  The
token is the shared secret in the callback URL; a wrong token is refused with 403.  Intermediate
statuses (queued, sent, accepted) are acknowledged and ignored; the final ones are recorded on the
delivery with that provider id.  Answers: 204 recorded or ignored, 404 unknown id (the provider
may retry), 400 unreadable body.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qsl

from headend.store import Store

__all__ = ["ReceiptServer", "receipt_state"]

log = logging.getLogger(__name__)

_DELIVERED = {"delivered", "delivrd", "success", "ok"}
_UNDELIVERED = {"failed", "undelivered", "undeliv", "expired", "rejected", "error"}


def receipt_state(status: str) -> str | None:
    """delivered / undelivered for a provider's final status word, None for an intermediate one."""
    s = str(status).strip().lower()
    return "delivered" if s in _DELIVERED else "undelivered" if s in _UNDELIVERED else None


class ReceiptServer:
    """Serves the receipt callback on host:port in a thread; ``url`` is what the provider is given."""

    def __init__(self, store: Store, host: str, port: int, token: str, *,
                 on_receipt: Callable[[str, str], None] | None = None) -> None:
        if not token:
            raise ValueError("the receipt endpoint needs a token (the secret in its URL)")
        outer = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True     # the answer's header and body are separate writes

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                outer._handle(self)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
                log.debug("receipt %s", format % args)

        self.store = store
        self._token = token
        self._on_receipt = on_receipt
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The callback URL, token included."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/receipts/{self._token}"

    def start(self) -> "ReceiptServer":
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="notice-receipts", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        token = h.path.rstrip("/").rsplit("/", 1)[-1]
        if not h.path.startswith("/receipts/") or not hmac.compare_digest(token.encode(), self._token.encode()):
            return self._answer(h, 403)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        try:
            if "json" in (h.headers.get("Content-Type") or "json"):
                data = json.loads(body)
            else:
                data = dict(parse_qsl(body.decode()))
            pid, status = str(data["id"]), str(data["status"])
        except (ValueError, KeyError, TypeError):
            return self._answer(h, 400)
        state = receipt_state(status)
        if state is None:
            return self._answer(h, 204)
        d = self.store.notice_receipt(pid, state, error=None if state == "delivered" else
                                      str(data.get("error") or status))
        if d is None:
            return self._answer(h, 404)
        if self._on_receipt is not None:
            self._on_receipt(pid, state)
        self._answer(h, 204)

    @staticmethod
    def _answer(h: BaseHTTPRequestHandler, code: int) -> None:
        h.send_response(code)
        h.send_header("Content-Length", "0")
        h.end_headers()

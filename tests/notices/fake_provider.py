"""A fake SMS provider and a webhook receiver: real HTTP servers on loopback, scripted faults.

The provider speaks the shape ``SmsRestGateway`` expects (POST /v1/messages with an
Idempotency-Key, GET /v1/messages?reference=, receipts POSTed to each message's callback_url).
It keeps what a real one would: every message it *delivered* (once per key), and the raw
requests.  Faults are queued per request: ``fail(n, status)``, ``garbage(n)``,
``drop_after_accept(n)`` (the message is taken, then the connection closes with no answer),
``hold()`` (the message is taken, the answer waits until ``release()``), and ``bad_numbers``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import urllib.request
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class FakeSmsProvider:
    def __init__(self, token: str = "tok") -> None:
        self.token = token
        self.lock = threading.Lock()
        self.delivered: list[dict[str, Any]] = []        # one entry per distinct key: what reached a phone
        self.by_key: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.faults: deque[tuple[str, int]] = deque()
        self.bad_numbers: set[str] = set()
        self.busy_for: dict[str, int] = {}             # phone -> how many more requests to it get a 503
        self.holding = threading.Event()
        self._release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                outer._post(self)

            def do_GET(self) -> None:  # noqa: N802
                outer._get(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    # scripting
    def fail(self, n: int, status: int = 503) -> None:
        self.faults.extend([("status", status)] * n)

    def garbage(self, n: int) -> None:
        self.faults.extend([("garbage", 0)] * n)

    def drop_after_accept(self, n: int) -> None:
        self.faults.extend([("drop", 0)] * n)

    def hold(self) -> None:
        self.faults.append(("hold", 0))

    def release(self) -> None:
        self._release.set()

    def phones(self) -> list[str]:
        with self.lock:
            return [m["to"] for m in self.delivered]

    def send_receipts(self, status: str = "delivered") -> int:
        """POST a receipt for every delivered message to its callback URL; return how many were taken."""
        n = 0
        for m in list(self.delivered):
            if not m.get("callback_url"):
                continue
            req = urllib.request.Request(m["callback_url"], data=json.dumps({"id": m["id"], "status": status}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=10) as resp:
                n += resp.status == 204
        return n

    # serving
    def _answer(self, h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str = "application/json") -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._answer(h, 401, b'{"error": {"code": "unauthorized", "message": "bad token"}}')
        with self.lock:
            self.requests += 1
            fault = self.faults.popleft() if self.faults else ("", 0)
        if fault[0] == "status":
            return self._answer(h, fault[1], b'{"error": {"code": "busy", "message": "try later"}}')
        if fault[0] == "garbage":
            return self._answer(h, 200, b"<html>gateway maintenance</html>", "text/html")
        msg = json.loads(body)
        with self.lock:
            busy = self.busy_for.get(msg["to"], 0)
            if busy:
                self.busy_for[msg["to"]] = busy - 1
        if busy:
            return self._answer(h, 503, b'{"error": {"code": "busy", "message": "try later"}}')
        if msg["to"] in self.bad_numbers:
            return self._answer(h, 400, b'{"error": {"code": "invalid_number", "message": "no such subscriber"}}')
        key = h.headers.get("Idempotency-Key") or msg["reference"]
        with self.lock:
            known = self.by_key.get(key)
            if known is None:
                known = self.by_key[key] = {"id": f"SM{len(self.by_key) + 1:06d}", **msg}
                self.delivered.append(known)
        if fault[0] == "drop":
            h.close_connection = True
            h.connection.shutdown(2)     # accepted, but the answer never arrives
            return
        if fault[0] == "hold":
            self.holding.set()
            self._release.wait(60)
        self._answer(h, 201, json.dumps({"id": known["id"], "status": "accepted"}).encode())

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._answer(h, 401, b"{}")
        ref = parse_qs(urlsplit(h.path).query).get("reference", [""])[0]
        with self.lock:
            m = self.by_key.get(ref)
        self._answer(h, 200, json.dumps({"messages": [{"id": m["id"], "status": "accepted"}] if m else []}).encode())


class WebhookReceiver:
    """Checks the signature, drops repeated keys, keeps every message once."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.messages: list[dict[str, Any]] = []
        self.keys: set[str] = set()
        self.bad_signatures = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sig = self.headers.get("X-Prepaid645-Signature", "")
                parts = dict(p.split("=", 1) for p in sig.split(",") if "=" in p)
                want = hmac.new(outer.secret, parts.get("t", "").encode() + b"." + body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(want, parts.get("v1", "")):
                    outer.bad_signatures += 1
                    out, code = b"{}", 401
                else:
                    results = []
                    for m in json.loads(body)["messages"]:
                        if m["key"] not in outer.keys:
                            outer.keys.add(m["key"])
                            outer.messages.append(m)
                        results.append({"key": m["key"], "id": "W" + m["key"], "status": "accepted"})
                    out, code = json.dumps({"results": results}).encode(), 200
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""Notice sender throughput: notices claimed, rendered, signed, handed to the webhook gateway and
recorded per second, on a real SQLite file and a loopback webhook receiver (aim: >= 2,000/s).

Baseline, interleaved in the same run (``interleaved_values``): the bare HTTP loop that posts the
same batches (same sizes, texts already made) to the same receiver over one keep-alive
connection, with no store, templates or signature: what the wire alone costs.
"""

from __future__ import annotations

import http.client
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from headend.notices.gateways import WebhookGateway
from headend.notices.sender import NoticeSender, Policy
from headend.notices.templates import load_templates
from headend.store import open_store
from tools.bench.interleave import interleaved_values

Report = Callable[..., None]
N = 2000              # notices per round
CUSTOMERS = 500
BATCH = 100           # messages per webhook POST (the gateway's default)
ROUNDS = 5
BARE_REPEAT = 20


class _Receiver:
    """Reads each POST and answers 200 with an empty body (every message accepted)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run(report: Report) -> None:
    """Measure the sender against the bare post loop, interleaved."""
    recv = _Receiver()
    url = f"http://127.0.0.1:{recv.port}/hook"
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "bench.db")
        store.add_meters([{"address": f"{i:012d}", "link": "tcp://127.0.0.1:9", "customer": f"{i:012d}"}
                          for i in range(1, CUSTOMERS + 1)], actor="bench")
        with store.atomic():
            for i in range(1, CUSTOMERS + 1):
                store.update_account(f"{i:012d}", actor="bench", phone=f"138{i:08d}")
        sender = NoticeSender(store, WebhookGateway(url, b"k" * 32, batch=BATCH), load_templates(),
                              Policy(quiet=None, rate_n=10_000, batch=500), owner="bench")
        catalog = load_templates()
        rounds = [0]

        def queue() -> None:
            r = rounds[0] = rounds[0] + 1
            store.queue_notices(
                (f"{1 + i % CUSTOMERS:012d}", "payment_received", "x", f"bench:{r}:{i}",
                 {"customer": f"{1 + i % CUSTOMERS:012d}", "amount_fen": 5000 + i, "balance_fen": 12345 + i,
                  "channel": "counter"}, 0, 0) for i in range(N))

        def sender_rate() -> float:
            queue()
            now = int(time.time())
            t0 = time.perf_counter()
            sent = 0
            while (rep := sender.run_once(now)).claimed:
                sent += rep.sent
            dt = time.perf_counter() - t0
            if sent != N:
                raise RuntimeError(f"sent {sent} of {N} notices")
            return sent / dt

        # the same bodies the gateway posts, made once: the wire and the receiver alone
        bodies = []
        for lo in range(0, N, BATCH):
            msgs = [{"key": f"bare:{i}", "to": f"138{1 + i % CUSTOMERS:08d}", "kind": "payment_received",
                     "customer": f"{1 + i % CUSTOMERS:012d}", "notice": i, "urgent": False,
                     "text": catalog.render("payment_received", "zh", {"customer": f"{1 + i % CUSTOMERS:012d}",
                                                                       "amount_fen": 5000 + i,
                                                                       "balance_fen": 12345 + i, "channel": "counter"})}
                    for i in range(lo, lo + BATCH)]
            bodies.append(json.dumps({"messages": msgs}, ensure_ascii=False).encode())

        def bare_rate() -> float:
            conn = http.client.HTTPConnection("127.0.0.1", recv.port, timeout=30)
            t0 = time.perf_counter()
            for _ in range(BARE_REPEAT):     # one pass is a few ms: repeated, so timer noise does not rule
                for b in bodies:
                    conn.request("POST", "/hook", body=b, headers={"Content-Type": "application/json"})
                    conn.getresponse().read()
            dt = time.perf_counter() - t0
            conn.close()
            return BARE_REPEAT * N / dt

        sender_rate()                  # warm-up: templates, statements, connection
        bare_rate()
        r = interleaved_values(sender_rate, bare_rate, rounds=ROUNDS)
        report("notices: claimed, rendered, signed, posted to a loopback webhook, recorded (2,000 per round)",
               r.a, "notices/s", baseline=r.b, pairs=r)
        print(f"    sender / bare HTTP post loop of the same batches: {r.describe()}", flush=True)
        store.close()
    recv.close()

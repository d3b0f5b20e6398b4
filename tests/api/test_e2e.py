"""End to end: channels pay over real HTTP into a real `headend serve --api` process, whose outbox
tops up simulated meters (tools.fleet, real firmware cores over TCP).

After every scenario the money agrees three ways, to the fen: the journal proves every cached
balance (``check_ledger``), each local meter's wallet as read back over DL/T 645 equals the money
the journal says reached it, and each remote account holds exactly its payments.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from headend.api.signing import ChannelAuth, check_signature, read_signature_headers, sign_headers
from headend.store import Payment
from headend.store.models import CHANNEL_KINDS
from tests.api.support import FleetThread
from tests.headend.headend_proc import HeadEnd

PAID_AT = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
FINAL = {"confirmed_on_meter", "credited", "reversed"}


def _local(i: int) -> tuple[str, str]:
    return f"{100 + i:012d}", f"{500 + i:012d}"  # (meter, customer)


def _remote(i: int) -> str:
    return f"{700 + i:012d}"


class Site:
    """A head-end with `serve --api`, a fleet of local meters, remote accounts and channels."""

    def __init__(self, tmp: Path, n_local: int, n_remote: int, kinds: tuple[str, ...] = ("online_banking",),
                 callback_url: str | None = None, db: str | None = None) -> None:
        self.he = HeadEnd(tmp)
        if db is not None:  # a PostgreSQL database (tests/api/test_pg_payments.py), not the SQLite file
            self.he.db = db  # type: ignore[assignment]
            self.he.env["PREPAID645_DB"] = db
        self.tmp = tmp
        self.meters = [_local(i)[0] for i in range(n_local)]
        self.fleet = FleetThread(self.meters, master=self.he.master).start()
        self.channels: dict[str, tuple[str, bytes]] = {}
        with self.he.store() as s:
            for i, m in enumerate(self.meters):
                cust = _local(i)[1]
                s.add_account(cust, actor="test")
                s.add_meter(m, link=self.fleet.link_of(m), customer=cust, mode="local", actor="test")
            for i in range(n_remote):
                s.add_account(_remote(i), actor="test")
        for kind in kinds:
            self.add_channel(kind.replace("_", "-"), kind, *(("--callback", callback_url) if callback_url else ()))
        self.url = ""

    def add_channel(self, cid: str, kind: str, *extra: str) -> None:
        """`headend channel add`, as an operator does it: the secret is shown once."""
        code, out, err = self.he.cli("channel", "add", cid, "--kind", kind, "--json", *extra)
        assert code == 0, err
        doc = json.loads(out)
        self.channels[cid] = (doc["key_id"], doc["secret"].encode())

    def start(self, *extra: str) -> "Site":
        # the first start takes any free port (a port picked beforehand could be taken by the time
        # serve binds it); a restart asks for the same one again, as a channel expects
        port = getattr(self, "he_port", 0)
        self.he.start_serve("--api", f"tcp://127.0.0.1:{port}", "--no-costctl", *extra)
        lines = [x for x in self.he.serve_output if "payments API on" in x]
        assert lines, self.he.serve_output
        self.url = lines[-1].split("payments API on ")[1].split()[0]
        self.he_port = int(self.url.rsplit(":", 1)[1])
        return self

    def client(self, channel: str, **kw) -> httpx.Client:
        key_id, secret = self.channels[channel]
        return httpx.Client(base_url=self.url, auth=ChannelAuth(key_id, secret), timeout=kw.pop("timeout", 30), **kw)

    def abandon(self, channel: str, body: dict) -> socket.socket:
        """POST a signed payment and never read the answer: a client that gave up waiting (the
        socket stays open until the caller closes it, so the server surely has the whole request)."""
        host, port = self.url[len("http://"):].rsplit(":", 1)
        raw = json.dumps(body).encode()
        head = {"Host": f"{host}:{port}", "Content-Type": "application/json", "Content-Length": str(len(raw)),
                **sign_headers(*self.channels[channel], "POST", "/v1/payments", raw)}
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(b"POST /v1/payments HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode()
                     + b"\r\n" + raw)
        return sock

    def wait_payment(self, channel: str, txn_id: str, timeout: float = 60) -> Payment:
        """The payment once the store has it (generous: the machine may be busy)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.he.store() as s:
                found = [p for p in s.list_payments(limit=10**6) if (p.channel_id, p.txn_id) == (channel, txn_id)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"payment {channel}/{txn_id} never reached the store")
            time.sleep(0.05)

    def close(self) -> None:
        self.he.stop_serve()
        self.fleet.stop()

    def wait_final(self, timeout: float = 120) -> None:
        """Until no payment is on its way to a meter (generous: the machine may be busy)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.he.store() as s:
                pending = [p for p in s.list_payments(limit=10**6) if p.state not in FINAL]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(pending)} payments never reached a final state, e.g. {pending[0]}")
            time.sleep(0.1)

    def meter_money(self) -> dict[str, int]:
        """Every local meter's wallet in fen, read over DL/T 645 through `headend read`."""
        code, out, err = self.he.cli("read", "--where", "mode=local", "remaining_money", "--json")
        assert code == 0, err
        return {c["meter"]: round(float(c["reply"]["values"]["00900200"]["value"]) * 100) for c in json.loads(out)}

    def assert_money_agrees(self) -> None:
        """Journal == cached balances == money on the meters, to the fen."""
        self.wait_final()
        with self.he.store() as s:
            assert s.check_ledger() == []
            journal = s.journal(limit=10**7)
            payments = s.list_payments(limit=10**6)
            to_meter = {m: 0 for m in self.meters}
            for e in journal:
                if e.meter in to_meter:
                    to_meter[e.meter] += e.meter_fen
            for i in range(len(self.meters)):
                # a local customer's account keeps nothing: every payment went on to the meter
                assert s.get_account(_local(i)[1]).balance_fen == 0
            remote = {a.customer: a.balance_fen for a in s.list_accounts() if a.customer.startswith("0000000007")}
            paid = {c: 0 for c in remote}
            for p in payments:
                if p.customer in paid and p.state == "credited":
                    paid[p.customer] += p.amount_fen
            assert remote == paid
            confirmed = {m: 0 for m in self.meters}
            for p in payments:
                if p.state == "confirmed_on_meter":
                    confirmed[p.meter] += p.amount_fen
        assert to_meter == confirmed
        assert self.meter_money() == to_meter


def _fixed(receipt: dict) -> dict:
    """What a receipt says that never changes (state and its times move on)."""
    return {k: v for k, v in receipt.items() if k not in ("state", "confirmed_at", "credited_at", "reversed_at")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pay(channel: str, txn: str, amount: int, *, customer: str | None = None, meter: str | None = None) -> dict:
    body = {"channel_id": channel, "txn_id": txn, "amount_fen": amount, "paid_at": PAID_AT}
    if customer:
        body["customer_no"] = customer
    if meter:
        body["meter_no"] = meter
    return body


@pytest.fixture
def site_factory(tmp_path):
    made: list[Site] = []

    def make(*a, **kw) -> Site:
        made.append(Site(tmp_path, *a, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_every_channel_kind_reaches_the_meter_or_the_account_once(site_factory):
    site = site_factory(len(CHANNEL_KINDS), len(CHANNEL_KINDS), kinds=CHANNEL_KINDS).start()
    receipts = []
    for i, kind in enumerate(CHANNEL_KINDS):
        cid = kind.replace("_", "-")
        meter, cust = _local(i)
        with site.client(cid) as c:
            for body in (pay(cid, f"{cid}-L", 1000 + i, customer=cust),
                         pay(cid, f"{cid}-M", 200 + i, meter=meter),
                         pay(cid, f"{cid}-R", 3000 + i, customer=_remote(i))):
                r = c.post("/v1/payments", json=body)
                assert r.status_code == 201, r.text
                receipts.append((cid, r.json()))
                again = c.post("/v1/payments", json=body)  # a repeat: the same payment, maybe further along
                assert again.status_code == 200 and _fixed(again.json()) == _fixed(r.json())
    site.assert_money_agrees()
    with site.he.store() as s:
        assert len(s.list_payments(limit=1000)) == 3 * len(CHANNEL_KINDS)
    for i in range(len(CHANNEL_KINDS)):
        assert site.meter_money()[_local(i)[0]] == 1000 + i + 200 + i
    # the channel sees its payments confirmed on the meter; after that no reversal, no money moves
    cid, first = receipts[0]
    with site.client(cid) as c:
        now = c.get(f"/v1/payments/{first['payment_id']}").json()
        assert now["state"] == "confirmed_on_meter" and now["confirmed_at"] >= now["sent_at"]
        r = c.post(f"/v1/payments/{first['payment_id']}/reversal", json={"reason": "too late"})
        assert r.status_code == 409 and r.json()["code"] == "not_reversible"
    site.assert_money_agrees()


def test_rotated_secret_and_disabled_channel_take_effect_at_once(site_factory):
    site = site_factory(1, 1).start()
    old = site.channels["online-banking"]
    with site.client("online-banking") as c:
        assert c.post("/v1/payments", json=pay("online-banking", "ROT-1", 100, customer=_remote(0))).status_code == 201
    code, out, err = site.he.cli("channel", "rotate-secret", "online-banking", "--json")
    assert code == 0, err
    site.channels["online-banking"] = (json.loads(out)["key_id"], json.loads(out)["secret"].encode())
    with httpx.Client(base_url=site.url, auth=ChannelAuth(*old)) as c:
        r = c.post("/v1/payments", json=pay("online-banking", "ROT-2", 100, customer=_remote(0)))
        assert r.status_code == 401 and r.json()["code"] == "channel_unknown"
    with site.client("online-banking") as c:
        assert c.post("/v1/payments", json=pay("online-banking", "ROT-2", 100, customer=_remote(0))).status_code == 201
    assert site.he.cli("channel", "disable", "online-banking")[0] == 0
    with site.client("online-banking") as c:
        r = c.post("/v1/payments", json=pay("online-banking", "ROT-3", 100, customer=_remote(0)))
        assert r.status_code == 403 and r.json()["code"] == "channel_disabled"
    site.assert_money_agrees()
    with site.he.store() as s:
        assert s.get_account(_remote(0)).balance_fen == 200


def test_duplicate_posts_in_parallel_and_retries_after_timeouts(site_factory):
    site = site_factory(2, 1).start()
    meter, cust = _local(0)
    body = pay("online-banking", "DUP-1", 777, customer=cust)

    def post(_: int) -> tuple[int, dict]:
        with site.client("online-banking") as c:
            r = c.post("/v1/payments", json=body)
            return r.status_code, r.json()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(post, range(32)))
    assert sorted(code for code, _ in results) == [200] * 31 + [201]
    assert len({json.dumps(r["payment_id"]) for _, r in results}) == 1

    # clients that give up waiting for the answer, then ask again (new nonce, same txn id): the
    # retry gets the first receipt and moves no more money
    meter2, cust2 = _local(1)
    remote = pay("online-banking", "TIMEOUT-R", 999, customer=_remote(0))
    for body2 in (pay("online-banking", "TIMEOUT-1", 555, customer=cust2), remote):
        hasty = [site.abandon("online-banking", body2) for _ in range(3)]
        first = site.wait_payment("online-banking", body2["txn_id"])
        for sock in hasty:
            sock.close()
        with site.client("online-banking") as c:
            final = c.post("/v1/payments", json=body2)
        assert final.status_code == 200 and final.json()["payment_id"] == first.id
    site.assert_money_agrees()
    assert site.meter_money() == {meter: 777, meter2: 555}
    with site.he.store() as s:
        assert s.get_account(_remote(0)).balance_fen == 999
        assert len(s.list_payments(limit=100)) == 3


def test_serve_killed_mid_flight_and_restarted(site_factory):
    n = 8
    site = site_factory(n, 2).start()
    bodies = [pay("online-banking", f"K-{i}-{j}", 100 * (i + 1) + j, customer=_local(i)[1])
              for i in range(n) for j in range(5)]
    bodies += [pay("online-banking", f"K-R-{j}", 50 + j, customer=_remote(j % 2)) for j in range(6)]
    got: dict[str, dict] = {}
    lock = threading.Lock()

    def post(body: dict) -> None:
        try:
            with site.client("online-banking", timeout=10) as c:
                r = c.post("/v1/payments", json=body)
            if r.status_code in (200, 201):
                with lock:
                    got[body["txn_id"]] = r.json()
        except httpx.HTTPError:
            pass  # serve died under it: retried below

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(post, b) for b in bodies]
        while len(got) < 5:
            time.sleep(0.001)
        site.he.serve_proc.send_signal(signal.SIGKILL)  # mid-flight: requests and recharges in progress
        site.he.serve_proc.wait()
        for f in futures:
            f.result()
    assert len(got) < len(bodies)
    site.he.serve_proc = None
    site.start()  # same database, same port; recharges left "sent" resume with their purchase count
    with site.client("online-banking") as c:
        for body in bodies:  # the channel retries everything it did not see a receipt for (and re-asks the rest)
            r = c.post("/v1/payments", json=body)
            assert r.status_code in (200, 201), r.text
            if body["txn_id"] in got:
                assert r.json()["payment_id"] == got[body["txn_id"]]["payment_id"]
    site.assert_money_agrees()
    with site.he.store() as s:
        assert len(s.list_payments(limit=1000)) == len(bodies)
    money = site.meter_money()
    for i in range(n):
        assert money[_local(i)[0]] == sum(100 * (i + 1) + j for j in range(5))


def test_a_meter_that_misses_replies_is_topped_up_once(site_factory):
    site = site_factory(2, 0).start()
    meter, cust = _local(0)
    site.fleet.fault(meter).drop = 3
    site.fleet.fault(meter).drop_kind = "recharge"
    with site.client("online-banking") as c:
        assert c.post("/v1/payments", json=pay("online-banking", "MISS-1", 4321, customer=cust)).status_code == 201
        assert c.post("/v1/payments", json=pay("online-banking", "MISS-2", 1000, meter=meter)).status_code == 201
    site.assert_money_agrees()
    assert site.meter_money()[meter] == 5321
    assert site.fleet.fault(meter).drop == 0  # every lost reply was really lost


class _Receiver(BaseHTTPRequestHandler):
    answers: list[int] = []
    seen: list[tuple[dict, dict, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((dict(self.headers), json.loads(body), body))
        status = self.answers.pop(0) if self.answers else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_result_callback_signed_retried_and_sent_once_per_state(site_factory, tmp_path):
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.answers = [503]  # the channel is down for the first try
    _Receiver.seen = []
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/pp645/result?src=test"
        site = site_factory(1, 1, callback_url=url)
        cfg = tmp_path / "prepaid645.toml"
        cfg.write_text("[api]\ncallback_backoff_s = [0]\n")
        site.start("--config", str(cfg))
        meter, cust = _local(0)
        with site.client("online-banking") as c:
            p = c.post("/v1/payments", json=pay("online-banking", "CB-1", 600, customer=cust)).json()
            c.post("/v1/payments", json=pay("online-banking", "CB-R", 700, customer=_remote(0)))
        site.assert_money_agrees()
        deadline = time.monotonic() + 60
        while len(_Receiver.seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # longer than several sender rounds: nothing more may come
        key_id, secret = site.channels["online-banking"]
        assert len(_Receiver.seen) == 2, _Receiver.seen
        for headers, doc, raw in _Receiver.seen:
            parts = read_signature_headers(headers)
            assert parts.key_id == key_id
            assert check_signature(secret, parts, "POST", "/pp645/result?src=test", raw)
            assert doc["event"] == "payment.confirmed_on_meter" and doc["payment"]["payment_id"] == p["payment_id"]
        assert _Receiver.seen[0][0]["X-PP645-Callback-Id"] == _Receiver.seen[1][0]["X-PP645-Callback-Id"]
        assert _Receiver.seen[0][0]["X-PP645-Nonce"] != _Receiver.seen[1][0]["X-PP645-Nonce"]
        with site.he.store() as s:
            [cb] = s.callbacks(payment_id=p["payment_id"])
            assert (cb.status, cb.attempts) == ("delivered", 2)
        # a restarted serve sweeps again and sends nothing more
        site.he.stop_serve()
        site.start("--config", str(cfg))
        time.sleep(1.0)
        assert len(_Receiver.seen) == 2
    finally:
        receiver.shutdown()

"""The payments API over real HTTP (uvicorn on loopback, httpx), on a real SQLite file.

Every refusal is checked for its status, machine-readable code and field, its audit row, and for
moving no money (balances, journal, payments and outbox exactly as before).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from headend.api.config import ApiConfig
from headend.api.signing import ChannelAuth, sign_headers
from headend.costctl.decide import Rules
from headend.keys import KeyStore
from headend.store import open_store
from tests.api.support import LiveApi, add_api_channel

CUST, CUST2 = "000000000042", "000000000043"
LOCAL_METER, REMOTE_METER = "000000000001", "000000000002"
MAX_FEN = 1_000_000
PAID_AT = datetime(2026, 12, 5, 8, 30, tzinfo=timezone.utc).isoformat()


class World:
    def __init__(self, tmp_path, db: str | None = None) -> None:
        self.db = db or tmp_path / "api.db"  # an SQLite file, or a PostgreSQL URL (tests/api/test_pg_payments.py)
        self.keys = KeyStore.in_memory(os.urandom(32))
        self.store = open_store(self.db)
        s = self.store
        s.add_account(CUST, actor="test")
        s.add_account(CUST2, actor="test")
        # unreachable links: these tests stop at the outbox; tests/api/test_e2e.py goes to the meters
        s.add_meter(LOCAL_METER, link="tcp://127.0.0.1:9", customer=CUST, mode="local", actor="test")
        s.add_meter(REMOTE_METER, link="tcp://127.0.0.1:9", customer=CUST2, mode="remote", actor="test")
        self.bank = add_api_channel(s, self.keys, "bank-1", "online_banking", max_amount_fen=MAX_FEN)
        self.app = add_api_channel(s, self.keys, "app-1", "mobile_app")
        self.off = add_api_channel(s, self.keys, "kiosk-9", "kiosk")
        s.update_channel("kiosk-9", actor="test", enabled=False)

    def client(self, api: LiveApi, who: tuple[str, bytes] | None = None, **kw) -> httpx.Client:
        key_id, secret = who or self.bank
        return httpx.Client(base_url=api.url, auth=ChannelAuth(key_id, secret, **kw), timeout=30)

    def money(self) -> tuple:
        """Everything a payment would change."""
        s = self.store
        balances = tuple((a.customer, a.balance_fen) for a in s.list_accounts())
        return (balances, len(s.journal(limit=10**6)), len(s.list_payments(limit=10**6)),
                sum(s.count_commands().values()))


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.store.close()


@pytest.fixture
def api(world):
    with LiveApi(world.db, world.keys, ApiConfig(listen="tcp://127.0.0.1:0", clock_skew_s=120)) as a:
        yield a


def pay(channel="bank-1", txn="T1", amount=5000, **extra):
    body = {"channel_id": channel, "txn_id": txn, "customer_no": CUST2, "amount_fen": amount, "paid_at": PAID_AT}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def refused(world, resp: httpx.Response, status: int, code: str, field: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == status and body["code"] == code and body["type"].endswith("/" + code)
    assert body["title"] and body["detail"]
    assert body.get("field") == field
    last = world.store.audit_entries(limit=1)[0]  # the refusal is the last thing that happened
    assert (last.action, last.detail["code"], last.detail["status"]) == ("api.refused", code, status), last
    return body


def test_health_is_unsigned_and_openapi_is_published(api):
    assert httpx.get(api.url + "/v1/health").json() == {"status": "ok"}
    doc = httpx.get(api.url + "/openapi.json").json()
    assert set(doc["paths"]) >= {"/v1/accounts/{customer_no}", "/v1/payments", "/v1/payments/{payment_id}",
                                 "/v1/channels/{channel_id}/payments/{txn_id}", "/v1/payments/{payment_id}/reversal"}
    assert doc["components"]["schemas"]["PaymentIn"]["properties"]["amount_fen"]["type"] == "integer"


def test_account_lookup(world, api):
    with world.client(api) as c:
        r = c.get(f"/v1/accounts/{CUST}")
        assert r.status_code == 200 and r.json()["customer_no"] == CUST
        refused(world, c.get(f"/v1/accounts/{CUST}%0A"), 422, "invalid_field", "customer_no")


def test_a_payment_once_then_its_receipt_again(world, api):
    before = world.store.get_account(CUST2).balance_fen
    with world.client(api) as c:
        r1 = c.post("/v1/payments", json=pay())
        assert r1.status_code == 201, r1.text
        first = r1.json()
        assert (first["state"], first["amount_fen"], first["customer_no"]) == ("credited", 5000, CUST2)
        r2 = c.post("/v1/payments", json=pay())
        assert r2.status_code == 200 and r2.json() == first
        assert c.get(f"/v1/payments/{first['payment_id']}").json() == first
        assert c.get("/v1/channels/bank-1/payments/T1").json() == first
        snapshot = world.money()
        refused(world, c.post("/v1/payments", json=pay(amount=5001)), 409, "duplicate_conflict", "amount_fen")
        assert world.money() == snapshot
    assert world.store.get_account(CUST2).balance_fen == before + 5000
    assert world.store.check_ledger() == []


def test_the_same_txn_id_with_another_tender_is_a_different_body(world, api):
    """A POS slip's terminal and trace are part of what the channel posted: a repeat that names
    another slip is another payment under a used id, not the first one again."""
    slip = {"kind": "unionpay_pos", "terminal_id": "T0001", "trace_no": "000123"}
    with world.client(api) as c:
        first = c.post("/v1/payments", json=pay(txn="P1", tender=slip))
        assert first.status_code == 201, first.text
        again = c.post("/v1/payments", json=pay(txn="P1", tender=dict(reversed(list(slip.items())))))
        assert again.status_code == 200 and again.json() == first.json()  # the same slip, keys in another order
        snapshot = world.money()
        refused(world, c.post("/v1/payments", json=pay(txn="P1", tender={**slip, "trace_no": "000124"})), 409,
                "duplicate_conflict", "tender")
        refused(world, c.post("/v1/payments", json=pay(txn="P1")), 409, "duplicate_conflict", "tender")
        assert world.money() == snapshot


def test_a_channels_payment_is_recorded_by_its_payment_row_and_a_refusal_by_an_audit_row(world, api):
    with world.client(api) as c:
        r = c.post("/v1/payments", json=pay(txn="A1"))
        assert r.status_code == 201, r.text
        refused(world, c.post("/v1/payments", json=pay(txn="A2", amount=MAX_FEN + 1)), 422, "amount_too_large",
                "amount_fen")
    p = world.store.get_payment(r.json()["payment_id"])
    # who took it, through which channel, under which id and when: on the payment itself
    assert (p.actor, p.channel_id, p.txn_id, p.accepted_at is not None) == ("channel:bank-1", "bank-1", "A1", True)
    assert world.store.audit_entries(action="payment.accept") == []
    assert [e.detail["code"] for e in world.store.audit_entries(action="api.refused")] == ["amount_too_large"]


def test_a_payment_to_a_local_meter_queues_one_recharge(world, api):
    with world.client(api) as c:
        r = c.post("/v1/payments", json=pay(txn="L1", customer_no=None, meter_no=LOCAL_METER, amount=1234))
        assert r.status_code == 201, r.text
        assert c.post("/v1/payments", json=pay(txn="L1", customer_no=None, meter_no=LOCAL_METER,
                                               amount=1234)).status_code == 200
    assert r.json()["state"] == "sent_to_meter"
    [cmd] = world.store.list_commands(meter=LOCAL_METER, kind="recharge")
    assert cmd.params["amount_fen"] == 1234


def _raw(api, method, path, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(method, api.url + path, content=body, headers={"Content-Type": "application/json", **headers})


def test_signature_refusals(world, api):
    key_id, secret = world.bank
    body = json.dumps(pay(txn="S1")).encode()
    snapshot = world.money()

    refused(world, _raw(api, "POST", "/v1/payments", body, {}), 401, "signature_missing", "X-PP645-Key")
    h = sign_headers(key_id, secret, "POST", "/v1/payments", body)
    refused(world, _raw(api, "POST", "/v1/payments", body, {**h, "X-PP645-Nonce": "x"}), 401,
            "signature_malformed", "X-PP645-Nonce")
    wrong = sign_headers(key_id, b"not the secret", "POST", "/v1/payments", body)
    refused(world, _raw(api, "POST", "/v1/payments", body, wrong), 401, "signature_invalid", "X-PP645-Signature")
    tampered = sign_headers(key_id, secret, "POST", "/v1/payments", body)
    refused(world, _raw(api, "POST", "/v1/payments", body.replace(b"5000", b"9000"), tampered), 401,
            "signature_invalid", "X-PP645-Signature")
    other_path = sign_headers(key_id, secret, "POST", "/v1/payments/1/reversal", body)
    refused(world, _raw(api, "POST", "/v1/payments", body, other_path), 401, "signature_invalid",
            "X-PP645-Signature")
    stale = sign_headers(key_id, secret, "POST", "/v1/payments", body, timestamp=int(time.time()) - 1000)
    refused(world, _raw(api, "POST", "/v1/payments", body, stale), 401, "timestamp_stale", "X-PP645-Timestamp")
    future = sign_headers(key_id, secret, "POST", "/v1/payments", body, timestamp=int(time.time()) + 1000)
    refused(world, _raw(api, "POST", "/v1/payments", body, future), 401, "timestamp_stale", "X-PP645-Timestamp")
    unknown = sign_headers("nobody-k1", secret, "POST", "/v1/payments", body)
    refused(world, _raw(api, "POST", "/v1/payments", body, unknown), 401, "channel_unknown", "X-PP645-Key")
    off_key, off_secret = world.off
    off_body = json.dumps(pay(channel="kiosk-9", txn="S1")).encode()
    off = sign_headers(off_key, off_secret, "POST", "/v1/payments", off_body)
    refused(world, _raw(api, "POST", "/v1/payments", off_body, off), 403, "channel_disabled")
    assert world.money() == snapshot

    good = sign_headers(key_id, secret, "POST", "/v1/payments", body)
    assert _raw(api, "POST", "/v1/payments", body, good).status_code == 201
    after = world.money()
    refused(world, _raw(api, "POST", "/v1/payments", body, good), 401, "nonce_replayed", "X-PP645-Nonce")
    assert world.money() == after


def test_a_replay_is_refused_by_a_restarted_server(world):
    key_id, secret = world.bank
    body = json.dumps(pay(txn="R1")).encode()
    h = sign_headers(key_id, secret, "POST", "/v1/payments", body)
    with LiveApi(world.db, world.keys) as api:
        assert _raw(api, "POST", "/v1/payments", body, h).status_code == 201
    snapshot = world.money()
    with LiveApi(world.db, world.keys) as api:
        refused(world, _raw(api, "POST", "/v1/payments", body, h), 401, "nonce_replayed", "X-PP645-Nonce")
    assert world.money() == snapshot


@pytest.mark.parametrize("change,status,code,field", [
    ({"amount_fen": 0}, 422, "amount_invalid", "amount_fen"),
    ({"amount_fen": -100}, 422, "amount_invalid", "amount_fen"),
    ({"amount_fen": MAX_FEN + 1}, 422, "amount_too_large", "amount_fen"),
    ({"amount_fen": 10**40}, 422, "amount_too_large", "amount_fen"),
    ({"amount_fen": 12.5}, 422, "amount_not_integer", "amount_fen"),
    ({"amount_fen": 100.0}, 422, "amount_not_integer", "amount_fen"),
    ({"amount_fen": "100"}, 422, "amount_not_integer", "amount_fen"),
    ({"amount_fen": True}, 422, "amount_not_integer", "amount_fen"),
    ({"amount_fen": None}, 422, "invalid_field", "amount_fen"),
    ({"customer_no": "000000000999"}, 404, "unknown_customer", "customer_no"),
    ({"customer_no": None, "meter_no": "000000000999"}, 404, "unknown_meter", "meter_no"),
    ({"customer_no": None}, 404, "unknown_customer", "customer_no"),
    ({"meter_no": LOCAL_METER}, 422, "meter_customer_mismatch", "meter_no"),
    ({"customer_no": "42"}, 422, "invalid_field", "customer_no"),
    ({"paid_at": "yesterday"}, 422, "invalid_field", "paid_at"),
    ({"paid_at": "2026-12-05T08:30:00"}, 422, "invalid_field", "paid_at"),
    ({"txn_id": ""}, 422, "invalid_field", "txn_id"),
    ({"surprise": 1}, 422, "unknown_field", "surprise"),
    ({"channel_id": "app-1"}, 403, "channel_mismatch", "channel_id"),
])
def test_bad_payments_are_refused_and_move_no_money(world, api, change, status, code, field):
    snapshot = world.money()
    with world.client(api) as c:
        refused(world, c.post("/v1/payments", json=pay(txn="B1", **change)), status, code, field)
    assert world.money() == snapshot


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b"null", b"\xff\xfe", b"[" * 100000,
                                  b'{"txn_id": "\\ud800"}'])
def test_bodies_that_are_not_json_objects(world, api, body):
    key_id, secret = world.bank
    snapshot = world.money()
    h = sign_headers(key_id, secret, "POST", "/v1/payments", body)
    code = "body_too_large" if len(body) > 16384 else "invalid_json"
    refused(world, _raw(api, "POST", "/v1/payments", body, h), 413 if code == "body_too_large" else 422, code)
    assert world.money() == snapshot


@pytest.mark.parametrize("doubled,field", [
    (b'"amount_fen": 5000', "amount_fen"),
    (b'"customer_no": "000000000043"', "customer_no"),
    (b'"tender": {"trace": "1", "trace": "2"}', "trace"),
])
def test_a_body_with_a_key_twice_is_refused_not_read_one_way(world, api, doubled, field):
    """JSON parsers differ on a repeated key (first or last wins): the channel's system and ours
    could read different amounts or customers from the same signed bytes."""
    key_id, secret = world.bank
    body = json.dumps(pay(txn="K1")).encode()
    if field == "trace":
        body = body[:-1] + b", " + doubled + b"}"
    else:
        body = body[:-1] + b", " + doubled.replace(b"5000", b"7000").replace(b"43", b"42") + b"}"
    snapshot = world.money()
    h = sign_headers(key_id, secret, "POST", "/v1/payments", body)
    got = refused(world, _raw(api, "POST", "/v1/payments", body, h), 422, "duplicate_key", field)
    assert repr(field) in got["detail"]
    assert world.money() == snapshot


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonx"])
def test_a_body_that_is_not_declared_json_is_refused(world, api, content_type):
    key_id, secret = world.bank
    body = json.dumps(pay(txn="M1")).encode()
    snapshot = world.money()
    h = sign_headers(key_id, secret, "POST", "/v1/payments", body)
    if content_type:
        h["Content-Type"] = content_type
    resp = httpx.post(api.url + "/v1/payments", content=body, headers=h)
    refused(world, resp, 415, "unsupported_media_type", "Content-Type")
    assert world.money() == snapshot
    # with a charset it is still JSON
    h = sign_headers(key_id, secret, "POST", "/v1/payments", body)
    resp = httpx.post(api.url + "/v1/payments", content=body,
                      headers={**h, "Content-Type": "application/json; charset=utf-8"})
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("method,path", [("POST", "/v1/payments/"), ("GET", "/v1/payments/1/"),
                                         ("GET", f"/v1/accounts/{CUST}/")])
def test_a_trailing_slash_is_refused_not_redirected(world, api, method, path):
    """A redirect is no problem detail and leaves no audit row; its Location was built from the
    request's own Host header, sending a client that follows it (signature and body) elsewhere."""
    key_id, secret = world.bank
    with world.client(api) as c:
        assert c.post("/v1/payments", json=pay(txn="W0")).status_code == 201
    body = json.dumps(pay(txn="W1")).encode() if method == "POST" else b""
    snapshot = world.money()
    h = sign_headers(key_id, secret, method, path, body)
    resp = _raw(api, method, path, body, {**h, "Host": "elsewhere.example"})
    refused(world, resp, 404, "not_found")
    assert "location" not in resp.headers
    assert world.money() == snapshot


def test_a_channel_never_sees_or_voids_another_channels_payments(world, api):
    with world.client(api) as bank:
        mine = bank.post("/v1/payments", json=pay(txn="X1")).json()
    snapshot = world.money()
    with world.client(api, world.app) as app:
        refused(world, app.get(f"/v1/payments/{mine['payment_id']}"), 404, "unknown_payment", "payment_id")
        refused(world, app.get("/v1/channels/bank-1/payments/X1"), 403, "channel_mismatch", "channel_id")
        assert app.get("/v1/channels/app-1/payments/X1").status_code == 404
        refused(world, app.post(f"/v1/payments/{mine['payment_id']}/reversal", json={"reason": "mine now"}), 404,
                "unknown_payment", "payment_id")
        # the same txn id in its own id space is its own payment
        other = app.post("/v1/payments", json=pay(channel="app-1", txn="X1"))
        assert other.status_code == 201 and other.json()["payment_id"] != mine["payment_id"]
    assert world.money() != snapshot  # only the app's own payment moved money
    assert world.store.get_payment(mine["payment_id"]).state == "credited"


@pytest.mark.parametrize("spelled", ["%C2%B9", "%D9%A1", "%EF%BC%91", "0001", "+1", "-1"])
def test_a_payment_id_is_ascii_digits_only(world, api, spelled):
    """str.isdigit takes superscripts and other scripts' digits: int() then failed on some (a 500) and
    read others as the payment's own id (another name for the same resource)."""
    with world.client(api) as c:
        assert c.post("/v1/payments", json=pay(txn="U1")).json()["payment_id"] == 1
        snapshot = world.money()
        refused(world, c.get(f"/v1/payments/{spelled}"), 404, "unknown_payment", "payment_id")
        refused(world, c.post(f"/v1/payments/{spelled}/reversal", json={"reason": "x"}), 404, "unknown_payment",
                "payment_id")
    assert world.money() == snapshot


def test_reversal_until_the_money_leaves_for_the_meter(world, api):
    with world.client(api) as c:
        p = c.post("/v1/payments", json=pay(txn="V1")).json()
        r = c.post(f"/v1/payments/{p['payment_id']}/reversal", json={"reason": "customer changed mind"})
        assert r.status_code == 200 and r.json()["state"] == "reversed"
        snapshot = world.money()
        again = c.post(f"/v1/payments/{p['payment_id']}/reversal", json={"reason": "again"})
        assert again.status_code == 200 and again.json() == r.json()     # a repeat changes nothing
        refused(world, c.post(f"/v1/payments/{p['payment_id']}/reversal", json={}), 422, "invalid_field", "reason")
        refused(world, c.post("/v1/payments/abc/reversal", json={"reason": "x"}), 404, "unknown_payment",
                "payment_id")
        assert world.money() == snapshot

        # to a local meter: voidable while the recharge is queued, not once it is on its way
        queued = c.post("/v1/payments", json=pay(txn="V2", customer_no=CUST, amount=300)).json()
        sent = c.post("/v1/payments", json=pay(txn="V3", customer_no=CUST, amount=400)).json()
        assert queued["state"] == sent["state"] == "sent_to_meter"
        r = c.post(f"/v1/payments/{queued['payment_id']}/reversal", json={"reason": "wrong meter"})
        assert r.status_code == 200 and r.json()["state"] == "reversed"
        [cmd] = world.store.claim_next(limit=1)                # a worker picked the recharge up
        assert cmd.params["payment"] == sent["payment_id"]
        snapshot = world.money()
        refused(world, c.post(f"/v1/payments/{sent['payment_id']}/reversal", json={"reason": "late"}), 409,
                "not_reversible")
        assert world.money() == snapshot
    assert world.store.check_ledger() == []


@pytest.mark.parametrize("reached", [False, True])
def test_a_reversal_undoes_the_restore_its_payment_queued_with_the_servers_trip_rules(world, reached):
    s = world.store
    s.credit(CUST2, -800, actor="costctl", idem_key="k", kind="rerate")
    s.set_account_state(CUST2, supply="cut", supply_at=s.now() - 100, notice_level=3, notice_at=s.now() - 2 * 86400,
                        expected_version=s.get_account(CUST2).version)
    # trips off in the server's rules: what a reversal may do is not left to the time of day
    with LiveApi(world.db, world.keys, ApiConfig(listen="tcp://127.0.0.1:0", clock_skew_s=120),
                 rules=Rules(trips=False)) as api, world.client(api) as c:
        p = c.post("/v1/payments", json=pay(txn="U1", amount=1000)).json()       # -8.00 -> 2.00: lifted
        [close] = s.list_commands(meter=REMOTE_METER)
        assert (close.kind, s.get_account(CUST2).supply) == ("close_permitted", "close_permitted")
        if reached:
            s.claim_next(limit=1)                                # the restore is on its way to the meter
        r = c.post(f"/v1/payments/{p['payment_id']}/reversal", json={"reason": "charged back"})
        assert r.status_code == 200 and r.json()["state"] == "reversed"
    a = s.get_account(CUST2)
    assert a.balance_fen == -800
    if reached:    # decided with the server's rules: held, not tripped, and recorded now
        assert a.supply == "close_permitted" and s.get_command(close.id).status == "sent"
        [held] = [e for e in s.audit_entries() if e.action == "costctl.hold"]
        assert "trips are disabled" in held.detail["reason"]
    else:          # the restore never left: cancelled, and the account is cut again
        assert a.supply == "cut" and s.get_command(close.id).status == "cancelled"
    assert s.check_ledger() == []


def test_no_reversal_into_a_closed_day(world, api):
    with world.client(api) as c:
        p = c.post("/v1/payments", json=pay(txn="D1")).json()
        world.store.close_day(p["day"], actor="test")
        snapshot = world.money()
        refused(world, c.post(f"/v1/payments/{p['payment_id']}/reversal", json={"reason": "too late"}), 409,
                "day_closed")
        assert world.money() == snapshot
        # a payment after the close still goes through, booked on the next open day
        later = c.post("/v1/payments", json=pay(txn="D2"))
        assert later.status_code == 201 and later.json()["day"] > p["day"]


def test_a_local_meter_refuses_more_than_its_hoarding_headroom(world, api):
    world.store.update_meter(LOCAL_METER, actor="test", hoarding_fen=10_000)
    with world.client(api) as c:
        assert c.post("/v1/payments", json=pay(txn="H1", customer_no=CUST, amount=6000)).status_code == 201
        snapshot = world.money()
        body = refused(world, c.post("/v1/payments", json=pay(txn="H2", customer_no=CUST, amount=4001)), 422,
                       "hoarding_headroom", "amount_fen")
        assert "4000" in body["detail"]  # the headroom left, with the 6000 still on its way
        assert world.money() == snapshot
        assert c.get(f"/v1/accounts/{CUST}").json()["max_fen"] == 4000


def test_unknown_routes_and_methods_are_problems_too(world, api):
    with world.client(api) as c:
        refused(world, c.get("/v1/nothing"), 404, "not_found")
        refused(world, c.delete("/v1/payments"), 405, "method_not_allowed")


def test_a_client_gone_before_its_body_ended_is_audited_as_such_not_as_a_server_failure(world, api):
    host, port = api.url[len("http://"):].rsplit(":", 1)
    snapshot = world.money()
    with socket.create_connection((host, int(port)), timeout=30) as c:
        c.sendall(b"POST /v1/payments HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"amount_fen\":")
    deadline = time.monotonic() + 30
    while not world.store.audit_entries(action="api.refused") and time.monotonic() < deadline:
        time.sleep(0.05)
    [entry] = world.store.audit_entries(action="api.refused")
    assert (entry.detail["code"], entry.detail["status"]) == ("body_incomplete", 400), entry.detail
    assert world.money() == snapshot


def test_a_huge_path_is_cut_short_in_the_audit_row_and_the_answer(world, api):
    """Each refused request is an audit row, unsigned ones too: a 60 kB path must not make it 120 kB."""
    resp = httpx.get(api.url + "/v1/" + "a" * 60000)
    body = refused(world, resp, 404, "not_found")
    assert len(body["detail"]) < 400
    [entry] = world.store.audit_entries(action="api.refused")
    assert len(json.dumps(entry.detail)) < 1000, len(json.dumps(entry.detail))


def test_an_unsigned_request_cannot_garble_or_break_the_audit_log_as_printed(world, api, monkeypatch, capsys):
    """What a caller sends (here its key id) is printed by `headend audit` as text: read as rich
    markup, "[/x]" stopped the command (MarkupError) and "[red]" hid what followed it."""
    from headend.cli.main import main as headend_main

    key = "[/x][red]k1 :smile:"
    headers = {"X-PP645-Key": key, "X-PP645-Timestamp": "1", "X-PP645-Nonce": "a" * 16,
               "X-PP645-Signature": "0" * 64}
    refused(world, httpx.get(f"{api.url}/v1/accounts/{CUST}", headers=headers), 401, "channel_unknown",
            "X-PP645-Key")
    monkeypatch.setenv("PREPAID645_DB", str(world.db))
    monkeypatch.setenv("COLUMNS", "400")
    assert headend_main(["audit", "--limit", "1"]) == 0
    assert key in capsys.readouterr().out


def test_responses_leave_without_waiting_for_the_clients_ack(api):
    """uvicorn writes a response's head and body as two sends: with Nagle's algorithm on, the body
    waits for the client's delayed ACK (about 40 ms on Linux), which held every keep-alive
    connection to some 22 requests a second with the CPU idle. Every accepted connection has
    TCP_NODELAY."""
    host, port = api.url[len("http://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as c:
        c.sendall(b"GET /v1/health HTTP/1.1\r\nHost: test\r\n\r\n")
        assert c.recv(4096).startswith(b"HTTP/1.1 200")
        accepted = [p.transport.get_extra_info("socket") for p in api.server._server.server_state.connections]
        assert accepted, "the server holds no connection"
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in accepted)


class _HeldReceiver(BaseHTTPRequestHandler):
    """A channel's callback URL that holds its first callback until another arrives (or 2 s pass):
    the window in which a second sender could post the same callback."""

    seen: list[str] = []
    second = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(self.headers["X-PP645-Callback-Id"])
        if len(self.seen) == 1:
            self.second.wait(2)
        else:
            self.second.set()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_two_serves_on_one_database_send_a_callback_once(world):
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _HeldReceiver)
    _HeldReceiver.seen, _HeldReceiver.second = [], threading.Event()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        world.store.update_channel("bank-1", actor="test",
                                   callback_url=f"http://127.0.0.1:{receiver.server_address[1]}/cb")
        with LiveApi(world.db, world.keys, callbacks=True) as one, LiveApi(world.db, world.keys, callbacks=True):
            with world.client(one) as c:
                p = c.post("/v1/payments", json=pay(txn="C1", customer_no=CUST, amount=300)).json()
            [cmd] = world.store.claim_next(limit=1)
            world.store.confirm(cmd.id, reply={})  # the meter confirmed: both serves' sweeps see it
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and [c.status for c in world.store.callbacks(
                    payment_id=p["payment_id"])] != ["delivered"]:
                time.sleep(0.05)
        [cb] = world.store.callbacks(payment_id=p["payment_id"])
        assert cb.status == "delivered"
        assert _HeldReceiver.seen == [str(cb.id)]
    finally:
        receiver.shutdown()

"""Prepaid recharge cards and vending over the payments API (uvicorn on loopback, httpx, a real
SQLite file): a voucher channel vends idempotently and no other kind may; a card is redeemable
only once it is activated, only with its PIN (five wrong ones lock it, counted even though each
request is refused), once, and not after it expired or was voided; `headend card` runs it."""

from __future__ import annotations

import csv
import io
import json
import os

import httpx
import pytest

from headend.api.signing import ChannelAuth
from headend.cli.main import main
from headend.keys import KeyStore
from headend.store import open_store
from headend.vouchers import cards as C
from headend.vouchers import token as H
from meter import token as T
from tests.api.support import LiveApi, add_api_channel
from tests.headend.payments_support import assert_books_balance
from tests.headend.store_support import Clock

CUST, CUST2 = "000000000042", "000000000043"
LOCAL_METER, REMOTE_METER = "000000000001", "000000000002"


class World:
    def __init__(self, tmp_path) -> None:
        self.db = tmp_path / "api.db"
        self.keys = KeyStore.in_memory(os.urandom(32))
        self.store = s = open_store(self.db)
        s.add_account(CUST, actor="test")
        s.add_account(CUST2, actor="test")
        s.add_meter(LOCAL_METER, link="tcp://127.0.0.1:9", customer=CUST, mode="local", actor="test")
        s.add_meter(REMOTE_METER, link="tcp://127.0.0.1:9", customer=CUST2, mode="remote", actor="test")
        self.vend = add_api_channel(s, self.keys, "shop-1", "voucher")
        self.app = add_api_channel(s, self.keys, "app-1", "mobile_app")

    def client(self, api: LiveApi, who: tuple[str, bytes]) -> httpx.Client:
        return httpx.Client(base_url=api.url, auth=ChannelAuth(*who), timeout=30)


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    assert_books_balance(w.store)
    w.store.close()


def test_a_voucher_channel_vends_over_the_api_once_per_txn_id_and_other_kinds_may_not(world):
    with LiveApi(world.db, world.keys) as api, world.client(api, world.vend) as c, world.client(api, world.app) as a:
        body = {"channel_id": "shop-1", "txn_id": "S-1", "meter_no": LOCAL_METER, "amount_fen": 250_000}
        r = c.post("/v1/vouchers", json=body)
        assert r.status_code == 201, r.text
        doc = r.json()
        key = H.token_key(world.keys.meter_key(LOCAL_METER, 0), 0)
        assert T.decode(key, doc["token"]) == (0, 0, doc["tid"], H.amount_field(250_000))
        assert doc["payment"]["state"] == "sent_to_meter" and doc["payment"]["channel_id"] == "shop-1"
        again = c.post("/v1/vouchers", json=body)
        assert again.status_code == 200 and again.json() == doc  # a retry: the same voucher, no second payment
        r = c.post("/v1/vouchers", json={**body, "amount_fen": 1000})
        assert (r.status_code, r.json()["code"]) == (409, "duplicate_conflict")
        r = c.post("/v1/vouchers", json={**body, "txn_id": "S-2", "meter_no": REMOTE_METER})
        assert (r.status_code, r.json()["code"], r.json()["field"]) == (404, "unknown_meter", "meter_no")
        r = c.post("/v1/vouchers", json={**body, "txn_id": "S-3", "amount_fen": 200_001})
        assert (r.status_code, r.json()["code"]) == (422, "amount_invalid")
        r = a.post("/v1/vouchers", json={**body, "channel_id": "app-1"})
        assert (r.status_code, r.json()["code"]) == (403, "unknown_channel")  # an app channel does not vend
        r = a.post("/v1/vouchers", json=body)
        assert (r.status_code, r.json()["code"]) == (403, "channel_mismatch")
    assert len(world.store.list_vouchers()) == 1
    assert len(world.store.list_payments(limit=100)) == 1


def test_a_card_is_redeemed_once_with_its_pin_after_activation(world):
    s = world.store
    batch, printed = C.make_batch(s, world.keys, face_fen=5000, count=3, expires_at=int(s.now()) + 86400,
                                  actor="alice")
    (s1, pin1), (s2, pin2), (s3, _) = printed
    assert [k.state for k in s.list_cards(batch_id=batch.id)] == ["issued"] * 3
    assert all(len(p) == 16 and p.isdigit() for _, p in printed) and len({p for _, p in printed}) == 3
    assert all(pin1 not in v for v in [s.card_pin(s1)])  # sealed, not stored as typed
    url = "/v1/cards/{}/redemption"
    with LiveApi(world.db, world.keys) as api, world.client(api, world.app) as a:
        body = {"channel_id": "app-1", "pin": pin1, "customer_no": CUST2}
        r = a.post(url.format(s1), json=body)
        assert (r.status_code, r.json()["code"]) == (409, "card_not_active")
        C.activate(s, batch_id=batch.id, actor="alice")
        r = a.post(url.format(s1), json=body)
        assert r.status_code == 201, r.text
        doc = r.json()
        assert doc["state"] == "redeemed" and doc["payment"]["channel_id"] == "card"
        assert doc["payment"]["state"] == "credited" and doc["payment"]["amount_fen"] == 5000
        assert s.get_account(CUST2).balance_fen == 5000
        again = a.post(url.format(s1), json=body)
        assert again.status_code == 200 and again.json()["payment"] == doc["payment"]  # a retry
        r = a.post(url.format(s1), json={**body, "customer_no": CUST})
        assert (r.status_code, r.json()["code"]) == (409, "card_redeemed")
        # a card to a local meter: a recharge on its way to the meter
        r = a.post(url.format(s2), json={"channel_id": "app-1", "pin": pin2, "meter_no": LOCAL_METER})
        assert r.status_code == 201 and r.json()["payment"]["state"] == "sent_to_meter"
        # wrong PINs: each refused and counted although the request rolled back; five lock the card
        for i in range(5):
            r = a.post(url.format(s3), json={**body, "pin": f"{i:016d}"})
            assert (r.status_code, r.json()["code"], r.json()["field"]) == (403, "card_pin_wrong", "pin")
        assert s.get_card(s3).bad_pins == 5
        r = a.post(url.format(s3), json={**body, "pin": printed[2][1]})
        assert (r.status_code, r.json()["code"]) == (423, "card_locked")
        r = a.post(url.format("999999000001"), json=body)
        assert (r.status_code, r.json()["code"]) == (404, "card_unknown")
        r = a.post(url.format("12"), json=body)
        assert (r.status_code, r.json()["code"]) == (404, "card_unknown")
        r = a.post(url.format(s1), json={**body, "pin": "123"})
        assert (r.status_code, r.json()["code"]) == (422, "invalid_field")
    assert [k.state for k in s.list_cards(batch_id=batch.id)] == ["redeemed", "redeemed", "active"]


def test_cards_expire_and_void_and_then_are_not_redeemable(tmp_path):
    clock = Clock(1_764_900_000)
    s = open_store(tmp_path / "c.db", clock=clock)
    keys = KeyStore.in_memory(os.urandom(32))
    s.add_account(CUST2, actor="t")
    b, printed = C.make_batch(s, keys, face_fen=1000, count=4, expires_at=clock.t + 3600, actor="alice")
    C.activate(s, serials=[p[0] for p in printed[:3]], actor="alice")
    C.void(s, serials=[printed[0][0]], actor="alice", reason="stolen from the shop")
    with pytest.raises(C.CardError) as e:
        C.redeem(s, keys, serial=printed[0][0], pin=printed[0][1], customer=CUST2, meter=None, actor="app")
    assert e.value.code == "card_not_active"
    clock.t += 3600
    with pytest.raises(C.CardError) as e:  # past its last second, before any sweep
        C.redeem(s, keys, serial=printed[1][0], pin=printed[1][1], customer=CUST2, meter=None, actor="app")
    assert e.value.code == "card_expired"
    assert {k.serial for k in C.expire_due(s, actor="alice")} == {printed[1][0], printed[2][0], printed[3][0]}
    assert [k.state for k in s.list_cards()] == ["voided", "expired", "expired", "expired"]
    with pytest.raises(C.CardError) as e:
        C.redeem(s, keys, serial=printed[2][0], pin=printed[2][1], customer=CUST2, meter=None, actor="app")
    assert e.value.code == "card_expired"
    from headend.store import Conflict
    with pytest.raises(Conflict):  # an expired card cannot be activated again
        C.activate(s, serials=[printed[3][0]], actor="alice")
    assert s.get_account(CUST2).balance_fen == 0
    s.close()


def test_cli_card_batch_prints_pins_once_and_activate_void_list_work(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "cli.db")
    monkeypatch.setenv("PREPAID645_DB", db)
    monkeypatch.delenv("PREPAID645_CONFIG", raising=False)
    monkeypatch.delenv("PREPAID645_OPERATOR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREPAID645_KEY_PASSPHRASE", "correct horse battery")
    assert main(["keys", "init"]) == 0
    with open_store(db) as s:
        s.add_account(CUST2, actor="t")
    capsys.readouterr()
    assert main(["card", "batch", "50", "3", "--expires", "2099-12-31", "--note", "shop 7"]) == 0
    out = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out.out)))
    assert len(rows) == 3 and all(len(r["pin"]) == 16 for r in rows) and rows[0]["yuan"] == "50.00"
    assert "not yet active" in out.err
    assert main(["card", "activate", "--batch", "1"]) == 0
    assert main(["card", "void", rows[2]["serial"], "--reason", "lost"]) == 0
    assert main(["card", "activate", rows[2]["serial"]]) == 2  # voided: refused
    assert "voided" in capsys.readouterr().err
    assert main(["card", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [c["state"] for c in listed] == ["active", "active", "voided"]
    assert all("pin" not in c for c in listed) and rows[0]["pin"] not in json.dumps(listed)
    assert main(["card", "batches", "--json"]) == 0
    [b] = json.loads(capsys.readouterr().out)
    assert (b["face_fen"], b["count"], b["note"]) == (5000, 3, "shop 7")
    assert main(["card", "activate"]) == 2
    assert "SERIAL... or --batch N" in capsys.readouterr().err
    assert main(["card", "batch", "50", "3", "--expires", "31.12.2099"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err

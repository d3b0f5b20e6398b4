"""Property-based API testing from the published OpenAPI schema (schemathesis): requests that fit
the schema and requests that do not, each signed by a real channel and sent over real HTTP.

Whatever comes: never a 5xx, every answer matches the schema (status, content type, body), every
refusal is a problem detail, and no refused request moves money.
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks as oas

from headend.api.app import create_app
from headend.api.signing import ChannelAuth
from headend.keys import KeyStore
from headend.store import open_store
from tests.api.support import LiveApi, add_api_channel

# The schema as the app publishes it (an app on a throw-away store only renders it).
schema = schemathesis.openapi.from_dict(
    create_app(open_store(":memory:"), keys=KeyStore.in_memory(bytes(32))).openapi())

CHECKS = [schemathesis.checks.not_a_server_error, oas.status_code_conformance, oas.content_type_conformance,
          oas.response_schema_conformance]
CUSTOMERS = ("000000000042", "000000000043")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    db = tmp_path_factory.mktemp("schema") / "api.db"
    keys = KeyStore.in_memory(os.urandom(32))
    store = open_store(db)
    store.add_account(CUSTOMERS[0], actor="test")
    store.add_account(CUSTOMERS[1], actor="test")
    store.add_meter("000000000001", link="tcp://127.0.0.1:9", customer=CUSTOMERS[0], mode="local", actor="test")
    key = add_api_channel(store, keys, "bank-1", "online_banking")
    with LiveApi(db, keys) as api:
        with httpx.Client(base_url=api.url, auth=ChannelAuth(*key), timeout=30) as client:
            yield store, client, api
    store.close()


def _money(store) -> tuple:
    return (tuple(a.balance_fen for a in store.list_accounts()), len(store.journal(limit=10**6)),
            len(store.list_payments(limit=10**6)), sum(store.count_commands().values()))


def _steer(body):
    """Point most generated payments at the signing channel and real customers, so that requests
    valid by the schema reach the payments service and move money, and refusals come from deeper
    than the schema too."""
    if isinstance(body, dict) and isinstance(body.get("channel_id"), str):
        body = dict(body)
        salt = len(str(body.get("txn_id", ""))) + len(str(body.get("amount_fen", "")))
        if salt % 4:
            body["channel_id"] = "bank-1"
        if isinstance(body.get("customer_no"), str) and body["customer_no"].isdigit() and salt % 3:
            body["customer_no"] = CUSTOMERS[salt % 2]
            body.pop("meter_no", None)
    return body


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_5xx_and_no_money_moved_by_a_refusal(world, case):
    store, client, api = world
    before = _money(store)
    kw = case.as_transport_kwargs(base_url=api.url)
    if "json" in kw:
        kw["json"] = _steer(kw["json"])
    resp = client.request(kw["method"], kw["url"], content=_content(kw), params=kw.get("params"),
                          headers={k: v for k, v in (kw.get("headers") or {}).items()
                                   if k.lower() not in ("user-agent", "content-length")})
    case.validate_response(resp, checks=CHECKS)
    if resp.status_code >= 400:
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["code"]
        assert _money(store) == before, f"{resp.status_code} {resp.text} moved money"
    assert store.check_ledger() == []


def _content(kw: dict) -> bytes | None:
    if "json" in kw:
        import json

        return json.dumps(kw["json"]).encode()
    data = kw.get("data")
    if isinstance(data, str):
        return data.encode()
    return data

"""The reports over real HTTP for operators: the same rows as the CLI, operators only."""

from __future__ import annotations

import httpx

from headend.keys import KeyStore
from headend.operators import hash_password
from headend.reports import Query, run_report
from tests.api.support import LiveApi
from tests.reports.test_reports import booked  # noqa: F401 - the hand-computed ledger fixture


def test_reports_over_http_match_the_cli_and_need_an_operator(booked):  # noqa: F811
    booked.add_operator("ann", "auditor", hash_password("correct horse"), actor="admin")
    booked.add_operator("cash", "cashier", hash_password("cashier pw 1"), actor="admin")
    want = run_report(booked, "collection", Query(first="2026-11-02", last="2026-11-04")).to_dict()
    db = booked.location
    with LiveApi(db, KeyStore.in_memory(bytes(32)), clock=booked.now) as api:
        url = f"{api.url}/v1/reports/collection"
        params = {"from": "2026-11-02", "to": "2026-11-04"}
        r = httpx.get(url, params=params, auth=("ann", "correct horse"), timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["rows"] == want["rows"]
        r = httpx.get(url, params=params, timeout=30)
        assert r.status_code == 401 and r.json()["code"] == "operator_auth_missing"
        r = httpx.get(url, params=params, auth=("ann", "wrong"), timeout=30)
        assert r.status_code == 403 and r.json()["code"] == "operator_refused"
        r = httpx.get(url, params={"from": "2026-11-05", "to": "2026-11-01"}, auth=("ann", "correct horse"),
                      timeout=30)
        assert r.status_code == 422 and "after" in r.json()["detail"]
        r = httpx.get(f"{api.url}/v1/reports/nope", auth=("ann", "correct horse"), timeout=30)
        assert r.status_code == 404
        r = httpx.get(f"{api.url}/v1/reports/channels", params=params, auth=("cash", "cashier pw 1"), timeout=30)
        assert r.status_code == 200 and r.json()["totals"]["amount_fen"] == 4500

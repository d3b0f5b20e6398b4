"""The console for tests without a browser: the real app (payments API + console) on a real SQLite
file, driven through Starlette's TestClient, with a clock the test moves."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from headend.api.app import create_app
from headend.console import add_console
from headend.keys import KeyStore
from headend.operators import hash_password
from headend.store import open_store

PASSWORD = "counter-pass-1"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Clock:
    def __init__(self, t: float = 1_790_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_site(tmp: Path, clock: Clock):
    """(store, console, TestClient) with operators ann (cashier), olga (operator), aud (auditor), a local
    meter 000000000101 of customer 000000000501 (Wang Fang, 13800000001) and a remote customer."""
    store = open_store(tmp / "h.db", clock=clock)
    for name, role in (("ann", "cashier"), ("olga", "operator"), ("aud", "auditor")):
        store.add_operator(name, role, hash_password(PASSWORD), actor="test")
    store.add_account("000000000501", actor="test", name="Wang Fang", phone="13800000001")
    store.add_meter("000000000101", link="tcp://127.0.0.1:1", customer="000000000501", mode="local", actor="test")
    store.add_account("000000000701", actor="test", name="Li Wei", phone="13900000002")
    app = create_app(store, keys=KeyStore.in_memory(b"k" * 32), clock=clock)
    con = add_console(app, store, clock=clock)
    return store, con, TestClient(app, base_url="http://console.test")


def csrf_of(html: str) -> str:
    m = _CSRF.search(html)
    assert m, "no CSRF token on the page"
    return m.group(1)


def sign_in(client: TestClient, name: str, password: str = PASSWORD):
    page = client.get("/login")
    return client.post("/login", data={"name": name, "password": password, "csrf": csrf_of(page.text), "next": "/"},
                       follow_redirects=False)

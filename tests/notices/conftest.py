"""Shared set-up of the notice tests: a real SQLite store with a hand-set clock, the fake provider."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from headend.notices.gateways import SmsRestGateway
from headend.notices.sender import NoticeSender, Policy
from headend.notices.templates import load_templates
from headend.store import open_store
from tests.headend.store_support import Clock
from tests.notices.fake_provider import FakeSmsProvider

CN = timezone(timedelta(hours=8))


def local(text: str) -> int:
    """Unix seconds of a China local time 'YYYY-MM-DD HH:MM'."""
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=CN).timestamp())


NOON = local("2026-12-01 12:00")


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
def store(tmp_path, clock):
    s = open_store(tmp_path / "n.db", clock=clock)
    yield s
    s.close()


@pytest.fixture
def provider():
    p = FakeSmsProvider()
    yield p
    p.close()


def make_sender(store, provider, *, callback_url=None, **policy) -> NoticeSender:
    return NoticeSender(store, SmsRestGateway(provider.url, provider.token, callback_url=callback_url, timeout=10),
                        load_templates(), Policy(**policy), owner="test-sender")


def customer(store, number: str, phone: str, *, meter: str | None = None, **limits) -> str:
    store.add_meter(meter or number, link="tcp://127.0.0.1:9", customer=number, actor="t")
    store.update_account(number, actor="t", phone=phone, **limits)
    return number

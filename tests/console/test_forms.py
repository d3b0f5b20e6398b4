"""The console's sign-in, sessions and forms without a browser (TestClient on the real app and a
real SQLite file): wrong passwords are limited, an expired session signs in again, every POST
needs the CSRF token, bad input is named next to its field and nothing is half-done."""

from __future__ import annotations

import re
from html import unescape

import pytest
from fastapi.testclient import TestClient

from headend.console.app import COOKIE
from tests.console.support import PASSWORD, Clock, csrf_of, make_site, sign_in

METER, CUSTOMER = "000000000101", "000000000501"


@pytest.fixture
def site(tmp_path):
    clock = Clock()
    store, con, client = make_site(tmp_path, clock)
    yield store, con, client, clock
    client.close()
    store.close()


def test_sign_in_with_a_role_and_the_audit_row(site):
    store, _con, c, _clock = site
    assert c.get("/", follow_redirects=False).headers["location"].startswith("/login")
    r = sign_in(c, "olga")
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "olga (operator)" in c.get("/").text
    (row,) = store.audit_entries(actor="olga", action="console.login")
    assert row.detail["role"] == "operator"


def test_wrong_passwords_are_rate_limited(site):
    store, con, c, clock = site
    for _ in range(con.limiter.failures):
        r = sign_in(c, "ann", "wrong-password")
        assert r.status_code == 401 and "wrong name or password" in r.text
    # locked now: even the right password is refused, without being checked, until the lock ends
    r = sign_in(c, "ann")
    assert r.status_code == 429 and "too many wrong passwords: try again in" in r.text
    assert store.audit_entries(actor="ann", action="console.login_locked")
    clock.t += con.limiter.lock_s + 1
    assert sign_in(c, "ann").status_code == 303


def test_an_expired_session_signs_in_again_and_comes_back(site):
    _store, con, c, clock = site
    sign_in(c, "olga")
    assert c.get(f"/customers/{CUSTOMER}").status_code == 200
    clock.t += con.sessions.idle_s + 1
    r = c.get(f"/customers/{CUSTOMER}", follow_redirects=False)
    assert r.status_code == 303 and "expired=1" in r.headers["location"]
    page = c.get(r.headers["location"])
    assert "Your session has expired: sign in again." in page.text
    back = c.post("/login", data={"name": "olga", "password": PASSWORD, "csrf": csrf_of(page.text),
                                  "next": f"/customers/{CUSTOMER}"}, follow_redirects=False)
    assert back.headers["location"] == f"/customers/{CUSTOMER}"
    # a live part of a page answers 401 (its script then reloads to the sign-in page)
    clock.t += con.sessions.idle_s + 1
    assert c.get("/live/dashboard").status_code == 401


def test_sign_in_and_every_post_need_the_csrf_token(site):
    store, _con, c, _clock = site
    r = c.post("/login", data={"name": "olga", "password": PASSWORD, "csrf": "guess"}, follow_redirects=False)
    assert r.status_code == 403 and "security token" in r.text
    sign_in(c, "olga")
    for path, data in ((f"/meters/{METER}/command", {"kind": "trip", "step": "do", "token": "abcdef012345"}),
                       (f"/meters/{METER}/recharge", {"amount": "10", "step": "do", "token": "abcdef012346"}),
                       ("/outages", {"scope": "feeder", "where": "F1", "start": "2030-01-01T08:00",
                                     "end": "2030-01-01T12:00", "reason": "works"}),
                       ("/logout", {})):
        for token in (None, "wrong-token"):
            r = c.post(path, data=dict(data, **({"csrf": token} if token else {})))
            assert r.status_code == 403 and "security token is missing or wrong" in r.text, path
    assert store.list_commands() == [] and store.list_payments() == [] and store.list_outages() == []
    assert "olga (operator)" in c.get("/").text  # the refused sign-out did not sign out


def test_a_bad_amount_is_named_next_to_the_field_and_nothing_is_paid(site):
    store, _con, c, _clock = site
    sign_in(c, "olga")
    page = c.get(f"/meters/{METER}").text
    for amount, says in (("", "enter an amount"), ("abc", "bad amount 'abc'"), ("1.234", "at most 2 decimals"),
                         ("-5", "must not be negative"), ("0", "must be above 0"),
                         ("100000000", "above the channel's maximum")):
        r = c.post(f"/meters/{METER}/recharge", data={"csrf": csrf_of(page), "amount": amount, "step": "do",
                                                      "token": "abcdef987654"})
        assert r.status_code == 422, amount
        assert 'id="err-amount"' in r.text and says in unescape(r.text), (amount, r.text[-600:])
    assert store.list_payments() == [] and store.list_commands() == []


def test_a_recharge_needs_confirming_and_is_done_once(site):
    store, _con, c, _clock = site
    sign_in(c, "olga")
    page = c.get(f"/meters/{METER}").text
    confirm = c.post(f"/meters/{METER}/recharge", data={"csrf": csrf_of(page), "amount": "20"})
    assert "Recharge 20.00 yuan to meter 000000000101" in confirm.text
    assert store.list_payments() == []
    token = confirm.text.split('name="token" value="')[1].split('"')[0]
    for _ in range(2):  # a double press of "confirm"
        r = c.post(f"/meters/{METER}/recharge", data={"csrf": csrf_of(page), "amount": "20", "step": "do",
                                                      "token": token}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/payments/")
    (p,) = store.list_payments()
    assert p.amount_fen == 2000 and p.actor == "olga" and p.channel_id == "operator"
    assert store.get_command(p.command_id).kind == "recharge"


def test_roles_decide_the_actions(site):
    store, _con, c, _clock = site
    sign_in(c, "aud")
    page = c.get(f"/meters/{METER}").text
    assert "act-trip" not in page and 'id="recharge"' not in page
    r = c.post(f"/meters/{METER}/recharge", data={"csrf": csrf_of(page), "amount": "20", "step": "do",
                                                  "token": "abcdef555555"})
    assert r.status_code == 403 and "aud is auditor: a recharge needs one of admin, operator" in r.text
    r = c.post(f"/customers/{CUSTOMER}/pay", data={"csrf": csrf_of(page), "amount": "20", "step": "do",
                                                   "token": "abcdef555556"})
    assert r.status_code == 403 and "needs one of admin, cashier" in r.text
    assert store.list_payments() == [] and store.list_commands() == []


def test_an_outage_form_names_each_bad_field(site):
    store, _con, c, _clock = site
    sign_in(c, "olga")
    page = c.get("/outages").text
    r = c.post("/outages", data={"csrf": csrf_of(page), "scope": "feeder", "where": "", "start": "tomorrow",
                                 "end": "", "reason": ""})
    assert r.status_code == 422
    for field, says in (("where", "name the feeder"), ("start", "bad time 'tomorrow'"), ("end", "enter a time"),
                        ("reason", "say why")):
        assert f'id="err-{field}"' in r.text and says in unescape(r.text), field
    r = c.post("/outages", data={"csrf": csrf_of(page), "scope": "feeder", "where": "F1", "start": "2030-01-01T12:00",
                                 "end": "2030-01-01T08:00", "reason": "works"})
    assert r.status_code == 422 and "the end must be after the start" in r.text
    assert store.list_outages() == []


def test_a_report_with_bad_dates_says_which(site):
    _store, _con, c, _clock = site
    sign_in(c, "aud")
    r = c.get("/reports/collection?from=2026-13-01&to=2026-12-01")
    assert r.status_code == 422 and 'id="err-from"' in r.text and "YYYY-MM-DD" in r.text
    csv = c.get("/reports/channels.csv?from=2026-11-01&to=2026-11-30")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("period,")


def test_dashboard_meter_states_follow_the_reports_definition(site):
    """Each meter's dashboard state is the accounts report's state of an account (alarm 1 or 2:
    warning) with that meter's wallet and relay, or not reached when not heard from for 3 days."""
    store, _con, c, clock = site
    now = int(clock())
    cases = [  # (account balance, (alarm1, alarm2), meter wallet, relay, last seen ago s, mode, state)
        (0, (0, 0), 5000, "closed", 60, "local", "credit"),
        (0, (3000, 1000), 2500, "closed", 60, "local", "warning"),      # at or below alarm 1
        (0, (3000, 1000), 800, "closed", 60, "local", "warning"),       # below alarm 2
        (0, (0, 0), 0, "closed", 60, "local", "warning"),               # empty
        (0, (0, 0), 5000, "open", 60, "local", "cut"),
        (0, (0, 0), 5000, "closed", 4 * 86400, "local", "not_reached"),
        (0, (0, 0), None, None, None, "local", "not_reached"),          # never read
        (9000, (0, 0), None, None, 60, "remote", "credit"),
        (-10, (0, 0), None, None, 60, "remote", "warning"),
    ]
    expected = {"credit": 0, "warning": 0, "cut": 0, "not_reached": 1}  # the site's own meter, never read
    for i, (bal, (a1, a2), wallet, relay, ago, mode, state) in enumerate(cases):
        cust, addr = f"{900 + i:012d}", f"{300 + i:012d}"
        store.add_account(cust, actor="test", alarm1_fen=a1, alarm2_fen=a2)
        if bal:
            store.adjust(cust, bal, actor="test", reason="opening balance")
        store.add_meter(addr, link="tcp://127.0.0.1:1", customer=cust, mode=mode, actor="test")
        if ago is not None:
            store.record_meter_state(addr, balance_fen=wallet, relay=relay, seen_at=now - ago)
        expected[state] += 1
    assert store.meter_states(seen_since=now - 3 * 86400) == expected
    # the same accounts in the accounts report (one meter each, so the same states where reached)
    per_report: dict[str, int] = {}
    for _district, state, n, _protected in store.account_states():
        per_report[state] = per_report.get(state, 0) + int(n)
    assert per_report["cut"] == expected["cut"]
    assert per_report.get("alarm1", 0) + per_report.get("alarm2", 0) >= expected["warning"]
    sign_in(c, "aud")
    html = c.get("/live/dashboard").text
    for state, n in expected.items():
        assert f'id="n-{state}">{n}<' in html


def test_dashboard_meter_counts_are_renewed_once_old(site):
    """The meter-state counts are shared and renewed in the background once STATES_EVERY_S old:
    a meter cut in between shows on the first dashboard after the renewal."""
    import time as _time

    from headend.console.app import STATES_EVERY_S

    store, _con, c, clock = site
    store.record_meter_state(METER, balance_fen=5000, relay="closed", seen_at=int(clock()))
    sign_in(c, "aud")
    assert 'id="n-credit">1<' in c.get("/live/dashboard").text
    store.record_meter_state(METER, relay="open", seen_at=int(clock()))
    assert 'id="n-credit">1<' in c.get("/live/dashboard").text  # the shared count, still fresh
    clock.t += STATES_EVERY_S
    deadline = _time.monotonic() + 60
    while 'id="n-cut">1<' not in c.get("/live/dashboard").text:  # renewed in the background
        assert _time.monotonic() < deadline, "the meter-state count was never renewed"
        _time.sleep(0.05)


def test_search_by_customer_number_meter_number_name_or_phone(site):
    store, _con, c, _clock = site
    store.add_account("000000000502", actor="test", name="王芳", phone="13800000009")
    sign_in(c, "ann")
    for q, want in (("000000000501", ["000000000501"]), ("000000000101", ["000000000501"]),
                    ("13900000002", ["000000000701"]), ("Wang", ["000000000501"]), ("wei", ["000000000701"]),
                    ("王", ["000000000502"]), ("nobody", [])):
        html = c.get("/customers", params={"q": q}).text
        got = sorted(set(re.findall(r'href="/customers/(\d{12})"', html)))
        assert got == want, q


def test_an_outage_is_planned_with_notices_and_cancelled(site):
    store, _con, c, clock = site
    store.import_grid([("000000000101", "F7", "A7-1", "0")], actor="test")
    sign_in(c, "olga")
    page = c.get("/outages").text
    assert "F7" in page and "A7-1" in page  # the grid table to choose from
    r = c.post("/outages", data={"csrf": csrf_of(page), "scope": "feeder", "where": "F7", "start": "2026-09-25T08:00",
                                 "end": "2026-09-25T12:00", "reason": "transformer maintenance"})
    assert r.status_code == 200 and "1 notice(s) queued" in r.text
    (o,) = store.list_outages()
    assert (o.feeder, o.reason, o.actor, o.status) == ("F7", "transformer maintenance", "olga", "planned")
    assert [n.kind for n in store.find_notices(customer=CUSTOMER)] == ["outage_planned"]
    r = c.post(f"/outages/{o.id}/cancel", data={"csrf": csrf_of(r.text)})
    assert r.status_code == 200 and f"outage {o.id} cancelled" in r.text
    assert store.get_outage(o.id).status == "cancelled"
    assert c.get("/commands/abc").status_code == 404 and c.get("/payments/99").status_code == 404


def test_the_meter_page_charts_daily_energy_from_the_readings(site):
    from headend.store import Reading

    store, _con, c, clock = site
    day0 = int(clock()) - 3 * 86400
    # cumulative energy: two readings a day; a day's energy is its last reading less the day before's
    store.add_readings([Reading(METER, "00010000", wh, day0 + k) for k, wh in
                        ((0, 1_000_000), (3600, 1_002_000), (86400, 1_005_500), (86400 + 3600, 1_007_250),
                         (2 * 86400 + 3600, 1_010_250))])
    sign_in(c, "aud")
    html = unescape(c.get(f"/meters/{METER}").text)
    bars = re.findall(r"<title>(\d\d-\d\d): ([0-9.]+) kWh</title>", html)
    assert [v for _d, v in bars] == ["5.250", "3.000"]


def test_the_session_cookies_are_secure_when_the_console_is_reached_over_https(site):
    """Behind TLS (direct, or a proxy that says so in X-Forwarded-Proto) a browser must never send
    the session over plain HTTP; on plain HTTP (loopback, tests) a Secure cookie would not be kept."""
    _store, _con, client, _clock = site
    for scheme, secure in (("https", True), ("http", False)):
        c = TestClient(client.app, base_url=f"{scheme}://console.test")
        page = c.get("/login")
        assert ("secure" in page.headers["set-cookie"].lower()) is secure, page.headers["set-cookie"]
        got = c.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": csrf_of(page.text), "next": "/"},
                     follow_redirects=False)
        assert got.status_code == 303
        session = [h for h in got.headers.get_list("set-cookie") if h.startswith(COOKIE + "=")]
        assert session and ("secure" in session[0].lower()) is secure, session

"""The console in a real headless Chromium against a real `headend serve --api` process whose outbox
drives simulated meters (tools.fleet over TCP): sign in, find a customer, take a counter payment and
watch the balance change on the page, trip and restore a meter, a cashier who cannot trip, a POST
without the CSRF token refused.  Screenshots of each page go to test-artifacts/console/."""

from __future__ import annotations

import socket

import pytest

from headend.operators import hash_password
from headend.payments import accept_payment, ensure_operator_channel
from headend.store.models import yuan
from tests.api.support import FleetThread
from tests.console.browser import screenshot, start_browser, wait_for
from tests.headend.headend_proc import HeadEnd

METER, CUSTOMER = "000000000101", "000000000501"
PASSWORD = "console-pass-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Site:
    def __init__(self, tmp) -> None:
        self.he = HeadEnd(tmp)
        self.fleet = FleetThread([METER], master=self.he.master).start()
        with self.he.store() as s:
            s.add_account(CUSTOMER, actor="test", name="Wang Fang", phone="13800000001")
            s.add_meter(METER, link=self.fleet.link_of(METER), customer=CUSTOMER, mode="local", actor="test")
            s.add_account("000000000502", actor="test", name="Wang Lei", phone="13800000002")
            for name, role in (("ann", "cashier"), ("olga", "operator")):
                s.add_operator(name, role, hash_password(PASSWORD), actor="test")
        self.he.start_serve("--api", f"tcp://127.0.0.1:{_free_port()}", "--no-costctl")
        lines = [x for x in self.he.serve_output if "operator console on" in x]
        assert lines, self.he.serve_output
        self.url = lines[-1].split("operator console on ")[1].split()[0].rstrip("/")

    def close(self) -> None:
        self.he.stop_serve()
        self.fleet.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = Site(tmp_path_factory.mktemp("console"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser():
    driver, profile = start_browser()
    yield driver
    driver.quit()
    profile.cleanup()


def _by(how: str):
    from selenium.webdriver.common.by import By

    return getattr(By, how)


def find(driver, css: str):
    return driver.find_element(_by("CSS_SELECTOR"), css)


def text_of(driver, css: str) -> str:
    els = driver.find_elements(_by("CSS_SELECTOR"), css)
    return els[0].text if els else ""


def sign_in(driver, site: Site, name: str, password: str = PASSWORD) -> None:
    driver.delete_all_cookies()
    driver.get(site.url + "/login")
    find(driver, "input[name=name]").send_keys(name)
    find(driver, "input[name=password]").send_keys(password)
    find(driver, "#login button").click()


def post_without_csrf(driver, path: str, fields: dict[str, str]) -> tuple[int, str]:
    """POST a form from the page's own origin (with the session cookie) but without the CSRF token."""
    res = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {method: 'POST', credentials: 'same-origin', body: new URLSearchParams(arguments[1])})"
        ".then(r => r.text().then(t => done([r.status, t])));", path, fields)
    return int(res[0]), str(res[1])


def post_with_csrf(driver, path: str, fields: dict[str, str]) -> tuple[int, str]:
    token = find(driver, "form.who input[name=csrf]").get_attribute("value")
    return post_without_csrf(driver, path, dict(fields, csrf=token))


def test_sign_in_find_customer_and_take_a_payment(site, browser):
    d = browser
    sign_in(d, site, "ann", "not-the-password")
    assert "wrong name or password" in wait_for("the password error", lambda: text_of(d, "#err-password"))
    screenshot(d, "login-wrong-password")
    sign_in(d, site, "ann")
    wait_for("the dashboard", lambda: text_of(d, "#who") == "ann (cashier)")
    assert text_of(d, "#n-not_reached") == "1"  # the meter was never read yet
    screenshot(d, "dashboard")
    d.get(site.url + "/customers")
    find(d, "#search input[name=q]").send_keys("Wang")
    find(d, "#search button").click()
    rows = wait_for("two customers called Wang", lambda: d.find_elements(_by("CSS_SELECTOR"), "#results td a"))
    assert sorted(r.text for r in rows) == [CUSTOMER, "000000000502"]
    screenshot(d, "customer-search")
    find(d, f"#results a[href='/customers/{CUSTOMER}']").click()
    wait_for("the customer page", lambda: "Wang Fang" in d.title or "Wang Fang" in text_of(d, "h1"))
    before = text_of(d, "#balance")
    assert before == "0.00"
    # a bad amount: the message next to the field, nothing paid
    find(d, "#pay input[name=amount]").send_keys("12.345")
    find(d, "#pay button").click()
    assert "at most 2 decimals" in wait_for("the amount error", lambda: text_of(d, "#err-amount"))
    screenshot(d, "counter-payment-bad-amount")
    # no shift open yet: the page says so and offers to open one
    find(d, "#pay input[name=amount]").clear()
    find(d, "#pay input[name=amount]").send_keys("50")
    find(d, "#pay button").click()
    assert "no open counter shift" in wait_for("the shift error", lambda: text_of(d, "#err-shift"))
    find(d, "#open-shift").click()
    wait_for("the shift opened", lambda: "shift" in text_of(d, ".flash"))
    find(d, "#pay input[name=amount]").send_keys("50")
    find(d, "#pay button").click()
    assert "Take 50.00 yuan in cash" in wait_for("the confirmation", lambda: text_of(d, "#question"))
    screenshot(d, "counter-payment-confirm")
    with site.he.store() as s:
        assert s.list_payments(customer=CUSTOMER) == []  # nothing is done before the confirmation
    find(d, "#do").click()
    wait_for("the payment page", lambda: text_of(d, "#state"))
    screenshot(d, "payment")
    # the customer page: the balance changes by itself once the meter confirms the recharge
    d.get(site.url + f"/customers/{CUSTOMER}")
    after = wait_for("the balance to change", lambda: (t := text_of(d, "#balance")) != before and t)
    screenshot(d, "customer-after-payment")
    with site.he.store() as s:
        (p,) = s.list_payments(customer=CUSTOMER)
        assert p.actor == "ann" and p.amount_fen == 5000 and p.state == "confirmed_on_meter"
        wallet = s.get_command(p.command_id).reply["balance_fen"]
        assert after == yuan(wallet) and wallet >= 5000
        assert any(e.action == "console.login" and e.actor == "ann" for e in s.audit_entries(actor="ann"))
    # the page stays open (no reload: the marker survives) while another payment reaches the meter
    d.execute_script("window.stillHere = 1;")
    with site.he.store() as s:
        ensure_operator_channel(s, actor="olga")
        p2 = accept_payment(s, channel_id="operator", txn_id="live-1", amount_fen=2000, meter=METER, actor="olga",
                            paid_at=s.now())
    now = wait_for("the open page's balance to follow", lambda: (t := text_of(d, "#balance")) != after and t)
    assert d.execute_script("return window.stillHere;") == 1
    with site.he.store() as s:
        assert now == yuan(s.get_command(p2.command_id).reply["balance_fen"]) == yuan(wallet + 2000)


def test_a_cashier_cannot_trip_a_meter(site, browser):
    d = browser
    sign_in(d, site, "ann")
    wait_for("the dashboard", lambda: text_of(d, "#who") == "ann (cashier)")
    d.get(site.url + f"/meters/{METER}")
    wait_for("the meter page", lambda: text_of(d, "#relay"))
    assert d.find_elements(_by("CSS_SELECTOR"), "#act-trip") == []  # no button for a cashier
    screenshot(d, "meter-as-cashier")
    status, html = post_with_csrf(d, f"/meters/{METER}/command", {"kind": "trip", "step": "do", "token": "a1b2c3d4e5f6"})
    assert status == 403 and "ann is cashier" in html and "needs one of admin, operator" in html
    with site.he.store() as s:
        assert s.list_commands(meter=METER, kind="trip") == []
        assert s.audit_entries(actor="ann", action="console.not_allowed")


def test_a_post_without_the_csrf_token_is_refused(site, browser):
    d = browser
    sign_in(d, site, "olga")
    wait_for("the dashboard", lambda: text_of(d, "#who") == "olga (operator)")
    status, html = post_without_csrf(d, f"/meters/{METER}/command", {"kind": "trip", "step": "do",
                                                                     "token": "f0e1d2c3b4a5"})
    assert status == 403 and "security token is missing or wrong" in html
    with site.he.store() as s:
        assert s.list_commands(meter=METER, kind="trip") == []
        assert s.audit_entries(actor="olga", action="console.csrf_refused")


def test_an_operator_trips_and_restores_a_meter(site, browser):
    d = browser
    sign_in(d, site, "olga")
    wait_for("the dashboard", lambda: text_of(d, "#who") == "olga (operator)")
    for kind, relay in (("trip", "open"), ("close_direct", "closed")):
        d.get(site.url + f"/meters/{METER}")
        find(d, f"#act-{kind}").click()
        assert METER in wait_for("the confirmation", lambda: text_of(d, "#question"))
        screenshot(d, f"meter-{kind}-confirm")
        find(d, "#do").click()
        # the command page follows the meter's answer by itself
        assert wait_for(f"{kind} confirmed", lambda: text_of(d, "#status") == "confirmed" and text_of(d, "#result"))
        assert f"relay {relay}" in text_of(d, "#result")
        screenshot(d, f"command-{kind}")
        d.get(site.url + f"/meters/{METER}")
        assert wait_for("the relay state", lambda: text_of(d, "#relay")) == relay
    # read now: the values the meter answered, then on the meter page as its last readings
    find(d, "#act-read").click()
    assert "read energy, money and status word 3" in wait_for("the confirmation", lambda: text_of(d, "#question"))
    find(d, "#do").click()
    assert wait_for("the read confirmed", lambda: text_of(d, "#status") == "confirmed" and text_of(d, "#result"))
    rows = d.find_elements(_by("CSS_SELECTOR"), "#values tr")
    assert len(rows) == 3, [r.text for r in rows]
    screenshot(d, "command-read")
    d.get(site.url + f"/meters/{METER}")
    wait_for("the last readings", lambda: len(d.find_elements(_by("CSS_SELECTOR"), "#readings tr")) == 4)
    screenshot(d, "meter-as-operator")
    with site.he.store() as s:
        cmds = {c.kind: c for c in s.list_commands(meter=METER)}
        assert cmds["trip"].actor == "olga" and cmds["close_direct"].actor == "olga"
    d.get(site.url + "/")
    assert wait_for("the dashboard", lambda: text_of(d, "#cuts")) == "1"
    assert text_of(d, "#restores") == "1"
    # the open dashboard follows a cut made elsewhere (the CLI, cost control) without a reload
    d.execute_script("window.stillHere = 1;")
    with site.he.store() as s:
        s.enqueue(METER, "trip", {}, actor="olga")
    wait_for("the dashboard to count the second cut", lambda: text_of(d, "#cuts") == "2")
    assert d.execute_script("return window.stillHere;") == 1
    with site.he.store() as s:
        s.wait_final(s.enqueue(METER, "close_direct", {}, actor="olga").id, 60)
    d.set_window_size(390, 844)  # a phone
    screenshot(d, "dashboard-phone")
    d.get(site.url + "/reports/operations")
    wait_for("the operations report", lambda: text_of(d, "#report h2"))
    screenshot(d, "report-operations-phone")
    d.set_window_size(1280, 900)
    d.get(site.url + "/reports/collection")
    wait_for("the collection report", lambda: text_of(d, "#report h2"))
    screenshot(d, "report-collection")
    d.get(site.url + "/outages")
    wait_for("the outages page", lambda: text_of(d, "h1"))
    screenshot(d, "outages")

"""The console's pages and forms, added to the payments API's FastAPI app (same listener).

Every page needs a signed-in operator (a server-side session; the cookie holds only its random
id).  Every POST carries the session's CSRF token; a form that changes anything goes through a
confirmation page first and is then done through the head-end's own functions (payments through
``accept_payment``/``take_payment``, meter commands through the outbox), which audit it under the
operator's name.  Bad input re-renders the form with the message next to the field and does
nothing.  Store calls run on the event loop thread like the API's (one short SQLite transaction
each); reports and their charts run in a worker thread.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import logging
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from markupsafe import Markup

from headend.console.charts import bar_chart
from headend.console.sessions import LoginLimiter, Session, Sessions
from headend.store import NotFound, Store, StoreError, yuan

__all__ = ["add_console", "Console", "COOKIE", "METER_ACTIONS"]

log = logging.getLogger(__name__)

COOKIE = "pp645_console"
LOGIN_COOKIE = "pp645_login"   # the sign-in form's CSRF token (no session yet)
_HERE = Path(__file__).parent
STALE_DAYS = 3                 # a meter not heard from for this long is "not reached" (as the operations report)
STATES_EVERY_S = 10.0          # the dashboard's meter-state counts are at most this old
ENERGY_DI = "00010000"         # forward active energy, total (Wh)
_FINAL = ("confirmed", "failed", "rejected", "cancelled")
_NUMBERISH = re.compile(r"^[0-9+\- ]+$")

# meter commands the console offers: kind -> (button, what the confirmation asks)
METER_ACTIONS: dict[str, tuple[str, str]] = {
    "read": ("Read now", "read energy, money and status word 3 from"),
    "trip": ("Trip", "TRIP (cut the supply of)"),
    "close_permitted": ("Close permitted", "permit closing (the customer's button restores supply) on"),
    "close_direct": ("Close direct", "close the relay at once (restore supply) on"),
    "hold_on": ("Power hold on", "put power hold on (no cut for lack of money) on"),
    "hold_off": ("Power hold off", "take power hold off"),
    "sync_time": ("Time sync", "synchronise the clock of"),
}


def _perm(action: str) -> frozenset[str]:
    from headend.operators import PERMISSIONS

    return PERMISSIONS[action]


class FormError(Exception):
    """Bad input on a form: {field: message}."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = dict(errors)


class Console:
    """State shared by the console's pages: the store, sessions, the wrong-password limit, templates."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time, outage_policy: Any = None,
                 sessions: Sessions | None = None, limiter: LoginLimiter | None = None) -> None:
        self.store = store
        self.clock = clock
        self.outage_policy = outage_policy
        self.sessions = sessions or Sessions(clock)
        self.limiter = limiter or LoginLimiter(clock)
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"),
                                      autoescape=jinja2.select_autoescape(["html"]), auto_reload=False)
        self.env.filters["yuan"] = lambda v: "" if v is None else yuan(int(v))
        self.env.filters["ts"] = self.local_time
        self.env.filters["kwh"] = lambda wh: "" if wh is None else f"{int(wh) // 1000}.{int(wh) % 1000:03d}"
        self.env.globals["METER_ACTIONS"] = METER_ACTIONS
        self.env.globals["STATES_EVERY_S"] = STATES_EVERY_S
        self._states: tuple[float, dict[str, int]] | None = None
        self._refresh: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ meter states
    async def meter_states(self) -> tuple[float, dict[str, int]]:
        """(when counted, meters by state): counting every meter of a large fleet takes a while,
        so the dashboards (each refreshing every few seconds) share one count, renewed in the
        background once it is ``STATES_EVERY_S`` old; only the very first one is waited for."""
        now = self.clock()
        if self._states is None:
            self._states = (now, await asyncio.to_thread(self._count_states, now))
        elif now - self._states[0] >= STATES_EVERY_S and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(self._renew_states(now))
        return self._states

    async def _renew_states(self, now: float) -> None:
        try:
            self._states = (now, await asyncio.to_thread(self._count_states, now))
        except Exception:  # noqa: BLE001 - the last count stays shown; the next page view tries again
            log.exception("console: counting meters by state failed")

    def _count_states(self, now: float) -> dict[str, int]:
        # on a connection of its own: a WAL reader that never holds the store's lock, so payments
        # and the outbox go on while it counts
        from headend.store import open_store

        since = int(now) - STALE_DAYS * 86400
        if self.store.location in ("", ":memory:"):
            return self.store.meter_states(seen_since=since)
        with open_store(self.store.address, migrate=False) as reader:
            return reader.meter_states(seen_since=since)

    # ------------------------------------------------------------------ helpers
    def local_time(self, t: int | None) -> str:
        """Unix seconds as the head-end's local time ("2026-12-05 14:03")."""
        if t is None:
            return ""
        tz = dt.timezone(dt.timedelta(seconds=self.store.utc_offset_s))
        return dt.datetime.fromtimestamp(int(t), tz).strftime("%Y-%m-%d %H:%M")

    def day_start(self, day: str) -> int:
        """Unix seconds at the start of a business day (local midnight)."""
        d = dt.date.fromisoformat(day)
        return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp()) - self.store.utc_offset_s

    def render(self, request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        session: Session | None = getattr(request.state, "console_session", None)
        ctx.setdefault("session", session)
        ctx.setdefault("csrf", session.csrf if session else "")
        ctx["may"] = (lambda action: session is not None and session.role in _perm(action))
        ctx["path"] = request.url.path
        if session is not None and session.flash:
            ctx["flash"] = list(session.flash)
            session.flash.clear()
        return HTMLResponse(self.env.get_template(template).render(**ctx), status_code=status)

    def session(self, request: Request) -> Session | None:
        s = self.sessions.get(request.cookies.get(COOKIE))
        request.state.console_session = s
        return s

    def to_login(self, request: Request, fragment: bool = False) -> Response:
        """Where a request without a live session goes: the sign-in page (a live part: 401, the
        page's script then reloads to sign in)."""
        expired = 1 if request.cookies.get(COOKIE) else 0
        if fragment:
            return Response("sign in again", status_code=401, headers={"X-Console-Login": "1"})
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(nxt)}&expired={expired}", status_code=303)

    async def form(self, request: Request, session: Session) -> dict[str, str] | Response:
        """The posted form if it carries the session's CSRF token; else a refusal page (audited)."""
        data = await request.form()
        form = {k: str(v) for k, v in data.items()}
        if not session.csrf_ok(form.get("csrf")):
            self.store.log_action(session.name, "console.csrf_refused", request.url.path, {"method": "POST"})
            return self.render(request, "error.html", 403, title="Refused",
                               message="This form's security token is missing or wrong (a form from another site,"
                                       " or an old page): nothing was done. Reload the page and try again.")
        return form

    async def posted(self, request: Request, action: str | None = None,
                     what: str = "") -> tuple[Session, dict[str, str]] | Response:
        """A POST's signed-in session and its form, or the Response that refuses it: sign in
        again, a missing or wrong CSRF token, or (given ``action``) a role without that
        permission, ``what`` naming the refused deed."""
        s = self.session(request)
        if s is None:
            return self.to_login(request)
        form = await self.form(request, s)
        if isinstance(form, Response):
            return form
        if action is not None and s.role not in _perm(action):
            return self.refuse_role(request, s, action, what)
        return s, form

    def refuse_role(self, request: Request, session: Session, action: str, what: str) -> HTMLResponse:
        roles = ", ".join(sorted(_perm(action)))
        self.store.log_action(session.name, "console.not_allowed", request.url.path,
                              {"action": action, "role": session.role})
        return self.render(request, "error.html", 403, title="Not allowed",
                           message=f"{session.name} is {session.role}: {what} needs one of {roles}. Nothing was done.")


def _amount(text: str, field: str = "amount") -> int:
    """Yuan as written on a form ("50", "12.50") in fen, or FormError naming the field."""
    from headend.cli._common import CliError, parse_yuan

    if not text.strip():
        raise FormError({field: "enter an amount in yuan, e.g. 50 or 12.50"})
    try:
        fen = parse_yuan(text)
    except CliError as exc:
        raise FormError({field: str(exc)}) from None
    if fen <= 0:
        raise FormError({field: "the amount must be above 0"})
    return fen


def _daily_energy(readings: list[Any], day_of: Callable[[int], str]) -> tuple[list[str], list[int]]:
    """Energy per business day (Wh) from a meter's cumulative energy readings: the last reading of
    each day minus the last of the day before (the first day has no day before and is left out)."""
    last: dict[str, int] = {}
    for r in readings:
        if r.value is not None:
            last[day_of(r.read_at)] = int(r.value)
    days = sorted(last)
    labels, values = [], []
    for a, b in zip(days, days[1:]):
        labels.append(b[5:])
        values.append(max(0, last[b] - last[a]))
    return labels, values


def _tls(request: Request) -> bool:
    """Whether the browser reached the console over HTTPS (uvicorn takes X-Forwarded-Proto from a
    trusted proxy): its cookies are then Secure, so a browser never sends a session over plain HTTP.
    On plain HTTP (loopback) a Secure cookie would not be kept at all."""
    return request.url.scheme == "https"


def add_console(app: FastAPI, store: Store, *, clock: Callable[[], float] = time.time,
                outage_policy: Any = None) -> Console:
    """Add the operator console's pages at ``/`` to the payments API's app (see the module docstring)."""
    con = Console(store, clock=clock, outage_policy=outage_policy)
    app.state.console = con
    app.mount("/static", StaticFiles(directory=_HERE / "static"), name="console-static")
    get = lambda path: app.get(path, include_in_schema=False, response_model=None)  # noqa: E731
    post = lambda path: app.post(path, include_in_schema=False, response_model=None)  # noqa: E731

    # ------------------------------------------------------------------ sign-in
    @get("/login")
    async def login_page(request: Request, next: str = "/", expired: int = 0) -> Response:
        token = secrets.token_urlsafe(24)
        resp = con.render(request, "login.html", session=None, csrf=token, next=_safe_next(next),
                          notice="Your session has expired: sign in again." if expired else "", errors={})
        resp.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=_tls(request), path="/login")
        return resp

    @post("/login")
    async def login(request: Request) -> Response:
        from headend.operators import AuthError, authenticate

        data = await request.form()
        form = {k: str(v) for k, v in data.items()}
        nxt = _safe_next(form.get("next", "/"))
        token = request.cookies.get(LOGIN_COOKIE, "")
        name = form.get("name", "").strip()

        def again(status: int, errors: dict[str, str]) -> Response:
            fresh = secrets.token_urlsafe(24)
            resp = con.render(request, "login.html", status, session=None, csrf=fresh, next=nxt, notice="",
                              errors=errors, name=name)
            resp.set_cookie(LOGIN_COOKIE, fresh, httponly=True, samesite="strict", secure=_tls(request), path="/login")
            return resp

        if not token or not secrets.compare_digest(token, form.get("csrf", "")):
            return again(403, {"form": "the sign-in form's security token is missing or wrong: sign in on this page"})
        if not name:
            return again(422, {"name": "enter your operator name"})
        client = request.client.host if request.client else "?"
        keys = (f"name:{name}", f"ip:{client}")
        wait = con.limiter.wait_s(*keys)
        if wait:
            store.log_action(name, "console.login_locked", name, {"client": client, "wait_s": wait})
            return again(429, {"password": f"too many wrong passwords: try again in {wait} s"})
        try:
            op = authenticate(store, name, form.get("password", ""), "read_books")
        except AuthError:
            con.limiter.failed(*keys)
            return again(401, {"password": "wrong name or password, or the operator is disabled"})
        con.limiter.succeeded(keys[0])
        s = con.sessions.start(op.name, op.role)
        store.log_action(op.name, "console.login", op.name, {"role": op.role, "client": client})
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(COOKIE, s.sid, httponly=True, samesite="strict", secure=_tls(request), path="/")
        resp.delete_cookie(LOGIN_COOKIE, path="/login")
        return resp

    @post("/logout")
    async def logout(request: Request) -> Response:
        got = await con.posted(request)
        if isinstance(got, Response):
            return got
        s, form = got
        con.sessions.end(s.sid)
        store.log_action(s.name, "console.logout", s.name, None)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # ------------------------------------------------------------------ dashboard
    async def dashboard_data() -> dict[str, Any]:
        counted, states = await con.meter_states()
        now = int(con.clock())
        day = store.business_day(now)
        coll = store.collections_by_channel(day)
        return {
            "day": day,
            "states": states,
            "states_at": int(counted),
            "collections": coll,
            "collected_fen": sum(int(r[3] or 0) for r in coll),
            "chart": Markup(bar_chart([r[0] for r in coll], [int(r[3] or 0) for r in coll], unit="yuan", scale=100,
                                      title=f"collections on {day} by channel (yuan)")),
            "relay": store.relay_outcomes_since(con.day_start(day)),
            "in_flight": store.commands_in_flight(),
            "failed_notices": store.failed_notice_count(),
            "recent_failed": store.find_notices(status="failed", limit=5),
            "now": now,
        }

    @get("/")
    async def dashboard(request: Request) -> Response:
        if con.session(request) is None:
            return con.to_login(request)
        return con.render(request, "dashboard.html", d=await dashboard_data())

    @get("/live/dashboard")
    async def dashboard_live(request: Request) -> Response:
        if con.session(request) is None:
            return con.to_login(request, fragment=True)
        return con.render(request, "_dashboard.html", d=await dashboard_data())

    # ------------------------------------------------------------------ customers
    @get("/customers")
    async def search(request: Request, q: str = "") -> Response:
        if con.session(request) is None:
            return con.to_login(request)
        # customer and meter numbers and phones are digits: text with letters can only be a name
        text = q.strip()
        found = [] if not text else store.find_accounts(text, limit=50) if _NUMBERISH.match(text) else \
            store.find_accounts_by_name(text, limit=50)
        return con.render(request, "search.html", q=q, found=found)

    def customer_data(no: str) -> dict[str, Any]:
        a = store.get_account(no)
        meters = store.meters_of_customer(no)
        local = [m for m in meters if m.mode == "local"]
        balance = a.balance_fen + sum((m.balance_fen or 0) for m in local)
        return {"a": a, "meters": meters, "balance": balance, "mode": "local" if local else "remote",
                "payments": store.list_payments(customer=no, limit=20), "ledger": store.ledger(no, limit=20),
                "notices": store.find_notices(customer=no, limit=20)}

    @get("/customers/{no}")
    async def customer(request: Request, no: str) -> Response:
        if con.session(request) is None:
            return con.to_login(request)
        try:
            d = customer_data(no)
        except NotFound:
            return con.render(request, "error.html", 404, title="No such customer",
                              message=f"There is no customer {no}: search by customer number, meter, name or phone.")
        return con.render(request, "customer.html", errors={}, values={}, **d)

    @get("/live/customers/{no}")
    async def customer_live(request: Request, no: str) -> Response:
        if con.session(request) is None:
            return con.to_login(request, fragment=True)
        try:
            d = customer_data(no)
        except NotFound:
            return Response("", status_code=404)
        return con.render(request, "_customer.html", **d)

    @post("/customers/{no}/pay")
    async def counter_pay(request: Request, no: str) -> Response:
        from headend.payments import PaymentError
        from headend.payments.counter import take_payment

        got = await con.posted(request, "counter", "taking a counter payment")
        if isinstance(got, Response):
            return got
        s, form = got
        try:
            d = customer_data(no)
        except NotFound:
            return con.render(request, "error.html", 404, title="No such customer", message=f"There is no customer {no}.")
        meter = form.get("meter") or None
        try:
            fen = _amount(form.get("amount", ""))
            if meter is not None and meter not in {m.address for m in d["meters"]}:
                raise FormError({"meter": f"meter {meter} is not one of customer {no}'s meters"})
            if store.current_shift(s.name) is None:
                raise FormError({"shift": f"{s.name} has no open counter shift: open one first"})
        except FormError as exc:
            return con.render(request, "customer.html", 422, errors=exc.errors, values=form, **d)
        if form.get("step") != "do":
            return con.render(request, "confirm.html", title="Take a counter payment",
                              question=f"Take {yuan(fen)} yuan in cash for customer {no} ({d['a'].name})"
                                       + (f", to meter {meter}" if meter else "") + "?",
                              action=f"/customers/{no}/pay", back=f"/customers/{no}",
                              fields={"amount": form.get("amount", ""), "meter": meter or "",
                                      "token": secrets.token_hex(8)})
        try:
            p = take_payment(store, s.name, customer=no, amount_fen=fen, tender={"kind": "cash"}, meter=meter,
                             txn_id=f"console:{_token(form)}")
        except PaymentError as exc:
            field = {"amount_fen": "amount", "meter": "meter"}.get(exc.field or "", "amount")
            return con.render(request, "customer.html", 422, errors={field: exc.message}, values=form, **d)
        except StoreError as exc:
            return con.render(request, "customer.html", 422, errors={"amount": str(exc)}, values=form, **d)
        return RedirectResponse(f"/payments/{p.id}", status_code=303)

    @post("/shift/open")
    async def shift_open(request: Request) -> Response:
        from headend.payments.counter import open_shift

        got = await con.posted(request, "counter", "opening a counter shift")
        if isinstance(got, Response):
            return got
        s, form = got
        if store.current_shift(s.name) is None:
            sh = open_shift(store, s.name)
            s.flash.append(f"shift {sh.id} opened at counter {sh.channel}")
        return RedirectResponse(_safe_next(form.get("next", "/")), status_code=303)

    # ------------------------------------------------------------------ meters
    def meter_data(address: str) -> dict[str, Any]:
        from headend.commands import DEFAULT_READ_DIS

        m = store.get_meter(address)
        now = int(con.clock())
        energy = store.readings(address, ENERGY_DI, since=now - 32 * 86400)
        labels, values = _daily_energy(energy, store.business_day)
        latest = [r for r in (store.latest_reading(address, f"{d:08X}") for d in DEFAULT_READ_DIS) if r is not None]
        return {"m": m, "a": store.get_account(m.customer), "latest": latest,
                "chart": Markup(bar_chart(labels, values, unit="kWh", scale=1000, title="daily energy (kWh)")),
                "events": store.events(address, limit=20), "commands": store.list_commands(meter=address, limit=20)}

    @get("/meters/{address}")
    async def meter(request: Request, address: str) -> Response:
        if con.session(request) is None:
            return con.to_login(request)
        try:
            d = meter_data(address)
        except (NotFound, StoreError):
            return con.render(request, "error.html", 404, title="No such meter", message=f"There is no meter {address}.")
        return con.render(request, "meter.html", errors={}, values={}, **d)

    @get("/live/meters/{address}")
    async def meter_live(request: Request, address: str) -> Response:
        if con.session(request) is None:
            return con.to_login(request, fragment=True)
        try:
            d = meter_data(address)
        except (NotFound, StoreError):
            return Response("", status_code=404)
        return con.render(request, "_meter.html", **d)

    @post("/meters/{address}/command")
    async def meter_command(request: Request, address: str) -> Response:
        from headend.commands import DEFAULT_READ_DIS
        from headend.commands.params import check as check_params

        got = await con.posted(request)
        if isinstance(got, Response):
            return got
        s, form = got
        kind = form.get("kind", "")
        if kind not in METER_ACTIONS:
            return con.render(request, "error.html", 422, title="Unknown action",
                              message=f"unknown meter action {kind!r}; one of {', '.join(METER_ACTIONS)}")
        if s.role not in _perm("meters"):
            return con.refuse_role(request, s, "meters", f"{METER_ACTIONS[kind][0].lower()} on a meter")
        try:
            d = meter_data(address)
        except (NotFound, StoreError):
            return con.render(request, "error.html", 404, title="No such meter", message=f"There is no meter {address}.")
        params: dict[str, Any] = {}
        if kind == "read":
            params = {"dis": [f"{x:08X}" for x in DEFAULT_READ_DIS]}
        elif kind == "sync_time":
            params = {"mode": "auto"}
        check_params(kind, params)
        if form.get("step") != "do":
            return con.render(request, "confirm.html", title=METER_ACTIONS[kind][0],
                              question=f"{METER_ACTIONS[kind][1]} meter {address} (customer {d['m'].customer},"
                                       f" {d['a'].name})?", action=f"/meters/{address}/command",
                              back=f"/meters/{address}", danger=kind == "trip",
                              fields={"kind": kind, "token": secrets.token_hex(8)})
        cmd = store.enqueue(address, kind, params, actor=s.name, idem_key=f"console:{_token(form)}")
        return RedirectResponse(f"/commands/{cmd.id}", status_code=303)

    @post("/meters/{address}/recharge")
    async def meter_recharge(request: Request, address: str) -> Response:
        from headend.payments import OPERATOR_CHANNEL, PaymentError, accept_payment, ensure_operator_channel

        got = await con.posted(request, "recharge", "a recharge")
        if isinstance(got, Response):
            return got
        s, form = got
        try:
            d = meter_data(address)
        except (NotFound, StoreError):
            return con.render(request, "error.html", 404, title="No such meter", message=f"There is no meter {address}.")
        try:
            fen = _amount(form.get("amount", ""))
        except FormError as exc:
            return con.render(request, "meter.html", 422, errors=exc.errors, values=form, **d)
        if form.get("step") != "do":
            return con.render(request, "confirm.html", title="Recharge",
                              question=f"Recharge {yuan(fen)} yuan to meter {address} (customer {d['m'].customer},"
                                       f" {d['a'].name}) through the operator channel?",
                              action=f"/meters/{address}/recharge", back=f"/meters/{address}",
                              fields={"amount": form.get("amount", ""), "token": secrets.token_hex(8)})
        try:
            ensure_operator_channel(store, actor=s.name)
            p = accept_payment(store, channel_id=OPERATOR_CHANNEL, txn_id=f"console:{_token(form)}", amount_fen=fen,
                               meter=address, actor=s.name, paid_at=store.now())
        except PaymentError as exc:
            return con.render(request, "meter.html", 422, errors={"amount": exc.message}, values=form, **d)
        return RedirectResponse(f"/payments/{p.id}", status_code=303)

    # ------------------------------------------------------------------ outcomes
    @get("/commands/{cid}")
    async def command(request: Request, cid: str) -> Response:
        if con.session(request) is None:
            return con.to_login(request)
        try:
            cmd = store.get_command(_number(cid))
        except NotFound:
            return con.render(request, "error.html", 404, title="No such command", message=f"There is no command {cid}.")
        return con.render(request, "command.html", c=cmd, final=cmd.status in _FINAL)

    @get("/live/commands/{cid}")
    async def command_live(request: Request, cid: str) -> Response:
        if con.session(request) is None:
            return con.to_login(request, fragment=True)
        try:
            cmd = store.get_command(_number(cid))
        except NotFound:
            return Response("", status_code=404)
        return con.render(request, "_command.html", c=cmd, final=cmd.status in _FINAL)

    def payment_data(pid: int) -> dict[str, Any]:
        p = store.get_payment(pid)
        cmd = store.get_command(p.command_id) if p.command_id is not None else None
        m = store.get_meter(p.meter) if p.meter else None
        return {"p": p, "c": cmd, "m": m, "a": store.get_account(p.customer),
                "final": p.state in ("confirmed_on_meter", "credited", "reversed")
                or (cmd is not None and cmd.status in _FINAL)}

    @get("/payments/{pid}")
    async def payment(request: Request, pid: str) -> Response:
        if con.session(request) is None:
            return con.to_login(request)
        try:
            d = payment_data(_number(pid))
        except NotFound:
            return con.render(request, "error.html", 404, title="No such payment", message=f"There is no payment {pid}.")
        return con.render(request, "payment.html", **d)

    @get("/live/payments/{pid}")
    async def payment_live(request: Request, pid: str) -> Response:
        if con.session(request) is None:
            return con.to_login(request, fragment=True)
        try:
            d = payment_data(_number(pid))
        except NotFound:
            return Response("", status_code=404)
        return con.render(request, "_payment.html", **d)

    # ------------------------------------------------------------------ reports
    @get("/reports")
    async def reports(request: Request) -> Response:
        from headend.reports import REPORTS

        if con.session(request) is None:
            return con.to_login(request)
        return con.render(request, "reports.html", names=list(REPORTS), rep=None, errors={}, q={})

    def report_query(request: Request) -> tuple[str, Any]:
        from headend.reports import Query

        qp = request.query_params
        last = qp.get("to") or store.business_day(int(con.clock()))
        first = qp.get("from") or ""
        if not first:
            try:
                first = (dt.date.fromisoformat(last) - dt.timedelta(days=30)).isoformat()
            except ValueError:
                first = last
        by = qp.get("by") or "day"
        if by not in ("day", "week", "month"):
            raise FormError({"by": "period must be day, week or month"})
        return by, Query(first=first, last=last, by=by, district=qp.get("district") or None,
                         channel=qp.get("channel") or None)

    async def run(name: str, q: Any) -> Any:
        from headend.reports import run_report

        return await asyncio.to_thread(run_report, store, name, q)

    @get("/reports/{name}.csv")
    async def report_csv(request: Request, name: str) -> Response:
        from headend.reports import ReportError

        s = con.session(request)
        if s is None:
            return con.to_login(request)
        try:
            _by, q = report_query(request)
            rep = await run(name, q)
        except (FormError, ReportError) as exc:
            return Response(f"{exc}\n", status_code=422, media_type="text/plain")
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=rep.columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rep.rows)
        store.log_action(s.name, "report.read", name, {"from": q.first, "to": q.last, "by": q.by, "as": "csv"})
        return Response(out.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}-{q.first}-{q.last}.csv"'})

    @get("/reports/{name}")
    async def report(request: Request, name: str) -> Response:
        from headend.reports import REPORTS, ReportError

        s = con.session(request)
        if s is None:
            return con.to_login(request)
        if name not in REPORTS:
            return con.render(request, "error.html", 404, title="No such report",
                              message=f"There is no report {name!r}; one of {', '.join(REPORTS)}.")
        qd = dict(request.query_params)
        try:
            _by, q = report_query(request)
            rep = await run(name, q)
        except FormError as exc:
            return con.render(request, "reports.html", 422, names=list(REPORTS), name=name, rep=None,
                              errors=exc.errors, q=qd)
        except ReportError as exc:
            field = {"from": "from", "to": "to", "district": "district", "channel": "channel"}.get(exc.field or "", "to")
            return con.render(request, "reports.html", 422, names=list(REPORTS), name=name, rep=None,
                              errors={field: str(exc)}, q=qd)
        chart = await asyncio.to_thread(_report_svg, rep)
        store.log_action(s.name, "report.read", name, {"from": q.first, "to": q.last, "by": q.by})
        return con.render(request, "reports.html", names=list(REPORTS), name=name, rep=rep, chart=Markup(chart),
                          errors={}, q={"from": q.first, "to": q.last, "by": q.by, "district": q.district or "",
                                        "channel": q.channel or ""}, csv_query=request.url.query)

    # ------------------------------------------------------------------ outages
    def outage_page(request: Request, status: int = 200, errors: dict[str, str] | None = None,
                    values: dict[str, str] | None = None) -> HTMLResponse:
        from headend.grid.outages import announce

        now = int(con.clock())
        return con.render(request, "outages.html", status, outages=store.list_outages(),
                          announced=announce(store, now), feeders=store.grid_summary(), errors=errors or {},
                          values=values or {})

    @get("/outages")
    async def outages_page(request: Request) -> Response:
        if con.session(request) is None:
            return con.to_login(request)
        return outage_page(request)

    @post("/outages")
    async def outage_plan(request: Request) -> Response:
        from headend.cli._common import CliError
        from headend.cli.outage import parse_time
        from headend.grid.outages import OutagePolicy, plan_outage

        got = await con.posted(request, "outages", "planning an outage")
        if isinstance(got, Response):
            return got
        s, form = got
        errors: dict[str, str] = {}
        scope, where = form.get("scope", "feeder"), form.get("where", "").strip()
        if scope not in ("feeder", "area"):
            errors["where"] = "choose a feeder or a transformer area"
        elif not where:
            errors["where"] = f"name the {scope} (see the grid table below)"
        times: dict[str, int] = {}
        for f in ("start", "end"):
            text = form.get(f, "").strip()
            if not text:
                errors[f] = "enter a time (YYYY-MM-DDTHH:MM, local)"
                continue
            try:
                times[f] = parse_time(text, store.utc_offset_s)
            except CliError as exc:
                errors[f] = str(exc)
        if len(times) == 2 and times["end"] <= times["start"]:
            errors["end"] = "the end must be after the start"
        if not form.get("reason", "").strip():
            errors["reason"] = "say why (customers and the hotline are told)"
        if errors:
            return outage_page(request, 422, errors, form)
        try:
            o, n = plan_outage(store, feeder=where if scope == "feeder" else None, area=where if scope == "area" else None,
                               start_at=times["start"], end_at=times["end"], reason=form["reason"].strip(), actor=s.name,
                               now=int(con.clock()), policy=con.outage_policy or OutagePolicy())
        except (StoreError, ValueError) as exc:
            return outage_page(request, 422, {"where": str(exc)}, form)
        s.flash.append(f"outage {o.id} planned: {n} notice(s) queued for the customers affected")
        return RedirectResponse("/outages", status_code=303)

    @post("/outages/{oid}/cancel")
    async def outage_cancel(request: Request, oid: str) -> Response:
        from headend.grid.outages import OutagePolicy, cancel_outage

        got = await con.posted(request, "outages", "cancelling an outage")
        if isinstance(got, Response):
            return got
        s, form = got
        try:
            o, n = cancel_outage(store, _number(oid), actor=s.name, now=int(con.clock()),
                                 policy=con.outage_policy or OutagePolicy())
        except (StoreError, ValueError) as exc:
            return outage_page(request, 422, {"cancel": str(exc)})
        s.flash.append(f"outage {o.id} cancelled: {n} cancellation notice(s) queued")
        return RedirectResponse("/outages", status_code=303)

    return con


def _number(text: str) -> int:
    """A record number from a path; NotFound for anything else (the page says there is no such record)."""
    if not text.isdigit() or len(text) > 18:
        raise NotFound(f"no record {text[:20]!r}")
    return int(text)


def _token(form: Mapping[str, str]) -> str:
    """The confirmation page's one-time token: a second press of "confirm" does the action once."""
    t = form.get("token", "")
    return t if t.isalnum() and 8 <= len(t) <= 32 else secrets.token_hex(8)


def _safe_next(path: str) -> str:
    """Only a path on this site is followed after sign-in (no open redirect)."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


def _report_svg(rep: Any) -> str:
    from headend.reports.charts import draw

    with tempfile.TemporaryDirectory() as d:
        path = draw(rep, Path(d) / "chart.svg")
        text = path.read_text()
    return text[text.find("<svg"):]

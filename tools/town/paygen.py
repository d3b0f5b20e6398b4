"""The town's customers paying, through the real payments API (signed HTTP, tools/town/plan.py's
households).

Who pays when (``PayModel``, no I/O, deterministic from a seed): each customer pays now and then
(about every two to three weeks of town time), mostly in the evening, much more on pay day (the
15th), soon after a low-balance SMS and within the hour after a cut.  The channel follows
realistic shares (WeChat and Alipay first, then the utility's app, online banking, the business
hall's counter (open 8:00-18:00), kiosks, POS, agents); the amount is a round sum, larger for
heavy users and after a cut.

``setup_channels(store, keys)`` creates the town's channels with API credentials;
``PayGen`` (async) watches the customers' notices and pays; ``pay_storm`` pays many at once and
measures each payment's time to confirmation.  From a shell::

    python -m tools.town.paygen --db prepaid645.db --api http://127.0.0.1:8080 --count 200 --speed 1440

pays for the town of ``--count`` meters (same ``--seed`` as the fleet) until SIGINT/SIGTERM and
prints one JSON line per payment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

from tools.town.plan import Home, plan_town

__all__ = ["CHANNELS", "PayGen", "PayModel", "Payment", "pay_storm", "setup_channels"]

# (channel id, kind, share in percent)
CHANNELS = (("wechat-pay", "third_party", 32), ("alipay", "third_party", 22), ("grid-app", "mobile_app", 16),
            ("icbc-online", "online_banking", 9), ("hall-counter", "counter", 9), ("kiosk-1", "kiosk", 5),
            ("pos-bank", "unionpay_pos", 4), ("agent-shop", "agent", 3))
# relative chance of paying by hour of day (town time): asleep at night, evening peak
HOUR_WEIGHT = (1, 0, 0, 0, 0, 1, 3, 6, 8, 8, 7, 8, 10, 8, 7, 7, 8, 12, 18, 22, 20, 14, 7, 3)
DAY_S = 86400
BASE_DAYS = 18         # a customer pays about this often when nothing prompts them
PAY_DAY = 15
CST = timezone(timedelta(hours=8))


@dataclass(frozen=True)
class Payment:
    customer: str
    meter: str
    channel: str
    amount_fen: int
    reason: str        # routine, pay_day, low_balance, after_cut
    txn_id: str


@dataclass
class PayModel:
    """Decides who pays in a stretch of town time.  ``alerts`` are what the customers heard since
    the last step: {customer: "low" or "cut"}; a customer told holds that prompt until paying."""

    homes: list[Home]
    seed: int = 1
    rng: random.Random = field(init=False)
    prompted: dict[str, tuple[str, int]] = field(default_factory=dict)  # customer -> (reason, since)
    n: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed * 7919 + 1)
        self._weights = [c[2] for c in CHANNELS]
        self._hour_total = sum(HOUR_WEIGHT)

    def _channel(self, hour: int) -> str:
        while True:
            ch = self.rng.choices(CHANNELS, weights=self._weights)[0]
            if ch[1] != "counter" or 8 <= hour < 18:
                return ch[0]

    def _amount(self, home: Home, reason: str) -> int:
        base = self.rng.choice((50, 50, 100, 100, 100, 200, 200, 300))
        if home.kind in ("heavy", "shop"):
            base *= 3
        if reason == "after_cut":
            base = max(base, 100)
        return base * 100

    def step(self, t0: int, t1: int, alerts: dict[str, str] | None = None) -> list[Payment]:
        """The payments made between town times t0 and t1 (meter time: the local wall clock)."""
        if t1 <= t0:
            return []
        for customer, what in (alerts or {}).items():
            if what == "cut" or customer not in self.prompted:
                self.prompted[customer] = ("after_cut" if what == "cut" else "low_balance", t0)
        tm = time.gmtime(t0)
        hour, mday = tm.tm_hour, tm.tm_mday
        span = (t1 - t0) / DAY_S
        hour_share = HOUR_WEIGHT[hour] * 24 / self._hour_total
        out = []
        for h in self.homes:
            prompt = self.prompted.get(h.customer)
            if prompt is not None and prompt[0] == "after_cut":
                rate, reason = 24.0, "after_cut"           # within the hour, day or night
            elif prompt is not None:
                rate, reason = 2.0 * hour_share, "low_balance"   # the same day or the next
            elif mday == PAY_DAY:
                rate, reason = 4.0 / BASE_DAYS * hour_share, "pay_day"
            else:
                rate, reason = 1.0 / BASE_DAYS * hour_share, "routine"
            if h.kind == "empty" and prompt is None:
                rate /= 4
            if self.rng.random() < rate * span:
                self.n += 1
                self.prompted.pop(h.customer, None)
                out.append(Payment(h.customer, h.address, self._channel(hour), self._amount(h, reason), reason,
                                   f"T{self.seed}-{self.n:08d}"))
        return out


def setup_channels(store: Any, keys: Any, *, actor: str = "town", callback_url: str | None = None
                   ) -> dict[str, tuple[str, str]]:
    """Create the town's payment channels with API credentials (each secret sealed with the key
    store, as `headend channel add` does); {channel id: (key id, secret)}."""
    creds = {}
    for channel_id, kind, _share in CHANNELS:
        key_id, secret = f"{channel_id}-k1", os.urandom(24).hex()
        store.add_channel(channel_id, kind, actor=actor, key_id=key_id,
                          secret=keys.seal(f"channel:{channel_id}:{key_id}", secret.encode()),
                          callback_url=callback_url)
        creds[channel_id] = (key_id, secret)
    return creds


def save_credentials(path: Path, creds: dict[str, tuple[str, str]]) -> None:
    """The channels' API secrets for the generator process, readable by this user only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({k: list(v) for k, v in creds.items()}, fh)


def load_credentials(path: Path) -> dict[str, tuple[str, str]]:
    return {k: (v[0], v[1]) for k, v in json.loads(Path(path).read_text()).items()}


def _body(p: Payment, paid_at: float) -> dict[str, Any]:
    return {"channel_id": p.channel, "txn_id": p.txn_id, "customer_no": p.customer, "meter_no": p.meter,
            "amount_fen": p.amount_fen, "paid_at": datetime.fromtimestamp(int(paid_at), CST).isoformat()}


class Payer:
    """Signed clients, one per channel; ``pay`` posts one payment, again with the same transaction
    id while the API cannot be reached (a restarting head-end): never paid twice, never lost."""

    def __init__(self, api: str, creds: dict[str, tuple[str, str]], *, timeout: float = 30.0) -> None:
        import httpx

        from headend.api import ChannelAuth

        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        self.clients = {ch: httpx.AsyncClient(base_url=api, auth=ChannelAuth(k, s), timeout=timeout, limits=limits)
                        for ch, (k, s) in creds.items()}
        self.retries = 0
        self.accepted = 0
        self.refused: dict[str, int] = {}

    async def pay(self, p: Payment, *, give_up_s: float = 300.0) -> dict[str, Any] | None:
        """The receipt, or None if the API refused it (counted by problem code in ``refused``)."""
        import httpx

        client = self.clients[p.channel]
        deadline = time.monotonic() + give_up_s
        body = _body(p, time.time())
        while True:
            try:
                r = await client.post("/v1/payments", json=body)
            except httpx.TransportError:
                r = None
            if r is not None and r.status_code in (200, 201):
                self.accepted += 1
                return r.json()
            if r is not None and r.status_code < 500 and r.status_code != 429:
                code = (r.json().get("code") if r.headers.get("content-type", "").endswith("json") else None) or str(
                    r.status_code)
                self.refused[code] = self.refused.get(code, 0) + 1
                return None
            if time.monotonic() > deadline:
                raise RuntimeError(f"payment {p.txn_id}: the API did not answer for {give_up_s:.0f} s")
            self.retries += 1
            await asyncio.sleep(0.5)

    async def receipt(self, channel: str, payment_id: int) -> dict[str, Any] | None:
        import httpx

        try:
            r = await self.clients[channel].get(f"/v1/payments/{payment_id}")
        except httpx.TransportError:
            self.retries += 1
            return None
        return r.json() if r.status_code == 200 else None

    async def close(self) -> None:
        for c in self.clients.values():
            await c.aclose()


DONE_STATES = ("confirmed_on_meter", "credited")


async def pay_storm(payer: Payer, payments: Iterable[Payment], *, concurrency: int = 64, poll_s: float = 0.2,
                    give_up_s: float = 600.0) -> dict[str, Any]:
    """Pay all at once (``concurrency`` in flight) and follow each to confirmation (on the meter,
    or credited to a remote account); latencies in seconds from posting to the confirmation seen."""
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    receipts: list[dict[str, Any]] = []

    async def one(p: Payment) -> None:
        async with sem:
            t0 = time.monotonic()
            got = await payer.pay(p, give_up_s=give_up_s)
        if got is None:
            return
        pid = got["payment_id"] if "payment_id" in got else got["id"]
        deadline = t0 + give_up_s
        while got is None or got.get("state") not in DONE_STATES:
            if time.monotonic() > deadline:
                raise RuntimeError(f"payment {p.txn_id} not confirmed in {give_up_s:.0f} s (last: {got})")
            await asyncio.sleep(poll_s)
            got = await payer.receipt(p.channel, pid) or got
        latencies.append(time.monotonic() - t0)
        receipts.append(got)

    await asyncio.gather(*(one(p) for p in payments))
    return {"latencies": latencies, "receipts": receipts, "retries": payer.retries, "refused": dict(payer.refused)}


class PayGen:
    """The customers of a town, paying as their clock and their SMS say (see PayModel)."""

    def __init__(self, homes: list[Home], payer: Payer, db: Path, *, seed: int = 1, speed: int = 1,
                 start: int | None = None, step_s: float = 0.5, out: Any = None) -> None:
        self.model = PayModel(homes, seed)
        self.payer = payer
        self.db = db
        self.speed = speed
        self.start = start if start is not None else _wall_now()
        self.step_s = step_s
        self.out = out
        self.t0 = time.monotonic()
        self.last_notice = 0
        self.by_channel: dict[str, int] = {}
        self.by_reason: dict[str, int] = {}
        self.paid_fen = 0

    def town_time(self) -> int:
        return self.start + int((time.monotonic() - self.t0) * self.speed)

    def alerts(self) -> dict[str, str]:
        """What the customers were told since the last look: low balance or cut (the SMS gateway's
        sent notices)."""
        try:
            con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
            try:
                rows = con.execute("SELECT id, customer, kind FROM notifications WHERE id > ? AND status = 'sent'"
                                   " ORDER BY id", (self.last_notice,)).fetchall()
            finally:
                con.close()
        except sqlite3.Error:
            return {}
        out: dict[str, str] = {}
        for nid, customer, kind in rows:
            self.last_notice = max(self.last_notice, nid)
            if kind in ("cut", "cut_notice"):
                out[customer] = "cut"
            elif kind in ("alarm1_notice", "alarm2_notice") and out.get(customer) != "cut":
                out[customer] = "low"
        return out

    async def run(self, stop: asyncio.Event) -> None:
        t = self.town_time()
        pending: set[asyncio.Task] = set()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.step_s)
            except asyncio.TimeoutError:
                pass
            t1 = self.town_time()
            for p in self.model.step(t, t1, self.alerts()):
                task = asyncio.create_task(self._pay(p))
                pending.add(task)
                task.add_done_callback(pending.discard)
            t = t1
        if pending:
            await asyncio.wait(pending, timeout=30)

    async def _pay(self, p: Payment) -> None:
        try:
            got = await self.payer.pay(p, give_up_s=60)
        except RuntimeError:
            got = None
        if got is not None:
            self.by_channel[p.channel] = self.by_channel.get(p.channel, 0) + 1
            self.by_reason[p.reason] = self.by_reason.get(p.reason, 0) + 1
            self.paid_fen += p.amount_fen
        if self.out is not None:
            print(json.dumps({"txn_id": p.txn_id, "customer": p.customer, "channel": p.channel,
                              "amount_fen": p.amount_fen, "reason": p.reason,
                              "state": got.get("state") if got else "refused"}), file=self.out, flush=True)


def _wall_now() -> int:
    t = time.localtime()
    return int(datetime(t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                        tzinfo=timezone.utc).timestamp())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.town.paygen", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--db", required=True, help="the head-end database (its sent notices are the customers' SMS)")
    p.add_argument("--api", required=True, help="the payments API, http://HOST:PORT")
    p.add_argument("--credentials", required=True, help="the channels' API keys (JSON written by the set-up)")
    p.add_argument("--count", type=int, default=200, help="the town's meters (as the fleet was started)")
    p.add_argument("--seed", type=int, default=1, help="the town's seed (as the fleet was started)")
    p.add_argument("--speed", type=int, default=1, help="town clock acceleration (as the fleet's)")
    p.add_argument("--start", help="town time at start, 2026-12-05T18:00 (default: now)")
    args = p.parse_args(argv)
    import tools.fleet  # noqa: F401 - puts firmware/ on sys.path
    from hal.sim import parse_time

    homes = plan_town(args.count, seed=args.seed).homes
    start = parse_time(args.start) if args.start else None

    async def go() -> None:
        payer = Payer(args.api, load_credentials(Path(args.credentials)))
        gen = PayGen(homes, payer, Path(args.db), seed=args.seed, speed=args.speed, start=start, out=sys.stdout)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await gen.run(stop)
        await payer.close()
        print(json.dumps({"paid": gen.by_channel, "reasons": gen.by_reason, "paid_fen": gen.paid_fen,
                          "retries": payer.retries, "refused": payer.refused}), flush=True)

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    sys.exit(main())

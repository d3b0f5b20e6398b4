"""Where a payment's store work goes: one group-commit round of the payments API, in process, with
one part left out at a time.

A round is what ``headend/api/commit.py`` runs for the requests of one loop turn: the requests'
nonces recorded, then the payments taken together (rules, payment, journal and account rows) in
one transaction and one commit, on SQLite in WAL mode, 22
payments a round (the round size the payments bench's 32 connections give) over 1,000
remote-cost-control accounts.  Each side is that round with one part changed:

* with the "payment received" notices queued in the round, as taking a payment did before the
  notice sender derived them (``notify_payments``, here inside the round's transaction);
* without the nonces (their row and index entries);
* with an audit row per payment (as an operator's payment has; a channel's has none);
* on a database of 1 KB pages instead of SQLite's 4 KB (a WAL frame is a whole page, and a round's
  rows land on random pages of the indexes keyed by customer).

A second pair takes rounds of payments to local-cost-control meters (each checks the money
already on its way to its meter, for the hoarding headroom) on a database that holds 25,000
earlier payments, with and without the partial index of the payments still on their way
(``payments_in_flight``): without it that check scanned every payment ever taken.

The sides run in rotating order round after round (``interleave.interleaved_group``) and each is
reported as its CPU per payment against the full round's in the same rounds.  The HTTP side of a
payment is measured by ``bench_payments`` (against the no-op endpoint); this file says what inside
the store work a change of schema would buy.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from itertools import count
from pathlib import Path
from typing import Any, Callable

from tools.bench.interleave import interleaved_group

ACCOUNTS = 1000
ROUND = 22
ROUNDS_PER_SAMPLE = 20     # rounds timed together, so that one sample is well above the timer's grain
SAMPLES = int(os.environ.get("BENCH_PAYMENT_PARTS_SAMPLES", "15"))
_serial = count()


class _Site:
    """One database with its accounts and channel, and how its rounds are run."""

    def __init__(self, folder: Path, name: str, *, page_size: int | None = None, notify: bool = False,
                 nonces: bool = True, audit: bool = False) -> None:
        from headend.store import open_store

        path = folder / f"{name}.db"
        if page_size:
            # a page size holds only if set before the first table is made
            with sqlite3.connect(path) as c:
                c.execute(f"PRAGMA page_size={int(page_size)}")
                c.execute("VACUUM")
        self.store = open_store(str(path))
        self.notify, self.nonces, self.audit = notify, nonces, audit
        with self.store.atomic():
            for i in range(ACCOUNTS):
                self.store.add_account(f"{100000 + i:012d}", actor="bench")
        self.store.add_channel("ch", "online_banking", actor="bench")
        self.store.checkpoint_in_background()

    def round(self) -> None:
        from headend import notices, payments

        now = int(time.time())
        reqs = []
        for _ in range(ROUND):
            k = next(_serial)
            reqs.append(payments.PaymentRequest("ch", f"T{k}", 100 + k % 900, now,
                                                f"{100000 + (k * 7919) % ACCOUNTS:012d}"))
        with self.store.atomic(row_locked=True):
            if self.nonces:
                self.store.use_nonces([("ch", os.urandom(12).hex(), now + 400) for _ in range(ROUND)])
            with self.store.part():
                payments.accept_payments(self.store, reqs, actor="channel:ch", audit=self.audit)
            if self.notify:
                notices.notify_payments(self.store)

    def cpu_per_payment_us(self) -> float:
        t0 = time.process_time()
        for _ in range(ROUNDS_PER_SAMPLE):
            self.round()
        return (time.process_time() - t0) / (ROUNDS_PER_SAMPLE * ROUND) * 1e6


EARLIER = 25_000   # payments on the database before the local-meter rounds
METERS = 2_000


class _LocalSite(_Site):
    """Payments to local-cost-control meters on a database that holds EARLIER payments already."""

    def __init__(self, folder: Path, name: str, *, in_flight_index: bool = True, earlier: int = EARLIER) -> None:
        from headend import payments

        super().__init__(folder, name)
        self.store.add_meters([{"address": f"{500000 + i:012d}", "link": "tcp://127.0.0.1:9",
                                "customer": f"{600000 + i:012d}", "mode": "local"} for i in range(METERS)],
                              actor="bench")
        now = int(time.time())
        for lo in range(0, earlier, 500):
            payments.accept_payments(self.store, [
                payments.PaymentRequest("ch", f"E{lo + j}", 100, now, f"{100000 + j % ACCOUNTS:012d}")
                for j in range(500)], actor="channel:ch", audit=False)
        if not in_flight_index:
            with sqlite3.connect(folder / f"{name}.db") as c:
                c.execute("DROP INDEX payments_in_flight")

    def round(self) -> None:
        from headend import payments

        now = int(time.time())
        reqs = []
        for _ in range(ROUND):
            k = next(_serial)
            reqs.append(payments.PaymentRequest("ch", f"L{k}", 100, now, None, f"{500000 + (k * 7919) % METERS:012d}"))
        with self.store.atomic(row_locked=True):
            payments.accept_payments(self.store, reqs, actor="channel:ch", audit=False)


def run(report: Callable[..., Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sides = {
            "the full round (as the API runs it)": _Site(folder, "full"),
            "with the payment-received notices queued in the round": _Site(folder, "notice", notify=True),
            "without the nonces": _Site(folder, "nononce", nonces=False),
            "with an audit row per payment (an operator's payment)": _Site(folder, "audit", audit=True),
            "on 1 KB pages instead of 4 KB": _Site(folder, "page1k", page_size=1024),
        }
        for site in sides.values():      # warm: the statements prepared, the pages in the cache
            for _ in range(10):
                site.round()
        results = interleaved_group([s.cpu_per_payment_us for s in sides.values()], rounds=SAMPLES)
        full = results[0]
        report(f"payment store work, one round of {ROUND} on {ACCOUNTS:,} accounts: CPU per payment", full.a,
               "us")
        for label, r in list(zip(sides, results))[1:]:
            report(f"  {label}, CPU per payment vs the full round", r.a, "us", baseline=full.a, pairs=r)
        for site in sides.values():
            site.store.close()
        local = [_LocalSite(folder, "local"), _LocalSite(folder, "local_noindex", in_flight_index=False)]
        for site in local:
            for _ in range(3):
                site.round()
        with_index, without = interleaved_group([s.cpu_per_payment_us for s in local], rounds=SAMPLES)
        report(f"payments to local meters, rounds of {ROUND} on {EARLIER:,} earlier payments: CPU per payment",
               with_index.a, "us")
        report("  without the index of the payments on their way (payments_in_flight), CPU per payment vs with it",
               without.a, "us", baseline=with_index.a, pairs=without)
        for site in local:
            site.store.close()


if __name__ == "__main__":
    from tools.bench.run import reporter

    run(reporter([]))

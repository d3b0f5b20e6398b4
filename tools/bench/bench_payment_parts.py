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


if __name__ == "__main__":
    from tools.bench.run import reporter

    run(reporter([]))

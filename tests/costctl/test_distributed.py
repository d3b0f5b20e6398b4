"""Rating on a Dask LocalCluster of 2 workers: the same kernel per partition agrees with in-process
rating to the fen; a scheduler that goes away mid-cycle charges nothing and the next cycle rates
the same intervals once."""

from __future__ import annotations

import numpy as np
import pytest

from headend.costctl.cycle import run_cycle
from headend.costctl.decide import Rules
from headend.costctl.distributed import DaskRating, RatingUnavailable, rating_engine
from headend.tariff.catalog import load_catalog
from headend.tariff.kernel import rate
from tests.costctl.test_cycle import DAY, D0, _fleet_store


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 workers (threads of this process: quick to start, the kernel frees the GIL)."""
    from distributed import LocalCluster

    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0", silence_logs=40)
    yield c
    c.close()


@pytest.fixture
def dask_engine(cluster):
    engine = DaskRating(cluster.scheduler_address, partition_rows=7)  # many small partitions
    yield engine
    engine.close()


def test_partitions_on_the_cluster_agree_with_the_kernel_to_the_fen(dask_engine) -> None:
    rng = np.random.default_rng(7)
    n, k = 5_003, 96
    energy = rng.integers(0, 4_000, size=(n, k), dtype=np.int32)
    slots = np.arange(k) % 4
    args = (slots, np.array([3000, 5000, 7000, 9000]), np.array([200_000, 400_000]), np.array([0, 500, 3000]),
            np.array([48]), rng.integers(0, 300_000, n), rng.integers(0, 10_000, n))
    args[5][4_321] = 5_000_000_000          # a ladder past int32 in one partition: its totals come back in int64
    dask_engine.partition_rows = 1_000
    here, there = rate(energy, *args, per_interval=True), dask_engine(energy, *args, per_interval=True)
    assert dask_engine.workers() == 2
    for a, b in zip(here, there):
        assert a.dtype == b.dtype and np.array_equal(a, b)



def test_a_partition_whose_intervals_need_int64_widens_the_joined_per_interval_fen(dask_engine) -> None:
    rng = np.random.default_rng(11)
    n, k = 4_000, 96
    energy = rng.integers(0, 4_000, size=(n, k), dtype=np.int32)
    energy[3_500, 10] = 50_000_000          # one quarter hour over int16's fen: that partition comes back in int64
    args = (np.arange(k) % 4, np.array([3000, 5000, 7000, 9000]), np.array([200_000, 400_000]),
            np.array([0, 500, 3000]), np.array([48]), rng.integers(0, 300_000, n), rng.integers(0, 10_000, n))
    dask_engine.partition_rows = 1_000
    here, there = rate(energy, *args, per_interval=True), dask_engine(energy, *args, per_interval=True)
    assert here.per_interval.dtype == np.int64 and here.per_interval[3_500, 10] > 32_767
    for a, b in zip(here, there):
        assert a.dtype == b.dtype and np.array_equal(a, b)

def _rows(lo, hi):
    """Accounts lo..hi - 1 of a fleet whose rows depend only on the account (any partition agrees)."""
    k = np.arange(lo, hi, dtype=np.int64)
    energy = ((k[:, None] * 7919 + np.arange(96) * 104_729) % 4_000).astype(np.int32)
    return energy, k * 37 % 300_000, k * 9_973 % 100_000


TARIFF = (np.arange(96) % 4, np.array([3000, 5000, 7000, 9000]), np.array([200_000, 400_000]),
          np.array([0, 500, 3000]), np.array([48]))


def test_rows_placed_on_the_workers_are_rated_there_as_the_kernel_rates_them(dask_engine) -> None:
    n = 5_003
    energy, ladder, rem = _rows(0, n)
    for partition_rows in (None, 1_000):     # one partition per worker, and several each
        dask_engine.partition_rows = partition_rows
        placed = dask_engine.place(_rows, n)
        assert placed.accounts == n and len(placed.parts) == (2 if partition_rows is None else 6)
        for per in (False, True):
            here, there = rate(energy, *TARIFF, ladder, rem, per_interval=per), dask_engine.rate_placed(
                placed, *TARIFF, per_interval=per)
            for a, b in zip(here, there):
                assert (a is None and b is None) or (a.dtype == b.dtype and np.array_equal(a, b))


def test_a_loader_giving_the_wrong_rows_is_named(dask_engine) -> None:
    def short(lo, hi):
        e, lad, r = _rows(lo, hi)
        return e[1:], lad, r

    with pytest.raises(ValueError, match=r"the loader gave energy \(\d+, 96\).*must give"):
        dask_engine.place(short, 100)


def test_placed_rows_whose_cluster_went_away_are_a_clear_error(tmp_path) -> None:
    from distributed import LocalCluster

    lonely = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                          silence_logs=50)
    engine = DaskRating(lonely.scheduler_address, timeout_s=5)
    placed = engine.place(_rows, 50)
    lonely.close()
    with pytest.raises(RatingUnavailable, match="nothing was charged"):
        engine.rate_placed(placed, *TARIFF)
    engine.close()


def _week(store, engine):
    out = []
    for day in (2, 3, 4, 5):
        at = D0 + day * DAY + 10 * 3600
        store._clock = lambda at=at: at
        rep = run_cycle(store, load_catalog(), at, rules=Rules(notice_period_s=0), engine=engine)
        out.append((rep.rated, rep.charged_fen, rep.actions, rep.problems))
    accounts = [(a.customer, a.balance_fen, a.rem, a.ladder_wh, a.rated_until, a.supply) for a in store.list_accounts()]
    ledger = [(e.customer, e.kind, e.amount_fen, e.balance_after) for a in store.list_accounts()
              for e in store.ledger(a.customer, limit=1000)]
    store.close()
    return out, accounts, ledger


def test_a_week_of_cycles_rated_on_the_cluster_is_the_week_rated_in_process(tmp_path, dask_engine) -> None:
    here = _week(_fleet_store(tmp_path / "here.db"), rate)
    there = _week(_fleet_store(tmp_path / "there.db"), dask_engine)
    assert there == here and sum(r[1] for r in here[0]) > 0


def test_a_scheduler_gone_mid_cycle_charges_nothing_and_the_next_cycle_rates_once(tmp_path) -> None:
    from distributed import LocalCluster

    lonely = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                          silence_logs=50)
    engine = DaskRating(lonely.scheduler_address, timeout_s=5)

    def scheduler_dies_then_rate(*args, **kw):
        lonely.close()  # the cycle has read its accounts and readings; now the cluster goes away
        return engine(*args, **kw)

    store = _fleet_store(tmp_path / "cc.db")
    before = [(a.customer, a.balance_fen, a.rated_until, a.version) for a in store.list_accounts()]
    journal = len(store.journal(limit=100_000))
    at = D0 + 2 * DAY + 10 * 3600
    store._clock = lambda: at
    with pytest.raises(RatingUnavailable, match="nothing was charged"):
        run_cycle(store, load_catalog(), at, rules=Rules(notice_period_s=0), engine=scheduler_dies_then_rate)
    engine.close()
    assert [(a.customer, a.balance_fen, a.rated_until, a.version) for a in store.list_accounts()] == before
    assert len(store.journal(limit=100_000)) == journal
    # the next cycle (in process here) rates those intervals, once
    rep = run_cycle(store, load_catalog(), at, rules=Rules(notice_period_s=0))
    again = run_cycle(store, load_catalog(), at, rules=Rules(notice_period_s=0))
    assert rep.charged_fen > 0 and again.charged_fen == 0
    assert store.check_ledger() == []
    store.close()


def test_an_unreachable_scheduler_and_a_bad_spec_are_clear_errors() -> None:
    with pytest.raises(RatingUnavailable, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        DaskRating("tcp://127.0.0.1:9", timeout_s=2)
    with pytest.raises(ValueError, match="in-process, dask://HOST:PORT or local-cluster"):
        rating_engine("spark://x")
    with pytest.raises(ValueError, match="local-cluster:N"):
        rating_engine("local-cluster:zero")
    assert rating_engine(None) is rate and rating_engine("in-process") is rate


def test_costctl_run_names_a_bad_rating_and_rates_on_a_local_cluster(tmp_path, capsys, monkeypatch) -> None:
    from headend.cli.main import main

    monkeypatch.delenv("PREPAID645_CONFIG", raising=False)
    db = str(tmp_path / "cc.db")
    _fleet_store(db).close()
    assert main(["costctl", "run", "--db", db, "--rating", "spark://x", "--at", str(D0 + 2 * DAY + 36000)]) == 2
    assert "--rating 'spark://x'" in capsys.readouterr().err
    assert main(["costctl", "run", "--db", db, "--rating", "local-cluster:2", "--json",
                 "--at", str(D0 + 2 * DAY + 36000)]) == 0
    import json

    rep = json.loads(capsys.readouterr().out)
    assert rep["rated"] > 0 and rep["charged_fen"] > 0

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


def _with_anomalies(store):
    """Accounts that go the careful way, spread over the partitions: a reading off the grid, a gap,
    a register going backwards (beside the fleet's account with two meters)."""
    store.add_readings([("000000000005", "00010000", 999_999, D0 + DAY + 1234)])
    for addr, regs in (("000000000070", [1_000, 2_000, 3_000, None, 5_000, 6_000]),
                       ("000000000071", [1_000, 2_000, 1_500, 2_500, 3_500, 4_500])):
        store.add_meter(addr, link="tcp://127.0.0.1:9", customer=addr, actor="t", mode="remote")
        store.update_account(addr, actor="t", tariff="beijing", alarm1_fen=1000, alarm2_fen=500)
        store.add_readings((addr, "00010000", r, D0 + d * DAY) for d, r in enumerate(regs) if r is not None)
    return store


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


@pytest.fixture(params=["sqlite", "postgresql"])
def two_dbs(request, tmp_path):
    """Two fresh store locations on one engine."""
    if request.param == "sqlite":
        return str(tmp_path / "here.db"), str(tmp_path / "there.db")
    server = request.getfixturevalue("pg_server")
    template = request.getfixturevalue("pg_template")
    return server.create_db(template), server.create_db(template)


def test_a_week_of_cycles_rated_on_the_cluster_is_the_week_rated_in_process(two_dbs, dask_engine) -> None:
    # each worker reads its partition's readings from the store (the SQLite file, or the
    # PostgreSQL database), builds the interval energy and rates it; partitions of 7 accounts
    here = _week(_with_anomalies(_fleet_store(two_dbs[0])), rate)
    there = _week(_with_anomalies(_fleet_store(two_dbs[1])), dask_engine)
    assert there == here and sum(r[1] for r in here[0]) > 0
    problems = [p for day in here[0] for p in day[3]]
    for what in ("off the 86400 s grid", "gap", "backwards"):
        assert any(what in p for p in problems), (what, problems)


def test_the_workers_partitions_join_to_the_whole_fleets_stage(tmp_path, dask_engine) -> None:
    from headend.costctl.collect import PartitionInput, rate_partition, read_readings, reading_window
    from headend.costctl.cycle import _Accounts

    store = _with_anomalies(_fleet_store(tmp_path / "cc.db"))
    acc = _Accounts(store.cost_control_columns())
    fleet = PartitionInput(acc.meter_int, acc.acct_of_row, acc.rated_until, np.zeros(acc.n, dtype=np.int64),
                           acc.ladder, acc.rem)
    last_end, books = D0 + 5 * DAY, [load_catalog()["beijing"]]
    whole = rate_partition(fleet, read_readings(store, *reading_window(acc.rated_until, last_end, DAY, 0)), books,
                           last_end, DAY, 8 * 3600, 0, rate)
    for rows in (None, 7, 1):             # one partition per worker, several each, one account each
        dask_engine.partition_rows = rows
        parts = dask_engine.rate_cycle(store.address, fleet, books, last_end=last_end, interval_s=DAY,
                                       utc_offset_s=8 * 3600, snap_s=0)
        for name in ("idx", "fen", "rem", "ladder", "until", "fixed"):
            assert np.array_equal(getattr(parts, name), getattr(whole, name)), name
        assert parts.problems == whole.problems and parts.audit == whole.audit
    assert whole.idx.size == acc.n and whole.fen.sum() > 0 and whole.problems and whole.audit
    store.close()


def test_a_scheduler_gone_mid_cycle_charges_nothing_and_the_next_cycle_rates_once(tmp_path) -> None:
    from distributed import LocalCluster

    lonely = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                          silence_logs=50)
    engine = DaskRating(lonely.scheduler_address, timeout_s=5)
    store = _fleet_store(tmp_path / "cc.db")
    scheduler_dies_after_the_accounts_are_read(store, lonely)
    before = [(a.customer, a.balance_fen, a.rated_until, a.version) for a in store.list_accounts()]
    journal = len(store.journal(limit=100_000))
    at = D0 + 2 * DAY + 10 * 3600
    store._clock = lambda: at
    with pytest.raises(RatingUnavailable, match="nothing was charged"):
        run_cycle(store, load_catalog(), at, rules=Rules(notice_period_s=0), engine=engine)
    engine.close()
    del store.cost_control_columns
    assert [(a.customer, a.balance_fen, a.rated_until, a.version) for a in store.list_accounts()] == before
    assert len(store.journal(limit=100_000)) == journal
    # the next cycle (in process here) rates those intervals, once
    rep = run_cycle(store, load_catalog(), at, rules=Rules(notice_period_s=0))
    again = run_cycle(store, load_catalog(), at, rules=Rules(notice_period_s=0))
    assert rep.charged_fen > 0 and again.charged_fen == 0
    assert store.check_ledger() == []
    store.close()


def scheduler_dies_after_the_accounts_are_read(store, cluster) -> None:
    """The cycle reads its accounts, then ``cluster`` goes away before the workers get their
    partitions (undone by ``del store.cost_control_columns``)."""
    columns = store.cost_control_columns

    def then_close(*args, **kw):
        got = columns(*args, **kw)
        cluster.close()
        return got

    store.cost_control_columns = then_close


def test_a_worker_that_cannot_open_the_store_charges_nothing_and_the_next_cycle_rates_once(tmp_path, cluster) -> None:
    elsewhere = tmp_path / "not-here" / "cc.db"
    engine = DaskRating(cluster.scheduler_address, store_address=str(elsewhere))
    store = _fleet_store(tmp_path / "cc.db")
    before = [(a.customer, a.balance_fen, a.rated_until, a.version) for a in store.list_accounts()]
    journal = len(store.journal(limit=100_000))
    at = D0 + 2 * DAY + 10 * 3600
    store._clock = lambda: at
    with pytest.raises(RatingUnavailable, match=r"a worker cannot open the store .*not-here/cc.db: no such file.*"
                                                r"workers open the store themselves.*nothing was charged"):
        run_cycle(store, load_catalog(), at, rules=Rules(notice_period_s=0), engine=engine)
    engine.close()
    assert not elsewhere.exists()          # not created empty by the worker
    assert [(a.customer, a.balance_fen, a.rated_until, a.version) for a in store.list_accounts()] == before
    assert len(store.journal(limit=100_000)) == journal
    rep = run_cycle(store, load_catalog(), at, rules=Rules(notice_period_s=0))
    again = run_cycle(store, load_catalog(), at, rules=Rules(notice_period_s=0))
    assert rep.charged_fen > 0 and again.charged_fen == 0 and store.check_ledger() == []
    store.close()


def test_a_store_in_memory_cannot_be_rated_on_workers(cluster) -> None:
    from headend.store import open_store

    engine = DaskRating(cluster.scheduler_address)
    store = open_store(":memory:", clock=lambda: D0)
    store.add_meter("000000000001", link="tcp://127.0.0.1:9", customer="000000000001", actor="t", mode="remote")
    store.update_account("000000000001", actor="t", tariff="beijing")
    with pytest.raises(ValueError, match="a store in memory cannot be read by the rating workers"):
        run_cycle(store, load_catalog(), D0 + 2 * DAY, engine=engine)
    engine.close()
    store.close()


def test_an_unreachable_scheduler_and_a_bad_spec_are_clear_errors() -> None:
    with pytest.raises(RatingUnavailable, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        DaskRating("tcp://127.0.0.1:9", timeout_s=2)
    with pytest.raises(ValueError, match="in-process, dask://HOST:PORT or local-cluster"):
        rating_engine("spark://x")
    with pytest.raises(ValueError, match="local-cluster:N"):
        rating_engine("local-cluster:zero")
    assert rating_engine(None) is rate and rating_engine("in-process") is rate


def test_the_workers_store_can_be_named_apart_from_the_head_ends(monkeypatch) -> None:
    monkeypatch.setenv("PREPAID645_RATING_DB", "postgresql://bob@db.example/prepaid645")
    engine = rating_engine("local-cluster:1")
    try:
        assert engine.store_address == "postgresql://bob@db.example/prepaid645"
    finally:
        engine.close()
    monkeypatch.delenv("PREPAID645_RATING_DB")
    engine = rating_engine("local-cluster:1")
    try:
        assert engine.store_address is None      # the head-end's own store
    finally:
        engine.close()


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

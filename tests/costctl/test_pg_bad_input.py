"""Bad input past one machine, on a real PostgreSQL server: the database connection cut mid-cycle,
the Dask scheduler gone mid-cycle, and `headend serve` / `costctl run` given an unreachable, a
wrong or a newer-schema database.  A clear error; the cycle rolled back; the next cycle charges
the same intervals once."""

from __future__ import annotations

import psycopg
import pytest

from headend.costctl.cycle import run_cycle
from headend.costctl.decide import Rules
from headend.costctl.distributed import DaskRating, RatingUnavailable
from headend.store import StoreError
from headend.tariff.catalog import load_catalog
from headend.tariff.kernel import rate
from tests.costctl.test_cycle import D0, DAY, _fleet_store
from tests.costctl.test_distributed import scheduler_dies_after_the_accounts_are_read
from tests.headend.headend_proc import HeadEnd

AT = D0 + 2 * DAY + 10 * 3600


def _state(store) -> tuple[list, int]:
    return ([(a.customer, a.balance_fen, a.rated_until, a.version) for a in store.list_accounts()],
            len(store.journal(limit=100_000)))


def _cut_connection(url: str) -> None:
    """What a server restart or a dropped network does to every other session on the database."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                      " AND pid <> pg_backend_pid()")


def _next_cycle_charges_once(store) -> None:
    rep = run_cycle(store, load_catalog(), AT, rules=Rules(notice_period_s=0))
    again = run_cycle(store, load_catalog(), AT, rules=Rules(notice_period_s=0))
    assert rep.rated > 0 and rep.charged_fen > 0 and again.charged_fen == 0
    assert store.check_ledger() == []


def test_a_connection_cut_mid_cycle_charges_nothing_and_the_next_cycle_reconnects_and_charges_once(
        pg_server, pg_template) -> None:
    url = pg_server.create_db(pg_template)
    store = _fleet_store(url)
    store._clock = lambda: AT
    before = _state(store)

    def cut_then_rate(*args, **kw):
        _cut_connection(url)  # the cycle has read its accounts and readings; its session is gone
        return rate(*args, **kw)

    with pytest.raises(StoreError, match="database .* (closed|terminat|unavailable|connection)"):
        run_cycle(store, load_catalog(), AT, rules=Rules(notice_period_s=0), engine=cut_then_rate)
    assert _state(store) == before  # nothing of the cycle landed
    _next_cycle_charges_once(store)  # the same store object, on a new session
    store.close()


def test_a_connection_cut_inside_a_transaction_rolls_all_of_it_back(pg_server, pg_template) -> None:
    url = pg_server.create_db(pg_template)
    store = _fleet_store(url, n=3)
    before = _state(store)
    with pytest.raises(StoreError, match="database .* (closed|terminat|unavailable|connection)"):
        with store.atomic():
            store.credit("000000000001", 500, actor="t", idem_key="cut:1")
            _cut_connection(url)
            store.credit("000000000002", 500, actor="t", idem_key="cut:2")
    assert _state(store) == before  # neither credit landed; the store works on
    store.credit("000000000001", 500, actor="t", idem_key="cut:1")
    assert store.get_account("000000000001").balance_fen == before[0][0][1] + 500


def test_an_idle_connection_cut_fails_one_call_clearly_and_the_next_reopens_it(pg_server, pg_template) -> None:
    url = pg_server.create_db(pg_template)
    store = _fleet_store(url, n=3)
    assert store.try_leader("costctl") is True
    _cut_connection(url)
    with pytest.raises(StoreError, match="database .* (closed|terminat|unavailable|connection)"):
        store.credit("000000000001", 500, actor="t", idem_key="idle:1")
    store.credit("000000000001", 500, actor="t", idem_key="idle:1")  # a new session: the retry lands, once
    store.credit("000000000001", 500, actor="t", idem_key="idle:1")
    assert len(store.list_accounts()) == 3 and store.check_ledger() == []
    assert [e.amount_fen for e in store.ledger("000000000001", limit=10)].count(500) == 1
    assert store.try_leader("costctl") is True  # taken again on the new session
    store.close()


def test_a_scheduler_gone_mid_cycle_on_postgresql_charges_nothing_and_the_next_cycle_rates_once(
        pg_server, pg_template) -> None:
    from distributed import LocalCluster

    lonely = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                          silence_logs=50)
    engine = DaskRating(lonely.scheduler_address, timeout_s=5)
    store = _fleet_store(pg_server.create_db(pg_template))
    scheduler_dies_after_the_accounts_are_read(store, lonely)
    store._clock = lambda: AT
    before = _state(store)
    with pytest.raises(RatingUnavailable, match="nothing was charged"):
        run_cycle(store, load_catalog(), AT, rules=Rules(notice_period_s=0), engine=engine)
    engine.close()
    del store.cost_control_columns
    assert _state(store) == before
    _next_cycle_charges_once(store)
    store.close()


def test_workers_given_a_wrong_database_url_charge_nothing_and_the_next_cycle_rates_once(
        pg_server, pg_template) -> None:
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0",
                           silence_logs=50)
    # a password in the URL is not shown in the error
    wrong = pg_server.url("no_such_db").replace("@", ":s3cret@", 1)
    engine = DaskRating(cluster.scheduler_address, timeout_s=5, store_address=wrong)
    store = _fleet_store(pg_server.create_db(pg_template))
    store._clock = lambda: AT
    before = _state(store)
    with pytest.raises(RatingUnavailable, match=r'a worker cannot read the store .*no_such_db.*does not exist.*'
                                                r'workers open the store themselves.*nothing was charged') as err:
        run_cycle(store, load_catalog(), AT, rules=Rules(notice_period_s=0), engine=engine)
    assert "s3cret" not in str(err.value)
    engine.close()
    cluster.close()
    assert _state(store) == before
    _next_cycle_charges_once(store)
    store.close()


def test_serve_and_costctl_name_a_bad_database_and_stop(tmp_path, pg_server, pg_template) -> None:
    he = HeadEnd(tmp_path)
    newer = pg_server.create_db(pg_template)
    with psycopg.connect(newer, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 0)")
    cases = [
        (f"postgresql://bob:s3cret@/headend?host={tmp_path}&port=1", "cannot connect to the database"),
        (pg_server.url("no_such_db"), 'database "no_such_db" does not exist'),
        (f"postgresql://bob@/headend?host={tmp_path}&port=notaport", 'invalid integer value "notaport"'),
        ("mysql://bob@db.example/headend", "mysql:// is not supported"),
        (newer, "newer than this program knows"),
    ]
    for url, words in cases:
        for argv in (("serve", "--no-costctl"), ("costctl", "run", "--at", str(AT))):
            code, _out, err = he.cli(*argv, "--db", url)
            assert code != 0 and words in err and "Traceback" not in err, (argv, url, code, err)
            assert "s3cret" not in err
    with psycopg.connect(newer) as conn:  # the newer database was left as it was
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (99,)

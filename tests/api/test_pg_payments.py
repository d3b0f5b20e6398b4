"""The payments end-to-end tests, run again on PostgreSQL (a real server the tests start): every
channel kind reaching the meter or the account once, a rotated secret and a disabled channel, a
meter that misses replies, the signed result callback, idempotency (a repeat, 32 parallel
duplicates, retries after timeouts), 409s (a different payment under a used txn id, a reversal too
late or into a closed day), reversals, refusals that move no money, a channel kept out of another's
payments, a result callback sent once by two serves on the database, and `headend serve` SIGKILLed
mid-flight and restarted.  The tests themselves are tests/api/test_http.py's and test_e2e.py's; only
the database differs."""

from __future__ import annotations

import pytest

from tests.api import test_e2e as e2e
from tests.api import test_http as http
from tests.api.test_e2e import (  # noqa: F401 - collected here, on PostgreSQL
    test_a_meter_that_misses_replies_is_topped_up_once,
    test_duplicate_posts_in_parallel_and_retries_after_timeouts,
    test_every_channel_kind_reaches_the_meter_or_the_account_once,
    test_result_callback_signed_retried_and_sent_once_per_state,
    test_rotated_secret_and_disabled_channel_take_effect_at_once,
    test_serve_killed_mid_flight_and_restarted,
)
from tests.api.test_http import (  # noqa: F401 - collected here, on PostgreSQL
    test_a_channel_never_sees_or_voids_another_channels_payments,
    test_a_local_meter_refuses_more_than_its_hoarding_headroom,
    test_a_payment_once_then_its_receipt_again,
    test_bad_payments_are_refused_and_move_no_money,
    test_no_reversal_into_a_closed_day,
    test_reversal_until_the_money_leaves_for_the_meter,
    test_two_serves_on_one_database_send_a_callback_once,
)

api = http.api  # the payments API in its own thread, on the world's database


@pytest.fixture
def world(tmp_path, pg_server, pg_template):
    w = http.World(tmp_path, db=pg_server.create_db(pg_template))
    yield w
    w.store.close()


class _Site(e2e.Site):
    def start(self, *extra: str) -> "_Site":
        # a short lease: a killed serve's lease row keeps its links and commands until it lapses
        super().start("--lease", "3", *extra)
        return self


@pytest.fixture
def site_factory(tmp_path, pg_server, pg_template):
    made: list[e2e.Site] = []

    def make(*a, **kw) -> e2e.Site:
        made.append(_Site(tmp_path, *a, db=pg_server.create_db(pg_template), **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()

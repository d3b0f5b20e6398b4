"""The hot paths' bounded caches: the oldest entry makes room, the newest stay, the size holds."""

from __future__ import annotations

from collections import OrderedDict

from protocol.cache import remember


def test_a_full_cache_forgets_its_oldest_entry_first():
    cache: OrderedDict[int, str] = OrderedDict()
    for k in range(10):
        remember(cache, k, str(k), 4)
        assert len(cache) == min(k + 1, 4)
    assert list(cache.items()) == [(6, "6"), (7, "7"), (8, "8"), (9, "9")]


def test_a_cache_turned_over_many_times_still_holds_the_last_entries():
    # the regime of a fleet larger than the cache: every entry new, every insert an eviction
    cache: OrderedDict[int, int] = OrderedDict()
    for k in range(50_000):
        remember(cache, k, k, 1000)
    assert list(cache) == list(range(49_000, 50_000))
    assert cache[49_999] == 49_999 and 48_999 not in cache

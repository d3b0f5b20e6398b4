"""Bounded caches for the hot paths: an ``OrderedDict`` that forgets its oldest entry first.

A plain dict can forget its oldest entry with ``del d[next(iter(d))]``, but each deletion leaves a
dead slot at the front of the dict's entries that the next ``iter`` walks past again, until the
dict happens to be rebuilt: past its size every new entry scanned up to the whole table.  With the
address caches full (more meters than they hold) parse_frame cost 70-90 us a frame instead of 3
(``tools.bench.bench_protocol``, parse over 300,000 distinct meters).  ``OrderedDict.popitem(last=False)``
drops the oldest entry in constant time; lookups cost what a dict's do.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

__all__ = ["remember"]

_K = TypeVar("_K")
_V = TypeVar("_V")


def remember(cache: OrderedDict[_K, _V], key: _K, value: _V, limit: int) -> None:
    """Put ``key`` in ``cache``; when it already holds ``limit`` entries, the oldest one makes room."""
    if len(cache) >= limit:
        cache.popitem(last=False)
    cache[key] = value

"""Rating on a Dask cluster: the cost-control cycle's accounts cut into partitions, each rated by the
same numba kernel (`headend.tariff.kernel.rate`) on a worker, arrays in and arrays out.

Accounts are independent in the kernel (each carries its own ladder and remainder), so rating the
rows of a batch in partitions and joining the results gives exactly the in-process result, to the
fen. Only rating moves: the cycle reads, debits and decides through the store as always, so the
charges are committed once, by the cycle, after every partition came back. A scheduler or worker
that goes away mid-cycle raises `RatingUnavailable` before anything is charged; the cycle is
rolled back as a whole and the next one rates the same intervals again.

    engine = rating_engine("dask://scheduler:8786")      # or "local-cluster:2", or "in-process"
    run_cycle(store, catalog, now, engine=engine)

In-process rating stays the default (`rating_engine("in-process")` is the kernel itself).

The cycle's stage on the workers.  Given a `DaskRating`, the cost-control cycle does not read the
readings itself: it cuts the fleet into one partition per worker by meter address and sends each
worker its accounts as small arrays (about 34 bytes an account: meter numbers, rated_until, tariff
index, ladder, remainder: `headend.costctl.collect.PartitionInput`).  The worker opens the store
itself (the head-end's database: a PostgreSQL URL, or on one machine the SQLite file's path, read
alongside the head-end in WAL mode), reads only its meters' readings, builds the interval energy
and rates it (`headend.costctl.collect.rate_partition`, the code the in-process cycle runs on
the whole fleet) and sends back per-account results, about 30 bytes an account.  A worker that
cannot open the store, or a scheduler gone mid-cycle, raises `RatingUnavailable` before anything
is charged.

Where the time goes.  Rating a reading costs less than moving it: a worker process must receive
each account's 96 int32 readings (384 bytes) over a socket, which costs more CPU than the kernel
spends rating them (`tools/bench/bench_pg.py` measures both).  So the cycle has the workers read
their readings from the store, and an engine call (`DaskRating(...)(energy, ...)`, the kernel's
signature, for rows already in this process) sends each worker one partition (one task per worker)
and the few tariff arrays inside the task; workers load the kernel from numba's cache when they
join, not in the first cycle.  Rows that are built or loaded on the workers themselves
(`DaskRating.place`) are rated where they lie (`DaskRating.rate_placed`): only the tariff goes out
and 12 bytes per account come back (the totals as int32 where they fit).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from headend.costctl.collect import PartitionInput, PartitionResult, rate_partition, read_readings, reading_window
from headend.tariff.kernel import rate
from headend.tariff.model import TariffBook
from headend.tariff.reference import Bill

__all__ = ["DaskRating", "PlacedRows", "RatingUnavailable", "StoreUnreachable", "rating_engine", "IN_PROCESS"]

IN_PROCESS = "in-process"
RATING_DB_ENV = "PREPAID645_RATING_DB"
Engine = Callable[..., Bill]
Rows = tuple[np.ndarray, np.ndarray, np.ndarray]     # energy (accounts, intervals), ladder_wh, rem


class RatingUnavailable(RuntimeError):
    """The rating cluster cannot be reached or went away; nothing was charged."""



TariffArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _tariff_arrays(slot_of_interval: Any, prices: Any, thresholds_wh: Any, increments: Any,
                   resets: Any) -> TariffArrays:
    """The kernel's five tariff arguments as int64 arrays (sent inside each task)."""
    return (np.asarray(slot_of_interval, dtype=np.int64), np.asarray(prices, dtype=np.int64),
            np.asarray(thresholds_wh, dtype=np.int64), np.asarray(increments, dtype=np.int64),
            np.asarray(resets, dtype=np.int64))


class StoreUnreachable(RuntimeError):
    """A worker cannot open the store the cycle reads (it raises this on the worker)."""


def _kernel_threads(threads: int | None) -> None:
    from headend.tariff.kernel import get_num_threads, set_num_threads

    if threads:
        # numba's thread count is per calling thread: set it in the task's own thread
        set_num_threads(max(1, min(threads, get_num_threads())))


def _cycle_partition(address: str, part: PartitionInput, tariffs: list[TariffBook], last_end: int, interval_s: int,
                     utc_offset_s: int, snap_s: int, threads: int | None) -> PartitionResult:
    """Runs on a worker: open the store, read this partition's readings, collect and rate them."""
    from headend.store import StoreError, open_store, sqlite_path
    from headend.store.postgres import redact_url
    from headend.tariff.kernel import rate as kernel_rate

    _kernel_threads(threads)
    path = sqlite_path(address)
    where = redact_url(address) if path is None else path
    advice = ("workers open the store themselves: give them the PostgreSQL URL they reach the server by, or on one "
              "machine the SQLite file's path (DaskRating(store_address=...))")
    # an SQLite path that is not there would be created empty: refuse it instead
    if path is not None and not os.path.isfile(path):
        raise StoreUnreachable(f"a worker cannot open the store {where}: no such file on {os.uname().nodename}; {advice}")
    try:
        with open_store(address, migrate=False) as store:
            window = reading_window(np.asarray(part.rated_until, dtype=np.int64), last_end, interval_s, snap_s)
            cols = read_readings(store, *window, meters=part.meter_span())
    except StoreError as exc:
        raise StoreUnreachable(f"a worker cannot read the store {where}: {exc}; {advice}") from None
    return rate_partition(part, cols, tariffs, last_end, interval_s, utc_offset_s, snap_s, kernel_rate).compact()


def _rate_rows(part: Rows, slots: np.ndarray, prices: np.ndarray, thresholds: np.ndarray,
               increments: np.ndarray, resets: np.ndarray, per_interval: bool, threads: int | None) -> Bill:
    # runs on a worker, where the kernel was loaded when the worker joined (_kernel_plugin)
    from headend.tariff.kernel import rate as kernel_rate

    _kernel_threads(threads)
    energy, ladder, rem = part
    bill = kernel_rate(energy, slots, prices, thresholds, increments, resets, ladder, rem, per_interval=per_interval)
    # half the bytes back: the totals travel as int32 whenever they fit (rem always does)
    return Bill(_int32_if_fits(bill.fen), _int32_if_fits(bill.ladder_wh), _int32_if_fits(bill.rem), bill.per_interval)


def _int32_if_fits(a: np.ndarray) -> np.ndarray:
    i32 = np.iinfo(np.int32)
    return a.astype(np.int32) if a.size and i32.min <= a.min() and a.max() <= i32.max else a


class _Joined:
    """The partitions' results as one Bill of int64 totals (per-interval fen int16, or int64 if any
    partition's are), each partition copied into place as it arrives: the first worker's results
    are joined while the last is still rating, not after it."""

    def __init__(self, n: int, per_interval: bool) -> None:
        self.fen, self.ladder, self.rem = (np.empty(n, dtype=np.int64) for _ in range(3))
        self.per_interval = per_interval
        self.per: np.ndarray | None = None

    def put(self, lo: int, b: Bill) -> None:
        hi = lo + b.fen.size
        self.fen[lo:hi], self.ladder[lo:hi], self.rem[lo:hi] = b.fen, b.ladder_wh, b.rem
        p = b.per_interval
        if self.per_interval and p is not None:
            if self.per is None:
                self.per = np.empty((self.fen.size, p.shape[1]), dtype=p.dtype)
            elif np.result_type(self.per.dtype, p.dtype) != self.per.dtype:
                self.per = self.per.astype(np.result_type(self.per.dtype, p.dtype))   # rare: a wide batch
            self.per[lo:hi] = p

    def bill(self) -> Bill:
        per = self.per
        if self.per_interval and per is None:
            per = np.empty((self.fen.size, 0), dtype=np.int64)
        return Bill(self.fen, self.ladder, self.rem, per if self.per_interval else None)


def _load_checked(load: Callable[[int, int], Rows], lo: int, hi: int) -> Rows:
    energy, ladder, rem = load(lo, hi)
    if energy.ndim != 2 or energy.shape[0] != hi - lo or np.shape(ladder) != (hi - lo,) or np.shape(rem) != (hi - lo,):
        raise ValueError(f"the loader gave energy {energy.shape}, ladder_wh {np.shape(ladder)} and rem "
                         f"{np.shape(rem)} for accounts {lo}..{hi - 1}: it must give ({hi - lo}, intervals), "
                         f"({hi - lo},) and ({hi - lo},)")
    return energy, np.asarray(ladder, dtype=np.int64), np.asarray(rem, dtype=np.int64)


def _load_kernel(worker: Any = None) -> None:
    from headend.tariff.kernel import rate as kernel_rate

    one = np.ones((1, 1), dtype=np.int32)
    zero = np.zeros(1, dtype=np.int64)
    kernel_rate(one, zero, one[0], zero[:0], zero, zero[:0], zero, zero)
    kernel_rate(one, zero, one[0], zero[:0], zero, zero[:0], zero, zero, per_interval=True)


def _kernel_plugin() -> Any:
    """A worker plugin: each worker process loads the kernel (numba's cache, or one compile) as
    it joins, so that no cycle waits for it (distributed imported only when a cluster is used)."""
    from distributed import WorkerPlugin

    class LoadKernel(WorkerPlugin):
        name = "prepaid645-tariff-kernel"

        def setup(self, worker: Any) -> None:
            _load_kernel(worker)

    return LoadKernel()


@dataclass(frozen=True)
class PlacedRows:
    """A batch's rows held on the workers, one partition each (``DaskRating.place``)."""

    parts: tuple[Any, ...]       # futures of (energy, ladder_wh, rem), accounts lo..hi each
    spans: tuple[tuple[int, int], ...]

    @property
    def accounts(self) -> int:
        return self.spans[-1][1] if self.spans else 0


class DaskRating:
    """A rating engine (the kernel's signature) that spreads a batch's accounts over a Dask cluster.

    ``address``: ``tcp://host:8786`` of a running scheduler, or None to start a LocalCluster of
    ``local_workers`` workers (``processes=False`` keeps them as threads of this process: the
    kernel releases the GIL). ``partition_rows``: accounts per task; None (default) gives each
    worker one partition per call (the fewest transfers and tasks). ``kernel_threads``: the
    kernel's threads in each task; None lets a remote worker use its machine's cores (numba's
    default, or NUMBA_NUM_THREADS in the worker's environment), while a local cluster's workers
    share this machine's cores (cores // workers each, so that they do not oversubscribe it).
    ``store_address``: the database as the workers reach it, when not as the head-end does (another
    host name for the PostgreSQL server, the SQLite file's path on a shared disk)."""

    def __init__(self, address: str | None = None, *, local_workers: int = 2, processes: bool = False,
                 partition_rows: int | None = None, timeout_s: float = 30.0, kernel_threads: int | None = None,
                 store_address: str | None = None) -> None:
        from distributed import Client, LocalCluster

        self.address = address
        self.store_address = store_address
        self.partition_rows = partition_rows
        if kernel_threads is None and address is None:
            kernel_threads = max(1, (os.cpu_count() or 1) // max(1, local_workers))
        self.kernel_threads = kernel_threads
        self._cluster: Any = None
        self.client: Any
        try:
            if address is None:
                self._cluster = LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=processes,
                                             dashboard_address=":0", silence_logs=40)
                self.client = Client(self._cluster, timeout=timeout_s, direct_to_workers=True)
            else:
                self.client = Client(address, timeout=timeout_s, direct_to_workers=True)
        except (OSError, TimeoutError) as exc:
            if self._cluster is not None:
                self._cluster.close()
            raise RatingUnavailable(f"cannot reach the Dask scheduler at {address}: {exc}; check --rating "
                                    "(dask://HOST:PORT) and that `dask scheduler` runs there") from None
        self.where = address or f"a local cluster of {local_workers} workers"
        self._guarded(lambda: self.client.register_plugin(_kernel_plugin()))

    def workers(self) -> int:
        """Workers the scheduler has now."""
        return len(self.client.scheduler_info().get("workers", {}))

    def _spans(self, n: int) -> list[tuple[int, int]]:
        parts = max(1, math.ceil(n / self.partition_rows) if self.partition_rows else self.workers())
        bounds = np.linspace(0, n, parts + 1).astype(np.int64)
        return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

    def _guarded(self, work: Callable[[], Any]) -> Any:
        try:
            return work()
        except ValueError:
            raise  # bad input named by the kernel, as in-process
        except Exception as exc:
            raise RatingUnavailable(f"rating on {self.where} failed ({type(exc).__name__}: {exc}): the cycle was "
                                    "not committed, nothing was charged; the next cycle rates these intervals") from exc

    def _rate_parts(self, parts: list[Any], spans: list[tuple[int, int]], tariff: TariffArrays,
                    per_interval: bool) -> Bill:
        from distributed import as_completed

        # the tariff's few small arrays travel inside each task; the rows are already on a worker
        futures = [self.client.submit(_rate_rows, part, *tariff, per_interval, self.kernel_threads, pure=False)
                   for part in parts]
        lo_of = {f.key: lo for f, (lo, _) in zip(futures, spans)}
        joined = _Joined(spans[-1][1], per_interval)
        for future, bill in as_completed(futures, with_results=True):
            if future.status != "finished":
                future.result()            # raises what stopped it (a lost worker, a cancelled task)
            joined.put(lo_of[future.key], bill)
        return joined.bill()

    def __call__(self, energy_wh: Any, slot_of_interval: Any, prices: Any, thresholds_wh: Any, increments: Any,
                 resets: Any, ladder_wh: Any, rem: Any, per_interval: bool = False) -> Bill:
        """Rate a batch (the kernel's arguments and result), partitioned by accounts."""
        e = np.asarray(energy_wh)
        ladder, r = np.asarray(ladder_wh, dtype=np.int64), np.asarray(rem, dtype=np.int64)
        tariff = _tariff_arrays(slot_of_interval, prices, thresholds_wh, increments, resets)
        n = e.shape[0] if e.ndim == 2 else 0
        if n == 0:
            return rate(e, *tariff, ladder, r, per_interval=per_interval)

        def work() -> Bill:
            # each partition's rows go straight to a worker (not inside the task graph)
            spans = self._spans(n)
            rows = self.client.scatter([(e[lo:hi], ladder[lo:hi], r[lo:hi]) for lo, hi in spans], hash=False)
            return self._rate_parts(rows, spans, tariff, per_interval)

        return self._guarded(work)

    def rate_cycle(self, store_address: str, fleet: PartitionInput, tariffs: list[TariffBook], *, last_end: int,
                   interval_s: int, utc_offset_s: int, snap_s: int) -> PartitionResult:
        """The cost-control cycle's collect -> interval energy -> rating stage on the workers, one
        partition each by meter address, every worker reading its readings from the store at
        ``store_address`` (or this engine's ``store_address``); the joined result is what
        `rate_partition` gives for the whole fleet in process."""
        from headend.store import sqlite_path

        address = self.store_address or store_address
        path = sqlite_path(address)
        if path == ":memory:":
            raise ValueError("a store in memory cannot be read by the rating workers: open the store from a file "
                             "or a PostgreSQL URL to rate on Dask")
        if path is not None:
            address = os.path.abspath(path)     # the workers' working folder is not this process's
        n = fleet.accounts
        if n == 0:
            return rate_partition(fleet, np.zeros((0, 3), dtype=np.int64), tariffs, last_end, interval_s,
                                  utc_offset_s, snap_s, rate)
        meters = np.asarray(fleet.meter_int, dtype=np.int64)
        if meters.size == n:
            first = meters        # one meter each, the usual fleet
        else:
            starts = np.flatnonzero(np.r_[True, fleet.acct_of_row[1:] != fleet.acct_of_row[:-1]])
            first = np.minimum.reduceat(meters, starts)
        # partitions by meter address: each worker reads one span of addresses
        by_meter = np.argsort(first, kind="stable")
        args = (last_end, interval_s, utc_offset_s, snap_s, self.kernel_threads)

        def work() -> PartitionResult:
            from distributed import as_completed

            chunks = [np.sort(by_meter[lo:hi]) for lo, hi in self._spans(n)]
            names = sorted(self.client.scheduler_info().get("workers", {}))
            futures = []
            for k, chunk in enumerate(chunks):
                where = [names[k % len(names)]] if names else None
                # the partition's arrays straight to its worker, not inside the task graph
                [part] = self.client.scatter([fleet.take(chunk)], workers=where, hash=False)
                futures.append(self.client.submit(_cycle_partition, address, part, tariffs, *args, pure=False,
                                                  workers=where))
            chunk_of = {f.key: c for f, c in zip(futures, chunks)}
            got = []
            for future, result in as_completed(futures, with_results=True):
                if future.status != "finished":
                    future.result()
                got.append((chunk_of[future.key], result))
            return PartitionResult.join(got)

        return self._guarded(work)

    def place(self, load: Callable[[int, int], Rows], accounts: int) -> PlacedRows:
        """Build a batch's rows on the workers: ``load(lo, hi)`` runs there, once per partition, and
        gives the energy (hi - lo, intervals), ladder_wh and rem of accounts lo..hi - 1 (read from a
        database or files the workers reach, so that no reading passes through this process)."""
        spans = self._spans(accounts)

        def work() -> PlacedRows:
            names = sorted(self.client.scheduler_info().get("workers", {}))
            parts = [self.client.submit(_load_checked, load, lo, hi, pure=False,
                                        workers=[names[k % len(names)]] if names else None)
                     for k, (lo, hi) in enumerate(spans)]
            self.client.gather(parts)          # loaded (or the loader's error raised) before rating
            return PlacedRows(tuple(parts), tuple(spans))

        return self._guarded(work)

    def rate_placed(self, placed: PlacedRows, slot_of_interval: Any, prices: Any, thresholds_wh: Any, increments: Any,
                    resets: Any, per_interval: bool = False) -> Bill:
        """Rate rows ``place`` left on the workers where they are; the result as the kernel's."""
        tariff = _tariff_arrays(slot_of_interval, prices, thresholds_wh, increments, resets)
        if not placed.parts:
            z = np.zeros(0, dtype=np.int64)
            return rate(np.zeros((0, np.asarray(slot_of_interval).size), dtype=np.int32), *tariff, z, z,
                        per_interval=per_interval)
        return self._guarded(lambda: self._rate_parts(list(placed.parts), list(placed.spans), tariff, per_interval))

    def close(self) -> None:
        """Disconnect (and stop the local cluster, if this engine started one)."""
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def rating_engine(spec: str | None) -> Engine:
    """The engine named by ``--rating``: "in-process" (default, the kernel), "dask://HOST:PORT" (a
    running scheduler) or "local-cluster[:N]" (N workers on this machine, default 2).  The workers
    open the store the head-end's cycle reads, or the one ``PREPAID645_RATING_DB`` names."""
    if spec in (None, "", IN_PROCESS):
        return rate
    assert spec is not None
    # the database as the workers reach it, where not by the head-end's own --db (a Unix socket,
    # another host name)
    store = os.environ.get(RATING_DB_ENV) or None
    if spec.startswith("dask://"):
        return DaskRating("tcp://" + spec[len("dask://"):], store_address=store)
    if spec == "local-cluster" or spec.startswith("local-cluster:"):
        n = spec.partition(":")[2] or "2"
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"--rating {spec}: write local-cluster:N with N workers >= 1")
        return DaskRating(None, local_workers=int(n), store_address=store)
    raise ValueError(f"--rating {spec!r}: write in-process, dask://HOST:PORT or local-cluster[:N]")

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
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from headend.tariff.kernel import rate
from headend.tariff.reference import Bill

__all__ = ["DaskRating", "RatingUnavailable", "rating_engine", "IN_PROCESS"]

IN_PROCESS = "in-process"
Engine = Callable[..., Bill]


class RatingUnavailable(RuntimeError):
    """The rating cluster cannot be reached or went away; nothing was charged."""


def _rate_part(energy: np.ndarray, slots: np.ndarray, prices: np.ndarray, thresholds: np.ndarray,
               increments: np.ndarray, resets: np.ndarray, ladder: np.ndarray, rem: np.ndarray,
               per_interval: bool) -> Bill:
    # runs on a worker: the kernel is imported (and compiled, once per worker process) there
    from headend.tariff.kernel import rate as kernel_rate

    return kernel_rate(energy, slots, prices, thresholds, increments, resets, ladder, rem, per_interval=per_interval)


def _rate_rows(part: tuple[np.ndarray, np.ndarray, np.ndarray], slots: np.ndarray, prices: np.ndarray,
               thresholds: np.ndarray, increments: np.ndarray, resets: np.ndarray, per_interval: bool) -> Bill:
    energy, ladder, rem = part
    return _rate_part(energy, slots, prices, thresholds, increments, resets, ladder, rem, per_interval)


class DaskRating:
    """A rating engine (the kernel's signature) that spreads a batch's accounts over a Dask cluster.

    ``address``: ``tcp://host:8786`` of a running scheduler, or None to start a LocalCluster of
    ``local_workers`` workers (``processes=False`` keeps them as threads of this process: the
    kernel releases the GIL). ``partition_rows``: accounts per task (several per worker, so a slow
    worker does not hold the cycle)."""

    def __init__(self, address: str | None = None, *, local_workers: int = 2, processes: bool = False,
                 partition_rows: int = 250_000, timeout_s: float = 30.0) -> None:
        from distributed import Client, LocalCluster

        self.address = address
        self.partition_rows = int(partition_rows)
        self._cluster: Any = None
        self.client: Any
        try:
            if address is None:
                self._cluster = LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=processes,
                                             dashboard_address=":0", silence_logs=40)
                self.client = Client(self._cluster, timeout=timeout_s)
            else:
                self.client = Client(address, timeout=timeout_s)
        except (OSError, TimeoutError) as exc:
            if self._cluster is not None:
                self._cluster.close()
            raise RatingUnavailable(f"cannot reach the Dask scheduler at {address}: {exc}; check --rating "
                                    "(dask://HOST:PORT) and that `dask scheduler` runs there") from None
        self.where = address or f"a local cluster of {local_workers} workers"

    def workers(self) -> int:
        """Workers the scheduler has now."""
        return len(self.client.scheduler_info().get("workers", {}))

    def __call__(self, energy_wh: Any, slot_of_interval: Any, prices: Any, thresholds_wh: Any, increments: Any,
                 resets: Any, ladder_wh: Any, rem: Any, per_interval: bool = False) -> Bill:
        """Rate a batch (the kernel's arguments and result), partitioned by accounts."""
        e = np.asarray(energy_wh)
        ladder, r = np.asarray(ladder_wh, dtype=np.int64), np.asarray(rem, dtype=np.int64)
        shared = [np.asarray(a, dtype=np.int64) for a in (slot_of_interval, prices, thresholds_wh, increments, resets)]
        n = e.shape[0] if e.ndim == 2 else 0
        if n == 0:
            s, pr, th, inc, rs = shared
            return rate(e, s, pr, th, inc, rs, ladder, r, per_interval=per_interval)
        parts = max(1, math.ceil(n / self.partition_rows))
        bounds = np.linspace(0, n, parts + 1).astype(np.int64)
        try:
            # the small tariff arrays go to the workers once; each task carries only its rows
            scattered = self.client.scatter(shared, broadcast=True, hash=False)  # fresh keys: never a released one
            spans = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
            # each partition's rows go straight to a worker (not inside the task graph)
            rows = self.client.scatter([(e[lo:hi], ladder[lo:hi], r[lo:hi]) for lo, hi in spans], hash=False)
            futures = [self.client.submit(_rate_rows, part, *scattered, per_interval, pure=False) for part in rows]
            bills: list[Bill] = list(self.client.gather(futures))  # type: ignore[arg-type]  # sync client
        except ValueError:
            raise  # bad input named by the kernel, as in-process
        except Exception as exc:
            raise RatingUnavailable(f"rating on {self.where} failed ({type(exc).__name__}: {exc}): the cycle was "
                                    "not committed, nothing was charged; the next cycle rates these intervals") from exc
        return Bill(np.concatenate([b.fen for b in bills]), np.concatenate([b.ladder_wh for b in bills]),
                    np.concatenate([b.rem for b in bills]),
                    np.concatenate([b.per_interval for b in bills if b.per_interval is not None]) if per_interval else None)

    def close(self) -> None:
        """Disconnect (and stop the local cluster, if this engine started one)."""
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def rating_engine(spec: str | None) -> Engine:
    """The engine named by ``--rating``: "in-process" (default, the kernel), "dask://HOST:PORT" (a
    running scheduler) or "local-cluster[:N]" (N workers on this machine, default 2)."""
    if spec in (None, "", IN_PROCESS):
        return rate
    assert spec is not None
    if spec.startswith("dask://"):
        return DaskRating("tcp://" + spec[len("dask://"):])
    if spec == "local-cluster" or spec.startswith("local-cluster:"):
        n = spec.partition(":")[2] or "2"
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"--rating {spec}: write local-cluster:N with N workers >= 1")
        return DaskRating(None, local_workers=int(n))
    raise ValueError(f"--rating {spec!r}: write in-process, dask://HOST:PORT or local-cluster[:N]")

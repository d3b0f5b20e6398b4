"""One remote cost-control cycle over the store: collect, rate, debit, decide, act.

Theory of operation.  Readings of the forward-active register (``ENERGY_DI``) are expected on a
grid of ``interval_s`` (86400: daily frozen readings, the default; 3600 or 900 possible) aligned to
local midnight.  Interval ``[g, g + interval_s)`` starts at ``g`` and its energy is the register
at its end minus the register at its start.  ``Account.rated_until`` is the start of the last
interval already rated, so the next batch's base reading is the one at ``rated_until +
interval_s`` (an account never rated takes its first grid reading as the base).

1. **Collect**: per account, the grid readings since its base, up to the last complete interval
   (a reading within ``snap_s`` of a boundary counts as that boundary's, the closest one wins).
   Anomalies (gaps, backwards registers, meter exchanges, off-grid readings) are reported and
   audited (``headend.tariff.readings`` rules); an account is rated only up to its last good
   reading, so a trailing gap is rated next cycle and nothing is billed twice or dropped.
2. **Rate** in batches that share tariff, base and length (normally one batch), with the kernel.
3. **Debit** every account in one transaction (``Store.charge_accounts``; the batch key is a
   digest of the charges, so re-running a cycle that already committed changes nothing).
4. **Decide** (``headend.costctl.decide``) on the new balances, then record each decision with its
   reason (audit), queue notices (outbox of notifications) and relay commands (command outbox),
   and store the new notice/supply state by compare-and-set (a payment that raced in wins; the
   account is decided again next cycle).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Mapping

import numpy as np

from headend.costctl.decide import (ACTIONS, CLOSE_PERMIT, CUT_NOTICE, DIRECT_CLOSE, NONE, NOTICE1, NOTICE2,
                                    REASONS, SUPPLY, TRIP, Decisions, Rules, decide)
from headend.costctl.rerate import CHINA_UTC_OFFSET, ENERGY_DI, to_meter_time
from headend.store import Conflict, Meter, Store
from headend.tariff.model import TariffBook
from headend.tariff.rating import rate_batch
from headend.tariff.readings import MISSING, intervals_from_registers

__all__ = ["CycleReport", "run_cycle"]

_RELAY_KIND = {TRIP: "trip", CLOSE_PERMIT: "close_permitted", DIRECT_CLOSE: "close_direct"}
_NOTICE_TEXT = {
    NOTICE1: "Your electricity balance is low ({bal} yuan). Please top up.",
    NOTICE2: "Your electricity balance is very low ({bal} yuan). Please top up soon.",
    CUT_NOTICE: "Your electricity balance is exhausted ({bal} yuan). Supply will be cut unless you top up.",
    CLOSE_PERMIT: "Payment received ({bal} yuan). Press the meter button for 3 s to restore supply.",
    DIRECT_CLOSE: "Payment received ({bal} yuan). Supply is being restored.",
}


@dataclass
class CycleReport:
    """What one cycle did: charges, decisions by action, anomalies, skipped accounts."""

    accounts: int = 0
    rated: int = 0
    charged_fen: int = 0
    batch_key: str | None = None
    actions: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)     # seconds per stage


def _yuan(fen: int) -> str:
    return f"{'-' if fen < 0 else ''}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def run_cycle(store: Store, catalog: Mapping[str, TariffBook], now: int, *, rules: Rules = Rules(),
              interval_s: int = 86400, utc_offset_s: int = CHINA_UTC_OFFSET, actor: str = "costctl",
              snap_s: int = 0) -> CycleReport:
    """Run one cycle at Unix time ``now`` (see module doc); returns what was done.

    ``snap_s``: a reading taken within this many seconds of a grid boundary counts as the
    boundary's reading (periodic collection reads a little after the hour); 0 = exact only.
    """
    if interval_s <= 0 or 86400 % interval_s:
        raise ValueError(f"interval_s must divide a day (86400, 3600, 900 ...), got {interval_s}")
    if not 0 <= snap_s < interval_s // 2:
        raise ValueError(f"snap_s must be 0 .. {interval_s // 2 - 1} s (under half an interval), got {snap_s}")
    rep = CycleReport()
    clock = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal clock
        t = time.perf_counter()
        rep.stages[name] = rep.stages.get(name, 0.0) + t - clock
        clock = t

    # grid in Unix seconds, aligned to local midnight
    phase = (-utc_offset_s) % interval_s
    last_end = (now - phase) // interval_s * interval_s + phase        # end of the last complete interval
    charges: list[tuple[str, int, int, int, int]] = []
    audit: list[tuple[str, str, str | None, object]] = []

    # (Store.rating_accounts gives the same rows, but its EXISTS query is quadratic on SQLite)
    meters_of: dict[str, list[Meter]] = {}
    for m in store.find_meters([("mode", "=", "remote")]):
        meters_of.setdefault(m.customer, []).append(m)
    accounts = [(a.customer, a.balance_fen, a.rem, a.ladder_wh, a.rated_until, a.version, a.tariff)
                for a in store.list_accounts() if a.customer in meters_of]
    bases = [None if a[4] is None else a[4] + interval_s for a in accounts]
    known = [b for b in bases if b is not None]
    since = 0 if len(known) < len(bases) else min(known, default=last_end)
    reads_of: dict[str, list[tuple[int, int]]] = {}
    for meter, value, read_at in store.readings_for_di(ENERGY_DI, since=max(since - snap_s, 0),
                                                       until=last_end + snap_s + 1):
        if value is not None:
            reads_of.setdefault(meter, []).append((read_at, value))
    stage("collect")

    groups: dict[tuple, list[tuple[str, np.ndarray, int, int, int | None]]] = {}
    for (customer, _bal, rem, ladder, rated_until, _ver, tariff), base_t in zip(accounts, bases):
        rep.accounts += 1
        if tariff is None or tariff not in catalog:
            rep.skipped.append(f"{customer}: tariff {tariff!r} is not in the catalog")
            continue
        snapped: dict[int, tuple[int, int, int]] = {}       # grid time -> (distance, value, meter)
        for m in meters_of.get(customer, ()):
            for read_at, value in reads_of.get(m.address, ()):
                off = (read_at - phase) % interval_s
                dist = min(off, interval_s - off)
                if dist > snap_s:
                    rep.problems.append(f"{customer}: reading at {read_at} from {m.address} is off the "
                                        f"{interval_s} s grid: not used")
                    continue
                g = read_at - off if off <= snap_s else read_at + dist
                if (base_t is not None and g < base_t) or g > last_end:
                    continue
                if g not in snapped or dist < snapped[g][0]:
                    snapped[g] = (dist, value, int(m.address))
        reads = sorted((g, v, m) for g, (_d, v, m) in snapped.items())
        if base_t is None:
            if not reads:
                continue
            base_t = reads[0][0]
        base = [r for r in reads if r[0] == base_t]
        if not base:
            rep.problems.append(f"{customer}: no reading at {base_t}, the base of the next interval: "
                                "rating waits for it")
            continue
        n = (last_end - base_t) // interval_s
        if n <= 0:
            continue
        regs = np.full(n, MISSING, dtype=np.int64)
        mtrs = np.zeros(n, dtype=np.int64)
        for t, v, m in reads:
            k = (t - base_t) // interval_s - 1
            if 0 <= k < n:
                regs[k], mtrs[k] = v, m
        if regs[-1] != MISSING and np.all(regs[:-1] != MISSING) and np.all(mtrs == base[-1][2]) \
                and np.all(np.diff(regs, prepend=base[-1][1]) >= 0) and regs[-1] - base[-1][1] < 1 << 31:
            energy = np.diff(regs, prepend=base[-1][1]).astype(np.int32)     # the usual case: no anomaly
            cut = n
        else:
            got = intervals_from_registers(regs[None], mtrs[None], [base[-1][1]], [base[-1][2]])
            for p in got.problems:
                start = base_t + p.interval * interval_s
                rep.problems.append(f"{customer}: {p.kind} in the interval starting {start}: {p.detail}")
                audit.append((actor, f"reading.{p.kind}", customer, {"interval_start": start, "detail": p.detail}))
            good = np.flatnonzero(regs != MISSING)
            cut = int(good[-1]) + 1 if good.size else 0
            energy = got.energy_wh[0]
        if cut == 0:
            continue
        # interval k starts at base_t + k * interval_s: the base reading ends the last rated interval
        key = (tariff, base_t, cut, rated_until is None)
        groups.setdefault(key, []).append((customer, energy[:cut], rem, ladder, rated_until))
    stage("readings -> interval energy")

    for (tariff, base_t, cut, _first), members in groups.items():
        starts_unix = base_t + interval_s * np.arange(cut, dtype=np.int64)
        prev = members[0][4]
        energy = np.stack([m[1] for m in members]).astype(np.int32)
        bill = rate_batch(catalog[tariff], energy, to_meter_time(starts_unix, utc_offset_s),
                          None if prev is None else int(to_meter_time(prev, utc_offset_s)),
                          [m[3] for m in members], [m[2] for m in members])
        for i, m in enumerate(members):
            charges.append((m[0], int(bill.fen[i]), int(bill.rem[i]), int(bill.ladder_wh[i]), int(starts_unix[-1])))
        rep.rated += len(members)
    stage("rating")

    if charges:
        digest = hashlib.sha256(repr(sorted(charges)).encode()).hexdigest()[:16]
        rep.batch_key = f"costctl:{last_end}:{digest}"
        store.charge_accounts(rep.batch_key, charges, actor=actor, kind="charge")
        rep.charged_fen = sum(c[1] for c in charges)
    stage("debit (one transaction)")

    _decide_and_act(store, now, rules, utc_offset_s, actor, rep, audit, meters_of, stage)
    stage("record decisions, notices, commands (one transaction)")
    return rep


def _decide_and_act(store: Store, now: int, rules: Rules, utc_offset_s: int, actor: str, rep: CycleReport,
                    audit: list, meters: dict[str, list[Meter]], stage: Callable[[str], None]) -> None:
    accts = [a for a in store.list_accounts() if a.customer in meters]
    if not accts:
        return
    local = datetime.fromtimestamp(now, timezone(timedelta(seconds=utc_offset_s)))
    d = decide(
        np.array([a.balance_fen for a in accts]), np.array([a.alarm1_fen for a in accts]),
        np.array([a.alarm2_fen for a in accts]), np.array([a.overdraft_fen for a in accts]),
        np.array([a.close_ok_fen for a in accts]),
        np.array([a.protected or any(m.protected for m in meters[a.customer]) for a in accts]),
        np.array([a.restore_policy == "direct" for a in accts]),
        np.array([a.notice_level for a in accts]),
        np.array([-1 if a.notice_at is None else a.notice_at for a in accts]),
        np.array([SUPPLY.index(a.supply) for a in accts]),
        now, (local.hour * 60 + local.minute, (local.weekday() + 1) % 7, (local.year, local.month, local.day)), rules)
    stage("decisions")
    with store.atomic():             # state, notices, commands and their audit rows land together
        _act(store, now, actor, rep, audit, accts, meters, d)
        if audit:
            store.log_actions(audit)


def _act(store: Store, now: int, actor: str, rep: CycleReport, audit: list, accts: list,
         meters: dict[str, list[Meter]], d: Decisions) -> None:
    for i, a in enumerate(accts):
        action, reason = int(d.action[i]), int(d.reason[i])
        level, supply = int(d.notice_level[i]), SUPPLY[int(d.supply[i])]
        if action == NONE and level == a.notice_level and supply == a.supply:
            continue
        try:
            store.set_account_state(a.customer, expected_version=a.version, notice_level=level,
                                    notice_at=None if d.notice_at[i] < 0 else int(d.notice_at[i]),
                                    supply=supply, supply_at=now if supply != a.supply else a.supply_at)
        except Conflict:
            rep.conflicts.append(f"{a.customer}: money moved while deciding; decided again next cycle")
            continue
        name = ACTIONS[action]
        rep.actions[name] = rep.actions.get(name, 0) + 1
        audit.append((actor, f"costctl.{name}", a.customer, {"reason": REASONS[reason], "balance_fen": a.balance_fen,
                                                              "notice_level": level, "supply": supply}))
        if action in _NOTICE_TEXT:
            store.notify(a.customer, name, _NOTICE_TEXT[action].format(bal=_yuan(a.balance_fen)),
                         idem_key=f"costctl:{name}:{a.customer}:{now}", detail={"reason": REASONS[reason]})
        if action in _RELAY_KIND:
            for m in meters[a.customer]:
                store.enqueue(m.address, _RELAY_KIND[action], {}, actor=actor,
                              idem_key=f"costctl:{_RELAY_KIND[action]}:{m.address}:{now}")

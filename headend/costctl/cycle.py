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
   The usual account (one meter, every grid reading there, registers not going backwards) is
   handled as whole arrays; only the others go through the per-account anomaly path.
2. **Rate** in batches that share tariff, base and length (normally one batch), with the kernel.
   Steps 1 and 2 are ``headend.costctl.collect.rate_partition``: here on the whole fleet, or, with
   a `DaskRating` engine, on the Dask workers, one partition of accounts each, every worker
   reading its own partition's readings from the store (``headend.costctl.distributed``).
3. **Decide** (``headend.costctl.decide``) on the balances the debit will leave.
4. **Debit** every account, with its decided notice/supply state where that changed, in one transaction
   (``Store.charge_columns``; the batch key is a digest of the charges, so re-running a
   cycle that already committed changes nothing; a large fleet is charged in slices, keys
   ``KEY/0``, ``KEY/1`` ...), then queue notices (outbox of notifications) and relay commands
   (command outbox), and one summary audit row for the cycle counting the decisions, all in one
   transaction; each decision that changed something gets its audit row (with its reason) in a
   transaction of its own right after that one commits, off the money's.  Writes are compare-and-set on
   the versions the cycle read: where a payment raced in, the money still lands, the state goes
   through ``Store.apply_decisions`` on its own, which skips the raced account (decided again
   next cycle).  Accounts neither charged nor changed are not written at all.

Memory stays bounded by the fleet's arrays, not its rows: the store's rows are read as columns
straight into arrays (``Store.cost_control_columns``, ``readings_between_columns``), and the
decisions are built and handed to the store in slices within the one transaction.  Writes are
compare-and-set on the versions this cycle read, so the accounts are not read again under the
write lock unless a payment raced in.
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

import numpy as np

from headend.costctl.act import NOTICE_KIND, NOTICE_TEXT, RELAY_KIND
from headend.costctl.collect import PartitionInput, rate_partition, read_readings, reading_window
from headend.costctl.decide import ACTIONS, CUT_NOTICE, NONE, REASONS, SUPPLY, Rules, decide
from headend.costctl.distributed import DaskRating
from headend.costctl.rerate import CHINA_UTC_OFFSET
from headend.store import JSONText, Store, yuan
from headend.tariff.model import TariffBook
from headend.tariff.kernel import rate
from headend.tariff.rating import Engine

__all__ = ["CycleReport", "run_cycle"]

# charges and decisions handed to the store per call: memory stays bounded however large the
# fleet (the results do not depend on either)
_DECISION_SLICE = 100_000
_CHARGE_SLICE = 200_000


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
    stages: dict[str, float] = field(default_factory=dict)     # seconds per stage (wall clock)
    stages_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of this process per stage


def run_cycle(store: Store, catalog: Mapping[str, TariffBook], now: int, *, rules: Rules = Rules(),
              interval_s: int = 86400, utc_offset_s: int = CHINA_UTC_OFFSET, actor: str = "costctl",
              snap_s: int = 0, engine: Engine = rate) -> CycleReport:
    """Run one cycle at Unix time ``now`` (see module doc); returns what was done.

    ``snap_s``: a reading taken within this many seconds of a grid boundary counts as the
    boundary's reading (periodic collection reads a little after the hour); 0 = exact only.
    ``engine``: what rates the arrays (the in-process kernel, or `costctl.distributed.DaskRating`);
    if it fails, nothing is charged (rating comes before the one debit transaction).
    """
    if interval_s <= 0 or 86400 % interval_s:
        raise ValueError(f"interval_s must divide a day (86400, 3600, 900 ...), got {interval_s}")
    if not 0 <= snap_s < interval_s // 2:
        raise ValueError(f"snap_s must be 0 .. {interval_s // 2 - 1} s (under half an interval), got {snap_s}")
    # A cycle builds millions of rows (tuples, strings) and none of them form reference cycles:
    # the cyclic collector would walk the growing heap again and again (a fifth of the cycle at a
    # million accounts).  Reference counting still frees everything; the collector resumes after.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _run_cycle(store, catalog, now, rules, interval_s, utc_offset_s, actor, snap_s, engine)
    finally:
        if paused:
            gc.enable()


def _run_cycle(store: Store, catalog: Mapping[str, TariffBook], now: int, rules: Rules, interval_s: int,
               utc_offset_s: int, actor: str, snap_s: int, engine: Engine) -> CycleReport:
    rep = CycleReport()
    clock, cpu = time.perf_counter(), time.process_time()

    def stage(name: str) -> None:
        # wall and CPU both: on a busy machine the wall clock also counts other processes' turns
        nonlocal clock, cpu
        t, c = time.perf_counter(), time.process_time()
        rep.stages[name] = rep.stages.get(name, 0.0) + t - clock
        rep.stages_cpu[name] = rep.stages_cpu.get(name, 0.0) + c - cpu
        clock, cpu = t, c

    # grid in Unix seconds, aligned to local midnight
    phase = (-utc_offset_s) % interval_s
    last_end = (now - phase) // interval_s * interval_s + phase        # end of the last complete interval

    acc = _Accounts(store.cost_control_columns())
    if not acc.n:
        return rep
    rep.accounts = acc.n
    tariff_names = sorted({t for t in acc.tariff if t is not None and t in catalog})
    t_pos = {t: k for k, t in enumerate(tariff_names)}
    t_index = np.array([t_pos.get(t, -1) if t is not None else -1 for t in acc.tariff], dtype=np.int64)
    for i in np.flatnonzero(t_index < 0).tolist():
        rep.skipped.append(f"{acc.customer[i]}: tariff {acc.tariff[i]!r} is not in the catalog")
    fleet = PartitionInput(acc.meter_int, acc.acct_of_row, acc.rated_until, t_index, acc.ladder, acc.rem)
    tariffs = [catalog[t] for t in tariff_names]
    if isinstance(engine, DaskRating):
        stage("read accounts")
        # each worker reads its partition's readings from the store and rates them there
        got = engine.rate_cycle(store.address, fleet, tariffs, last_end=last_end, interval_s=interval_s,
                                utc_offset_s=utc_offset_s, snap_s=snap_s)
        stage("readings -> interval energy -> rating (on the workers)")
    else:
        cols = read_readings(store, *reading_window(acc.rated_until, last_end, interval_s, snap_s))
        stage("read accounts and readings")
        got = rate_partition(fleet, cols, tariffs, last_end, interval_s, utc_offset_s, snap_s, engine, stage)
        del cols
    del fleet
    for _, i, text in got.problems:
        rep.problems.append(f"{acc.customer[i]}: {text}")
    audit = [(actor, action, acc.customer[i], detail) for i, action, detail in got.audit]
    rep.rated = int(got.idx.size)

    fen_of = np.zeros(acc.n, dtype=np.int64)
    charged = np.zeros(acc.n, dtype=bool)
    written = np.zeros(acc.n, dtype=bool)      # the decided state went in with the charge
    idx, fen, rem, lad, until, fixed = got.idx, got.fen, got.rem, got.ladder, got.until, got.fixed
    del got
    if idx.size:
        fen_of[idx] = fen
        charged[idx] = True
    # decided on the balances the debit is about to leave, so that each charged account's new
    # notice and supply state is written with its money
    d = _decide(acc, fen_of, now, rules, utc_offset_s)
    stage("decisions")
    with store.atomic():     # money, states, notices, commands and the summary audit row land together
        if idx.size:
            digest = hashlib.sha256()
            cust = [acc.customer[int(i)] for i in idx.tolist()]
            digest.update("\n".join(cust).encode())
            for arr in (fen, rem, lad, until):
                digest.update(arr.tobytes())
            rep.batch_key = f"costctl:{last_end}:{digest.hexdigest()[:16]}"
            applied = 0
            slices = range(0, idx.size, _CHARGE_SLICE)
            for lo in slices:
                part = slice(lo, lo + _CHARGE_SLICE)
                rows = idx[part]
                # the state this cycle read: the store charges by compare-and-set on it instead of
                # reading again
                n, done = store.charge_columns(
                    rep.batch_key if len(slices) == 1 else f"{rep.batch_key}/{lo // _CHARGE_SLICE}",
                    cust[part], fen[part], rem[part], lad[part], until[part],
                    actor=actor, kind="charge", interval_s=interval_s,
                    read_as=[x[rows] for x in (acc.balance, acc.rem, acc.ladder, acc.version)],
                    fixed_fen=fixed[part] if fixed[part].any() else None,
                    states=_changed_states(acc, d, rows, now), keys=acc.key[rows])
                applied += n
                written[rows] = done
            if not applied:       # this batch was charged before (a re-run): decide on the balances as they are
                fen_of[:] = 0
                charged[:] = False
                d = _decide(acc, fen_of, now, rules, utc_offset_s)
            rep.charged_fen = int(fen.sum())
        stage("debit with the decided states")
        recorded = _decide_and_act(store, now, rules, actor, rep, audit, acc, d, fen_of, charged, written, stage)
        stage("record decisions, notices, commands (one transaction)")
    stage("commit")
    _audit_decisions(store, actor, acc, d, acc.balance - fen_of, recorded)
    stage("audit rows of the decisions (after the commit)")
    return rep


class _Accounts:
    """The cycle's input as arrays: one entry per account (and the meters of each).

    Built from the store's columns (``cost_control_columns``): the numbers arrive as arrays, and
    the repeated texts (tariff, supply) are turned into codes.  A meter's address is kept as its
    number only (an address is 12 decimal digits: the number gives it back), written out for the
    few meters a command goes to.
    """

    def __init__(self, cols: Sequence[Any]) -> None:
        customers: Sequence[str] = cols[0]
        keys = cols[18]
        n_rows = len(customers)
        if isinstance(keys, np.ndarray):
            # each account's meters are together (by customer, then address): a new account starts
            # where the key changes
            self.first_row = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if n_rows else np.zeros(0, np.int64)
        else:
            self.first_row = np.fromiter((k for k in range(n_rows) if k == 0 or customers[k] != customers[k - 1]),
                                         dtype=np.int64)
        self.n = self.first_row.size
        self.acct_of_row = np.repeat(np.arange(self.n), np.diff(np.r_[self.first_row, n_rows]))
        self.meter_int = cols[17]

        one_each = self.n == n_rows       # the usual fleet: one meter per account

        firsts = [] if one_each else self.first_row.tolist()

        def pick(c: Sequence[Any]) -> Sequence[Any]:
            return c if one_each else [c[k] for k in firsts]

        def ints(k: int) -> np.ndarray:
            return cols[k] if one_each else cols[k][self.first_row]

        self.customer: Sequence[str] = pick(customers)
        # the store's key of each account (Store.cost_control_meters): numbers as int64, text as objects
        self.key = ints(18) if isinstance(keys, np.ndarray) else np.array(pick(keys), dtype=object)
        self.balance, self.rem, self.ladder, self.rated_until, self.version = (ints(k) for k in (1, 2, 3, 4, 5))
        self.tariff: Sequence[str | None] = pick(cols[6])
        self.alarm1, self.alarm2, self.overdraft, self.close_ok = (ints(k) for k in (7, 8, 9, 10))
        self.protected = (np.maximum.reduceat(cols[11], self.first_row) if n_rows else cols[11]).astype(bool)
        self.direct = ints(12).astype(bool)
        codes = {name: k for k, name in enumerate(SUPPLY)}
        self.notice_level = ints(13).astype(np.int8)
        self.notice_at = ints(14)
        self.supply = np.array([codes[v] for v in pick(cols[15])], dtype=np.int8)
        self.supply_at = ints(16)                 # -1: none

    def meters_of_account(self, i: int) -> list[str]:
        lo = int(self.first_row[i])
        hi = int(self.first_row[i + 1]) if i + 1 < self.n else self.meter_int.size
        return [f"{m:012d}" for m in self.meter_int[lo:hi].tolist()]


def _decide(acc: "_Accounts", fen: np.ndarray, now: int, rules: Rules, utc_offset_s: int) -> Any:
    """The decisions on the balances after the debit (``fen`` per account)."""
    local = datetime.fromtimestamp(now, timezone(timedelta(seconds=utc_offset_s)))
    return decide(acc.balance - fen, acc.alarm1, acc.alarm2, acc.overdraft, acc.close_ok, acc.protected, acc.direct,
                  acc.notice_level, acc.notice_at, acc.supply,
                  now, (local.hour * 60 + local.minute, (local.weekday() + 1) % 7, (local.year, local.month, local.day)),
                  rules)


def _states(acc: "_Accounts", d: Any, rows: np.ndarray, now: int) -> list[tuple[Any, ...]]:
    """(notice_level, notice_at, supply, supply_at) decided for the accounts ``rows``: the same as
    before where nothing changed; supply_at moves only with the supply."""
    old_sup, new_sup = acc.supply[rows].tolist(), d.supply[rows].tolist()
    return [(level, None if at < 0 else at, SUPPLY[new], now if new != old else (None if was < 0 else was))
            for level, at, new, old, was in zip(d.notice_level[rows].tolist(), d.notice_at[rows].tolist(), new_sup,
                                                old_sup, acc.supply_at[rows].tolist())]


def _changed_states(acc: "_Accounts", d: Any, rows: np.ndarray, now: int) -> list[tuple[Any, ...] | None]:
    """``_states`` for the accounts ``rows`` whose decided state differs from the one read, None
    for the others (their state is not written)."""
    moved = np.flatnonzero((d.notice_level[rows] != acc.notice_level[rows]) | (d.notice_at[rows] != acc.notice_at[rows])
                           | (d.supply[rows] != acc.supply[rows]))
    out: list[tuple[Any, ...] | None] = [None] * rows.size
    for k, st in zip(moved.tolist(), _states(acc, d, rows[moved], now)):
        out[k] = st
    return out


def _decide_and_act(store: Store, now: int, rules: Rules, actor: str, rep: CycleReport, audit: list,
                    acc: _Accounts, d: Any, fen: np.ndarray, charged: np.ndarray, written: np.ndarray,
                    stage: Any) -> np.ndarray:
    """Record the decisions that change something (states not written with the charge, notices,
    commands) and the cycle's summary audit row; return the accounts whose decisions were
    recorded (not skipped as stale), for their audit rows once this has committed."""
    # the balances and versions the debit just wrote (a payment racing in is caught by the
    # version check when the decisions are recorded)
    balance = acc.balance - fen
    version = acc.version + charged
    changed = np.flatnonzero((d.action != NONE) | (d.notice_level != acc.notice_level) | (d.supply != acc.supply))
    reason_json = [json.dumps(r) for r in REASONS]
    cut_fields = f'"cut_at":{now + rules.notice_period_s},"notice_period_h":{rules.notice_period_s // 3600},'
    # per action and reason, the parts of a notice's facts around the customer (the facts the
    # notice templates use, headend/notices/templates.py; a cut notice also says when the cut may come)
    notice_mid = {a: f'{cut_fields if a == CUT_NOTICE else ""}"customer":"' for a in NOTICE_TEXT}
    notice_tail = [f'","reason":{rj}}}' for rj in reason_json]
    stale: set[str] = set()
    customer_of = acc.customer
    with store.atomic():             # state, notices, commands and the commands' audit rows land together
        # built and handed over in slices: the rows of a million decisions need not exist at once
        for lo in range(0, max(changed.size, 1), _DECISION_SLICE):
            part = changed[lo:lo + _DECISION_SLICE]
            # the states not already written with the charge (accounts not charged, or a payment
            # raced in): compare-and-set on the version the debit left
            own = part[~written[part]]
            states = [(customer_of[i], v, *st) for i, v, st in
                      zip(own.tolist(), version[own].tolist(), _states(acc, d, own, now))]
            rows = part.tolist()
            cust = [customer_of[i] for i in rows]
            action_l, reason_l = d.action[part].tolist(), d.reason[part].tolist()
            bal_l = balance[part].tolist()
            notices = [(c, NOTICE_KIND[a], NOTICE_TEXT[a].format(bal=yuan(b)), f"costctl:{ACTIONS[a]}:{c}:{now}",
                        JSONText(f'{{"balance_fen":{b},{notice_mid[a]}{c}{notice_tail[r]}'))
                       for a, c, b, r in zip(action_l, cust, bal_l, reason_l) if a in NOTICE_TEXT]
            commands = [(customer_of[i], m, RELAY_KIND[a], {}, f"costctl:{RELAY_KIND[a]}:{m}:{now}")
                        for i, a in zip(rows, action_l) if a in RELAY_KIND for m in acc.meters_of_account(i)]
            stage("decision rows (state, notices, commands)")
            stale |= store.apply_decisions(states, notices=notices, commands=commands, actor=actor)
            del states, notices, commands, cust
            stage("record decisions, notices, commands (one transaction)")
        # every decision by action, in the order each first appears (as recorded or skipped)
        acts = d.action[changed]
        kinds, first = np.unique(acts, return_index=True)
        kinds = kinds[np.argsort(first)]
        counts = {ACTIONS[int(k)]: int(n) for k, n in zip(kinds, (np.count_nonzero(acts == k) for k in kinds))}
        # the cycle itself in one row; the accounts have rows only where a decision changed something
        store.log_actions([*audit, (actor, "costctl.cycle", rep.batch_key, {
            "accounts": acc.n, "rated": rep.rated, "charged_fen": rep.charged_fen, "decided": counts,
            "stale": len(stale), "problems": len(rep.problems), "skipped": len(rep.skipped)})])
    for c in sorted(stale):
        rep.conflicts.append(f"{c}: money moved while deciding; decided again next cycle")
    rep.actions = dict(counts)
    if stale:
        for i, a in zip(changed.tolist(), acts.tolist()):
            if customer_of[i] in stale:
                rep.actions[ACTIONS[a]] -= 1
        rep.actions = {k: n for k, n in rep.actions.items() if n}
        changed = changed[[customer_of[i] not in stale for i in changed.tolist()]]
    return changed


def _audit_decisions(store: Store, actor: str, acc: _Accounts, d: Any, balance: np.ndarray,
                     recorded: np.ndarray) -> None:
    """One audit row per recorded decision (the accounts ``recorded``), with its reason and the
    balance it was made on, in a transaction of their own after the decisions have committed.

    They are the record of what the committed transaction did, not a part of it: written
    afterwards, the money transaction (which holds the store's write lock against payments) is
    shorter by their rows.  Should the process die between the two, the cycle's summary audit row,
    committed with the decisions, still counts them by action, and the accounts' states and
    notices say what was decided.
    """
    reason_json = [json.dumps(r) for r in REASONS]
    audit_action = [f"costctl.{name}" for name in ACTIONS]
    # per (notice level, reason, supply): the end of an audit detail, the same as {"balance_fen",
    # "notice_level", "reason", "supply"} through the encoder (sorted keys, compact)
    detail_tail = {(lv, r, s): f',"notice_level":{lv},"reason":{reason_json[r]},"supply":"{SUPPLY[s]}"}}'
                   for lv in range(4) for r in range(len(REASONS)) for s in range(len(SUPPLY))}
    customer_of = acc.customer
    with store.atomic():
        for lo in range(0, recorded.size, _DECISION_SLICE):
            part = recorded[lo:lo + _DECISION_SLICE]
            # formatted directly rather than through the encoder: a million of these per cycle
            # (pyright types zip's items as Any past five iterables, and customer_of[Any] as a slice)
            store.log_actions([(actor, audit_action[a], customer_of[i],  # pyright: ignore[reportArgumentType]
                                JSONText(f'{{"balance_fen":{b}{detail_tail[lv, r, s]}'))
                               for i, a, b, lv, r, s in zip(part.tolist(), d.action[part].tolist(),
                                                            balance[part].tolist(), d.notice_level[part].tolist(),
                                                            d.reason[part].tolist(), d.supply[part].tolist())])

"""The outbox worker: takes queued commands, carries them out, records a certain outcome.

Every command reaches the meter only after it is in the outbox (``queued``), and leaves it
only as ``confirmed`` (the meter's reply, and for relay commands status word 3 read back,
say it happened), ``failed`` (the meter refused, or a non-money command ran out of attempts)
or ``rejected`` (its parameters can never work: checked again here with the rules the CLI
applies at entry).  A comms failure puts the command back in the queue with a back-off.

Recharges are exactly-once: the purchase count is chosen from the meter's MAC-checked wallet
and written into the command's reply *before* the recharge frame is first sent; every retry,
even after a head-end restart, sends that same count.  A recharge whose frame may have reached
the meter is never failed: it becomes ``unresolved`` until the meter's purchase count, read in
a fresh session, settles it - credited: confirmed; provably not applied: sent again with the
same count, or rejected when the meter refuses it for good (customer, hoarding limit).  A meter
that refuses authentication (it holds proofs back for up to 10 minutes after a burst of failed
proofs, protocol/SECURITY.md) is said to be so; its recharges wait, tried again once the
hold-back is over, and complete then.

A meter whose purchase count went backwards (restarted from an older state record) is
reconciled before anything else is sent to it: the recharges the head-end knows were confirmed
above the meter's count are sent again, in order, with their own counts, with an alert event
and an audit entry; a gap it cannot fill leaves the recharge unresolved for the operator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import date
from datetime import time as dtime
from decimal import Decimal
from typing import Any, Awaitable, Callable

from headend.commands.meter_client import (
    RELAY_ACTIONS,
    MeterClient,
    MeterRefused,
    MeterTarget,
    parse_di,
    reading_row,
)
from headend.commands.params import KINDS, LIMIT_NAMES, check, limit_items, tariff_items
from headend.frontends import Share
from headend.link.security import WalletStatus
from headend.link.session import backoff_delay
from headend.store import Command, InvalidInput, Meter, NotFound, Store, TransitionError
from headend.transports import LinkError
from headend.vouchers.used import note_token_records
from protocol import di as dis
from protocol.annotate import format_value
from protocol.di import STATUS3

__all__ = [
    "KINDS",
    "LIMIT_NAMES",
    "OutboxWorker",
    "target_of",
]

log = logging.getLogger(__name__)

# Outbox defaults, set once (`headend serve`'s options start from them): commands in flight,
# how often an idle worker looks at the queue, tries before a non-money command fails, and the
# first wait before a retry.
CONCURRENCY = 256
POLL_S = 0.05
MAX_ATTEMPTS = 3
RETRY_BACKOFF_S = 2.0
TIME_TOLERANCE_S = 2.0  # seconds a meter clock may differ and still count as in sync

RETRY_BACKOFF_MAX_S = 300.0
# A meter holds proofs back for up to 10 minutes after a burst of failed ones: try again after
# that. One try per hold-back also keeps a wrong key from ever raising the meter's failure level
# to the hold-back (it leaks one per 10 minutes).
HOLD_BACK_S = 11 * 60
AUTH_REFUSALS_BEFORE_HOLD_BACK = 3  # in a row, per meter: fewer is a bad line, not a held-back meter
ACTOR = "headend serve"  # who the worker's own audit entries name
# A meter's refusal of a recharge that no re-send can change: the command is rejected (once a
# fresh read of its purchase count shows the frame was not applied).
_FINAL_REFUSALS = {"customer_mismatch", "hoarding_exceeded"}
_LOCK_TEXT = ("the meter refuses authentication: it holds proofs back for up to 10 minutes after repeated failed "
              "proofs (made-up frames on the line?), or the key store does not hold its key")


class _Unresolved(Exception):
    """A recharge whose frame may have reached the meter cannot be settled now; try again later."""


class _Rejected(Exception):
    """The command can never succeed as written (the reason is the message)."""


class _Waiting(Exception):
    """The meter refuses authentication (proofs held back, or a key mismatch): try after the hold-back."""
def target_of(m: Meter) -> MeterTarget:
    """The registry record as the meter client needs it."""
    return MeterTarget(m.address, m.link, m.krn, m.meter_number or m.address, m.customer)


def _jsonable(v: Any) -> Any:
    """A decoded value as JSON data (replies are stored as JSON): named tuples such as DateWeek
    or SlotEntry become objects of their fields, dates ISO text, Decimals exact text."""
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, (date, dtime)):  # datetime is a date
        return v.isoformat()
    if isinstance(v, tuple) and hasattr(v, "_asdict"):
        return {k: _jsonable(x) for k, x in v._asdict().items()}  # pyright: ignore[reportAttributeAccessIssue]  (a NamedTuple)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


class OutboxWorker:
    """Works the command outbox against the meters through a :class:`MeterClient`."""

    def __init__(
        self,
        store: Store,
        client: MeterClient,
        *,
        concurrency: int = CONCURRENCY,
        poll_s: float = POLL_S,
        max_attempts: int = MAX_ATTEMPTS,
        retry_backoff_s: float = RETRY_BACKOFF_S,
        retry_backoff_max_s: float = RETRY_BACKOFF_MAX_S,
        clock: Callable[[], float] = time.time,
        time_tolerance_s: float | None = None,
        owner: str | None = None,
        share: Share | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.owner = owner  # the serve's lease owner, recorded on each claimed command
        self.share = share  # this serve's share of the links (several serves on one database)
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.retry_backoff_max_s = retry_backoff_max_s
        self.clock = clock
        # a meter clock this close to the head-end's counts as in sync
        self.time_tolerance_s = TIME_TOLERANCE_S if time_tolerance_s is None else time_tolerance_s
        self._running: set[asyncio.Task[None]] = set()
        self._auth_refusals: dict[str, int] = {}
        self._handlers: dict[str, Callable[[Command, Meter], Awaitable[dict[str, Any]]]] = {
            "read": self._read,
            "recharge": self._recharge,
            "sync_time": self._sync_time,
            "set_limits": self._set_limits,
            "set_tariff": self._set_tariff,
        }
        for action in RELAY_ACTIONS:
            self._handlers[action] = self._relay
        self.done = 0

    # -- loop ---------------------------------------------------------------------------
    def recover(self) -> int:
        """At start-up: commands left "sent" by a worker that died go back in line (a recharge
        whose count was chosen as unresolved, to be settled by the meter's purchase count).
        Commands of a serve whose lease still beats (several serves on PostgreSQL) stay its own;
        serve calls this again now and then, so a killed serve's commands come back in line."""
        n = self.store.requeue_stale(0)
        for c in self.store.list_commands(status="unresolved", kind="recharge", limit=100_000):
            self._tell_unresolved(c, c.last_error or "left in flight by a head-end that stopped")
        return n

    def _tell_unresolved(self, cmd: Command, error: str) -> None:
        """An event the operator sees, once per command, the first time it is in doubt."""
        if self.store.add_event(cmd.meter, "recharge.unresolved", {"command": cmd.id, "error": error},
                                dedup=f"unresolved:{cmd.id}") is not None:
            log.warning("command %s (recharge on %s) unresolved: %s", cmd.id, cmd.meter, error)

    async def run(self, stop: asyncio.Event) -> None:
        """Work the outbox until ``stop`` is set, then wait for commands in flight."""
        while not stop.is_set():
            started = self.run_once()
            if not started:
                try:
                    await asyncio.wait_for(stop.wait(), self.poll_s)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def run_once(self) -> int:
        """Claim due commands up to the free concurrency and start them; returns how many."""
        free = self.concurrency - len(self._running)
        if free <= 0:
            return 0
        share = self.share
        cmds = self.store.claim_next(limit=free, now=int(self.clock()), owner=self.owner,
                                     slots=None if share is None else share.slots)
        slots = self.store.link_slots([c.meter for c in cmds]) if share is not None and cmds else {}
        for cmd in cmds:
            task = asyncio.get_running_loop().create_task(self.execute(cmd))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            if share is not None:  # the link stays this serve's until the command is done
                held = share.hold_slots([slots[cmd.meter]] if cmd.meter in slots else [])
                task.add_done_callback(lambda _t, held=held: share.release(held))
        return len(cmds)

    async def drain(self, timeout: float = 30.0) -> None:
        """Work until nothing is queued or in flight, or ``timeout`` passes (tests, one-shot runs)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            n = self.run_once()
            if self._running:
                await asyncio.wait(set(self._running), timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED)
            elif not n:
                due = self.store.next_due()
                if due is None or due > self.clock() + (deadline - asyncio.get_running_loop().time()):
                    return  # nothing waits, or nothing comes due before the timeout
                await asyncio.sleep(self.poll_s)  # queued but not due yet (retry back-off)

    # -- one command --------------------------------------------------------------------
    async def execute(self, cmd: Command) -> None:
        """Carry out one claimed ("sent") command and record its outcome."""
        try:
            meter = self.store.get_meter(cmd.meter)
            check(cmd.kind, cmd.params)
        except (NotFound, InvalidInput) as exc:
            if cmd.kind == "recharge" and self._partial(cmd):
                self._unresolved(cmd, f"{exc}; the recharge frame may have reached the meter")
            else:
                self._reject(cmd, str(exc))
            return
        handler = self._handlers[cmd.kind]
        try:
            reply = await handler(cmd, meter)
        except _Rejected as exc:
            self._reject(cmd, str(exc), reply=self._partial(cmd) or None)
        except _Unresolved as exc:
            self._unresolved(cmd, str(exc))
        except _Waiting as exc:
            until = int(self.clock() + HOLD_BACK_S)
            if self._in_doubt(cmd):
                self._unresolved(cmd, str(exc), until)
            else:  # nothing was sent: it stays queued (a recharge never gives up)
                try:
                    self.store.retry_later(cmd.id, str(exc), until)
                except TransitionError as err:
                    log.warning("command %s: %s", cmd.id, err)
        except MeterRefused as exc:
            if self._in_doubt(cmd):
                self._unresolved(cmd, str(exc))
            else:
                self._final(cmd, fail=str(exc), reply={"refused": exc.flags, "code": exc.code, **self._partial(cmd)})
        except LinkError as exc:
            self._comms_failure(cmd, str(exc))
        except (ValueError, KeyError) as exc:
            if self._in_doubt(cmd):
                self._unresolved(cmd, f"{type(exc).__name__}: {exc}")
            else:
                self._reject(cmd, f"cannot carry out {cmd.kind}: {exc}")
        except asyncio.CancelledError:
            self._comms_failure(cmd, "head-end stopped while the command was in flight")
            raise
        except Exception as exc:  # a bug must not strand the command: keep it queued, loudly
            log.exception("command %s (%s on %s) crashed", cmd.id, cmd.kind, cmd.meter)
            self._comms_failure(cmd, f"internal error: {type(exc).__name__}: {exc}")
        else:
            self._final(cmd, reply=reply)

    def _partial(self, cmd: Command) -> dict[str, Any]:
        latest = self.store.get_command(cmd.id)
        return dict(latest.reply) if isinstance(latest.reply, dict) else {}

    def _in_doubt(self, cmd: Command) -> bool:
        """A recharge whose purchase count was chosen: its frame may have reached the meter."""
        return cmd.kind == "recharge" and "purchase_count" in self._partial(cmd)

    def _final(self, cmd: Command, *, reply: Any = None, fail: str | None = None) -> None:
        self.done += 1
        try:
            if fail is not None:
                self.store.fail(cmd.id, fail, reply=reply)
                self.store.add_event(cmd.meter, f"{cmd.kind}.failed", {"command": cmd.id, "error": fail})
            else:
                self.store.confirm(cmd.id, reply=reply)
        except TransitionError as exc:  # someone (an operator) moved it meanwhile: theirs stands
            log.warning("command %s: %s", cmd.id, exc)

    def _reject(self, cmd: Command, why: str, reply: Any = None) -> None:
        self.done += 1
        try:
            self.store.reject(cmd.id, why, reply=reply)
            self.store.add_event(cmd.meter, f"{cmd.kind}.rejected", {"command": cmd.id, "error": why})
        except (TransitionError, NotFound) as exc:
            log.warning("command %s: %s", cmd.id, exc)

    def _pause(self, cmd: Command) -> int:
        attempts = self.store.get_command(cmd.id).attempts
        return int(self.clock() + backoff_delay(self.retry_backoff_s, attempts, self.retry_backoff_max_s) + 0.999)

    def _unresolved(self, cmd: Command, error: str, until: int | None = None) -> None:
        """The recharge may have reached the meter: settle it from its purchase count, later."""
        text = (f"{error}. Unresolved: the meter may have credited it; `headend serve` reads its purchase count "
                "in a fresh session and settles it (it is never credited twice)")
        try:
            self.store.unresolve(cmd.id, text, self._pause(cmd) if until is None else until)
            self._tell_unresolved(cmd, error)
        except TransitionError as exc:
            log.warning("command %s: %s", cmd.id, exc)

    def _comms_failure(self, cmd: Command, error: str) -> None:
        if self._in_doubt(cmd):
            self._unresolved(cmd, error)
            return
        attempts = self.store.get_command(cmd.id).attempts
        if cmd.kind != "recharge" and attempts >= self.max_attempts:
            self._final(cmd, fail=f"{error} (gave up after {attempts} attempts)")
            return
        try:
            self.store.retry_later(cmd.id, error, self._pause(cmd))
        except TransitionError as exc:
            log.warning("command %s: %s", cmd.id, exc)

    # -- handlers -----------------------------------------------------------------------
    async def _read(self, cmd: Command, meter: Meter) -> dict[str, Any]:
        params = cmd.params or {}
        names = params.get("dis") or ([params["di"]] if "di" in params else ["00010000"])
        m = target_of(meter)
        at = int(self.clock())
        rows, values, got = [], {}, []
        for name in names:
            rv = await self.client.read(m, parse_di(str(name)))
            rows.append(reading_row(meter.address, rv, at))
            got.append((rv.di, rv.value))
            # "text" is the value as an operator reads it, from the one formatter `decode` uses too
            entry = {"name": rv.name, "value": _jsonable(rv.value), "unit": rv.unit,
                     "text": format_value(rv.value, rv.unit)}
            if rv.di in dis.STATUS_WORDS and isinstance(rv.value, int):
                entry["flags"] = dis.status_flags(rv.di, rv.value)
                entry["text"] = f"0x{rv.value:04X} ({', '.join(entry['flags']) or 'no flag set'})"
            values[f"{rv.di:08X}"] = entry
        self.store.add_readings(rows)
        note_token_records(self.store, meter.address, got, actor="serve")  # vouchers the meter has used
        state: dict[str, Any] = {}
        for row in rows:
            if row[1] == "00900200" and row[2] is not None:
                state["balance_fen"] = row[2]
            if row[1] == "04000503" and row[2] is not None:
                state["relay"] = "open" if row[2] & 0x10 else "closed"
        self.store.record_meter_state(meter.address, seen_at=at, **state)
        return {"values": values, "read_at": at}

    async def _recharge(self, cmd: Command, meter: Meter) -> dict[str, Any]:
        params = cmd.params or {}
        amount = int(params["amount_fen"])
        customer = str(params.get("customer") or meter.customer)
        m = target_of(meter)
        progress = self._partial(cmd)
        for _ in range(3):  # a contradiction from the meter is flagged and the count chosen anew
            if "purchase_count" in progress:
                # a frame with this count may have reached the meter: its purchase count says
                count = int(progress["purchase_count"])
                w = await self._wallet(m, cmd, fresh=True)
                if w.purchase_count >= count:
                    return self._credited(cmd, meter, progress, amount, count, "settled", w)
                if w.purchase_count < count - 1:
                    w = await self._reconcile(cmd, meter, m, w)
                    if w.purchase_count != count - 1:
                        raise _Unresolved(f"the meter's purchase count is {w.purchase_count}, this recharge carries "
                                          f"{count}: it cannot be sent until the counts between are settled")
            else:
                w = await self._wallet(m, cmd)
                w = await self._reconcile(cmd, meter, m, w)
                progress = {
                    "purchase_count": w.purchase_count + 1,
                    "balance_before_fen": w.balance_fen,
                    "open_account": w.purchase_count == 0 and w.customer.strip("0") == "",
                }
                count = w.purchase_count + 1
            # written before the frame goes out: every retry, after any restart, uses this count,
            # and "sends" tells a lost reply (sent before) from a contradiction (never sent)
            progress["sends"] = int(progress.get("sends", 0)) + 1
            self.store.note_progress(cmd.id, progress)
            try:
                result = await self.client.recharge(m, amount, count, customer,
                                                    open_account=bool(progress.get("open_account")))
            except MeterRefused as exc:
                await self._refused(cmd, m, count, exc)
                raise AssertionError("unreachable") from exc
            if result == "repeat":
                # the meter says this count is applied, yet its wallet just said it was not:
                # a replayed or forged answer, or a credit from elsewhere. Never take it as this
                # payment's credit: flag it, and choose the count again in a fresh session.
                fresh = await self._wallet(m, cmd, fresh=True)
                self._discrepancy(cmd, "the meter answered 'already applied' to purchase count "
                                  f"{count}, which its wallet had just shown as not applied (now {fresh.purchase_count})")
                progress = {}
                continue
            try:
                after: WalletStatus | None = await self.client.wallet(m)
            except (MeterRefused, LinkError) as exc:
                # the recharge itself is confirmed by the meter's reply; the read-back is a courtesy
                after = None
                progress["readback_error"] = str(exc)
            return self._credited(cmd, meter, progress, amount, count, result, after, before_fen=w.balance_fen)
        raise _Unresolved("the meter kept contradicting its own purchase count; an operator must check it")

    async def _wallet(self, m: MeterTarget, cmd: Command, *, fresh: bool = False) -> WalletStatus:
        try:
            w = await self.client.wallet(m, fresh=fresh)
        except MeterRefused as exc:
            if not exc.auth_problem:
                raise
            n = self._auth_refusals[m.address] = self._auth_refusals.get(m.address, 0) + 1
            if n < AUTH_REFUSALS_BEFORE_HOLD_BACK:
                # one refusal on a bad line (a lost or doubled frame) is no hold-back: try again soon
                raise _Unresolved(str(exc)) if self._in_doubt(cmd) else LinkError(str(exc)) from None
            self.store.add_event(m.address, "security_locked", {"command": cmd.id, "error": str(exc)},
                                 dedup=f"locked:{int(self.clock()) // HOLD_BACK_S}")
            raise _Waiting(f"{_LOCK_TEXT} ({exc}); the recharge waits and is tried again in "
                           f"{HOLD_BACK_S // 60} minutes (`headend commands retry ID` tries it now)") from None
        self._auth_refusals.pop(m.address, None)
        return w

    async def _refused(self, cmd: Command, m: MeterTarget, count: int, exc: MeterRefused) -> None:
        """The meter answered no to the recharge frame: what its purchase count says decides."""
        try:
            w = await self._wallet(m, cmd, fresh=True)
        except _Waiting as wait:
            raise _Waiting(f"{exc}; {wait}") from None
        if w.purchase_count >= count:
            raise _Unresolved(f"{exc}, yet the meter's purchase count {w.purchase_count} shows it applied: settled "
                              "on the next check")
        if w.purchase_count == count - 1 and set(exc.flags) & _FINAL_REFUSALS:
            if "hoarding_exceeded" in exc.flags:
                await self._learn_hoarding(m, w)
            raise _Rejected(f"{exc} (the meter's purchase count {w.purchase_count} shows it was not applied: no "
                            "money moved)")
        raise _Unresolved(str(exc))

    async def _learn_hoarding(self, m: MeterTarget, w: WalletStatus) -> None:
        """The meter's own hoarding limit and balance, after it refused a recharge over them: the
        limit may have been changed at the meter, and payments to it are checked against what
        the head-end holds (a failed read leaves that as it was; the refusal stands either way)."""
        try:
            limit = (await self.client.read(m, LIMIT_NAMES["hoarding"])).value
        except (MeterRefused, LinkError) as exc:
            log.warning("meter %s refused a recharge over its hoarding limit; reading the limit failed: %s",
                        m.address, exc)
            limit = None
        self.store.record_meter_state(m.address, balance_fen=w.balance_fen, purchase_count=w.purchase_count,
                                      hoarding_fen=None if limit is None else int(limit.scaleb(2)),
                                      seen_at=int(self.clock()))

    def _credited(self, cmd: Command, meter: Meter, progress: dict[str, Any], amount: int, count: int, result: str,
                  w: WalletStatus | None, *, before_fen: int | None = None) -> dict[str, Any]:
        out = dict(progress, amount_fen=amount, result=result)
        if w is not None:
            out.update(balance_fen=w.balance_fen, meter_purchase_count=w.purchase_count)
            if w.purchase_count > count:
                self._discrepancy(cmd, f"the meter's purchase count {w.purchase_count} is past this recharge's {count} "
                                  "with nothing else sent to it")
            self.store.record_meter_state(meter.address, balance_fen=w.balance_fen, purchase_count=w.purchase_count,
                                          seen_at=int(self.clock()))
        else:
            # no read-back: the balance the meter showed just before this credit plus the credit (an
            # upper bound, it only falls by use) keeps payments to it within its hoarding headroom;
            # the old balance would leave the credit out of it once the payment is confirmed
            held = None if before_fen is None or result != "credited" else before_fen + amount
            self.store.record_meter_state(meter.address, balance_fen=held, purchase_count=count,
                                          seen_at=int(self.clock()))
        self.store.add_event(meter.address, "recharge", {"command": cmd.id, "amount_fen": amount, "purchase_count": count,
                                                         "result": result, "balance_fen": out.get("balance_fen")})
        return out

    def _discrepancy(self, cmd: Command, what: str) -> None:
        log.error("meter %s, command %s: %s", cmd.meter, cmd.id, what)
        self.store.add_event(cmd.meter, "recharge.discrepancy", {"command": cmd.id, "what": what})
        self.store.log_action(ACTOR, "recharge.discrepancy", cmd.meter, {"command": cmd.id, "what": what})

    async def _reconcile(self, cmd: Command, meter: Meter, m: MeterTarget, w: WalletStatus) -> WalletStatus:
        """If the meter's purchase count is below what the head-end knows it confirmed (a meter
        restarted from an older state record), send the lost recharges again, in order, with
        their own counts; returns the wallet afterwards."""
        known = self.store.get_meter(meter.address).purchase_count
        lost = self.store.confirmed_recharges(meter.address, above_count=w.purchase_count)
        if w.purchase_count >= known and not lost:
            return w
        detail = {"command": cmd.id, "meter_purchase_count": w.purchase_count, "known_purchase_count": known,
                  "meter_balance_fen": w.balance_fen, "resend": [c.id for c in lost]}
        log.error("meter %s went back: purchase count %d, the head-end confirmed %d; re-sending %d recharge(s)",
                  meter.address, w.purchase_count, known, len(lost))
        self.store.add_event(meter.address, "rollback", detail)
        self.store.log_action(ACTOR, "meter.rollback", meter.address, detail)
        if not lost:  # nothing the head-end confirmed is missing: said once, then the meter's count stands
            self.store.record_meter_state(meter.address, purchase_count=w.purchase_count, seen_at=int(self.clock()))
        for lc in lost:
            r = lc.reply
            count = int(r["purchase_count"])
            if count != w.purchase_count + 1:
                raise _Unresolved(f"meter {meter.address} went back to purchase count {w.purchase_count}; the next "
                                  f"confirmed recharge the head-end knows is command {lc.id} with count {count}, so "
                                  "the counts between cannot be re-sent: an operator must check the meter")
            try:
                result = await self.client.recharge(m, int(r["amount_fen"]), count,
                                                    str((lc.params or {}).get("customer") or meter.customer),
                                                    open_account=bool(r.get("open_account")))
            except MeterRefused as exc:
                raise _Unresolved(f"re-sending recharge command {lc.id} (count {count}) after the meter went back: "
                                  f"{exc}") from None
            w = await self.client.wallet(m, fresh=True)
            if w.purchase_count != count:
                raise _Unresolved(f"re-sent recharge command {lc.id} (count {count}) after the meter went back, but "
                                  f"its purchase count is {w.purchase_count}")
            self.store.add_event(meter.address, "recharge.restored", {"command": lc.id, "purchase_count": count,
                                                                      "amount_fen": r["amount_fen"], "result": result,
                                                                      "balance_fen": w.balance_fen})
            self.store.log_action(ACTOR, "recharge.restored", meter.address,
                                  {"command": lc.id, "purchase_count": count, "amount_fen": r["amount_fen"]})
            self.store.record_meter_state(meter.address, balance_fen=w.balance_fen, purchase_count=w.purchase_count,
                                          seen_at=int(self.clock()))
        return w

    async def _relay(self, cmd: Command, meter: Meter) -> dict[str, Any]:
        action = cmd.kind
        m = target_of(meter)
        try:
            await self.client.control(m, action)
        except MeterRefused as exc:
            if action == "trip" and "unauthorised" in exc.flags:
                # the same ERR bit means "power hold" and "not authorised": the status word says which
                word = await self.client.status3(m)
                if word & 0x1000:
                    raise MeterRefused(meter.address, "trip",
                                       ["power hold is on, so the meter refuses trips (release it with `headend hold off`)"],
                                       exc.code, False) from None
            raise
        word = await self.client.status3(m)
        flags = dis.status_flags(STATUS3, word)
        relay = "open" if word & 0x10 else "closed"
        out = {"status_word_3": f"0x{word:04X}", "flags": flags, "relay": relay}
        problem = None
        if action == "trip" and not (word & 0x40 or word & 0x80):
            problem = "the meter accepted the trip but status word 3 shows neither the relay commanded open nor a trip delay running"
        elif action == "close_direct" and word & 0x40:
            problem = ("the meter accepted direct close but keeps the relay open "
                       "(a local overdraft trip stays until a recharge lifts the balance above the close-permitted amount)")
        elif action == "hold_on" and not word & 0x1000:
            problem = "the meter accepted power hold but status word 3 does not show it"
        elif action == "hold_off" and word & 0x1000:
            problem = "the meter accepted power-hold release but status word 3 still shows power hold"
        self.store.record_meter_state(meter.address, relay=relay, seen_at=int(self.clock()))
        self.store.add_event(meter.address, action, {"command": cmd.id, **out})
        if problem:
            raise MeterRefused(meter.address, action.replace("_", " "), [problem], word, False)
        if action == "trip" and word & 0x80 and not word & 0x40:
            out["note"] = "trip delay running: the relay opens when it ends"
        return out

    async def _sync_time(self, cmd: Command, meter: Meter) -> dict[str, Any]:
        params = cmd.params or {}
        mode = params.get("mode", "auto")
        max_broadcast = int(params.get("max_broadcast_s", 300))
        m = target_of(meter)
        before = await self.client.meter_time(m)
        now = self.client.meter_clock()
        offset = (now - before).total_seconds()
        out: dict[str, Any] = {"meter_time_before": before.isoformat(), "offset_s": round(offset, 1)}
        if abs(offset) < self.time_tolerance_s and mode == "auto":
            out["method"] = "none (already in sync)"
            return out
        method = "broadcast" if mode == "broadcast" or (mode == "auto" and abs(offset) <= max_broadcast) else "set"
        if method == "broadcast":
            await self.client.broadcast_time(meter.link, self.client.meter_clock())
            await asyncio.sleep(0.05)
            after = await self.client.meter_time(m)
            left = (self.client.meter_clock() - after).total_seconds()
            if abs(left) >= self.time_tolerance_s and mode == "auto":
                method = "set (broadcast refused: once a day, <= 5 min, not near midnight)"
            elif abs(left) >= self.time_tolerance_s:
                raise MeterRefused(meter.address, "broadcast time", ["the meter's clock did not move (broadcast limits)"], 0, False)
        if method.startswith("set"):
            await self._set_clock(m)
        after = await self.client.meter_time(m)
        left = (self.client.meter_clock() - after).total_seconds()
        if abs(left) >= self.time_tolerance_s:
            raise MeterRefused(meter.address, "time set", [f"the meter's clock is still {left:.0f} s off"], 0, False)
        out.update(method=method, meter_time_after=after.isoformat(), offset_after_s=round(left, 1))
        self.store.add_event(meter.address, "sync_time", {"command": cmd.id, **out})
        return out

    async def _set_clock(self, m: MeterTarget) -> None:
        from protocol.formats import DateTimeWeek

        t = self.client.meter_clock()
        weekday = (t.weekday() + 1) % 7  # Python Monday=0 -> 645 Sunday=0
        try:
            await self.client.write(m, 0x0400010C, DateTimeWeek(t.replace(microsecond=0), weekday))
        except MeterRefused as exc:
            if "no_data" not in exc.flags:
                raise
            from protocol.formats import DateWeek

            await self.client.write(m, 0x04000101, DateWeek(t.date(), weekday))
            await self.client.write(m, 0x04000102, self.client.meter_clock().time().replace(microsecond=0))

    async def _write_and_check(self, m: MeterTarget, items: list[tuple[int, Any]]) -> dict[str, Any]:
        out = {}
        for di, value in items:
            await self.client.write(m, di, value)
            got = (await self.client.read(m, di)).value
            if isinstance(value, list) and isinstance(got, list) and len(got) > len(value) and value:
                # meters keep fixed-size day tables and repeat the last slot in the unused entries
                got = got[: len(value)] if all(e == value[-1] for e in got[len(value):]) else got
            if got != value:
                raise MeterRefused(m.address, f"write of {dis.di_text(di)}", [f"read back {got!r}, wrote {value!r}"], 0, False)
            out[f"{di:08X}"] = _jsonable(got)
        return out

    async def _set_limits(self, cmd: Command, meter: Meter) -> dict[str, Any]:
        written = await self._write_and_check(target_of(meter), limit_items(cmd.params or {}))
        self.store.add_event(meter.address, "set_limits", {"command": cmd.id, "written": written})
        return {"written": written}

    async def _set_tariff(self, cmd: Command, meter: Meter) -> dict[str, Any]:
        """params: set (1|2), prices [0.0001 yuan/kWh per tariff], optional ladder_thresholds_wh,
        ladder_prices, day_table [[hh, mm, tariff], ...] (day table 1 of the set)."""
        params = cmd.params or {}
        s = int(params.get("set", 1))
        written = await self._write_and_check(target_of(meter), tariff_items(params))
        self.store.add_event(meter.address, "set_tariff", {"command": cmd.id, "set": s, "written": written})
        return {"set": s, "written": written}

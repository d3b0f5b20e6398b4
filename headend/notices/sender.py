"""The notice sender: claim queued notices, apply the rules, render, hand to the gateway, record.

Theory of operation (one ``run_once(now)`` pass; ``now`` is passed in, never read here):

1. **Claim** up to ``batch`` due notices (compare-and-set on a lease, highest priority first).
2. Per notice, in claim order:
   * **quiet hours**: a non-urgent notice claimed inside them waits until they end;
   * **rate limit**: a non-urgent notice for a customer who already got ``rate_n`` notices in the
     last ``rate_window_s`` waits until the oldest of those leaves the window (urgent ones always
     go, and count);
   * **phones**: every phone of the customer that has no final delivery yet; a phone that is not
     a number is a hard failure for that phone (recorded once, the account flagged once);
   * **text**: the kind's template in the customer's language; a notice whose detail lacks a
     field falls back to the text its producer stored.
3. **Send** all messages of the pass in one gateway call per priority, highest first.  Each
   carries ``<event key>:<phone>`` as its idempotency key.  A notice claimed *in doubt* (its
   earlier sender's lease ran out mid-send) asks the gateway's ``lookup`` first, so a crash
   between send and record costs no second delivery even with providers whose idempotency
   window is short.
4. **Record** every outcome in one transaction: sent (some phone accepted or delivered), failed
   (every phone failed for good, or too many attempts), or queued again with a backoff and the
   reason (transient errors, an answer the gateway could not read).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from headend.link.session import backoff_delay
from headend.notices.gateways import Gateway, GatewayError, Outcome, Outgoing, check_phone
from headend.notices.templates import LANGUAGES, Catalog, MissingField
from headend.store import Delivery, Notification, Store

__all__ = ["Policy", "NoticeSender", "PassReport"]

log = logging.getLogger(__name__)

_FINAL = ("accepted", "delivered", "bad_number", "rejected", "undelivered")
_GOOD = ("accepted", "delivered")


@dataclass(frozen=True)
class Policy:
    """The sender's rules (from the ``[notices]`` config section)."""

    language: str = "zh"                         # for customers without one
    quiet: tuple[int, int] | None = (21 * 60, 8 * 60)  # local minutes [start, end); None: no quiet hours
    utc_offset_s: int = 8 * 3600
    rate_n: int = 5                              # non-urgent notices per customer ...
    rate_window_s: int = 3600                    # ... per this window
    backoff_s: int = 30                          # first retry after a transient error; doubles each time
    max_backoff_s: int = 3600
    max_attempts: int = 12                       # then the notice fails with its last reason
    lease_s: int = 300                           # a claim not recorded by then is taken again (in doubt)
    batch: int = 200

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise ValueError(f"default notice language {self.language!r}: use one of {', '.join(LANGUAGES)}")
        if self.rate_n < 1 or self.rate_window_s < 1:
            raise ValueError("the rate limit needs at least 1 notice per window of at least 1 s")
        if self.backoff_s < 1 or self.max_attempts < 1 or self.lease_s < 1 or self.batch < 1:
            raise ValueError("backoff, attempts, lease and batch must all be at least 1")

    def quiet_until(self, now: int) -> int | None:
        """The end of the quiet hours ``now`` falls in (Unix s), or None outside them."""
        if self.quiet is None or self.quiet[0] == self.quiet[1]:
            return None
        tz = timezone(timedelta(seconds=self.utc_offset_s))
        local = datetime.fromtimestamp(now, tz)
        minute = local.hour * 60 + local.minute
        start, end = self.quiet
        inside = start <= minute < end if start < end else (minute >= start or minute < end)
        if not inside:
            return None
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        t = day + timedelta(minutes=end)
        if t <= local:
            t += timedelta(days=1)
        return int(t.timestamp())

    def backoff(self, attempts: int) -> int:
        """Seconds to wait after the ``attempts``-th failed try."""
        return int(backoff_delay(self.backoff_s, attempts, self.max_backoff_s, factor=2))


@dataclass
class PassReport:
    """What one pass did."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    waiting: int = 0          # held by quiet hours or the rate limit
    messages: int = 0         # handed to the gateway
    flagged: list[str] = field(default_factory=list)   # accounts flagged in this pass
    lost: list[int] = field(default_factory=list)      # results not recorded: the lease was gone


class _Plan:
    __slots__ = ("notice", "text", "outgoing", "done", "outcomes", "result")

    def __init__(self, notice: Notification) -> None:
        self.notice = notice
        self.text: str | None = None
        self.outgoing: list[Outgoing] = []
        self.done: list[Delivery] = []
        self.outcomes: list[tuple[str, Outcome]] = []     # (phone, outcome)
        self.result: dict[str, Any] | None = None


class NoticeSender:
    """Works the notice queue through one gateway; ``run_once(now)`` is one pass."""

    def __init__(self, store: Store, gateway: Gateway, catalog: Catalog, policy: Policy | None = None, *,
                 owner: str | None = None, on_flag: Callable[[str, str], None] | None = None) -> None:
        self.store = store
        self.gateway = gateway
        self.catalog = catalog
        self.policy = policy or Policy()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._on_flag = on_flag

    def run_once(self, now: int) -> PassReport:
        """Claim, render, send and record one batch of due notices."""
        rep = PassReport()
        pol = self.policy
        claimed = self.store.claim_notices(self.owner, now=now, limit=pol.batch, lease_s=pol.lease_s)
        rep.claimed = len(claimed)
        if not claimed:
            return rep
        customers = {n.customer for n in claimed}
        contacts = self.store.customer_contacts(customers)
        recent = self.store.notices_sent_since(customers, now - pol.rate_window_s)
        done = self.store.notice_deliveries(n.id for n in claimed)
        flagged = self.store.flagged_phones(customers)
        quiet_end = pol.quiet_until(now)
        plans: list[_Plan] = []
        flags: dict[str, tuple[str, str]] = {}
        for n in claimed:
            p = _Plan(n)
            plans.append(p)
            urgent = self.catalog.has(n.kind) and self.catalog.kind(n.kind).urgent
            if not urgent and quiet_end is not None:
                p.result = {"id": n.id, "status": "queued", "not_before": quiet_end, "error": n.last_error}
                rep.waiting += 1
                continue
            sent_times = recent.setdefault(n.customer, [])
            if not urgent and len(sent_times) >= pol.rate_n:
                free_at = sent_times[-pol.rate_n] + pol.rate_window_s
                p.result = {"id": n.id, "status": "queued", "not_before": max(free_at, now + 1),
                            "error": f"rate limit: {pol.rate_n} notices per {pol.rate_window_s} s"}
                rep.waiting += 1
                continue
            phones, lang = contacts.get(n.customer, ([], None))
            p.done = done.get(n.id, [])
            final = {d.phone for d in p.done if d.state in _FINAL}
            p.text = self._render(n, lang or pol.language)
            key = n.idem_key or f"notice-{n.id}"
            bad = flagged.get(n.customer)
            for raw in phones:
                try:
                    phone = check_phone(raw)
                    if bad is not None and bad in (raw, phone):
                        # reported and flagged already: not offered to the provider again until
                        # the operator fixes the phone and clears the flag
                        raise ValueError(f"phone {raw!r} is flagged as undeliverable (`headend notices flags`)")
                except ValueError as exc:
                    if raw not in final:
                        p.outcomes.append((raw, Outcome(f"{key}:{raw}", "bad_number", None, str(exc))))
                    continue
                if phone in final or raw in final:
                    continue
                final.add(phone)
                p.outgoing.append(Outgoing(f"{key}:{phone}", phone, p.text, n.kind, n.customer, n.id, urgent))
            if p.outgoing:
                sent_times.append(now)   # counts against the limit of this customer's next notices
        self._send([p for p in plans if p.outgoing and p.result is None], rep)
        results = []
        for p in plans:
            for phone, o in p.outcomes:
                if o.status == "bad_number":
                    flags.setdefault(p.notice.customer, (phone, o.error or "not deliverable"))
            if p.result is None:
                p.result = self._result(p, now)
            st = p.result["status"]
            rep.sent += st == "sent"
            rep.failed += st == "failed"
            rep.retried += st == "queued" and bool(p.result.get("attempted"))
            results.append(p.result)
        rep.lost = self.store.record_notice_results(self.owner, results, now=now)
        for customer, (phone, why) in flags.items():
            if self.store.flag_contact(customer, why, phone=phone):
                rep.flagged.append(customer)
                log.warning("customer %s flagged: phone %r cannot be used (%s); fix the account's phone",
                            customer, phone, why)
                if self._on_flag is not None:
                    self._on_flag(customer, phone)
        return rep

    def _render(self, n: Notification, lang: str) -> str:
        if not self.catalog.has(n.kind) or not isinstance(n.detail, dict):
            return n.message
        try:
            return self.catalog.render(n.kind, lang, n.detail)
        except MissingField:
            return n.message

    def _send(self, plans: list[_Plan], rep: PassReport) -> None:
        batch: list[Outgoing] = []
        owner_of: dict[str, tuple[_Plan, str]] = {}
        for p in plans:
            for m in p.outgoing:
                owner_of[m.key] = (p, m.to)
                if p.notice.in_doubt:
                    found = self._lookup(m.key)
                    if found is not None:
                        p.outcomes.append((m.to, found))
                        continue
                batch.append(m)
        if not batch:
            return
        rep.messages += len(batch)
        # one gateway call per priority, highest first: a gateway that sends several at once
        # still hands every important customer's message over before anyone else's
        tiers: dict[int, list[Outgoing]] = {}
        for m in batch:
            tiers.setdefault(owner_of[m.key][0].notice.priority, []).append(m)
        for prio in sorted(tiers, reverse=True):
            tier = tiers[prio]
            try:
                outcomes = self.gateway.send(tier)
                if len(outcomes) != len(tier):
                    raise GatewayError(f"{self.gateway.name} gateway returned {len(outcomes)} outcomes for"
                                       f" {len(tier)} messages")
            except (GatewayError, OSError) as exc:
                outcomes = [Outcome(m.key, "transient", None, f"{self.gateway.name}: {exc}") for m in tier]
            for m, o in zip(tier, outcomes):
                p, phone = owner_of[m.key]
                p.outcomes.append((phone, o))

    def _lookup(self, key: str) -> Outcome | None:
        look = getattr(self.gateway, "lookup", None)
        if look is None:
            return None
        try:
            return look(key)
        except (GatewayError, OSError):
            return None     # the resend with the same key is still safe with an idempotent provider

    def _result(self, p: _Plan, now: int) -> dict[str, Any]:
        n, pol = p.notice, self.policy
        provider = self.gateway.name
        dels = [(phone, o.key, provider, o.provider_id, o.status, o.error)
                for phone, o in p.outcomes if o.status != "transient"]
        transient = [o for _phone, o in p.outcomes if o.status == "transient"]
        good = any(o.status in _GOOD for _p, o in p.outcomes) or any(d.state in _GOOD for d in p.done)
        attempts = n.attempts + 1
        res: dict[str, Any] = {"id": n.id, "deliveries": dels, "attempted": bool(p.outcomes), "text": p.text}
        if transient:
            reason = transient[0].error or "transient gateway error"
            if attempts >= pol.max_attempts:
                res.update(status="sent" if good else "failed", error=f"gave up after {attempts} attempts: {reason}")
            else:
                res.update(status="queued", not_before=now + pol.backoff(attempts), error=reason)
            return res
        if good:
            res.update(status="sent", error=None)
            return res
        failures = [o.error or o.status for _p, o in p.outcomes] + [d.error or d.state for d in p.done]
        res.update(status="failed", error="; ".join(f for f in failures if f) or "the customer has no phone number")
        return res

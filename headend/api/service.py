"""The thin adapter between the HTTP endpoints and the payments service (headend.payments).

The endpoints speak to a :class:`PaymentsPort`; :class:`StorePayments` is the one real
implementation: it calls ``headend.payments`` and the store, turns the service's
``PaymentError`` into a problem detail, and hands out plain dicts (what goes on the wire).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable, NamedTuple, Protocol, Sequence, cast

from headend import payments
from headend.api.problems import ApiProblem
from headend.keys import KeyStore, KeyStoreError
from headend.store import Channel, NotFound, Payment, Store

if TYPE_CHECKING:  # the rules module loads numpy: only when a reversal decides
    from headend.costctl.decide import Rules

__all__ = ["CALLBACK_LOOKBACK_S", "ChannelKey", "PaymentAsk", "PaymentsPort", "StorePayments", "receipt"]

_SECRET_CACHE = 256  # channels whose unsealed secret is kept in memory
_SWEEP = 500  # confirmed payments looked at per callback sweep
CALLBACK_LOOKBACK_S = 86400


def receipt(p: Payment) -> dict[str, Any]:
    """A payment as the API shows it to its channel (see models.PaymentOut)."""
    return {"payment_id": p.id, "channel_id": p.channel_id, "txn_id": p.txn_id, "customer_no": p.customer,
            "meter_no": p.meter, "amount_fen": p.amount_fen, "fee_fen": p.fee_fen, "state": p.state,
            "day": p.day, "paid_at": p.paid_at, "accepted_at": p.accepted_at, "sent_at": p.sent_at,
            "confirmed_at": p.confirmed_at, "credited_at": p.credited_at, "reversed_at": p.reversed_at}


@dataclass(frozen=True)
class ChannelKey:
    """What authentication needs to know about a channel."""

    channel_id: str
    kind: str
    enabled: bool
    key_id: str
    secret: str | bytes
    callback_url: str | None = None
    # the store's record it was made from, read in the request's transaction (a payment uses it
    # rather than reading the channel again)
    record: Channel | None = None


class PaymentAsk(NamedTuple):
    """One payment for ``accept_many``: the request, who asks (the audit's actor) and the
    signing channel's record as this transaction read it (or None: read it)."""

    request: payments.PaymentRequest
    actor: str
    channel: Channel | None = None


class PaymentsPort(Protocol):
    """What the endpoints need from the payments service and the store."""

    def channel_for_key(self, key_id: str) -> ChannelKey | None: ...
    def transaction(self, *, row_locked: bool = False) -> ContextManager[None]: ...
    def part(self) -> ContextManager[None]: ...
    def use_nonce(self, channel_id: str, nonce: str, keep_until: int) -> bool: ...
    def use_nonces(self, nonces: Sequence[tuple[str, str, int]]) -> list[bool]: ...
    def audit_refusal(self, actor: str, target: str | None, detail: dict[str, Any],
                      nonce: tuple[str, str, int] | None = None) -> None: ...
    def account(self, customer_no: str) -> dict[str, Any]: ...
    def accept(self, *, channel_id: str, txn_id: str, amount_fen: int, paid_at: int, customer: str | None,
               meter: str | None, actor: str, tender: dict[str, Any] | None,
               channel: ChannelKey | None = None) -> tuple[dict[str, Any], bool]: ...
    def accept_many(self, asks: Sequence[PaymentAsk]) -> list[tuple[dict[str, Any], bool] | ApiProblem]: ...
    def get(self, payment_id: int) -> dict[str, Any] | None: ...
    def find(self, channel_id: str, txn_id: str) -> dict[str, Any] | None: ...
    def reverse(self, payment_id: int, *, channel_id: str, actor: str, reason: str) -> dict[str, Any]: ...


# the service names fields as the store does; the API as they are on the wire
_WIRE_FIELD = {"customer": "customer_no", "meter": "meter_no", "channel": "channel_id"}


def _problem(exc: payments.PaymentError) -> ApiProblem:
    field = None if exc.field is None else _WIRE_FIELD.get(exc.field, exc.field)
    return ApiProblem(exc.http_status, exc.code, exc.message, field)


def account(view: dict[str, Any]) -> dict[str, Any]:
    """The service's account view as the API shows it (see models.AccountOut)."""
    out = dict(view)
    out["customer_no"] = out.pop("customer")
    return out


class StorePayments:
    """The payments service on a store, as the endpoints use it."""

    def __init__(self, store: Store, keys: KeyStore, *, clock: Callable[[], float] = time.time,
                 rules: Rules | None = None) -> None:
        self.store = store
        self._keys = keys
        self._clock = clock
        self._rules = rules          # the cycle's trip rules, for a reversal that undoes a restore
        # unsealing is an AES-GCM open per request otherwise; keyed by the sealed text, so a
        # rotated secret is a new entry and the old one simply ages out
        self._secrets: dict[tuple[str, str, str], bytes] = {}
        self._lock = threading.Lock()
        # the channels read in this thread's open ``transaction`` (by key id): a group-commit round
        # reads each signing channel once, not once per request (nothing in a round changes one)
        self._round = threading.local()
        # a (re)started serve looks a day back for confirmations it has not told yet: enough for a
        # restart, without flooding a channel that only now got a callback URL with its history
        self._confirmed_since = int(clock()) - CALLBACK_LOOKBACK_S

    def _key(self, ch: Channel) -> ChannelKey | None:
        if not ch.key_id or not ch.secret:
            return None  # a counter-only channel has no API access
        cache_key = (ch.id, ch.key_id, ch.secret)
        with self._lock:
            secret = self._secrets.get(cache_key)
        if secret is None:
            try:
                secret = payments.channel_secret(self._keys, ch)
            except (KeyStoreError, payments.PaymentError):
                return None
            with self._lock:
                if len(self._secrets) >= _SECRET_CACHE:
                    self._secrets.clear()
                self._secrets[cache_key] = secret
        return ChannelKey(ch.id, ch.kind, bool(ch.enabled), ch.key_id, secret, ch.callback_url, ch)

    def channel_for_key(self, key_id: str) -> ChannelKey | None:
        """The channel that owns this key id (its secret unsealed), or None; read once per
        ``transaction``."""
        seen: dict[str, ChannelKey | None] | None = getattr(self._round, "channels", None)
        if seen is not None and key_id in seen:
            return seen[key_id]
        try:
            found = self._key(self.store.channel_by_key(key_id))
        except NotFound:
            found = None
        if seen is not None:
            seen[key_id] = found
        return found

    def channel(self, channel_id: str) -> ChannelKey | None:
        """A channel by id, or None (for callbacks)."""
        try:
            return self._key(self.store.get_channel(channel_id))
        except NotFound:
            return None

    def confirmed_payments(self) -> Iterable[tuple[int, str, str, dict[str, Any]]]:
        """Payments confirmed on the meter since the last call, at channels with a callback URL."""
        now = int(self._clock())
        found = self.store.confirmed_for_callbacks(since=self._confirmed_since, limit=_SWEEP)
        # store times are whole seconds and a confirmation may commit a moment after its time: look a
        # little back each time (the store keeps one callback per state); a full batch resumes from
        # where it stopped instead
        self._confirmed_since = now - 2
        if len(found) == _SWEEP and found[-1].confirmed_at is not None:
            self._confirmed_since = min(self._confirmed_since, found[-1].confirmed_at)
        return [(p.id, p.channel_id, p.state, receipt(p)) for p in found]

    def use_nonce(self, channel_id: str, nonce: str, keep_until: int) -> bool:
        """Record a nonce; False if this channel used it before."""
        return self.store.use_nonce(channel_id, nonce, keep_until=keep_until)

    def use_nonces(self, nonces: Sequence[tuple[str, str, int]]) -> list[bool]:
        """Record many nonces, each (channel_id, nonce, keep_until), in one go; False for a replay."""
        return self.store.use_nonces(nonces)

    @contextmanager
    def transaction(self, *, row_locked: bool = False) -> Iterator[None]:
        """One store transaction for a whole request or group-commit round (its nonces, checks and
        writes); ``row_locked`` for one that only takes payments (see ``Store.atomic``)."""
        with self.store.atomic(row_locked=row_locked):
            if getattr(self._round, "channels", None) is not None:  # inside an outer one: its reads stand
                yield
                return
            self._round.channels = {}
            try:
                yield
            finally:
                self._round.channels = None

    def part(self) -> ContextManager[None]:
        """One request's part of a shared transaction (headend/api/commit.py): it fails alone."""
        return self.store.part()

    def audit_refusal(self, actor: str, target: str | None, detail: dict[str, Any],
                      nonce: tuple[str, str, int] | None = None) -> None:
        """One audit row for a refused request, and its nonce kept (a replay of it is refused too)."""
        with self.store.atomic():
            if nonce is not None:
                self.store.use_nonce(nonce[0], nonce[1], keep_until=nonce[2])
            self.store.log_action(actor, "api.refused", target, detail)

    def account(self, customer_no: str) -> dict[str, Any]:
        """The account as a paying customer sees it."""
        try:
            return account(payments.account_view(self.store, customer_no))
        except payments.PaymentError as exc:
            raise _problem(exc) from None

    def accept(self, *, channel_id: str, txn_id: str, amount_fen: int, paid_at: int, customer: str | None,
               meter: str | None, actor: str, tender: dict[str, Any] | None,
               channel: ChannelKey | None = None) -> tuple[dict[str, Any], bool]:
        """Take the payment once; (receipt, whether this request created it). ``channel``: the
        signing channel as this request's transaction read it."""
        [result] = self.accept_many([PaymentAsk(
            payments.PaymentRequest(channel_id, txn_id, amount_fen, paid_at, customer, meter, tender), actor,
            None if channel is None or channel.channel_id != channel_id else channel.record)])
        if isinstance(result, ApiProblem):
            raise result
        return result

    def accept_many(self, asks: Sequence[PaymentAsk]) -> list[tuple[dict[str, Any], bool] | ApiProblem]:
        """Take many payments at once, each exactly as ``accept`` takes one: for each, (receipt,
        whether this call made it) or the ApiProblem that refuses it (it wrote nothing; the API
        audits it). One pass of the payment rules per signing actor; a refused payment is left
        out and the pass done again for the others, so each keeps its own answer."""
        out: list[tuple[dict[str, Any], bool] | ApiProblem | None] = [None] * len(asks)
        by_actor: dict[str, list[int]] = {}
        for i, a in enumerate(asks):
            by_actor.setdefault(a.actor, []).append(i)
        for actor, pending in by_actor.items():
            records = {ch.id for ch in (asks[i].channel for i in pending) if ch is not None}
            record = asks[pending[0]].channel if len(records) == 1 else None
            while pending:
                try:
                    # one write transaction: whether a request created its payment is exact, even
                    # when duplicates arrive in parallel (the same txn_id twice here is one payment)
                    with self.store.part():
                        # a channel's accepted payment is its payment row (actor, channel, txn_id, times):
                        # no audit row besides it (~10% of a round's store work); refusals are audited
                        made = payments.accept_payments(self.store, [asks[i].request for i in pending], actor=actor,
                                                        channel=record, audit=False)
                except payments.PaymentError as exc:
                    if exc.index is None:  # not one request's fault: all of them hear it
                        for i in pending:
                            out[i] = _problem(exc)
                        break
                    out[pending.pop(exc.index)] = _problem(exc)
                    continue
                for i, (pay, created) in zip(pending, made):
                    out[i] = (receipt(pay), created)
                break
        return cast("list[tuple[dict[str, Any], bool] | ApiProblem]", out)  # every one answered above

    def get(self, payment_id: int) -> dict[str, Any] | None:
        """A payment by id, or None."""
        try:
            return receipt(payments.get_payment(self.store, payment_id))
        except (payments.PaymentError, NotFound):
            return None

    def find(self, channel_id: str, txn_id: str) -> dict[str, Any] | None:
        """A channel's payment by its transaction id, or None."""
        try:
            return receipt(payments.find_payment(self.store, channel_id, txn_id))
        except payments.PaymentError:
            return None

    def reverse(self, payment_id: int, *, channel_id: str, actor: str, reason: str) -> dict[str, Any]:
        """Void a payment (the service refuses once it reached the meter or its day is closed)."""
        try:
            with self.store.atomic():  # as in accept: the API's audit row stands for the refusal
                return receipt(payments.reverse_payment(self.store, payment_id, channel_id=channel_id, actor=actor,
                                                        reason=reason, rules=self._rules))
        except payments.PaymentError as exc:
            raise _problem(exc) from None

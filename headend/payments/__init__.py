"""Money in: payments through channels, to a meter or an account, exactly once.

The domain layer the payments API, the business-hall counter and the operator's
``headend recharge`` all go through. Every function takes an open ``Store`` and is one
transaction; nothing here does I/O besides the store.

    from headend.payments import accept_payment, PaymentError

    p = accept_payment(store, channel_id="icbc-online", txn_id="T20261205-0001", amount_fen=5000,
                       paid_at=1764900000, customer="000000000101", actor="channel:icbc-online")
    p.state        # "sent_to_meter" (local cost control) or "credited" (remote)

Functions
---------
``accept_payment(store, *, channel_id, txn_id, amount_fen, paid_at, customer=None, meter=None,
actor, tender=None, extra=None, shift_id=None) -> Payment``
    Idempotent on (channel_id, txn_id): the same request again returns the first payment and
    moves no money; the same id with a different customer, meter, amount_fen or paid_at raises
    ``duplicate_conflict`` naming the first differing field. ``customer`` or ``meter`` (or
    both, if they agree) names where the money goes. To a local-cost-control meter it queues
    exactly one recharge in the outbox (one purchase count per payment) and the payment is
    ``sent_to_meter``; it becomes ``confirmed_on_meter`` (with ``confirmed_at``) when the
    meter confirms, or ``credited`` (money back on the account) if the meter refuses. A
    payment above the meter's hoarding headroom is refused up front (``hoarding_headroom``,
    the headroom in the message; money already taken from the customer, a bank's return
    file, asks ``PaymentRequest(to_account_if_full=True)`` and is credited to the account
    instead). To a remote-cost-control account it is ``credited`` at once,
    and a cut account lifted above its close-permitted amount gets its restore queued.
``get_payment(store, payment_id, *, channel_id=None) -> Payment``
``find_payment(store, channel_id, txn_id) -> Payment``
    ``unknown_payment`` if there is none, or if it is another channel's (pass the caller's
    ``channel_id`` to get_payment: a channel never sees another channel's payments).
``reverse_payment(store, payment_id, *, channel_id, actor, reason, rules=None) -> Payment``
    Same business day only, until the money reached the meter (a recharge still queued is
    cancelled; one already sent or confirmed is ``not_reversible``). A reversed payment
    reversed again returns it unchanged. ``channel_id`` must be the payment's own channel
    (another channel's payment is ``unknown_payment``); None is for operators only. A cut
    account the payment lifted is decided again at once with the cycle's ``rules``: cut again
    while its restore is still queued (the restore cancelled), else tripped or held as the
    cycle would (``headend.costctl.act.redecide_after_reversal``).
``account_view(store, customer_no) -> dict``
    What a bank or app shows before the customer pays: customer, masked name, balance_fen,
    arrears_fen, state ("credit" / "alarm" / "cut"), minimum_fen, suggested_fen, max_fen
    (the hoarding headroom of a local meter, else None), mode.
``store.get_channel(channel_id) -> Channel``
    For authentication: ``kind``, ``enabled``, ``key_id``, ``secret`` (sealed: the key for
    HMAC-SHA256 is ``channel_secret(keys, channel)``, with the head-end's unlocked KeyStore),
    ``max_amount_fen``, ``callback_url``, ``fee_rule``, ``settle_days``.

Errors
------
One class, ``PaymentError(code, message, http_status, field=None)``; ``code`` is one of
``ERROR_CODES`` (unknown_channel, channel_disabled, unknown_customer, unknown_meter,
meter_required, meter_customer_mismatch, amount_invalid, amount_too_large, hoarding_headroom,
txn_id_invalid, paid_at_invalid, duplicate_conflict, unknown_payment, not_reversible,
day_closed, reason_required). A refused request moves no money.

``Payment`` (headend.store.models) has id, channel_id, txn_id, customer, meter, amount_fen,
fee_fen, state, paid_at, accepted_at, sent_at, confirmed_at, credited_at, reversed_at,
command_id, day, actor, tender, shift_id, and ``to_dict()``.
"""

from __future__ import annotations

from headend.payments.errors import ERROR_CODES, PaymentError
from headend.payments.service import (
    MAX_PAYMENT_FEN,
    OPERATOR_CHANNEL,
    PaymentRequest,
    accept_payment,
    accept_payments,
    account_view,
    channel_secret,
    ensure_operator_channel,
    find_payment,
    get_payment,
    headroom_fen,
    issue_credentials,
    mask_name,
    reverse_payment,
)
from headend.store.models import Payment

__all__ = [
    "ERROR_CODES",
    "MAX_PAYMENT_FEN",
    "OPERATOR_CHANNEL",
    "Payment",
    "PaymentError",
    "PaymentRequest",
    "accept_payment",
    "accept_payments",
    "account_view",
    "channel_secret",
    "ensure_operator_channel",
    "find_payment",
    "get_payment",
    "headroom_fen",
    "issue_credentials",
    "mask_name",
    "reverse_payment",
]

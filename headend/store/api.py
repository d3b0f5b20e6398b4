"""The head-end store: one `Store` over its parts, one module per concern.

    base.py      connection, clock, transactions          audit.py     who did what
    accounts.py  customer accounts                         ledger.py    money movements
    control.py   cost control's state per account         meters.py    the meter registry
    outbox.py    commands to meters                        readings.py  meter readings
    events.py    meter events                              notices.py   customer notices
    grid.py      feeders, areas and planned outages        reporting.py read-only aggregations for reports
    reconciliation.py  channel statements checked against the journal
    channels.py  payment channels                          payments.py  payments (state follows the outbox)
    operators.py operator accounts                         shifts.py    counter shifts
    api_state.py the payments API's nonces and result callbacks
    vouchers.py  keypad vouchers (a payment whose money the customer carries to the meter)
    bank.py      withholding batches and return files

Rules that make "nothing half-done" true:

* Every public method is one transaction. Callers that need several changes to land together
  wrap them in ``with store.atomic():`` (nested calls join the outer transaction).
* An operator action and its audit row are written in the same transaction (enqueue, meter add,
  limit changes, credits): either both exist or neither.
* A command's status only moves along COMMAND_TRANSITIONS, by compare-and-set on its current
  status: two workers cannot both send it, and a command is always in one of
  COMMAND_STATUSES - never lost. `requeue_stale` puts commands a crashed worker left "sent" back in line.
* Money changes go with a ledger row (balance_after) and an idempotency key, so a retried
  payment or a re-run rating cycle never counts twice.

Only portable SQL lives in these modules (see backend.py); SQLite specifics are in sqlite.py.
"""

from __future__ import annotations

from headend.store.api_state import ApiState
from headend.store.bank import BankBatches
from headend.store.channels import Channels
from headend.store.console import ConsoleQueries
from headend.store.control import CostControlState
from headend.store.events import Events
from headend.store.grid import GridStore
from headend.store.meters import METER_FILTER_FIELDS, Meters
from headend.store.notices import Notices
from headend.store.operators import Operators
from headend.store.payments import Payments
from headend.store.readings import Readings
from headend.store.reconciliation import Reconciliations
from headend.store.reporting import ReportQueries
from headend.store.shifts import Shifts
from headend.store.vouchers import Vouchers

__all__ = ["Store", "METER_FILTER_FIELDS"]


class Store(Vouchers, Meters, ApiState, Payments, CostControlState, Channels, Operators, Shifts, Readings, Events,
            Notices, GridStore, ReportQueries, Reconciliations, BankBatches, ConsoleQueries):
    """The head-end's persistent state. Open with `headend.store.open_store(path)`."""

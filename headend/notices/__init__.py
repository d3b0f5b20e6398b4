"""Customer notices: templates, gateways, the sender inside `headend serve`, and the events that call for one.

    from headend.notices import notify_event
    notify_event(store, "000000000042", "payment_received",
                 {"amount_fen": 5000, "balance_fen": 7350, "channel": "counter"}, "pay:counter:T123")

See README.md beside this file for the gateway contract a real SMS provider's adapter follows.
"""

from headend.notices.events import notify_event, notify_events, notify_payments, watch_local
from headend.notices.sender import NoticeSender, PassReport, Policy
from headend.notices.templates import Catalog, TemplateError, load_templates

__all__ = ["notify_event", "notify_events", "notify_payments", "watch_local", "NoticeSender", "PassReport", "Policy",
           "Catalog", "TemplateError", "load_templates"]

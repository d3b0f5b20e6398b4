"""Every `headend` command: its module and one-line help, so that `headend --help` lists them
without importing them. Written by `python -m headend.cli._index`; a test checks it is current.
"""

COMMANDS: dict[str, tuple[str, str | None]] = {
    'bank': ('bank', 'bank batch withholding: agreements, debit-request files, return files'),
    'card': ('card', 'prepaid recharge cards: serial + PIN, printed in batches, redeemed once online'),
    'channel': ('channels', 'payment channels: kind, API credentials, fees, settlement, enabled'),
    'costctl': ('costctl', 'remote cost control: rate readings, debit, notices, cut and restore'),
    'counter': ('counter', 'business-hall counter: shift, payments by tender, receipts, voids, close'),
    'decode': ('decode', 'explain DL/T 645 frames given as hex'),
    'grid': ('grid', 'grid topology: which feeder and transformer area each meter is under'),
    'keys': ('keys', 'the encrypted master key'),
    'ledger': ('ledger', 'the money journal: check it, show it, correct an account'),
    'close-day': ('ledger', 'freeze a business day: later movements go to the next open day'),
    'commands': ('log', "the command outbox with each command's status; cancel or retry one"),
    'events': ('log', 'events at one meter, newest first'),
    'audit': ('log', 'the audit log: who did what, when'),
    'meter': ('meters', 'register and inspect meters'),
    'customer': ('meters', 'customer accounts and their limits'),
    'notices': ('notices', 'customer notices: list, show, resend, send now, flagged accounts'),
    'operator': ('operators', 'operator accounts and roles (admin, operator, cashier, auditor)'),
    'read': ('ops', 'read data items from meters (default: energy, money, status word 3)'),
    'recharge': ('ops', 'take a payment for a meter (operator channel): exactly one credit however often it is retried'),
    'trip': ('ops', 'cut supply (refused by meters in power hold)'),
    'close': ('ops', 'allow the customer to restore supply (button), or --direct close'),
    'hold': ('ops', 'power hold: the meter refuses every trip while on'),
    'alarm': ('ops', "customer alarm on the meter's display/buzzer"),
    'sync-time': ('ops', "set meter clocks to the head-end's (broadcast for small offsets)"),
    'limits': ('ops', 'meter money limits'),
    'tariff': ('ops', 'meter tariff tables'),
    'serve': ('ops', 'run the comms front-end and work the command outbox until stopped'),
    'outage': ('outage', 'planned outages: plan, change, cancel, list, the hotline announcement'),
    'payment': ('payments', 'payments through every channel: list, show, reverse'),
    'rate': ('rate', "re-rate remote accounts' readings for a period and show (or --apply) the difference to what was charged"),
    'reconcile': ('reconcile', "check a channel's daily statement against the journal (对账)"),
    'report': ('report', 'collection rate, channels, speed, accounts and operations reports'),
    'store': ('store', 'the database itself: move a head-end to PostgreSQL'),
    'voucher': ('voucher', 'recharge vouchers: 20-digit tokens the customer types on the meter'),
}

if __name__ == "__main__":
    from headend.cli.main import write_index

    write_index()

"""The prepaid645 head-end: comms front-end, accounts and ledger, tariff core, cost control, CLI."""

# First, before any `protocol` import: an installed wheel keeps protocol/ under prepaid645/
import prepaid645  # noqa: F401

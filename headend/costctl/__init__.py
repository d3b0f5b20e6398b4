"""Remote cost control: rate readings, debit accounts, then warn, cut and restore."""

"""Recharge vouchers: 20-digit keypad tokens (protocol/TOKENS.md) vended through the voucher channel."""

"""Bank batch withholding (银行批扣): agreements, the day's debit-request file, return files.

    agreements.py  the agreement on a customer's account (account number sealed, shown masked)
    layout.py      bank file profiles (TOML, fixed-width or CSV, any encoding incl. GBK) and their codec
    batch.py       who is due on a day and the batch file, exported once and kept
    returns.py     return files applied once, all rows or none, as payments and notices

Profiles shipped: profiles/icbc.toml (fixed-width, GBK) and profiles/ccb.toml (CSV, UTF-8).
"""

from headend.bank.agreements import RULES, account_number, add_agreement, agreement_of, mask_account, remove_agreement
from headend.bank.batch import bank_channel_id, due_rows, export_batch
from headend.bank.layout import Profile, ProfileError, known_profiles, load_profile, read_file, write_file
from headend.bank.returns import BankFileError, ImportResult, import_return, pick_profile

__all__ = ["RULES", "account_number", "add_agreement", "agreement_of", "mask_account", "remove_agreement",
           "bank_channel_id", "due_rows", "export_batch", "Profile", "ProfileError", "known_profiles",
           "load_profile", "read_file", "write_file", "BankFileError", "ImportResult", "import_return",
           "pick_profile"]

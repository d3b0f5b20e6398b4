"""SQLite backend: the only module that contains SQLite-specific SQL.

One database file in WAL mode, so `headend serve` writes while CLI processes read. Write
transactions start with BEGIN IMMEDIATE: the write lock is taken up front, so two processes
never both read then fail to upgrade (SQLITE_BUSY mid-transaction); busy_timeout makes the
loser wait instead of failing. One connection per Store, guarded by a re-entrant lock so the
store may be shared between asyncio code and worker threads (`asyncio.to_thread`).

Migrations are numbered; each runs once in the same transaction that records its number, so a
crash leaves the schema at the old or the new version, and two processes starting together
apply each step once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import warnings
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Sequence

from headend.store.backend import Fetched, values_statements
from headend.store.models import Conflict, StoreError

__all__ = ["SQLiteBackend", "MIGRATIONS"]

_TS = "INTEGER NOT NULL"

# (version, statements). Never edit a released step: add a new one.
MIGRATIONS: list[tuple[int, list[str | Callable[[Any], None]]]] = [
    (
        1,
        [
            f"""CREATE TABLE accounts (
                customer TEXT PRIMARY KEY CHECK (length(customer) = 12),
                name TEXT NOT NULL DEFAULT '',
                phone TEXT NOT NULL DEFAULT '',
                balance_fen INTEGER NOT NULL DEFAULT 0,
                rem INTEGER NOT NULL DEFAULT 0 CHECK (rem >= 0 AND rem < 100000),
                ladder_wh INTEGER NOT NULL DEFAULT 0 CHECK (ladder_wh >= 0),
                alarm1_fen INTEGER NOT NULL DEFAULT 0,
                alarm2_fen INTEGER NOT NULL DEFAULT 0,
                overdraft_fen INTEGER NOT NULL DEFAULT 0 CHECK (overdraft_fen >= 0),
                close_ok_fen INTEGER NOT NULL DEFAULT 0,
                protected INTEGER NOT NULL DEFAULT 0 CHECK (protected IN (0, 1)),
                restore_policy TEXT NOT NULL DEFAULT 'close_permitted'
                    CHECK (restore_policy IN ('close_permitted', 'direct')),
                tariff TEXT,
                version INTEGER NOT NULL DEFAULT 0,
                created_at {_TS},
                updated_at {_TS}
            )""",
            f"""CREATE TABLE meters (
                address TEXT PRIMARY KEY CHECK (length(address) = 12),
                link TEXT NOT NULL,
                customer TEXT NOT NULL REFERENCES accounts(customer),
                mode TEXT NOT NULL CHECK (mode IN ('local', 'remote')),
                krn INTEGER NOT NULL DEFAULT 0 CHECK (krn BETWEEN 0 AND 255),
                purchase_count INTEGER NOT NULL DEFAULT 0 CHECK (purchase_count >= 0),
                protected INTEGER NOT NULL DEFAULT 0 CHECK (protected IN (0, 1)),
                meter_number TEXT NOT NULL,
                balance_fen INTEGER,
                relay TEXT,
                last_seen INTEGER,
                created_at {_TS},
                updated_at {_TS}
            )""",
            "CREATE INDEX meters_link ON meters(link)",
            "CREATE INDEX meters_customer ON meters(customer)",
            f"""CREATE TABLE commands (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                meter TEXT NOT NULL REFERENCES meters(address),
                kind TEXT NOT NULL,
                params TEXT,
                status TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'confirmed', 'failed')),
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT,
                reply TEXT,
                created_at {_TS},
                updated_at {_TS},
                idem_key TEXT UNIQUE,
                actor TEXT NOT NULL,
                not_before INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX commands_status ON commands(status, id)",
            "CREATE INDEX commands_meter ON commands(meter, status, id)",
            f"""CREATE TABLE readings (
                meter TEXT NOT NULL,
                di TEXT NOT NULL,
                read_at INTEGER NOT NULL,
                value INTEGER,
                text TEXT,
                stored_at {_TS},
                PRIMARY KEY (meter, di, read_at)
            ) WITHOUT ROWID""",
            "CREATE INDEX readings_di_time ON readings(di, read_at)",
            f"""CREATE TABLE events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                meter TEXT NOT NULL,
                at {_TS},
                kind TEXT NOT NULL,
                detail TEXT,
                source TEXT NOT NULL DEFAULT 'headend',
                dedup TEXT,
                UNIQUE (meter, dedup)
            )""",
            "CREATE INDEX events_meter ON events(meter, at)",
            f"""CREATE TABLE audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at {_TS},
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT,
                detail TEXT
            )""",
            "CREATE INDEX audit_target ON audit(target, id)",
            f"""CREATE TABLE notifications (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                customer TEXT NOT NULL,
                channel TEXT NOT NULL,
                kind TEXT NOT NULL,
                message TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'failed')),
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT,
                created_at {_TS},
                updated_at {_TS},
                idem_key TEXT UNIQUE,
                detail TEXT
            )""",
            "CREATE INDEX notifications_status ON notifications(status, id)",
            f"""CREATE TABLE ledger (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                customer TEXT NOT NULL REFERENCES accounts(customer),
                at {_TS},
                kind TEXT NOT NULL,
                amount_fen INTEGER NOT NULL,
                balance_after INTEGER NOT NULL,
                idem_key TEXT UNIQUE,
                actor TEXT NOT NULL,
                detail TEXT
            )""",
            "CREATE INDEX ledger_customer ON ledger(customer, id)",
            f"""CREATE TABLE ledger_batches (
                key TEXT PRIMARY KEY,
                at {_TS},
                rows INTEGER NOT NULL,
                actor TEXT NOT NULL
            )""",
        ],
    ),
    (
        2,
        [
            # Remote cost control keeps, per account, where rating stopped and what it last decided,
            # so a restarted loop neither re-bills an interval nor repeats a notice or a cut.
            "ALTER TABLE accounts ADD COLUMN rated_until INTEGER",
            "ALTER TABLE accounts ADD COLUMN notice_level INTEGER NOT NULL DEFAULT 0"
            " CHECK (notice_level BETWEEN 0 AND 3)",
            "ALTER TABLE accounts ADD COLUMN notice_at INTEGER",
            "ALTER TABLE accounts ADD COLUMN supply TEXT NOT NULL DEFAULT 'on'"
            " CHECK (supply IN ('on', 'cut', 'close_permitted'))",
            "ALTER TABLE accounts ADD COLUMN supply_at INTEGER",
            "CREATE INDEX meters_mode ON meters(mode)",
        ],
    ),
    (
        3,
        [
            # A rating charge's ledger row keeps the sub-fen remainder after it and the end of the
            # last interval it rated, so re-rating a window can start from the real remainder.
            "ALTER TABLE ledger ADD COLUMN rem_after INTEGER",
            "ALTER TABLE ledger ADD COLUMN rated_to INTEGER",
        ],
    ),
    (
        4,
        [
            # Notices are sent by a leased claim (one sender per notice), not before a time (quiet
            # hours, rate limit, backoff, outage lead time), most important first; each phone's
            # delivery keeps the gateway's idempotency key, the provider's id and the receipt.
            "ALTER TABLE notifications ADD COLUMN not_before INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE notifications ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE notifications ADD COLUMN lease_owner TEXT",
            "ALTER TABLE notifications ADD COLUMN lease_until INTEGER",
            "ALTER TABLE notifications ADD COLUMN sent_at INTEGER",
            "ALTER TABLE notifications ADD COLUMN sent_text TEXT",
            "CREATE INDEX notifications_due ON notifications(status, priority, id)",
            "CREATE INDEX notifications_customer ON notifications(customer, sent_at)",
            f"""CREATE TABLE notice_deliveries (
                notice_id INTEGER NOT NULL REFERENCES notifications(id),
                phone TEXT NOT NULL,
                key TEXT NOT NULL UNIQUE,
                provider TEXT,
                provider_id TEXT,
                state TEXT NOT NULL CHECK (state IN ('accepted', 'delivered', 'undelivered', 'bad_number',
                                                     'rejected')),
                error TEXT,
                sent_at {_TS},
                receipt_at INTEGER,
                PRIMARY KEY (notice_id, phone)
            )""",
            "CREATE INDEX notice_deliveries_provider ON notice_deliveries(provider_id)",
            f"""CREATE TABLE contact_flags (
                customer TEXT PRIMARY KEY,
                phone TEXT NOT NULL DEFAULT '',
                reason TEXT NOT NULL,
                at {_TS}
            )""",
            f"""CREATE TABLE notice_watch (
                meter TEXT PRIMARY KEY,
                level INTEGER NOT NULL DEFAULT 0,
                relay TEXT,
                seen_at {_TS}
            )""",
            "CREATE TABLE notice_marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            # Grid topology: each meter under one transformer area on one feeder; planned outages
            # with the customers they reach (fixed when planned, so changes reach the same people).
            """CREATE TABLE grid_meters (
                meter TEXT PRIMARY KEY REFERENCES meters(address),
                feeder TEXT NOT NULL,
                area TEXT NOT NULL,
                important INTEGER NOT NULL DEFAULT 0 CHECK (important IN (0, 1))
            )""",
            "CREATE INDEX grid_meters_feeder ON grid_meters(feeder, area)",
            "CREATE INDEX grid_meters_area ON grid_meters(area)",
            f"""CREATE TABLE outages (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                feeder TEXT,
                area TEXT,
                start_at {_TS},
                end_at {_TS},
                reason TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('planned', 'cancelled')),
                version INTEGER NOT NULL DEFAULT 1,
                actor TEXT NOT NULL,
                created_at {_TS},
                updated_at {_TS},
                synced_at INTEGER,
                CHECK (end_at > start_at),
                CHECK ((feeder IS NULL) <> (area IS NULL))
            )""",
            """CREATE TABLE outage_customers (
                outage INTEGER NOT NULL REFERENCES outages(id),
                customer TEXT NOT NULL,
                important INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (outage, customer)
            )""",
            """CREATE TABLE outage_meters (
                outage INTEGER NOT NULL REFERENCES outages(id),
                meter TEXT NOT NULL,
                PRIMARY KEY (outage, meter)
            )""",
        ],
    ),
    (
        5,
        [
            # Money in: customers as operators know them, the journal's references and business
            # day, closed days, payment channels, payments, operators and counter shifts.
            "ALTER TABLE accounts ADD COLUMN phones TEXT",
            "ALTER TABLE accounts ADD COLUMN address TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE accounts ADD COLUMN district TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE accounts ADD COLUMN segment TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE accounts ADD COLUMN language TEXT NOT NULL DEFAULT ''",   # '': the notices' default
            "ALTER TABLE accounts ADD COLUMN important INTEGER NOT NULL DEFAULT 0 CHECK (important IN (0, 1))",
            "ALTER TABLE accounts ADD COLUMN withholding TEXT",
            "ALTER TABLE meters ADD COLUMN hoarding_fen INTEGER",
            "ALTER TABLE ledger ADD COLUMN meter TEXT",
            "ALTER TABLE ledger ADD COLUMN channel TEXT",
            "ALTER TABLE ledger ADD COLUMN txn_id TEXT",
            "ALTER TABLE ledger ADD COLUMN payment_id INTEGER",
            "ALTER TABLE ledger ADD COLUMN ref TEXT",
            "ALTER TABLE ledger ADD COLUMN day TEXT",
            "ALTER TABLE ledger ADD COLUMN meter_fen INTEGER NOT NULL DEFAULT 0",
            # rows written before business days existed belong to the China-time day they were booked
            "UPDATE ledger SET day = strftime('%Y-%m-%d', at + 28800, 'unixepoch') WHERE day IS NULL",
            "CREATE INDEX ledger_day ON ledger(day)",
            "CREATE INDEX ledger_payment ON ledger(payment_id)",
            f"""CREATE TABLE ledger_days (
                day TEXT PRIMARY KEY,
                closed_at {_TS},
                actor TEXT NOT NULL,
                detail TEXT
            )""",
            f"""CREATE TABLE channels (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                name TEXT NOT NULL DEFAULT '',
                key_id TEXT UNIQUE,
                secret TEXT,
                fee_rule TEXT NOT NULL DEFAULT 'none',
                settle_days INTEGER NOT NULL DEFAULT 0 CHECK (settle_days >= 0),
                max_amount_fen INTEGER,
                callback_url TEXT,
                enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
                created_at {_TS},
                updated_at {_TS}
            )""",
            f"""CREATE TABLE payments (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                channel TEXT NOT NULL REFERENCES channels(id),
                txn_id TEXT NOT NULL,
                customer TEXT NOT NULL REFERENCES accounts(customer),
                meter TEXT,
                amount_fen INTEGER NOT NULL CHECK (amount_fen > 0),
                fee_fen INTEGER NOT NULL DEFAULT 0,
                state TEXT NOT NULL CHECK (state IN ('accepted', 'sent_to_meter', 'confirmed_on_meter', 'credited',
                                                     'reversed')),
                paid_at {_TS},
                accepted_at {_TS},
                sent_at INTEGER,
                confirmed_at INTEGER,
                credited_at INTEGER,
                reversed_at INTEGER,
                command_id INTEGER,
                day TEXT NOT NULL,
                actor TEXT NOT NULL,
                tender TEXT,
                shift_id INTEGER,
                request TEXT NOT NULL,
                extra TEXT,
                note TEXT,
                UNIQUE (channel, txn_id)
            )""",
            "CREATE INDEX payments_command ON payments(command_id)",
            "CREATE INDEX payments_customer ON payments(customer, id)",
            "CREATE INDEX payments_shift ON payments(shift_id)",
            f"""CREATE TABLE operators (
                name TEXT PRIMARY KEY,
                role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'cashier', 'auditor')),
                full_name TEXT NOT NULL DEFAULT '',
                pw_hash TEXT NOT NULL,
                enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
                created_at {_TS},
                updated_at {_TS}
            )""",
            f"""CREATE TABLE shifts (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                cashier TEXT NOT NULL,
                channel TEXT NOT NULL REFERENCES channels(id),
                state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
                opened_at {_TS},
                closed_at INTEGER,
                expected TEXT,
                counted TEXT,
                differences TEXT
            )""",
            "CREATE UNIQUE INDEX shifts_one_open ON shifts(cashier) WHERE state = 'open'",
        ],
    ),
    (
        6,
        [
            # Commands gain "unresolved" (a recharge that may have reached the meter, settled by
            # its purchase count), "rejected" (can never succeed) and "cancelled" (by an operator).
            # SQLite cannot change a CHECK in place: the table is rebuilt with its rows and indexes.
            f"""CREATE TABLE commands_v4 (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                meter TEXT NOT NULL REFERENCES meters(address),
                kind TEXT NOT NULL,
                params TEXT,
                status TEXT NOT NULL CHECK (status IN
                    ('queued', 'sent', 'unresolved', 'confirmed', 'failed', 'rejected', 'cancelled')),
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT,
                reply TEXT,
                created_at {_TS},
                updated_at {_TS},
                idem_key TEXT UNIQUE,
                actor TEXT NOT NULL,
                not_before INTEGER NOT NULL DEFAULT 0
            )""",
            "INSERT INTO commands_v4 SELECT id, meter, kind, params, status, attempts, last_error, reply, created_at,"
            " updated_at, idem_key, actor, not_before FROM commands",
            "DROP TABLE commands",
            "ALTER TABLE commands_v4 RENAME TO commands",
            "CREATE INDEX commands_status ON commands(status, id)",
            "CREATE INDEX commands_meter ON commands(meter, status, id)",
            # Who works the outbox: one row while a `headend serve` runs, its heartbeat renewed
            # every few seconds, so a second serve (through any path, or from another host on a
            # shared file) is refused and the CLI knows whether anything is working the queue.
            f"""CREATE TABLE serve_lease (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                pid INTEGER NOT NULL,
                host TEXT NOT NULL,
                path TEXT NOT NULL,
                started_at {_TS},
                beat_at {_TS}
            )""",
        ],
    ),
    (
        7,
        [
            # Channel statements checked against the journal: the last run per channel and day,
            # and its discrepancies with who resolved each and why.
            f"""CREATE TABLE reconciliations (
                channel TEXT NOT NULL REFERENCES channels(id),
                day TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('open', 'reconciled')),
                counts TEXT NOT NULL,
                totals TEXT NOT NULL,
                file_sha256 TEXT NOT NULL,
                at {_TS},
                actor TEXT NOT NULL,
                PRIMARY KEY (channel, day)
            )""",
            """CREATE TABLE reconcile_items (
                channel TEXT NOT NULL,
                day TEXT NOT NULL,
                txn_id TEXT NOT NULL,
                class TEXT NOT NULL,
                detail TEXT,
                resolved_at INTEGER,
                resolved_by TEXT,
                reason TEXT,
                ledger_id INTEGER,
                PRIMARY KEY (channel, day, txn_id)
            )""",
            "CREATE INDEX payments_channel_day ON payments(channel, day)",
        ],
    ),
    (
        8,
        [
            # A closed day's figures per district and segment, kept at the close so reports over
            # a year of a million accounts read a row per day, not the journal.
            f"""CREATE TABLE day_figures (
                day TEXT NOT NULL,
                district TEXT NOT NULL,
                segment TEXT NOT NULL,
                due_fen INTEGER NOT NULL,
                paid_fen INTEGER NOT NULL,
                advance_fen INTEGER NOT NULL,
                arrears_fen INTEGER NOT NULL,
                arrears_accounts INTEGER NOT NULL,
                at {_TS},
                PRIMARY KEY (day, district, segment)
            )""",
        ],
    ),
    (
        9,
        [
            # The payments API: nonces of signed requests (a replay is refused even after a restart
            # or by a second process) and result callbacks to channels, one per payment and state.
            """CREATE TABLE api_nonces (
                channel_id TEXT NOT NULL,
                nonce TEXT NOT NULL,
                keep_until INTEGER NOT NULL,
                PRIMARY KEY (channel_id, nonce)
            ) WITHOUT ROWID""",
            "CREATE INDEX api_nonces_expiry ON api_nonces(keep_until)",
            f"""CREATE TABLE api_callbacks (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                payment_id INTEGER NOT NULL,
                channel_id TEXT NOT NULL,
                state TEXT NOT NULL,
                url TEXT NOT NULL,
                body TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
                attempts INTEGER NOT NULL DEFAULT 0,
                next_at INTEGER NOT NULL,
                last_error TEXT,
                created_at {_TS},
                updated_at {_TS},
                delivered_at INTEGER,
                UNIQUE (payment_id, state)
            )""",
            "CREATE INDEX api_callbacks_due ON api_callbacks(status, next_at)",
            # the callback sweep looks for payments confirmed since its last look
            "CREATE INDEX payments_confirmed ON payments(confirmed_at) WHERE confirmed_at IS NOT NULL",
        ],
    ),
    (
        10,
        [
            # Keypad vouchers: one per token; (meter, tid) is the token's identity on its meter.
            # The digits are not stored: the fields and the meter's key make them again.
            f"""CREATE TABLE vouchers (
                id INTEGER PRIMARY KEY,
                meter TEXT NOT NULL REFERENCES meters(address),
                tid INTEGER NOT NULL,
                customer TEXT NOT NULL,
                payment_id INTEGER NOT NULL REFERENCES payments(id),
                amount_fen INTEGER NOT NULL CHECK (amount_fen > 0),
                field INTEGER NOT NULL,
                rnd INTEGER NOT NULL,
                krn INTEGER NOT NULL,
                tkrn INTEGER NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('issued', 'used')),
                issued_at {_TS},
                used_at INTEGER,
                actor TEXT NOT NULL,
                UNIQUE (meter, tid)
            )""",
        ],
    ),
    (
        11,
        [
            # Bank withholding: a bank's batch of a day is exported once (the file kept, so a
            # second export prints the same bytes); each row's result comes back in a return
            # file, applied once (the file's digest is kept).
            f"""CREATE TABLE bank_batches (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                bank TEXT NOT NULL,
                day TEXT NOT NULL,
                rows INTEGER NOT NULL,
                total_fen INTEGER NOT NULL,
                content BLOB NOT NULL,
                created_at {_TS},
                actor TEXT NOT NULL,
                UNIQUE (bank, day)
            )""",
            """CREATE TABLE bank_batch_rows (
                batch_id INTEGER NOT NULL REFERENCES bank_batches(id),
                seq INTEGER NOT NULL,
                customer TEXT NOT NULL,
                amount_fen INTEGER NOT NULL CHECK (amount_fen > 0),
                result TEXT,
                debited_fen INTEGER,
                serial TEXT,
                payment_id INTEGER,
                PRIMARY KEY (batch_id, seq)
            ) WITHOUT ROWID""",
            f"""CREATE TABLE bank_returns (
                digest TEXT PRIMARY KEY,
                batch_id INTEGER NOT NULL UNIQUE REFERENCES bank_batches(id),
                imported_at {_TS},
                actor TEXT NOT NULL,
                summary TEXT NOT NULL
            )""",
        ],
    ),
    (
        12,
        [
            # Token-key changes of keypad vouchers: each one moves a meter's vouchers to a new
            # token-key revision (derived from the meter key at krn); confirmed when the meter
            # reports the key change among its token records.
            f"""CREATE TABLE voucher_keys (
                meter TEXT NOT NULL REFERENCES meters(address),
                tkrn INTEGER NOT NULL CHECK (tkrn BETWEEN 1 AND 255),
                krn INTEGER NOT NULL,
                issued_at {_TS},
                confirmed_at INTEGER,
                actor TEXT NOT NULL,
                PRIMARY KEY (meter, tkrn)
            ) WITHOUT ROWID""",
            # Prepaid recharge cards: printed in batches (serial + PIN, the PIN sealed under the
            # master key), activated when sold, redeemed once online as a payment, or voided or
            # expired. bad_pins counts wrong PINs: at 5 the card is refused until an operator acts.
            f"""CREATE TABLE card_batches (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                face_fen INTEGER NOT NULL CHECK (face_fen > 0),
                count INTEGER NOT NULL,
                expires_at {_TS},
                created_at {_TS},
                actor TEXT NOT NULL,
                note TEXT NOT NULL DEFAULT ''
            )""",
            """CREATE TABLE recharge_cards (
                serial TEXT PRIMARY KEY,
                batch_id INTEGER NOT NULL REFERENCES card_batches(id),
                pin TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('issued', 'active', 'redeemed', 'expired', 'voided')),
                bad_pins INTEGER NOT NULL DEFAULT 0,
                changed_at INTEGER,
                payment_id INTEGER REFERENCES payments(id),
                redeemed_by TEXT
            ) WITHOUT ROWID""",
            "CREATE INDEX recharge_cards_batch ON recharge_cards (batch_id, state)",
        ],
    ),
    (
        13,
        [
            # A closed day's payments kept at its close for the channels and speed reports (a
            # year of a million accounts is millions of payments): counts per channel, local hour
            # paid, district and segment over every payment of the day whatever its state (a later
            # reversal is taken off when read), latencies to the meter as (seconds, how many),
            # and the payments that could still reach their meter, which are looked at again.
            """CREATE TABLE day_payments (
                day TEXT NOT NULL,
                channel TEXT NOT NULL,
                hour INTEGER NOT NULL,
                district TEXT NOT NULL,
                segment TEXT NOT NULL,
                count INTEGER NOT NULL,
                amount_fen INTEGER NOT NULL,
                fee_fen INTEGER NOT NULL,
                PRIMARY KEY (day, channel, hour, district, segment)
            )""",
            """CREATE TABLE day_latencies (
                day TEXT NOT NULL,
                channel TEXT NOT NULL,
                district TEXT NOT NULL,
                segment TEXT NOT NULL,
                seconds INTEGER NOT NULL,
                count INTEGER NOT NULL,
                PRIMARY KEY (day, channel, district, segment, seconds)
            )""",
            """CREATE TABLE day_unconfirmed (
                day TEXT NOT NULL,
                payment_id INTEGER NOT NULL,
                PRIMARY KEY (day, payment_id)
            )""",
            # which days were kept, and the local time their hours were counted in
            f"""CREATE TABLE day_payments_kept (
                day TEXT PRIMARY KEY,
                utc_offset_s INTEGER NOT NULL,
                at {_TS}
            )""",
            "CREATE INDEX payments_day ON payments(day)",
            "CREATE INDEX payments_reversed ON payments(day) WHERE state = 'reversed'",
            # when each balance below zero went below zero (the arrears' age), kept with every
            # change of a balance from now on, found in the journal for the accounts owing today
            "ALTER TABLE accounts ADD COLUMN owing_since INTEGER",
            """UPDATE accounts SET owing_since = (SELECT MIN(l.at) FROM ledger l WHERE l.customer = accounts.customer
                 AND l.id > COALESCE((SELECT MAX(n.id) FROM ledger n WHERE n.customer = accounts.customer
                                      AND n.balance_after >= 0), 0))
               WHERE balance_fen < 0""",
            # the speed report goes from the confirmed closes (restores) to the payments before them
            "CREATE INDEX commands_kind ON commands(kind, status, created_at)",
        ],
    ),
    (
        14,
        [
            # Several `headend serve` processes on one PostgreSQL database: each holds its own lease
            # row (an SQLite file still has one serve, its file lock decides), and a claimed command
            # names the serve that claimed it, so a serve starting (or noticing a dead one) puts back
            # in line only the commands of serves whose lease lapsed, never a live one's.
            f"""CREATE TABLE serve_leases (
                owner TEXT PRIMARY KEY,
                pid INTEGER NOT NULL,
                host TEXT NOT NULL,
                path TEXT NOT NULL,
                started_at {_TS},
                beat_at {_TS}
            )""",
            "INSERT INTO serve_leases SELECT host || ' pid ' || pid, pid, host, path, started_at, beat_at FROM serve_lease",
            "DROP TABLE serve_lease",
            "ALTER TABLE commands ADD COLUMN claimed_by TEXT",
        ],
    ),
    (
        15,
        [
            # A cost-control cycle appends a charge row per account and never a payment's: only
            # the rows that name a payment are indexed by it (queries ask payment_id = ?, which
            # the partial index answers), so a million charges add no million index entries.
            "DROP INDEX ledger_payment",
            "CREATE INDEX ledger_payment ON ledger(payment_id) WHERE payment_id IS NOT NULL",
            # A cycle reads every meter's register readings by DI and time: with the meter and
            # the value in the index it reads the index alone, not the table once per reading.
            "DROP INDEX readings_di_time",
            "CREATE INDEX readings_di_time ON readings(di, read_at, meter, value)",
        ],
    ),
    (
        16,
        [
            # Links partitioned between the serves on one PostgreSQL database (headend/frontends.py):
            # each lease row records the live set its serve works by, its own lease time (so every
            # reader judges it alike), and the last cost-control boundary it collected; each meter
            # row the slot of its link, computed once here and on every insert or change of link.
            "ALTER TABLE serve_leases ADD COLUMN ttl_s INTEGER NOT NULL DEFAULT 15",
            "ALTER TABLE serve_leases ADD COLUMN view TEXT",
            "ALTER TABLE serve_leases ADD COLUMN collected_at INTEGER",
            "ALTER TABLE meters ADD COLUMN link_slot INTEGER",
            lambda tx: _fill_link_slots(tx),
        ],
    ),
    (
        17,
        [
            # A notice sender claims the due notices highest priority first, then oldest: in that
            # order in the index, a claim reads its batch off the front of the queue instead of
            # sorting every queued notice (on PostgreSQL ~10 ms a claim with a few thousand queued).
            "DROP INDEX notifications_due",
            "CREATE INDEX notifications_due ON notifications(status, priority DESC, id)",
        ],
    ),
    (
        18,
        [
            # A payment to a local meter checks the money already on its way there (its hoarding
            # headroom): the payments still sent_to_meter, by meter. Without an index that read
            # scanned every payment ever taken, in every round that held such a payment (~1 ms at
            # 25,000 payments); a payment leaves this index when its recharge ends.
            "CREATE INDEX payments_in_flight ON payments(meter) WHERE state = 'sent_to_meter'",
        ],
    ),
    (
        19,
        [
            # The notice sender passes over the payments that are vouchers (each payment it reads
            # asks whether a voucher names it): by the voucher's payment, not a scan of them all.
            "CREATE INDEX vouchers_payment ON vouchers(payment_id)",
        ],
    ),
    (
        20,
        [
            # The payments API's nonces: one row per round of requests, in insertion order, checked
            # in memory (headend/store/api_state.py), instead of a row per nonce under a unique key,
            # whose random keys put a WAL page per nonce into every round's commit.
            """CREATE TABLE api_nonce_rounds (
                id INTEGER PRIMARY KEY,
                keep_until INTEGER NOT NULL,
                nonces TEXT NOT NULL
            )""",
            lambda tx: _nonces_into_rounds(tx),
            "DROP TABLE api_nonces",
        ],
    ),
]


def _nonces_into_rounds(tx: Any) -> None:
    # the nonces still kept carry over: a request signed before the upgrade stays refused after it
    rows = tx.all("SELECT channel_id, nonce, keep_until FROM api_nonces ORDER BY keep_until")
    for lo in range(0, len(rows), 1000):
        part = rows[lo:lo + 1000]
        tx.execute("INSERT INTO api_nonce_rounds (keep_until, nonces) VALUES (?, ?)",
                   (max(int(r[2]) for r in part), "\n".join(f"{r[0]}\t{r[1]}" for r in part)))


def _fill_link_slots(tx: Any) -> None:
    from headend.frontends import slot_of

    links = [r[0] for r in tx.all("SELECT DISTINCT link FROM meters")]
    tx.executemany("UPDATE meters SET link_slot = ? WHERE link = ?", [(slot_of(x), x) for x in links])


def apply_migrations(tx: Any, location: str, upto: int | None = None,
                     render: Callable[[str], str] = str) -> int:
    """Apply in ``tx`` every step of MIGRATIONS not yet applied (up to ``upto``), each statement
    as ``render`` gives it for the engine (SQLite runs them as written); return the version.
    A database newer than MIGRATIONS is refused rather than used."""
    tx.execute(render("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                      " applied_at INTEGER NOT NULL)"))
    row = tx.one("SELECT MAX(version) FROM schema_version")
    current = int(row[0]) if row and row[0] is not None else 0
    newest = MIGRATIONS[-1][0]
    if current > newest:
        raise StoreError(
            f"database {location} has schema version {current}, newer than this program"
            f" knows ({newest}): upgrade prepaid645 before using it"
        )
    for version, statements in MIGRATIONS:
        if version <= current or (upto is not None and version > upto):
            continue
        for sql in statements:
            if callable(sql):  # a step written in Python (filling a new column from a hash)
                sql(tx)
            else:
                tx.execute(render(sql))
        tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, int(time.time())))
        current = version
    return current


class _Tx:
    """Transaction handle over one sqlite3 cursor."""

    __slots__ = ("_cur",)

    skip_locked = ""  # one writer at a time: a claim's rows cannot be taken by anyone else meanwhile
    for_update = ""  # nor changed by anyone else before this transaction ends
    ids_in_commit_order = True  # one writer at a time: ids are committed in the order they are taken
    account_key = "rowid"

    def lock(self, keys: Sequence[str]) -> None:
        """Nothing to lock: the database's one write lock is held from BEGIN IMMEDIATE on."""

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return rows changed."""
        self._cur.execute(sql, params)
        return self._cur.rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run one statement per row; return total rows changed."""
        self._cur.executemany(sql, rows)
        return self._cur.rowcount

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement whose outcome is not read (here: at once)."""
        self._cur.execute(sql, params)

    def write_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """``write`` once per parameter row."""
        self._cur.executemany(sql, rows)

    def insert_many(self, head: str, row: str, rows: Iterable[Sequence[Any]], tail: str = "") -> int:
        """Multi-row ``INSERT ... VALUES`` as ``insert_rows`` makes them, in order, taking the rows
        a few thousand at a time (a generator's rows never all exist at once); rows inserted."""
        n = 0
        it = iter(rows)
        while part := list(islice(it, 4096)):
            for _ in self._insert_chunks(head, row, part, tail):
                n += self._cur.rowcount
        return n

    def insert_rows(self, head: str, row: str, rows: Sequence[Sequence[Any]], tail: str = "") -> list[tuple[Any, ...]]:
        """Multi-row ``INSERT ... VALUES``: up to 32 rows a statement, under SQLite's oldest
        limit of 999 parameters; every returned row."""
        return [r for cur in self._insert_chunks(head, row, rows, tail) for r in cur.fetchall()]

    def _insert_chunks(self, head: str, row: str, rows: Sequence[Sequence[Any]], tail: str) -> Iterator[Any]:
        for sql, params in values_statements(head, row, rows, tail, 999):
            yield self._cur.execute(sql, params)

    def tables_of(self, name: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]],
                  others: int = 0) -> Iterator[tuple[str, list[Any]]]:
        """``VALUES`` of one parameter per value, its columns renamed (SQLite numbers them), as many
        rows a table as keep the statement under 999 parameters."""
        names = ", ".join(f"column{i + 1} AS {c}" for i, (c, _) in enumerate(columns))
        row = f"({', '.join('?' for _ in columns)})"
        step = max(1, (999 - others) // len(columns))
        for lo in range(0, len(rows), step):
            part = rows[lo:lo + step]
            yield (f"(SELECT {names} FROM (VALUES {', '.join([row] * len(part))})) AS {name}",
                   [v for r in part for v in r])

    def one_of(self, expr: str, values: Collection[Any]) -> tuple[str, list[Any]]:
        """``expr IN (?, ...)``, one parameter per value."""
        return f"{expr} IN ({', '.join('?' for _ in values)})", list(values)

    def savepoint(self, name: str) -> None:
        """Mark a savepoint (at once: nothing is in flight here)."""
        self._cur.execute(f"SAVEPOINT {name}")

    def release(self, name: str) -> None:
        """Forget a savepoint (at once)."""
        self._cur.execute(f"RELEASE SAVEPOINT {name}")

    def submit(self, sql: str, params: Sequence[Any] = ()) -> Fetched:
        """A query's rows, read at once (nothing to send together here)."""
        return Fetched(self._cur.execute(sql, params).fetchall())

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        return self._cur.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """First row of a query, or None."""
        return self._cur.execute(sql, params).fetchone()

    def columns(self, sql: str, kinds: str, params: Sequence[Any] = ()) -> list[Any]:
        """A query's columns (see ``Tx.columns``), each packed by SQLite into one text by
        group_concat and parsed by numpy in one call: sqlite3 makes no Python value per value (at
        100,000 cost-control rows of 16 numbers, 2.0 us a row against 6.0 through rows)."""
        import numpy as np     # here, not at the top: the command line starts without it

        names = [f"c{k}" for k in range(len(kinds))]
        # an integer column's values joined by commas; a text's by the unit separator, with its
        # NULLs as a column of flags (group_concat skips NULLs: each column keeps one entry per row)
        packed = [f"group_concat(ifnull({c}, -1))" if kind == "i" else
                  f"group_concat(ifnull({c}, ''), char(31)), group_concat({c} IS NULL)"
                  for c, kind in zip(names, kinds)]
        # the query as a subquery keeps its ORDER BY: SQLite does not flatten an ordered
        # subquery into an aggregate, and group_concat takes the rows in the order they come
        with_q = f"WITH q({', '.join(names)}) AS ({sql}) "
        row = self._cur.execute(f"{with_q}SELECT count(*), {', '.join(packed)} FROM q", params).fetchone()
        n, out, at = int(row[0]), [], 1

        def ints(text: str | None, name: str) -> Any:
            try:
                with warnings.catch_warnings():
                    # numpy stops at what is not an integer, with a warning or an error by version
                    warnings.simplefilter("error", DeprecationWarning)
                    arr = np.fromstring(text, dtype=np.int64, sep=",") if n and text else np.zeros(0, dtype=np.int64)
            except (DeprecationWarning, ValueError):
                arr = np.zeros(0, dtype=np.int64)
            if arr.size != n:
                raise StoreError(f"column {name} of {sql[:80]!r}... is not all integers: read {arr.size} of {n}"
                                 " values (columns(kinds) says which are text)")
            return arr

        for kind, name in zip(kinds, names):
            if kind == "i":
                out.append(ints(row[at], name))
                at += 1
                continue
            text, nulls = row[at], ints(row[at + 1], name)
            at += 2
            vals = text.split("\x1f") if n else []
            if len(vals) != n:         # a text holds the separator: this column row by row
                vals = [r[0] for r in self._cur.execute(f"{with_q}SELECT {name} FROM q", params)]
            if nulls.any():
                for k in np.flatnonzero(nulls).tolist():
                    vals[k] = None
            out.append(vals)
        return out

    def pages(self, sql: str, params: Sequence[Any] = (), size: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of a query in lists of up to ``size`` (its own cursor: other statements may run between)."""
        cur = self._cur.connection.cursor()
        try:
            cur.execute(sql, params)
            while page := cur.fetchmany(size):
                yield page
        finally:
            cur.close()


def _create_private(location: str) -> None:
    """Create a missing database file readable by its owner only. SQLite gives the -wal and -shm
    files it makes the database file's permissions, so they are private too."""
    try:
        fd = os.open(location, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create database {location}: {exc.strerror}") from None
    os.close(fd)
    os.chmod(location, 0o600)  # whatever the umask took away, nothing more is given


class SQLiteBackend:
    """A store backend on one SQLite file (or ":memory:" for throw-away use)."""

    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str], busy_timeout_ms: int = 10_000, *, check: bool = False) -> None:
        """Open (creating, mode 0600) the file; with ``check``, refuse it unless SQLite's quick
        integrity check passes, before anything is written to it."""
        self.location = str(path)
        if self.location != ":memory:":
            parent = Path(self.location).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreError(f"cannot open database {self.location}: folder {parent} does not exist")
            _create_private(self.location)
        try:
            # isolation_level=None: we issue BEGIN ourselves, so the module never opens
            # implicit transactions behind our back.
            self._conn = sqlite3.connect(self.location, isolation_level=None, check_same_thread=False)
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if check and self.location != ":memory:":
                self._quick_check()
            if self.location != ":memory:":
                mode = self._switch_to_wal(busy_timeout_ms)
                if str(mode).lower() != "wal":
                    raise StoreError(f"cannot switch {self.location} to WAL journal (got {mode})")
            # NORMAL is durable in WAL mode across application crashes; only an OS crash or power
            # cut can lose the last transactions, never corrupt the file.
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            # A cost-control cycle touches every account: a 64 MB page cache (default 2 MB) keeps
            # the accounts table and its index in memory across its statements, and sorts and
            # temporary indexes stay in memory rather than a temp file.
            self._conn.execute("PRAGMA cache_size = -65536")
            self._conn.execute("PRAGMA temp_store = MEMORY")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open database {self.location}: {exc}") from exc
        self._lock = threading.RLock()
        self._depth = 0
        self._write = False
        self.serial = 0
        self._cur = self._conn.cursor()

    def __repr__(self) -> str:
        return f"<SQLiteBackend {self.location}>"

    def _quick_check(self) -> None:
        try:
            rows = [str(r[0]) for r in self._conn.execute("PRAGMA quick_check(5)").fetchall()]
        except sqlite3.DatabaseError as exc:
            rows = [str(exc)]
        if rows != ["ok"]:
            self._conn.close()
            raise StoreError(f"database {self.location} failed its integrity check ({'; '.join(rows)[:300]}): it is "
                             "damaged and was not opened, nothing was written; restore it from a backup (or let "
                             "`sqlite3 FILE .recover` save what it can into a new file)")

    def _switch_to_wal(self, busy_timeout_ms: int) -> str:
        # Changing the journal mode of a new file that other processes are opening at the same
        # moment can fail with "database is locked" at once, without the busy handler waiting:
        # retry for as long as busy_timeout would have waited.
        deadline = time.monotonic() + busy_timeout_ms / 1000
        while True:
            try:
                return str(self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def transaction(self, write: bool = True, *, row_locked: bool = False) -> Iterator[_Tx]:
        """Open a transaction, or join the one this thread already has open (``row_locked`` makes no
        difference here: every write transaction holds the one write lock)."""
        with self._lock:
            if self._depth:
                if write and not self._write:
                    # SQLite cannot promise to upgrade a read transaction to a write one without
                    # failing with SQLITE_BUSY; open the outer transaction with write=True instead.
                    raise StoreError("a write was attempted inside a read-only transaction")
                self._depth += 1
                try:
                    yield _Tx(self._cur)
                finally:
                    self._depth -= 1
                return
            try:
                self._cur.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
            except sqlite3.OperationalError as exc:
                raise StoreError(f"database {self.location} is busy or unavailable: {exc}") from exc
            self.serial += 1
            self._depth = 1
            self._write = write
            try:
                yield _Tx(self._cur)
            except BaseException as exc:
                self._depth = 0
                self._conn.rollback()
                # engine errors never leak to callers: they see the store's own error classes
                if isinstance(exc, sqlite3.IntegrityError):
                    raise Conflict(f"the store refused the change: {exc}") from exc
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"database {self.location}: {exc}") from exc
                raise
            else:
                self._depth = 0
                try:
                    self._conn.commit()
                except sqlite3.Error as exc:
                    raise StoreError(f"database {self.location}: commit failed: {exc}") from exc

    def migrate(self, upto: int | None = None) -> int:
        """Apply every migration step not yet applied (up to `upto`, default all); return the version."""
        with self.transaction() as tx:
            return apply_migrations(tx, self.location, upto)

    def schema_version(self) -> int:
        """Schema version applied to this file (0 for an empty file)."""
        with self.transaction(write=False) as tx:
            if not tx.one("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"):
                return 0
            row = tx.one("SELECT MAX(version) FROM schema_version")
            return int(row[0]) if row and row[0] is not None else 0

    def checkpoint_in_background(self, every_s: float = 0.5) -> None:
        """Take WAL checkpoints off this connection's commits: SQLite otherwise copies the WAL
        back into the database (and syncs both) inside whichever commit crosses 1,000 pages, so
        one request in fifty waits for the disk. A thread with its own connection checkpoints
        every ``every_s`` instead (PASSIVE: it never blocks a writer); ``close`` stops it."""
        if self.location == ":memory:" or getattr(self, "_checkpointer", None) is not None:
            return
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        stop = threading.Event()
        conn = sqlite3.connect(self.location, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")

        def run() -> None:
            try:
                while not stop.wait(every_s):
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    except sqlite3.Error:   # busy or locked: the next round checkpoints
                        pass
            finally:
                conn.close()

        self._checkpointer = (stop, threading.Thread(target=run, name="sqlite-checkpoint", daemon=True))
        self._checkpointer[1].start()

    def checkpoint_every(self, pages: int) -> None:
        """SQLite's wal_autocheckpoint for this connection, unless checkpoints run in the background."""
        pages = int(pages)
        if pages < 1:
            raise ValueError(f"checkpoint_every takes a number of pages >= 1, got {pages}")
        if self.location == ":memory:" or getattr(self, "_checkpointer", None) is not None:
            return
        if getattr(self, "_autocheckpoint", 1000) != pages:
            with self._lock:
                self._conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
            self._autocheckpoint = pages

    def table_columns(self) -> dict[str, list[str]]:
        """Tables in creation order (sqlite_master's rowid) with their columns."""
        with self.transaction(write=False) as tx:
            names = [r[0] for r in tx.all("SELECT name FROM sqlite_master WHERE type = 'table'"
                                          " AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
            return {n: [r[1] for r in tx.all(f"PRAGMA table_info({n})")] for n in names}

    def reset_identities(self) -> None:
        """Nothing to do: SQLite's AUTOINCREMENT counter follows the largest id inserted."""

    def try_leader(self, role: str) -> bool:
        """Always: one `headend serve` per SQLite file (its lock on the file), so it leads."""
        return True

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite when the last one closes)."""
        ckpt = getattr(self, "_checkpointer", None)
        if ckpt is not None:
            ckpt[0].set()
            ckpt[1].join()
            self._checkpointer = None
        with self._lock:
            self._conn.close()

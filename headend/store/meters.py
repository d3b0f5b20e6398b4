"""The meter registry: address, link, owner, mode, and what each meter last reported."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

from headend.frontends import slot_of
from headend.store.accounts import Accounts
from headend.store.base import Tx, _nonneg
from headend.store.models import (
    MODES,
    Command,
    Conflict,
    InvalidInput,
    Meter,
    NotFound,
    StoreError,
    check_address,
    check_customer,
    check_link,
)

_METER_COLS = (
    "address, link, customer, mode, krn, purchase_count, protected, meter_number, balance_fen, relay,"
    " last_seen, created_at, updated_at, hoarding_fen"
)

# Fields a meter selection (`--where`) may name, and their column types.
METER_FILTER_FIELDS: dict[str, type] = {
    "address": str,
    "link": str,
    "customer": str,
    "mode": str,
    "krn": int,
    "protected": bool,
    "relay": str,
    "purchase_count": int,
}
_FILTER_OPS = ("=", "!=", "like")


_FIELDS = tuple(f.name for f in dataclasses.fields(Meter))  # the order of _METER_COLS
_new_meter = object.__new__
_fill = object.__setattr__


def _meter(row: Sequence[Any]) -> Meter:
    # Serve's collection builds a Meter per meter every read cycle: filled straight from the row
    # (the Meter that Meter(*row) makes), at about half the CPU of the frozen dataclass's __init__
    m = _new_meter(Meter)
    d = dict(zip(_FIELDS, row))
    d["protected"] = bool(d["protected"])
    _fill(m, "__dict__", d)
    return m


class Meters(Accounts):
    """Registered meters."""

    def add_meter(
        self,
        address: str,
        *,
        link: str,
        customer: str,
        actor: str,
        mode: str = "local",
        krn: int = 0,
        protected: bool = False,
        meter_number: str | None = None,
        purchase_count: int = 0,
    ) -> Meter:
        """Register a meter (and its customer's account if new); Conflict if the address is taken."""
        return self.add_meters([{"address": address, "link": link, "customer": customer, "mode": mode, "krn": krn,
                                 "protected": protected, "meter_number": meter_number,
                                 "purchase_count": purchase_count}], actor=actor, _single=True)[0]

    @staticmethod
    def _meter_row(address: str, link: str, customer: str, mode: str = "local", krn: int = 0,
                   protected: bool = False, meter_number: str | None = None, purchase_count: int = 0
                   ) -> tuple[str, str, str, str, int, int, int, str]:
        address = check_address(address)
        customer = check_customer(customer)
        if mode not in MODES:
            raise InvalidInput(f"mode must be 'local' or 'remote' (who holds the balance), got {mode!r}")
        if not isinstance(krn, int) or not 0 <= krn <= 255:
            raise InvalidInput(f"key revision (KRN) must be 0..255, got {krn!r}")
        link = check_link(link)
        number = check_address(meter_number) if meter_number else address
        return (address, link, customer, mode, krn, _nonneg("purchase count", purchase_count), int(bool(protected)),
                number)

    def add_meters(self, rows: Iterable[Mapping[str, Any]], *, actor: str, _single: bool = False) -> list[Meter]:
        """Register many meters in one transaction, all or none (fleet import).

        Each row holds add_meter's arguments: address, link, customer, and optionally mode, krn,
        protected, meter_number, purchase_count. An error names the row (counting from 1).
        Customers not known yet get an account, as with add_meter; every meter and new account
        has its audit row.  Written with bulk statements: a million meters take seconds.
        """
        allowed = {"address", "link", "customer", "mode", "krn", "protected", "meter_number", "purchase_count"}

        def where(i: int) -> str:
            return "" if _single else f"meter row {i}: "

        data = []
        seen: dict[str, int] = {}
        for i, row in enumerate(rows, 1):
            extra = set(row) - allowed
            missing = {"address", "link", "customer"} - set(row)
            if extra or missing:
                raise InvalidInput(f"meter row {i}: " + (f"unknown fields {sorted(extra)}" if extra else
                                                         f"missing {sorted(missing)}"))
            try:
                r = self._meter_row(**row)
            except StoreError as exc:
                raise type(exc)(f"{where(i)}{exc}") from None
            if r[0] in seen:
                raise Conflict(f"meter row {i}: meter {r[0]} is also in row {seen[r[0]]}")
            seen[r[0]] = i
            data.append(r)
        if not actor:
            raise InvalidInput("every audited action needs an actor (operator name or service)")
        now = self.now()
        with self._tx() as tx:
            taken = self._existing(tx, "meters", "address", [r[0] for r in data])
            for i, r in enumerate(data, 1):
                if r[0] in taken:
                    raise Conflict(f"{where(i)}meter {r[0]} is already registered (see `headend meter show {r[0]}`)")
            known = self._existing(tx, "accounts", "customer", list({r[2]: None for r in data}))
            new_customers = [c for c in dict.fromkeys(r[2] for r in data) if c not in known]
            tx.executemany(
                "INSERT INTO accounts (customer, name, phone, balance_fen, rem, ladder_wh, alarm1_fen, alarm2_fen,"
                " overdraft_fen, close_ok_fen, protected, restore_policy, tariff, version, created_at, updated_at)"
                " VALUES (?, '', '', 0, 0, 0, 0, 0, 0, 0, 0, 'close_permitted', NULL, 0, ?, ?)",
                ((c, now, now) for c in new_customers),
            )
            self.log_actions((actor, "customer.add", c, {"name": "", "protected": False,
                                                         "restore_policy": "close_permitted"})
                             for c in new_customers)
            tx.executemany(
                f"INSERT INTO meters ({_METER_COLS}, link_slot) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, ?,"
                " NULL, ?)",
                ((*r, now, now, slot_of(r[1])) for r in data),
            )
            self.log_actions((actor, "meter.add", r[0], {"link": r[1], "customer": r[2], "mode": r[3], "krn": r[4],
                                                         "protected": bool(r[6])}) for r in data)
        return [Meter(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], None, None, None, now, now) for r in data]

    def link_slots(self, addresses: Sequence[str]) -> dict[str, int]:
        """The slot of each meter's link (headend/frontends.py), by address."""
        out: dict[str, int] = {}
        with self._tx(write=False) as tx:
            for lo in range(0, len(addresses), 500):  # stay under every engine's parameter limit
                chunk = list(addresses[lo:lo + 500])
                out.update((a, int(x)) for a, x in tx.all(
                    f"SELECT address, link_slot FROM meters WHERE address IN ({', '.join('?' for _ in chunk)})", chunk))
        return out

    def get_meter(self, address: str) -> Meter:
        """The meter with this address; NotFound (with what to do) if not registered."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_METER_COLS} FROM meters WHERE address = ?", (address,))
        if row is None:
            raise NotFound(f"meter {address} is not registered: add it with `headend meter add {address} ...`")
        return _meter(row)

    def find_meters(self, filters: Iterable[tuple[str, str, Any]] = (), *, limit: int | None = None) -> list[Meter]:
        """Meters matching every (field, op, value) filter, by address; op is '=', '!=' or 'like'.

        Fields are METER_FILTER_FIELDS; 'like' takes SQL LIKE patterns (% and _).
        """
        parts, params = [], []
        for fld, op, val in filters:
            if fld not in METER_FILTER_FIELDS:
                raise InvalidInput(f"cannot select meters by {fld!r}; use one of {', '.join(METER_FILTER_FIELDS)}")
            if op not in _FILTER_OPS:
                raise InvalidInput(f"unknown comparison {op!r}; use = or !=")
            if isinstance(val, bool):
                val = int(val)
            parts.append(f"{fld} {op.upper()} ?")
            params.append(val)
        sql = f"SELECT {_METER_COLS} FROM meters"
        if parts:
            sql += " WHERE " + " AND ".join(parts)
        sql += " ORDER BY address"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._tx(write=False) as tx:
            return [_meter(r) for r in tx.all(sql, params)]

    def meters_of_customer(self, customer: str) -> list[Meter]:
        """Every meter registered to a customer."""
        return self.find_meters([("customer", "=", customer)])

    def update_meter(self, address: str, *, actor: str, **changes: Any) -> Meter:
        """Change a meter's link, customer, mode, KRN, protected flag, meter number or the hoarding
        limit it holds (fen; payments larger than the room under it are refused) (audited)."""
        allowed = {"link", "customer", "mode", "krn", "protected", "meter_number", "hoarding_fen"}
        bad = set(changes) - allowed
        if bad:
            raise InvalidInput(f"cannot change {', '.join(sorted(bad))} of a meter; allowed: {', '.join(sorted(allowed))}")
        changes = {k: v for k, v in changes.items() if v is not None}
        if "mode" in changes and changes["mode"] not in MODES:
            raise InvalidInput(f"mode must be 'local' or 'remote', got {changes['mode']!r}")
        if "krn" in changes and not (isinstance(changes["krn"], int) and 0 <= changes["krn"] <= 255):
            raise InvalidInput(f"key revision (KRN) must be 0..255, got {changes['krn']!r}")
        if "link" in changes:
            changes["link"] = check_link(changes["link"])
        if "customer" in changes:
            changes["customer"] = check_customer(changes["customer"])
        if "meter_number" in changes:
            changes["meter_number"] = check_address(changes["meter_number"])
        if "protected" in changes:
            changes["protected"] = int(bool(changes["protected"]))
        if "hoarding_fen" in changes:
            _nonneg("hoarding limit", changes["hoarding_fen"])
        with self._tx() as tx:
            before = self.get_meter(address)
            if "customer" in changes and not tx.one("SELECT 1 FROM accounts WHERE customer = ?", (changes["customer"],)):
                self.add_account(changes["customer"], actor=actor)
            if changes:
                sets = ", ".join(f"{k} = ?" for k in changes)
                tx.execute(f"UPDATE meters SET {sets}, updated_at = ?, link_slot = ? WHERE address = ?",
                           (*changes.values(), self.now(), slot_of(changes.get("link", before.link)), address))
                self.log_action(actor, "meter.update", address,
                                {k: [getattr(before, k), v] for k, v in changes.items()})
            return self.get_meter(address)

    def set_purchase_count(self, address: str, new: int, *, expected: int | None = None) -> Meter:
        """Record the purchase count the meter confirmed; with expected, only if it still holds (CAS)."""
        _nonneg("purchase count", new)
        with self._tx() as tx:
            if expected is None:
                n = tx.execute("UPDATE meters SET purchase_count = ?, updated_at = ? WHERE address = ?",
                               (new, self.now(), address))
            else:
                n = tx.execute(
                    "UPDATE meters SET purchase_count = ?, updated_at = ? WHERE address = ? AND purchase_count = ?",
                    (new, self.now(), address, expected),
                )
            if n != 1:
                m = self.get_meter(address)  # raises NotFound
                raise Conflict(f"meter {address}: purchase count is {m.purchase_count}, expected {expected}")
            return self.get_meter(address)

    def record_meter_state(
        self,
        address: str,
        *,
        balance_fen: int | None = None,
        relay: str | None = None,
        purchase_count: int | None = None,
        seen_at: int | None = None,
        hoarding_fen: int | None = None,
    ) -> None:
        """Remember what a meter last reported (balance, relay state, purchase count, hoarding
        limit, when seen)."""
        sets: list[str] = ["last_seen = ?"]
        params: list[Any] = [seen_at if seen_at is not None else self.now()]
        for col, val in (("balance_fen", balance_fen), ("relay", relay), ("purchase_count", purchase_count),
                         ("hoarding_fen", hoarding_fen)):
            if val is not None:
                sets.append(f"{col} = ?")
                params.append(val)
        with self._tx() as tx:
            if tx.execute(f"UPDATE meters SET {', '.join(sets)} WHERE address = ?", (*params, address)) != 1:
                raise NotFound(f"meter {address} is not registered")

    def _command_moved(self, tx: Tx, cmd: Command) -> None:
        super()._command_moved(tx, cmd)
        # the hoarding limit a meter confirmed is what payments to it are checked against
        if cmd.kind == "set_limits" and cmd.status == "confirmed" and isinstance(cmd.params, dict) \
                and cmd.params.get("hoarding_fen") is not None:
            tx.execute("UPDATE meters SET hoarding_fen = ? WHERE address = ?", (int(cmd.params["hoarding_fen"]), cmd.meter))

"""Payment channels as configured records: kind, API credentials, fee rule, settlement, enabled."""

from __future__ import annotations

import re
from typing import Any, Sequence
from urllib.parse import urlsplit

from headend.store.audit import Audit
from headend.store.models import CHANNEL_KINDS, Channel, Conflict, InvalidInput, NotFound

_CHANNEL_COLS = ("id, kind, name, key_id, secret, fee_rule, settle_days, max_amount_fen, callback_url, enabled,"
                 " created_at, updated_at")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
_FEE_RE = re.compile(r"^(none|fixed:\d+|bp:\d+(,min:\d+)?(,max:\d+)?)$")


def _check_callback(url: Any) -> str | None:
    # results are POSTed there over HTTP(S): any other address would only fail at every retry
    if url is None or url == "":
        return None
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"bad callback URL {url!r}: write http(s)://HOST[:PORT]/PATH, where payment results"
                           " can be posted")
    return url


def _channel(row: Sequence[Any]) -> Channel:
    r = list(row)
    r[9] = bool(r[9])
    return Channel(*r)


def check_fee_rule(rule: str) -> str:
    """A fee rule as stored: "none", "fixed:FEN" or "bp:BASIS_POINTS[,min:FEN][,max:FEN]"."""
    text = str(rule).replace(" ", "").lower()
    if not _FEE_RE.match(text):
        raise InvalidInput(f"bad fee rule {rule!r}: write none, fixed:FEN (e.g. fixed:200) or"
                           " bp:BASIS_POINTS[,min:FEN][,max:FEN] (e.g. bp:30,min:100,max:2000 for 0.3 %)")
    return text


def fee_of(rule: str, amount_fen: int) -> int:
    """The channel's fee for one payment, in whole fen (basis points rounded half up)."""
    if rule == "none":
        return 0
    parts = dict(p.split(":") for p in rule.split(","))
    if "fixed" in parts:
        return int(parts["fixed"])
    fee = (amount_fen * int(parts["bp"]) + 5000) // 10000
    if "min" in parts:
        fee = max(fee, int(parts["min"]))
    if "max" in parts:
        fee = min(fee, int(parts["max"]))
    return fee


class Channels(Audit):
    """Channel records. The API secret is stored sealed (headend.keys.KeyStore.seal): the store
    never sees it in the clear."""

    def add_channel(
        self,
        channel_id: str,
        kind: str,
        *,
        actor: str,
        name: str = "",
        key_id: str | None = None,
        secret: str | None = None,
        fee_rule: str = "none",
        settle_days: int = 0,
        max_amount_fen: int | None = None,
        callback_url: str | None = None,
    ) -> Channel:
        """Create a channel (enabled); Conflict if the id or key id is taken."""
        if not isinstance(channel_id, str) or not _ID_RE.match(channel_id):
            raise InvalidInput(f"bad channel id {channel_id!r}: 1-40 of a-z 0-9 _ . - (starting with a letter or digit)")
        if kind not in CHANNEL_KINDS:
            raise InvalidInput(f"unknown channel kind {kind!r}; one of {', '.join(CHANNEL_KINDS)}")
        if (key_id is None) != (secret is None):
            raise InvalidInput("API credentials are a key id and a secret together (or neither: counter use only)")
        fee_rule = check_fee_rule(fee_rule)
        if not isinstance(settle_days, int) or settle_days < 0:
            raise InvalidInput(f"settlement delay is whole days >= 0 (T+N), got {settle_days!r}")
        if max_amount_fen is not None and (not isinstance(max_amount_fen, int) or max_amount_fen <= 0):
            raise InvalidInput(f"maximum amount is fen > 0, got {max_amount_fen!r}")
        callback_url = _check_callback(callback_url)
        now = self.now()
        with self._tx() as tx:
            if tx.one("SELECT 1 FROM channels WHERE id = ?", (channel_id,)):
                raise Conflict(f"channel {channel_id} already exists (see `headend channel list`)")
            if key_id is not None and tx.one("SELECT 1 FROM channels WHERE key_id = ?", (key_id,)):
                raise Conflict(f"key id {key_id} is already used by another channel")
            tx.execute(f"INSERT INTO channels ({_CHANNEL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                       (channel_id, kind, name, key_id, secret, fee_rule, settle_days, max_amount_fen, callback_url,
                        now, now))
            self.log_action(actor, "channel.add", channel_id,
                            {"kind": kind, "key_id": key_id, "fee_rule": fee_rule, "settle_days": settle_days})
            return self.get_channel(channel_id)

    def get_channel(self, channel_id: str) -> Channel:
        """A channel by id (kind, enabled, key id and the sealed secret); NotFound if none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_CHANNEL_COLS} FROM channels WHERE id = ?", (channel_id,))
        if row is None:
            raise NotFound(f"no channel {channel_id!r}: add it with `headend channel add {channel_id} --kind KIND`")
        return _channel(row)

    def channel_by_key(self, key_id: str) -> Channel:
        """The channel that owns an API key id; NotFound if none."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_CHANNEL_COLS} FROM channels WHERE key_id = ?", (key_id,))
        if row is None:
            raise NotFound(f"no channel has API key id {key_id!r}")
        return _channel(row)

    def list_channels(self) -> list[Channel]:
        """Every channel, by id."""
        with self._tx(write=False) as tx:
            return [_channel(r) for r in tx.all(f"SELECT {_CHANNEL_COLS} FROM channels ORDER BY id")]

    def update_channel(self, channel_id: str, *, actor: str, **changes: Any) -> Channel:
        """Change a channel's name, key id + secret (rotation), fee rule, settlement delay,
        maximum amount, callback URL or enabled flag (audited; the secret never in the audit)."""
        allowed = {"name", "key_id", "secret", "fee_rule", "settle_days", "max_amount_fen", "callback_url", "enabled"}
        bad = set(changes) - allowed
        if bad:
            raise InvalidInput(f"cannot change {', '.join(sorted(bad))} of a channel; allowed: {', '.join(sorted(allowed))}")
        if ("key_id" in changes) != ("secret" in changes):
            raise InvalidInput("a new key id comes with a new secret")
        if "fee_rule" in changes:
            changes["fee_rule"] = check_fee_rule(changes["fee_rule"])
        if "enabled" in changes:
            changes["enabled"] = int(bool(changes["enabled"]))
        if "callback_url" in changes:
            changes["callback_url"] = _check_callback(changes["callback_url"])
        with self._tx() as tx:
            before = self.get_channel(channel_id)
            if changes.get("key_id") and tx.one("SELECT 1 FROM channels WHERE key_id = ? AND id != ?",
                                                (changes["key_id"], channel_id)):
                raise Conflict(f"key id {changes['key_id']} is already used by another channel")
            if changes:
                sets = ", ".join(f"{k} = ?" for k in changes)
                tx.execute(f"UPDATE channels SET {sets}, updated_at = ? WHERE id = ?",
                           (*changes.values(), self.now(), channel_id))
                self.log_action(actor, "channel.update", channel_id,
                                {k: [getattr(before, k), v] for k, v in changes.items() if k != "secret"})
            return self.get_channel(channel_id)

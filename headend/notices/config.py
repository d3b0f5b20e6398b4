"""The ``[notices]`` config section, and the gateway it names.

```toml
[notices]
in_serve = true                 # run the sender inside `headend serve` (serve --no-notices turns it off)
gateway = "log"                 # log (default) | webhook | sms
log_file = "notices.log"        # default: beside the database, <db>.notices.log
webhook_url = "https://bridge.example/notices"
webhook_secret = "..."          # or $PREPAID645_WEBHOOK_SECRET
sms_url = "https://sms.example/v1"
sms_token = "..."               # or $PREPAID645_SMS_TOKEN
sms_concurrency = 4             # requests in flight at once (one message each)
receipt_listen = "0.0.0.0:8646" # serve the delivery-receipt callback here ("" for none)
receipt_url = "https://headend.example:8646"   # how the provider reaches it (default: http://<listen>)
receipt_token = "..."           # or $PREPAID645_RECEIPT_TOKEN: the secret part of the callback URL
templates = "notices.toml"      # replaces built-in texts; checked when loaded
language = "zh"                 # for customers without a language of their own
quiet = "21:00-08:00"           # non-urgent notices wait until the end ("" for none)
utc_offset_h = 8
rate_limit = 5                  # non-urgent notices per customer ...
rate_window_s = 3600            # ... per this window
backoff_s = 30                  # after a transient error; doubles each try, up to max_backoff_s
max_backoff_s = 3600
max_attempts = 12
interval_s = 5                  # how often serve looks for due notices
watch_every_s = 30              # how often serve looks at local meters' readings and records
outage_lead_h = 24              # planned-outage notices this long before the start ...
important_lead_h = 72           # ... and this long for important and protected customers
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from headend.grid.outages import OutagePolicy
from headend.notices.gateways import Gateway, LogGateway, SmsRestGateway, WebhookGateway
from headend.notices.sender import Policy
from headend.tariff.model import hhmm

__all__ = ["NoticeConfig", "notices_config", "make_gateway", "KNOWN_KEYS", "ENV_WEBHOOK_SECRET", "ENV_SMS_TOKEN",
           "ENV_RECEIPT_TOKEN"]

ENV_WEBHOOK_SECRET = "PREPAID645_WEBHOOK_SECRET"
ENV_SMS_TOKEN = "PREPAID645_SMS_TOKEN"
ENV_RECEIPT_TOKEN = "PREPAID645_RECEIPT_TOKEN"
GATEWAYS = ("log", "webhook", "sms")
_KNOWN = {"in_serve", "gateway", "log_file", "webhook_url", "webhook_secret", "sms_url", "sms_token", "sms_concurrency",
          "receipt_listen", "receipt_url", "receipt_token", "templates", "language", "quiet", "utc_offset_h", "rate_limit",
          "rate_window_s", "backoff_s", "max_backoff_s", "max_attempts", "interval_s", "watch_every_s", "outage_lead_h",
          "important_lead_h", "batch", "lease_s"}
KNOWN_KEYS = frozenset(_KNOWN)  # every key of [notices] this reader takes (prepaid645.example.toml shows each)


@dataclass(frozen=True)
class NoticeConfig:
    """Settings of the notice sender and the outage notices."""

    policy: Policy = field(default_factory=Policy)
    outages: OutagePolicy = field(default_factory=OutagePolicy)
    gateway: str = "log"
    log_file: Path | None = None
    webhook_url: str = ""
    webhook_secret: str = ""
    sms_url: str = ""
    sms_token: str = ""
    sms_concurrency: int = 4
    receipt_listen: str = ""
    receipt_url: str = ""
    receipt_token: str = ""
    templates: Path | None = None
    interval_s: float = 5.0
    watch_every_s: float = 30.0
    in_serve: bool = True


def _path(value: Any, base: Path | None) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() or base is None else base / p


def _offset(hours: Any) -> int:
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not -14 <= hours <= 14:
        raise ValueError(f"[notices] utc_offset_h = {hours!r}: hours from UTC, -14 .. 14")
    return int(round(hours * 3600))


def notices_config(section: Mapping[str, Any], base: Path | None = None,
                   environ: Mapping[str, str] | None = None) -> NoticeConfig:
    """Parse the ``[notices]`` section; ValueError names the bad key and what it should be."""
    env = os.environ if environ is None else environ
    unknown = set(section) - _KNOWN
    if unknown:
        raise ValueError(f"[notices]: unknown key(s) {sorted(unknown)}; known: {sorted(_KNOWN)}")
    gateway = str(section.get("gateway", "log"))
    if gateway not in GATEWAYS:
        raise ValueError(f"[notices] gateway = {gateway!r}: use one of {', '.join(GATEWAYS)}")
    quiet_text = str(section.get("quiet", "21:00-08:00"))
    quiet = None
    if quiet_text:
        a, sep, b = quiet_text.partition("-")
        if not sep:
            raise ValueError(f"[notices] quiet = {quiet_text!r}: write HH:MM-HH:MM, or \"\" for no quiet hours")
        quiet = (hhmm(a) % 1440, hhmm(b) % 1440)

    def num(key: str, default: float) -> float:
        v = section.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"[notices] {key} = {v!r}: must be a number >= 0")
        return v

    policy = Policy(language=str(section.get("language", "zh")), quiet=quiet,
                    utc_offset_s=_offset(section.get("utc_offset_h", 8)),
                    rate_n=int(num("rate_limit", 5)), rate_window_s=int(num("rate_window_s", 3600)),
                    backoff_s=int(num("backoff_s", 30)), max_backoff_s=int(num("max_backoff_s", 3600)),
                    max_attempts=int(num("max_attempts", 12)), lease_s=int(num("lease_s", 300)),
                    batch=int(num("batch", 200)))
    outages = OutagePolicy(lead_s=int(round(num("outage_lead_h", 24) * 3600)),
                           important_lead_s=int(round(num("important_lead_h", 72) * 3600)))
    cfg = NoticeConfig(
        policy=policy, outages=outages, gateway=gateway,
        log_file=_path(section["log_file"], base) if section.get("log_file") else None,
        webhook_url=str(section.get("webhook_url", "")),
        webhook_secret=str(section.get("webhook_secret") or env.get(ENV_WEBHOOK_SECRET, "")),
        sms_url=str(section.get("sms_url", "")),
        sms_token=str(section.get("sms_token") or env.get(ENV_SMS_TOKEN, "")),
        sms_concurrency=max(1, int(num("sms_concurrency", 4))),
        receipt_listen=str(section.get("receipt_listen", "")),
        receipt_url=str(section.get("receipt_url", "")),
        receipt_token=str(section.get("receipt_token") or env.get(ENV_RECEIPT_TOKEN, "")),
        templates=_path(section["templates"], base) if section.get("templates") else None,
        interval_s=float(num("interval_s", 5.0)) or 5.0,
        watch_every_s=float(num("watch_every_s", 30.0)),
        in_serve=bool(section.get("in_serve", True)),
    )
    if gateway == "webhook" and (not cfg.webhook_url or not cfg.webhook_secret):
        raise ValueError("[notices] gateway = \"webhook\" needs webhook_url and webhook_secret"
                         f" (or ${ENV_WEBHOOK_SECRET})")
    if gateway == "sms" and (not cfg.sms_url or not cfg.sms_token):
        raise ValueError(f"[notices] gateway = \"sms\" needs sms_url and sms_token (or ${ENV_SMS_TOKEN})")
    if cfg.receipt_listen and not cfg.receipt_token:
        raise ValueError(f"[notices] receipt_listen needs receipt_token (or ${ENV_RECEIPT_TOKEN}):"
                         " the callback URL's secret")
    return cfg


def make_gateway(cfg: NoticeConfig, db_location: str, *, receipt_url: str | None = None) -> Gateway:
    """The gateway the configuration names (the log file beside the database by default)."""
    if cfg.gateway == "webhook":
        return WebhookGateway(cfg.webhook_url, cfg.webhook_secret.encode())
    if cfg.gateway == "sms":
        return SmsRestGateway(cfg.sms_url, cfg.sms_token, callback_url=receipt_url, concurrency=cfg.sms_concurrency)
    path = cfg.log_file or Path(f"{db_location}.notices.log" if db_location != ":memory:" else "notices.log")
    return LogGateway(path)

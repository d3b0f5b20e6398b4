"""The [notices] section: every bad setting named."""

from __future__ import annotations

import pytest

from headend.notices.config import make_gateway, notices_config
from headend.notices.gateways import LogGateway, SmsRestGateway


def test_defaults_and_a_full_section(tmp_path):
    cfg = notices_config({})
    assert cfg.gateway == "log" and cfg.policy.quiet == (21 * 60, 8 * 60) and cfg.outages.important_lead_s == 72 * 3600
    assert isinstance(make_gateway(cfg, str(tmp_path / "x.db")), LogGateway)
    cfg = notices_config({"gateway": "sms", "sms_url": "http://127.0.0.1:1/v1", "sms_token": "t", "sms_concurrency": 2,
                          "quiet": "22:30-06:00", "rate_limit": 2, "language": "en", "utc_offset_h": -5,
                          "outage_lead_h": 12}, tmp_path)
    g = make_gateway(cfg, "x.db")
    assert isinstance(g, SmsRestGateway) and g.concurrency == 2
    assert cfg.policy.quiet == (22 * 60 + 30, 360) and cfg.policy.rate_n == 2 and cfg.policy.utc_offset_s == -5 * 3600
    assert cfg.outages.lead_s == 12 * 3600


@pytest.mark.parametrize("section, message", [
    ({"gatewy": "log"}, "unknown key"),
    ({"gateway": "pigeon"}, "use one of log, webhook, sms"),
    ({"gateway": "webhook", "webhook_url": "http://x"}, "webhook_secret"),
    ({"gateway": "sms", "sms_url": "http://x"}, "sms_token"),
    ({"quiet": "22"}, "HH:MM-HH:MM"),
    ({"rate_limit": -1}, "rate_limit"),
    ({"language": "fr"}, "language"),
    ({"receipt_listen": "127.0.0.1:8646"}, "receipt_token"),
    ({"utc_offset_h": 20}, "utc_offset_h"),
])
def test_bad_settings_are_named(section, message):
    with pytest.raises(ValueError, match=message):
        notices_config(section, environ={})

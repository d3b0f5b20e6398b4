"""The [api] section and `serve --api`: bad settings are refused naming the setting."""

from __future__ import annotations

import pytest

from headend.api.config import ApiConfig, api_config, parse_api_url
from tests.headend.headend_proc import HeadEnd


def test_defaults_and_overrides():
    assert api_config({}) == ApiConfig()
    cfg = api_config({"listen": "tcp://127.0.0.1:8080", "clock_skew_s": 60, "callback_backoff_s": [0, 2]})
    assert (cfg.listen, cfg.clock_skew_s, cfg.callback_backoff_s) == ("tcp://127.0.0.1:8080", 60, (0.0, 2.0))
    assert api_config({"commit_hold_ms": 0}).commit_hold_ms == 0.0
    assert parse_api_url("tcp://[::1]:9000") == ("::1", 9000)


@pytest.mark.parametrize("section,words", [
    ({"listen": "http://127.0.0.1:8080"}, "tcp://HOST:PORT"),
    ({"listen": "tcp://127.0.0.1"}, "tcp://HOST:PORT"),
    ({"clock_skew_s": 0}, "clock_skew_s"),
    ({"clock_skew_s": 1.5}, "clock_skew_s"),
    ({"callback_backoff_s": []}, "callback_backoff_s"),
    ({"callback_backoff_s": [-1]}, "callback_backoff_s"),
    ({"callback_timeout_s": 0}, "callback_timeout_s"),
    ({"max_amount": 5}, "unknown key"),
    ({"commit_hold_ms": -1}, "commit_hold_ms"),
    ({"commit_hold_ms": True}, "commit_hold_ms"),
])
def test_bad_settings_are_named(section, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        api_config(section)


def test_serve_refuses_a_bad_api_url(tmp_path):
    he = HeadEnd(tmp_path)
    code, out, err = he.cli("serve", "--api", "127.0.0.1:8080")
    assert code == 2 and "tcp://HOST:PORT" in err

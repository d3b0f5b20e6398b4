"""prepaid645.example.toml: loads as it is, and documents every setting the head-end reads."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from headend.config import known_settings, load_config
from headend.costctl.config import costctl_config
from headend.notices.config import notices_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "prepaid645.example.toml"


def test_the_example_config_loads_with_every_reader(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLE, environ={})
    assert cfg.store.db == ROOT / "prepaid645.db" and cfg.keys.file == ROOT / "prepaid645.key"
    cc = costctl_config(cfg.section("costctl"), EXAMPLE.parent)
    assert cc.interval_s == 86400 and cc.tariffs is None and cc.in_serve
    nc = notices_config(cfg.section("notices"), EXAMPLE.parent, environ={})
    assert nc.gateway == "log" and nc.log_file == ROOT / "notices.log"


def test_the_example_config_names_and_explains_every_known_setting() -> None:
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    known = known_settings()
    assert set(data) == set(known), "sections"
    for section, keys in known.items():
        assert set(data[section]) == set(keys), (section, set(keys) ^ set(data[section]))
    for line in text.splitlines():
        if re.match(r"^[a-z_0-9]+\s*=", line):
            assert "#" in line.split("=", 1)[1], f"no comment on: {line}"

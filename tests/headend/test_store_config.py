"""Where the database and key file are found: options, environment, config file, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from headend.config import ConfigError, load_config


def test_defaults_put_the_key_next_to_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(environ={})
    assert cfg.store.db == Path("prepaid645.db")
    assert cfg.keys.file == Path("prepaid645.key")
    assert cfg.source is None
    cfg = load_config(db=tmp_path / "site" / "fleet.db", environ={})
    assert cfg.keys.file == tmp_path / "site" / "fleet.key"


def test_precedence_option_over_environment_over_file(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "prepaid645.toml"
    conf.parent.mkdir()
    conf.write_text('[store]\ndb = "data/h.db"\n[keys]\nfile = "/secure/h.key"\n[link]\ntimeout = 2.5\n')
    cfg = load_config(conf, environ={})
    assert cfg.store.db == tmp_path / "etc" / "data" / "h.db"  # relative to the config file
    assert cfg.keys.file == Path("/secure/h.key")
    assert cfg.section("link") == {"timeout": 2.5}
    assert cfg.section("costctl") == {}
    env = {"PREPAID645_DB": str(tmp_path / "env.db"), "PREPAID645_KEY_FILE": str(tmp_path / "env.key")}
    cfg = load_config(conf, environ=env)
    assert (cfg.store.db, cfg.keys.file) == (tmp_path / "env.db", tmp_path / "env.key")
    cfg = load_config(conf, db=tmp_path / "opt.db", key_file=tmp_path / "opt.key", environ=env)
    assert (cfg.store.db, cfg.keys.file) == (tmp_path / "opt.db", tmp_path / "opt.key")
    cfg = load_config(environ={"PREPAID645_CONFIG": str(conf)})
    assert cfg.source == conf


def test_bad_config_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[store\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})
    bad.write_text("[store]\ndb = 5\n")
    with pytest.raises(ConfigError, match=r"\[store\] db"):
        load_config(bad, environ={})


def test_a_postgresql_url_is_kept_as_written_from_option_environment_or_file(tmp_path: Path) -> None:
    url = "postgresql://headend@db.example:5432/prepaid645"
    assert load_config(db=url, environ={}).store.db == url
    cfg = load_config(environ={"PREPAID645_DB": url})
    assert cfg.store.db == url and cfg.keys.file == Path("prepaid645.key")
    toml = tmp_path / "p.toml"
    toml.write_text(f'[store]\ndb = "{url}"\n')
    assert load_config(toml, environ={}).store.db == url

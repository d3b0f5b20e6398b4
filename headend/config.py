"""Head-end configuration: one frozen dataclass per concern, loaded from TOML.

Where things are looked up, first match wins:

* database: `--db` option > $PREPAID645_DB > `[store] db` in the config file > ./prepaid645.db
  (a file path, or a PostgreSQL server: postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME)
* key file: `--key-file` option > $PREPAID645_KEY_FILE > `[keys] file` > next to the database,
  same name with the suffix ".key" (prepaid645.db -> prepaid645.key)
* config file: `--config` option > $PREPAID645_CONFIG > ./prepaid645.toml if it exists

Relative paths inside a config file are relative to that file. Sections this module does not
know (e.g. `[link]`, `[costctl]`) are kept in `HeadendConfig.sections` for the code that owns them.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "ConfigError",
    "StoreConfig",
    "KeyConfig",
    "HeadendConfig",
    "load_config",
    "DEFAULT_DB",
    "DEFAULT_CONFIG",
    "ENV_DB",
    "ENV_KEY_FILE",
    "ENV_CONFIG",
    "ENV_PASSPHRASE",
    "known_settings",
    "is_server_url",
    "sqlite_path",
]

DEFAULT_DB = "prepaid645.db"
DEFAULT_CONFIG = "prepaid645.toml"
ENV_DB = "PREPAID645_DB"
ENV_KEY_FILE = "PREPAID645_KEY_FILE"
ENV_CONFIG = "PREPAID645_CONFIG"
ENV_PASSPHRASE = "PREPAID645_KEY_PASSPHRASE"


class ConfigError(ValueError):
    """The configuration file or a setting is unusable; the message names which and why."""


@dataclass(frozen=True)
class StoreConfig:
    """Where the head-end keeps its state: an SQLite file, or a PostgreSQL server's URL (a str)."""

    db: Path | str


@dataclass(frozen=True)
class KeyConfig:
    """Where the encrypted master key lives."""

    file: Path


@dataclass(frozen=True)
class HeadendConfig:
    """Everything the head-end reads at start-up."""

    store: StoreConfig
    keys: KeyConfig
    source: Path | None = None
    sections: Mapping[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        """A config section owned by another part of the head-end (empty dict if absent)."""
        return dict(self.sections.get(name, {}))


STORE_KEYS = frozenset({"db"})


def is_server_url(location: str | os.PathLike[str]) -> bool:
    """Whether a database setting names a PostgreSQL server rather than an SQLite file."""
    return str(location).startswith(("postgresql://", "postgres://"))


def sqlite_path(location: str) -> str | None:
    """The SQLite file a database setting names (a path, "sqlite:///PATH", ":memory:"), or None
    for a PostgreSQL server's URL; ConfigError for any other URL."""
    loc = location
    if is_server_url(loc):
        return None
    if loc.startswith("sqlite://"):
        loc = loc[len("sqlite://"):]
        if loc.startswith("/") and loc[1:2] == "/":  # sqlite:////abs/path style
            loc = loc[1:]
        elif loc.startswith("/"):
            loc = loc[1:] or ":memory:"
    elif "://" in loc:
        raise ConfigError(f"database {loc.split('://')[0]}:// is not supported: give a file path, "
                          "sqlite:///PATH or postgresql://USER@HOST/DBNAME")
    return loc
KEYS_KEYS = frozenset({"file"})


def known_settings() -> dict[str, frozenset[str]]:
    """Every section of the config file and the keys its reader takes (each reader owns its list;
    prepaid645.example.toml documents every one, and a test keeps the two in step)."""
    from headend.costctl.config import KNOWN_KEYS as costctl
    from headend.notices.config import KNOWN_KEYS as notices

    return {"store": STORE_KEYS, "keys": KEYS_KEYS, "costctl": costctl, "notices": notices}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _path(value: Any, base: Path, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty path string, got {value!r}")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _setting_path(
    given: str | os.PathLike[str] | None,
    from_env: str | None,
    section: dict[str, Any],
    key: str,
    base: Path,
    what: str,
    default: Path,
) -> Path:
    # one precedence for every path setting: option, then environment, then config file, then default
    if given is not None:
        return Path(given).expanduser()
    if from_env:
        return Path(from_env).expanduser()
    if key in section:
        return _path(section[key], base, what)
    return default


def load_config(
    config: str | os.PathLike[str] | None = None,
    *,
    db: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> HeadendConfig:
    """Load the configuration, applying explicit options and environment over the file."""
    env = os.environ if environ is None else environ
    source: Path | None = None
    data: dict[str, Any] = {}
    if config is not None:
        source = Path(config)
    elif env.get(ENV_CONFIG):
        source = Path(env[ENV_CONFIG])
    elif Path(DEFAULT_CONFIG).is_file():
        source = Path(DEFAULT_CONFIG)
    if source is not None:
        data = _read_toml(source)
    base = source.resolve().parent if source is not None else Path.cwd()

    store_sec = data.get("store", {})
    keys_sec = data.get("keys", {})
    if not isinstance(store_sec, dict) or not isinstance(keys_sec, dict):
        raise ConfigError(f"config file {source}: [store] and [keys] must be tables")
    for name, sec, known in (("store", store_sec, STORE_KEYS), ("keys", keys_sec, KEYS_KEYS)):
        if set(sec) - known:
            raise ConfigError(f"config file {source}: [{name}] has unknown key(s) {', '.join(sorted(set(sec) - known))};"
                              f" it takes {', '.join(sorted(known))}")

    db_given = next((str(v) for v in (db, env.get(ENV_DB), store_sec.get("db")) if v), "")
    db_path: Path | str
    if "://" in db_given:
        sqlite_path(db_given)  # refuses what is neither a PostgreSQL server nor an SQLite file
        db_path = db_given  # a URL is not a path: kept as written (relative to nothing)
    else:
        db_path = _setting_path(db, env.get(ENV_DB), store_sec, "db", base, "[store] db", Path(DEFAULT_DB))
    kf = _setting_path(key_file, env.get(ENV_KEY_FILE), keys_sec, "file", base, "[keys] file",
                       Path(DEFAULT_DB).with_suffix(".key") if isinstance(db_path, str) else db_path.with_suffix(".key"))

    others = {k: v for k, v in data.items() if k not in ("store", "keys")}
    return HeadendConfig(StoreConfig(db_path), KeyConfig(kf), source, others)

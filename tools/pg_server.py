"""A throwaway PostgreSQL server for tests and benchmarks: initdb + pg_ctl in a temporary folder,
listening only on a Unix socket in that folder, stopped and removed afterwards.

PostgreSQL refuses to run as root (how CI runs): then the server runs as the unprivileged
`postgres` system user (Debian's package makes it; created here if missing) through `runuser`,
and the folder is handed to that user. Binaries are found on PATH or under
/usr/lib/postgresql/*/bin (where Debian puts them); `make install-postgres` installs them.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PgServer", "find_pg_bin", "PgUnavailable"]

SERVER_USER = "postgres"


class PgUnavailable(RuntimeError):
    """PostgreSQL's server programs are not installed here (the message says how to get them)."""


def find_pg_bin() -> Path:
    """The folder holding initdb and pg_ctl (the newest installed version)."""
    found = shutil.which("initdb")
    if found and Path(found).resolve().with_name("pg_ctl").exists():
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if versions:
        return Path(versions[-1]).parent
    raise PgUnavailable("PostgreSQL's server programs (initdb, pg_ctl) are not installed: run `make install-postgres`"
                        " (apt-get install postgresql)")


def _as_server_user() -> list[str]:
    """The command prefix that runs a program as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return []
    if subprocess.run(["id", "-u", SERVER_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
                       check=True, capture_output=True)
    return ["runuser", "-u", SERVER_USER, "--"]


class PgServer:
    """One running server; `url(dbname)` names a database on it, `create_db` makes one."""

    # a throwaway server need not survive a power cut: tests run without waiting for the disk
    THROWAWAY = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}

    def __init__(self, *, settings: dict[str, str] | None = None) -> None:
        """Start a server; ``settings`` are postgresql.conf lines over the defaults (THROWAWAY by default)."""
        self.bin = find_pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="prepaid645-pg-"))
        self.data = self.dir / "data"
        self.user = SERVER_USER if os.geteuid() == 0 else (os.environ.get("USER") or "postgres")
        self._names = itertools.count(1)
        self._prefix = _as_server_user()
        if self._prefix:
            shutil.chown(self.dir, SERVER_USER)
        self.dir.chmod(0o755)
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync",
                  "--locale=C")
        opts = {"listen_addresses": "''", "unix_socket_directories": f"'{self.dir}'", "port": "5432",
                "max_connections": "200", "shared_buffers": "256MB",
                **(self.THROWAWAY if settings is None else settings)}
        with (self.data / "postgresql.conf").open("a") as fh:
            fh.writelines(f"{k} = {v}\n" for k, v in opts.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "120", "start")

    def _run(self, prog: str, *args: str) -> None:
        done = subprocess.run([*self._prefix, str(self.bin / prog), *args], capture_output=True, text=True)
        if done.returncode != 0:
            log = (self.dir / "log").read_text()[-2000:] if (self.dir / "log").exists() else ""
            raise RuntimeError(f"{prog} failed ({done.returncode}): {done.stderr.strip()[-2000:]}\n{log}")

    def url(self, dbname: str = "postgres") -> str:
        """A postgresql:// URL of a database on this server (over its Unix socket)."""
        return f"postgresql://{self.user}@/{dbname}?host={self.dir}&port=5432"

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE DATABASE and the like)."""
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(statement)

    def create_db(self, template: str | None = None, *, name: str | None = None) -> str:
        """A new empty database (or a copy of ``template``); its URL."""
        name = name or f"t{os.getpid()}_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name}" + (f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""))
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast: open connections are closed) and remove its folder."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PgServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""A head-end for end-to-end tests: a fresh SQLite file and key file, `headend serve` as a child
process, and the `headend` CLI run in this process (so its exit codes and output are checked)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

from headend.cli.main import main as headend_main
from headend.keys import KeyStore
from headend.store import open_store
from tools.proc import terminate, wait_for_line

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "correct horse battery staple"


class HeadEnd:
    def __init__(self, tmp: Path, master: bytes | None = None) -> None:
        self.tmp = tmp
        self.db = tmp / "headend.db"
        self.key_file = tmp / "headend.key"
        self.master = master or os.urandom(32)
        KeyStore.create(self.key_file, PASSPHRASE, master=self.master, scrypt_n=2**12)
        self.keys = KeyStore.in_memory(self.master)
        self.env = {
            "PREPAID645_DB": str(self.db),
            "PREPAID645_KEY_FILE": str(self.key_file),
            "PREPAID645_KEY_PASSPHRASE": PASSPHRASE,
            "USER": "operator-test",
        }
        self.serve_proc: subprocess.Popen | None = None
        self.serve_output: list[str] = []

    def key_hex(self, address: str, krn: int = 0) -> str:
        return self.keys.meter_key(address, krn).hex()

    def cli(self, *argv: str) -> tuple[int, str, str]:
        """Run `headend ARGV` in this process; (exit code, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = headend_main(list(argv))
                except SystemExit as exc:  # argparse usage errors
                    code = int(exc.code or 0)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return code, out.getvalue(), err.getvalue()

    def start_serve(self, *extra: str) -> None:
        argv = [sys.executable, "-m", "headend.cli.main", "serve", "--timeout", "0.5", "--security-timeout", "0.5",
                "--retries", "1", "--retry-backoff", "0.2", "--attempts", "2", *extra]
        env = dict(os.environ, **self.env)
        self.serve_proc = subprocess.Popen(argv, cwd=str(ROOT), env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True)
        if wait_for_line(self.serve_proc, "headend serve: working", self.serve_output, 30):
            return
        self.stop_serve()
        raise RuntimeError("headend serve did not start:\n" + "".join(self.serve_output))

    def stop_serve(self) -> int | None:
        p = self.serve_proc
        if p is None:
            return None
        terminate(p, grace_s=20)
        self.serve_proc = None
        return p.returncode

    def store(self):
        return open_store(self.db)

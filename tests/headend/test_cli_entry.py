"""What an operator types is checked when it is typed: a value that would fail later (in the
worker, on the meter, in cost control) is refused at once with exit 2, naming the field and the
range; and a mistake or a closed pipe never ends in a traceback."""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from headend.cli.main import main as headend_main
from headend.store import open_store

ROOT = Path(__file__).resolve().parents[2]
M1, C1 = "000000000001", "000000000101"
KEY = "00112233445566778899aabbccddeeff"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for k in list(os.environ):
        if k.startswith("PREPAID645_"):
            monkeypatch.delenv(k)
    db = tmp_path / "h.db"
    monkeypatch.setenv("PREPAID645_DB", str(db))
    monkeypatch.setenv("USER", "opsuser")
    monkeypatch.chdir(tmp_path)
    with open_store(db) as s:
        s.add_account(C1, actor="t", alarm1_fen=1000, alarm2_fen=500)
        s.add_meter(M1, link="tcp://127.0.0.1:8645", customer=C1, actor="t")
    return db


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = headend_main(list(argv))
        except SystemExit as exc:  # argparse refusals
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("link, says", [
    ("tcp://", "no host"),
    ("tcp://127.0.0.1", "no port"),
    ("tcp://127.0.0.1:99999", "port 99999 is outside 1..65535"),
    ("tcp://127.0.0.1:0", "port 0 is outside 1..65535"),
    ("abc", "unknown scheme"),
    ("http://10.0.0.5:80", "unknown scheme"),
    ("serial:///dev/ttyUSB0?baud=abc", "baud='abc' is not a number; baud is 300..115200"),
    ("serial:///dev/ttyUSB0?baud=50", "baud=50 is outside 300..115200"),
    ("serial:///dev/ttyUSB0?parity=Q", "parity is E (even, DL/T 645's), O (odd) or N (none)"),
    ("serial:///dev/ttyUSB0?speed=2400", "unknown serial option(s) speed"),
    ("socket://gateway", "no port"),
])
def test_meter_links_are_checked_by_the_transports_parser_at_entry(env: Path, link: str, says: str) -> None:
    from headend.transports import parse_link_url

    with pytest.raises(ValueError) as parsed:
        parse_link_url(link)
    code, _, err = cli("meter", "add", "000000000002", "--customer", C1, "--link", link)
    assert code == 2 and says in err and str(parsed.value) in err, err
    code, _, err = cli("meter", "set", M1, "--link", link)
    assert code == 2 and says in err, err
    with open_store(env) as s:
        assert [m.address for m in s.find_meters()] == [M1] and s.get_meter(M1).link == "tcp://127.0.0.1:8645"


def test_meter_import_checks_every_link_and_registers_none(env: Path, tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text(f"address,link,customer\n000000000002,tcp://127.0.0.1:9000,{C1}\n"
                   f"000000000003,tcp://127.0.0.1:99999,{C1}\n")
    code, _, err = cli("meter", "import", str(csv))
    assert code == 2 and "port 99999 is outside 1..65535" in err
    with open_store(env) as s:
        assert [m.address for m in s.find_meters()] == [M1]


def test_good_links_still_register(env: Path) -> None:
    for n, link in enumerate(("tcp://10.0.0.5:8899", "serial:///dev/ttyUSB0?baud=2400&parity=E", "socket://gw:4001",
                              "rfc2217://gw:2217", "/dev/ttyS0", "listen://0.0.0.0:8700"), start=2):
        code, _, err = cli("meter", "add", f"{n:012d}", "--customer", C1, "--link", link)
        assert code == 0, err


@pytest.mark.parametrize("argv, says", [
    (("customer", "set", C1, "--tariff", "nosuchtariff"), "--tariff 'nosuchtariff' is not a known tariff; known: beijing"),
    (("customer", "add", "000000000102", "--tariff", "nosuchtariff"), "is not a known tariff"),
    (("customer", "set", C1, "--alarm2", "20"), "alarm2 (20.00 yuan) must not be above alarm1 (10.00 yuan)"),
    (("customer", "add", "000000000102", "--alarm1", "5", "--alarm2", "6"), "must not be above alarm1 (5.00 yuan)"),
    (("customer", "set", C1, "--overdraft", "1000000000"), "overdraft must be 0 .. 999999.99 yuan, got 1000000000.00 yuan"),
    (("customer", "set", C1, "--alarm1", "1000000"), "alarm1 must be 0 .. 999999.99 yuan, got 1000000.00 yuan"),
    (("customer", "set", C1, "--close-ok", "99999999"), "close-ok must be 0 .. 999999.99 yuan"),
])
def test_account_values_are_checked_at_entry_in_yuan(env: Path, argv: tuple[str, ...], says: str) -> None:
    with open_store(env) as s:
        before = s.get_account(C1)
    code, _, err = cli(*argv)
    assert code == 2 and says in err, err
    assert "fen" not in err  # the operator typed yuan
    with open_store(env) as s:
        assert s.get_account(C1) == before
        assert [a.customer for a in s.list_accounts()] == [C1]


def test_account_values_in_range_are_taken(env: Path) -> None:
    assert cli("customer", "set", C1, "--tariff", "beijing", "--alarm1", "30", "--alarm2", "20",
               "--overdraft", "999999.99")[0] == 0
    with open_store(env) as s:
        a = s.get_account(C1)
    assert (a.tariff, a.alarm1_fen, a.alarm2_fen, a.overdraft_fen) == ("beijing", 3000, 2000, 99_999_999)


@pytest.mark.parametrize("argv, says", [
    (("read", M1, "--wait", "-1"), "argument --wait: -1 is outside 0.."),
    (("recharge", M1, "5", "--wait", "-1"), "argument --wait: -1 is outside 0.."),
    (("trip", M1, "--wait", "abc"), "argument --wait: 'abc' is not a number (0..)"),
    (("commands", "--limit", "0"), "argument --limit: 0 is outside 1.."),
    (("serve", "--retries", "-1"), "argument --retries: -1 is outside 0..10"),
    (("serve", "--concurrency", "0"), "argument --concurrency: 0 is outside 1.."),
])
def test_numbers_out_of_range_are_refused_by_the_parser(env: Path, argv: tuple[str, ...], says: str) -> None:
    code, _, err = cli(*argv)
    assert code == 2 and says in err, err
    with open_store(env) as s:
        assert s.list_commands() == []


def _meter_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREPAID645_")}
    env.update(PYTHONPATH=str(ROOT), PREPAID645_METER_KEY=KEY)  # keys never on the command line
    return subprocess.run([sys.executable, "-m", "tools.meter_cli", *argv], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=env)


@pytest.mark.parametrize("option, says", [
    (("--load-w", "-5"), "fixed load must be 0..100000 W, got -5"),
    (("--noise", "101"), "load noise must be 0..100 %, got 101"),
    (("--load-scale", "-1"), "load scale must be 0..10000 %, got -1"),
    (("--speed", "0"), "clock speed must be a whole number >= 1, got 0"),
    (("--start", "2026-13-01"), "start time must look like 2026-01-31T07:00"),
    (("--address", "12345"), "address must be 12 decimal digits"),
    (("--krn", "300"), "krn must be an integer 0..255, got 300"),
])
def test_meter_run_refuses_bad_settings_before_starting(tmp_path: Path, option: tuple[str, ...], says: str) -> None:
    argv = ["run", "--quiet", "--address", M1, "--state", "m.state", *option]
    r = _meter_cli(*argv, cwd=tmp_path)
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert "config file" not in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.state").exists()


def test_meter_run_port_in_use_names_the_endpoint(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for extra in ((), ("--micropython",)):
            r = _meter_cli("run", "--quiet", "--address", M1, "--state", "m.state",
                           "--listen", f"tcp://127.0.0.1:{port}", *extra, cwd=tmp_path)
            assert r.returncode == 2, r.stderr
            assert f"cannot listen on tcp://127.0.0.1:{port}: the port is in use" in r.stderr
            assert "Traceback" not in r.stderr + r.stdout


def test_closed_output_pipe_ends_quietly(env: Path) -> None:
    rows = "".join(f"{n:012d},tcp://127.0.0.1:8645,{C1}\n" for n in range(2, 600))
    with open_store(env) as s:
        s.add_meters([dict(zip(("address", "link", "customer"), r.split(","))) for r in rows.splitlines()], actor="t")
    for cmd in ("meter list --json", "meter list", "--print-completion bash"):
        r = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m headend.cli.main {cmd} | head -1"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT, env=dict(os.environ))
        assert r.stderr == "" and r.stdout.strip(), (cmd, r.stderr)
        assert r.returncode in (0, 141)


def test_missing_database_is_bad_input_not_an_unknown_meter(env: Path, tmp_path: Path) -> None:
    code, _, err = cli("meter", "list", "--db", str(tmp_path / "typo.db"))
    assert code == 2 and f"no database at {tmp_path / 'typo.db'}" in err
    code, _, err = cli("read", M1, "--db", str(tmp_path / "typo.db"))
    assert code == 2 and not (tmp_path / "typo.db").exists()


def test_read_without_serve_says_so_at_once_and_keeps_the_command(env: Path) -> None:
    code, _, err = cli("read", M1, "--wait", "600")  # would hang for 10 minutes if it waited
    assert code == 3 and f"no `headend serve` is running on {env}" in err  # after a few seconds, not --wait
    with open_store(env) as s:
        [queued] = s.list_commands()
    assert queued.status == "queued" and queued.kind == "read"


def test_version_and_completion() -> None:
    from importlib.metadata import version

    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"headend {version('prepaid645')}"
    code, out, _ = cli("--print-completion", "bash")
    assert code == 0 and "_shtab_headend" in out and "recharge" in out and "--where" in out


def _on_a_terminal(columns: int, *argv: str) -> str:
    """`headend ARGV` with its output on a pty `columns` wide, as an operator's terminal."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    try:
        r = subprocess.run([sys.executable, "-m", "headend.cli.main", *argv], stdout=slave, stderr=subprocess.PIPE,
                           text=True, timeout=60, cwd=ROOT, env=env)
    finally:
        os.close(slave)
    drawn = b""
    try:
        while chunk := os.read(master, 65536):
            drawn += chunk
    except OSError:
        pass  # drained: its last writer is gone
    os.close(master)
    assert r.returncode == 0, r.stderr
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn.decode()).replace("\r", "")


def test_commands_list_keeps_one_line_per_command_at_100_columns(env: Path) -> None:
    with open_store(env) as s:
        for n in range(6):
            cmd = s.enqueue(M1, "set_tariff", {"set": 1, "prices": [5680, 5380, 4880, 2880] * 4,
                                               "day_table": [[h, 0, 2] for h in range(0, 24, 2)]}, actor="a-long-name")
            if n % 2:
                s.transition(cmd.id, "sent", expected="queued")
                s.transition(cmd.id, "failed", expected="sent",
                             error="meter 000000000001 refused write of 04 05 01 01: " * 3)
    out = _on_a_terminal(100, "commands")
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert max(len(ln) for ln in lines) <= 100, out
    rows = [ln for ln in lines if ln.lstrip().split(" ")[0].isdigit()]
    assert len(rows) == 6, out  # each command on one line, not wrapped over several
    assert all(M1 in ln and "set_tariff" in ln for ln in rows)
    assert sum(ln.count(M1) == 2 for ln in rows) == 3 and "…" in out  # the error names the meter again


def test_python_dash_m_headend_is_the_headend_command() -> None:
    r = subprocess.run([sys.executable, "-m", "headend", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: headend") and "serve" in r.stdout


def test_help_imports_no_command_module_and_no_numba() -> None:
    """`headend --help` lists every command from the index without importing the modules (numba
    alone takes seconds to load); a command's own module is imported when it is used."""
    code = ("import sys\nfrom headend.cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m in ('numba', 'shtab') or m.startswith('headend.cli.')), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=120)
    assert "serve" in r.stdout and "costctl" in r.stdout
    assert r.stderr.strip().splitlines()[-1] == "['headend.cli._index', 'headend.cli.main']"
    r = subprocess.run([sys.executable, "-c", code, "costctl", "--help"], capture_output=True, text=True, timeout=120)
    assert "headend.cli.costctl" in r.stderr and "headend.cli.ops" not in r.stderr


def test_command_index_is_current_and_lists_what_the_full_parser_does() -> None:
    from headend.cli._index import COMMANDS
    from headend.cli.main import build_parser, scan_commands

    assert COMMANDS == scan_commands(), "a command was added or changed: run `python -m headend.cli._index`"
    assert build_parser(["--help"]).format_help() == build_parser().format_help()


def test_completion_shells_are_shtabs() -> None:
    import shtab

    from headend.cli.main import COMPLETION_SHELLS

    assert list(COMPLETION_SHELLS) == list(shtab.SUPPORTED_SHELLS)

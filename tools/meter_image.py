"""Board images: `meter build` (mpy-cross, config, manifest) and `meter flash` (mpremote).

An image directory holds exactly what goes onto the board's filesystem, plus image.json (what
was built and every file's SHA-256, so `meter flash` can prove the board holds the same bytes):

    meter/*.mpy  hal/*.mpy  main.py  boot.py  config.json  image.json
    frozen/      (--frozen only: sources and manifest.py for a custom firmware build)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tools import mpy
from tools.sim import FIRMWARE

BOARDS = ("esp32", "rp2")
# the board HAL: shared modules plus the board's own; the simulator's modules stay off the board
HAL_MODULES = ("__init__.py", "board.py", "config.py", "slots.py", "start.py", "faults.py", "rtc.py", "keypad.py")


class ImageError(Exception):
    """A build or flash fault, said so an operator knows what to fix."""


def _tool(name: str) -> str:
    try:
        return mpy.find(name)
    except mpy.ToolMissing as exc:
        raise ImageError(str(exc)) from None


def image_sources(board: str) -> list[tuple[Path, str]]:
    """(source file, path on the board without extension change) for every compiled module."""
    out = [(p, f"meter/{p.name}") for p in sorted((FIRMWARE / "meter").glob("*.py"))]
    out += [(FIRMWARE / "hal" / n, f"hal/{n}") for n in (*HAL_MODULES, f"{board}.py")]
    return out


def compile_mpy(src: Path, dest: Path, source_name: str, debug: bool = False) -> None:
    """Compile one module with mpy-cross; raises ImageError with the compiler's message.

    Without debug, -O3 leaves out line numbers: about 3 KB less .mpy and as much heap; tracebacks
    then name functions but not lines, and the module by its dotted name (meter.core), a name the
    import interns anyway, where a file name (meter/core.py) would be one more interned name per
    module on the board's heap.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not debug:
        source_name = source_name.rsplit(".", 1)[0].replace("/", ".").removesuffix(".__init__")
    # run beside the source: mpy-cross interns the path it is given, and fails on one over 255 bytes
    r = subprocess.run([_tool("mpy-cross"), "-O0" if debug else "-O3", "-o", str(Path(dest).resolve()), "-s", source_name,
                        src.name], cwd=src.parent, capture_output=True, text=True)
    if r.returncode != 0:
        raise ImageError(f"mpy-cross failed on {src}: {r.stderr.strip() or r.stdout.strip()}")


def board_config(board: str, address: str, key: bytes, krn: int = 0, mode: str = "local",
                 bench: bool = False, pins: dict[str, Any] | None = None, uart: int | None = None,
                 baud: int = 2400, imp_per_kwh: int = 1000, meter_number: str | None = None,
                 extra: dict[str, Any] | None = None, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The image's config.json content, checked by the same code the board runs at boot (against the
    board's usual chip); `extra` adds optional fields (rtc, i2c, in_service, save_wh, save_s); warn()
    hears about pins that work but bite (strapping pins, PSRAM pins). Unset pins and the UART come
    from the board's one default table (hal.config.DEFAULTS)."""
    if board not in BOARDS:
        raise ImageError(f"board must be one of {', '.join(BOARDS)}, got {board!r}")
    if str(FIRMWARE) not in sys.path:
        sys.path.insert(0, str(FIRMWARE))
    from hal import config as hal_config
    default = hal_config.DEFAULTS[board]
    cfg: dict[str, Any] = {
        "board": board, "address": address, "key": key.hex(), "krn": krn, "mode": mode, "bench": bench,
        "meter_number": meter_number or address, "uart": default["uart"] if uart is None else uart,
        "baud": baud, "parity": "E", "imp_per_kwh": imp_per_kwh,
        "pins": {**default["pins"], **(pins or {})}, "state": "state.bin", **(extra or {}),
    }
    try:
        _, hw = hal_config.check(cfg, "config.json")
    except hal_config.ConfigError as e:
        raise ImageError(str(e)) from None
    for w in hw.get("warnings", ()):
        if warn is not None:
            warn(w)
    return cfg


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_image(board: str, cfg: dict[str, Any], out: Path, frozen: bool = False,
                debug: bool = False) -> dict[str, Any]:
    """Write the image for `board` into `out`; returns the image record (also out/image.json)."""
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("meter", "hal", "frozen"):  # a rebuild must not keep a module that was removed
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    files: list[str] = []
    if frozen:
        # manifest.py names both board HALs; only the board's own is ever imported
        other = "rp2" if board == "esp32" else "esp32"
        for src, rel in image_sources(board) + [(FIRMWARE / "hal" / f"{other}.py", f"hal/{other}.py")]:
            dest = out / "frozen" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        (out / "frozen" / "manifest.py").write_text((FIRMWARE / "manifest.py").read_text())
    else:
        for src, rel in image_sources(board):
            mpy = rel[:-3] + ".mpy"
            compile_mpy(src, out / mpy, rel, debug)
            files.append(mpy)
    for name in ("main.py", "boot.py"):
        shutil.copy2(FIRMWARE / name, out / name)
        files.append(name)
    cfg = dict(cfg)
    key_hex = cfg.pop("key")  # the key never sits in config.json: meter flash puts it in the key store
    fd = os.open(out / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key_hex)
    cfg_path = out / "config.json"
    fd = os.open(cfg_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f, indent=1)
    files.append("config.json")
    record = {
        "board": board, "address": cfg["address"], "krn": cfg["krn"], "mode": cfg["mode"], "frozen": frozen,
        "debug": debug,
        "mpy_kb": round(sum((out / f).stat().st_size for f in files if f.endswith(".mpy")) / 1024, 1),
        "files": {f: _sha(out / f) for f in files},
    }
    (out / "image.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def load_image(directory: Path) -> dict[str, Any]:
    path = directory / "image.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ImageError(f"{path} is missing: build the image first with `meter build --out {directory}`") from None
    except ValueError:
        raise ImageError(f"{path} is corrupt (not JSON): rebuild the image with `meter build`") from None
    for f, digest in record.get("files", {}).items():
        if not (directory / f).exists() or _sha(directory / f) != digest:
            raise ImageError(f"{directory / f} changed or vanished since the build: rebuild the image")
    return record


KEY_FILE = "meter.key"  # in the image directory (0600): the meter key, which `meter flash` stores once
# ESP32: into NVS (namespace prepaid645), by a script mpremote runs (the key never on a command line)
_NVS_SCRIPT = """import esp32
n = esp32.NVS("prepaid645")
try:
    n.get_blob("key", bytearray(32))
    print("meter key: kept (already in NVS)")
except OSError:
    n.set_blob("key", %r)
    n.commit()
    print("meter key: written to NVS")
"""
NVS_SCRIPT = "nvs_key.py"  # written beside meter.key (0600) for the ESP32's key step, then removed
MAINTENANCE = ":maintenance"  # hal/board.py MAINTENANCE: with it present the board starts nothing


def flash_commands(port: str, record: dict[str, Any], reset: bool = True, mpremote: str | None = None) -> list[list[str]]:
    """The mpremote invocations that deploy the image (run in the image directory), in order.

    First the maintenance flag and a reset: a running meter's watchdog cannot be stopped and
    would reset the board mid-copy, and the board then starts with neither watchdog nor main
    loop. Then two removals of old module folders (a stale .py would shadow its .mpy; they fail
    harmlessly on a fresh board); the copy; sha256sum of every file; last the flag's removal
    (and a reset into the new image, unless reset is False).
    """
    mp = [mpremote or _tool("mpremote"), "connect", port]
    files = list(record["files"])
    dirs = sorted({f.split("/")[0] for f in files if "/" in f})
    cmds = [mp + ["fs", "touch", MAINTENANCE, "+", "reset"],
            mp + ["fs", "rm", "-r", ":meter"], mp + ["fs", "rm", "-r", ":hal"]]
    copy = list(mp)
    for d in dirs:
        copy += ["fs", "mkdir", f":{d}", "+"]
    for d in dirs:
        copy += ["fs", "cp", *[f for f in files if f.startswith(d + "/")], f":{d}/", "+"]
    copy += ["fs", "cp", *[f for f in files if "/" not in f], ":"]
    cmds.append(copy)
    cmds.append(mp + ["fs", "--verbose", "sha256sum", *[f":{f}" for f in files]])
    # the key, once: kept where the board has one (a key change goes over the line, 03H 070301FF)
    if record["board"] == "esp32":
        cmds.append(mp + ["run", NVS_SCRIPT])
    else:
        cmds.append(mp + ["fs", "--verbose", "sha256sum", f":{KEY_FILE}"])
    cmds.append(mp + ["fs", "rm", MAINTENANCE] + (["+", "reset"] if reset else []))
    return cmds


def _run_board(cmd: list[str], cwd: Path, tries: int = 10) -> subprocess.CompletedProcess:
    # right after a reset the board's USB serial may not be back yet (an RP2040 enumerates again)
    for _ in range(tries):
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if r.returncode == 0 or "failed to access" not in r.stderr and "no device found" not in r.stderr:
            return r
        time.sleep(1)
    return r


def check_hashes(output: str, record: dict[str, Any]) -> list[str]:
    """Files whose SHA-256 on the board differs or is missing, from `mpremote fs sha256sum` output
    (verbose: a `sha256sum :PATH` line, then the hex digest line)."""
    seen: dict[str, str] = {}
    current = None
    for line in output.splitlines():
        line = line.strip()
        m = re.fullmatch(r"sha256sum :/?(\S+)", line)
        if m:
            current = m.group(1)
        elif current and re.fullmatch(r"[0-9a-f]{64}", line):
            seen[current] = line
            current = None
    return [f for f, digest in record["files"].items() if seen.get(f) != digest]


def flash(port: str, directory: Path, dry_run: bool = False, reset: bool = True,
          mpremote: str | None = None) -> list[list[str]]:
    """Deploy the image with mpremote (or the program `mpremote` names) and verify every file's
    SHA-256 on the board; raises ImageError naming what differs."""
    record = load_image(directory)
    cmds = flash_commands(port, record, reset, mpremote)
    if dry_run:
        return cmds
    r = subprocess.run(cmds[0], cwd=directory, capture_output=True, text=True)
    if r.returncode != 0:
        raise ImageError(f"could not put the board on {port} into maintenance: {r.stderr.strip() or r.stdout.strip()}")
    for rm in cmds[1:3]:
        _run_board(rm, directory)  # nothing to remove on a fresh board
    r = _run_board(cmds[3], directory)
    if r.returncode != 0:
        raise ImageError(f"copying to {port} failed: {r.stderr.strip() or r.stdout.strip()}")
    r = subprocess.run(cmds[4], cwd=directory, capture_output=True, text=True)
    bad = check_hashes(r.stdout, record) if r.returncode == 0 else list(record["files"])
    if bad:
        raise ImageError(f"the board on {port} does not hold the image: {', '.join(bad)} differ or are "
                         "missing; flash again, and check the filesystem has room (the board stays in "
                         "maintenance: it starts nothing until an image is verified)")
    _store_key(cmds[5], mp_of(cmds[0]), directory, record["board"], port)
    subprocess.run(cmds[6], cwd=directory, capture_output=True)
    return cmds


def mp_of(cmd: list[str]) -> list[str]:
    return cmd[:3]  # mpremote connect PORT


def _store_key(cmd: list[str], mp: list[str], directory: Path, board: str, port: str) -> None:
    key = (directory / KEY_FILE).read_text().strip()
    if board == "esp32":
        script = directory / NVS_SCRIPT
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_NVS_SCRIPT % key.encode())
        try:
            r = subprocess.run(cmd, cwd=directory, capture_output=True, text=True)
        finally:
            script.unlink()
        if r.returncode != 0 or "meter key:" not in r.stdout:
            raise ImageError(f"could not store the meter key in the board's NVS on {port}: "
                             f"{r.stderr.strip() or r.stdout.strip()}")
        return
    r = subprocess.run(cmd, cwd=directory, capture_output=True, text=True)
    if not re.search(r"^[0-9a-f]{64}$", r.stdout, re.M):  # no key file on the board yet: write it once
        r = subprocess.run(mp + ["fs", "cp", KEY_FILE, f":{KEY_FILE}"], cwd=directory, capture_output=True, text=True)
        if r.returncode != 0:
            raise ImageError(f"could not write the meter key to {port}: {r.stderr.strip() or r.stdout.strip()}")

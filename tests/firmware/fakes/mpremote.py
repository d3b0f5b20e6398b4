# A stand-in for the `mpremote` program with a directory ($FAKE_BOARD) as the board's filesystem,
# so `meter flash` runs its whole copy-and-verify path without a board. It takes what
# tools/meter_image.py sends: connect PORT, then commands joined by "+": fs rm -r, fs mkdir, fs cp,
# fs --verbose sha256sum, reset. $FAKE_BOARD_MANGLE names a file whose copy goes wrong.

import hashlib
import os
import shutil
import sys
from pathlib import Path

board = Path(os.environ["FAKE_BOARD"])
mangle = os.environ.get("FAKE_BOARD_MANGLE")
args = sys.argv[1:]
assert args[0] == "connect", args
with open(board / "log.txt", "a") as log:
    log.write(" ".join(args) + "\n")
commands, cur = [], []
for a in args[2:]:
    if a == "+":
        commands.append(cur)
        cur = []
    else:
        cur.append(a)
commands.append(cur)


def remote(p):
    assert p.startswith(":"), p
    return board / "fs" / p[1:].lstrip("/")


for c in commands:
    if c[:3] == ["fs", "rm", "-r"]:
        for p in c[3:]:
            if not remote(p).exists():
                print(f"mpremote: rm: {p}: No such file or directory", file=sys.stderr)
                sys.exit(1)
            shutil.rmtree(remote(p))
    elif c[:2] == ["fs", "rm"]:
        if not remote(c[2]).exists():
            print(f"mpremote: rm: {c[2]}: No such file or directory", file=sys.stderr)
            sys.exit(1)
        remote(c[2]).unlink()
    elif c[:2] == ["fs", "touch"]:
        remote(c[2]).parent.mkdir(parents=True, exist_ok=True)
        remote(c[2]).touch()
    elif c[:2] == ["fs", "mkdir"]:
        remote(c[2]).mkdir(parents=True)
    elif c[:2] == ["fs", "cp"]:
        *srcs, dest = c[2:]
        for s in srcs:
            target = remote(dest) / Path(s).name if dest.endswith("/") or dest == ":" else remote(dest)
            data = Path(s).read_bytes()
            target.write_bytes(data[:-1] if s == mangle else data)
            print(f"cp {s} {dest}")
    elif c[:3] == ["fs", "--verbose", "sha256sum"]:
        for p in c[3:]:
            print(f"sha256sum {p}")
            if remote(p).exists():
                print(hashlib.sha256(remote(p).read_bytes()).hexdigest())
    elif c[0] == "run":  # a script for the board: only the NVS key step is expected
        import contextlib
        sys.path.insert(0, os.environ["FAKE_BOARD_FAKES"])  # the fake esp32 module (NVS in nvs.json)
        script = Path(c[1]).read_text()
        with contextlib.chdir(board / "fs"):
            exec(script, {})
    elif c == ["reset"]:
        with open(board / "resets.txt", "a") as f:  # what the board would start into
            f.write("maintenance\n" if (board / "fs" / "maintenance").exists() else "meter\n")
    else:
        print(f"mpremote: unknown command {c}", file=sys.stderr)
        sys.exit(1)

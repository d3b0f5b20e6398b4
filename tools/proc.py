"""Child processes for tests, the demo and benchmarks: wait for a ready line without losing output,
stop on SIGTERM as on Ctrl-C, and find what a process started."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

__all__ = ["Stopped", "alive", "cpu_seconds", "descendants", "stop_on_sigterm", "terminate", "wait_for_line"]


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised where the main thread was, like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within this block SIGTERM stops the program as Ctrl-C does: it raises :class:`Stopped` (a
    KeyboardInterrupt), so the ``finally`` blocks that stop the children on Ctrl-C run for it too.
    Ctrl-C in a terminal reaches the whole process group; SIGTERM (``kill PID``, a supervisor)
    reaches only this process, and without this its children would be left running.  A second
    SIGTERM while stopping is ignored, so the clean-up is not cut short (it has its own timeouts)."""

    def handler(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Stopped(signum)

    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def terminate(*procs: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM each process still running (all of them first, so they stop side by side), then wait
    up to ``grace_s`` for each and SIGKILL one that has not stopped by then."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for_line(proc: subprocess.Popen, prefix: str, seen: list[str], timeout: float) -> bool:
    """Read ``proc``'s output in a thread (a select() on a text pipe misses buffered lines) until a
    line starts with ``prefix``; the thread keeps draining the pipe afterwards."""
    got: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            got.put(line)
        got.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = got.get(timeout=left)
        except queue.Empty:
            return False
        if line is None:
            return False
        if line.startswith(prefix):
            return True
    return False


def descendants(pid: int) -> set[int]:
    """Every process pid started, and those they started, from /proc (while pid still runs)."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.add(k)
            todo.append(k)
    return out


def alive(pid: int) -> bool:
    """Whether pid still runs (a zombie, gone but not yet reaped, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all its threads) process ``pid`` has used so far, from /proc;
    0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

"""Child processes for tests, the demo and benchmarks: wait for a ready line without losing output."""

from __future__ import annotations

import queue
import subprocess
import threading
import time

__all__ = ["wait_for_line"]


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

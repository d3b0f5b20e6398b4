# Modules loaded only for a job (hal.start for the board's start, meter.powerup for the meter's
# power-up, meter.token for a keypad token, meter.diwrite and meter.tariffcheck for a DI write,
# meter.disrec for a parameter, record or table read,
# meter.rarecmd for 08H/15H/16H, meter.protected for 03H/14H/1CH, meter.security for their and a
# token's cryptography) are let go after it: their
# code goes back to the heap, which a fully programmed meter needs, until the next job loads them.

import sys

# Only a board's heap wants the code back. Under CPython (tools.fleet's simulated meters, the
# tests) a module let go was imported again by the next command, several ms of the simulator's CPU
# per 03H/14H/1CH; kept loaded it is the same code (the job modules hold constants only), as
# store.collect does nothing there either.
_LET_GO = sys.implementation.name == "micropython"


def drop(*names):
    """Let go of the loaded modules NAMES (dotted, as imported); the caller then collects.
    On MicroPython only (see _LET_GO)."""
    if not _LET_GO:
        return
    for name in names:
        sys.modules.pop(name, None)
        pkg, leaf = name.rsplit(".", 1)
        p = sys.modules.get(pkg)
        if p is not None and hasattr(p, leaf):
            delattr(p, leaf)

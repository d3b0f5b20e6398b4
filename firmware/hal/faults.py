# The board's fault log: the last few faults that restarted the meter (an exception in the main
# loop, a start that failed), one line each, in a small file on flash that `mpremote fs cat
# :faults.log` reads. Loaded only when a fault happens, so its names cost no heap at boot.

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

FAULT_LOG = "faults.log"
_FAULT_LINES = const(4)   # the log keeps this many lines: a ring, the oldest dropped
_FAULT_TEXT = const(100)  # characters of an exception kept per line


def log(now, where, e):
    """Keep one line about exception e in FAULT_LOG (the last _FAULT_LINES lines: a small ring
    on flash, read with `mpremote fs cat :faults.log`); returns the CRC-32 of the line's text,
    which the FAULT event carries so the two can be matched."""
    from binascii import crc32
    text = ("%s %s: %r" % (where, type(e).__name__, e))[:_FAULT_TEXT]
    try:
        f = open(FAULT_LOG)
        lines = f.read().split("\n")[-_FAULT_LINES:-1]
        f.close()
    except OSError:
        lines = []
    lines.append("%d %s" % (now, text))
    try:
        f = open(FAULT_LOG, "w")
        f.write("\n".join(lines[-_FAULT_LINES:]) + "\n")
        f.close()
    except OSError:
        pass  # a full or failed filesystem: the REPL line is all there is
    return crc32(text.encode()) & 0xFFFFFFFF

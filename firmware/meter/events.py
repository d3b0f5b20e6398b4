# Last-10 event records (spec prepaid-meter.md section 8), newest first, with a total count
# per kind. A record is a tuple of ints (as it is stored, read back as DIs, and handed out):
#   TRIP / CLOSE: [t, operator, forward_wh, reverse_wh]   (operator 0xFFFFFFFF = the meter)
#   PURCHASE:     [t, count_after, amount, before, after, total_bought]   (fen)
#   PROGRAM:      [t, operator, di]
#   MACFAIL:      [t, operator, control, di]
#   FREEZE:       [t, forward_wh, T1_wh, T2_wh, T3_wh, T4_wh]   (daily and 16H freezes, DIs 0506)
#   FAULT:        [t, code, info]   (the meter's own faults, DIs 033F; codes below)
#   TOKEN:        [t, kind, tid, value, before, after]   (keypad tokens, meter.token.enter; DIs 033D)
# Freezes are kept here, not beside the state, so they are written only when a new one is taken.
# In RAM each kind's records are packed side by side in one bytearray and unpacked on access:
# 80 records as tuples took ~4.4 KB of a 64-bit heap, as bytes ~1.5 KB. A field takes 4 bytes
# (_FMT: money signed, the rest unsigned; DL/T 645 shows each in at most 8 BCD digits); a kind
# with a value that does not fit (a time before the meter epoch, moved from the 2000 epoch) is
# kept 8 bytes a field, signed, from then on, so every int a record held reads back as it was.

import struct

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

TRIP = 0
CLOSE = 1
PURCHASE = 2
PROGRAM = 3
MACFAIL = 4
FREEZE = 5
FAULT = 6
TOKEN = 7
_KINDS = const(8)
# FAULT codes: the state's newest record was damaged and the one before it used (money and
# counts may be one operation back: the head-end reconciles); the main loop failed and the
# meter restarted (info: CRC-32 of the exception's text, as kept in the board's fault log)
FALLBACK = 1
CRASH = 2
_KEEP = const(10)
METER = 0xFFFFFFFF


# each kind's record layout (I: unsigned, i: signed; little-endian, 4 bytes a field), or with the
# kind's bit in Events.wide every field as q
_FMT = ("<IIII", "<IIII", "<IIiiii", "<III", "<IIII", "<IIIIII", "<III", "<IIIiii")


class Events:
    def __init__(self):
        self.counts = [0] * _KINDS
        self.logs = [bytearray() for _ in range(_KINDS)]
        self.wide = 0  # a bit per kind: its records 8 bytes a field
        self.dirty = True  # changed since the store last wrote it

    def _fmt(self, kind):
        f = _FMT[kind]
        return "<%dq" % (len(f) - 1) if self.wide >> kind & 1 else f

    def _put(self, kind, rec, front):
        # rec packed into kind's log, as the newest (front) or after the others; the oldest
        # beyond _KEEP let go. A value its format cannot hold widens the kind first.
        f = self._fmt(kind)
        for i in range(len(rec) if f[-1] != "q" else 0):
            v = rec[i]
            if not (0 <= v <= 0xFFFFFFFF if f[i + 1] == "I" else -0x80000000 <= v <= 0x7FFFFFFF):
                rs = self.records(kind)
                self.wide |= 1 << kind
                self.logs[kind] = bytearray()
                for r in rs:
                    self._put(kind, r, False)
                f = self._fmt(kind)
                break
        b = self.logs[kind]
        p = struct.pack(f, *rec)
        if front:
            b[0:0] = p
        else:
            b.extend(p)
        n = _KEEP * len(p)
        if len(b) > n:
            b[n:] = b""

    def add(self, kind, rec):
        """Record rec (a tuple) as the newest of its kind."""
        self._put(kind, rec, True)
        self.counts[kind] += 1
        self.dirty = True

    def records(self, kind):
        """Kind's kept records as tuples, newest first."""
        f = self._fmt(kind)
        b = self.logs[kind]
        return [struct.unpack_from(f, b, o) for o in range(0, len(b), struct.calcsize(f))]

    # The meter's record keeps the log as packed binary (see Tariff.pack): the counts, then per
    # kind the number of records and the records, each as a sequence of ints. meter.powerup reads
    # it back (unpack_events), and restores a JSON record's (load_events).

    def pack(self, write):
        write(self.counts)
        for k in range(_KINDS):
            f = self._fmt(k)
            w = struct.calcsize(f)
            b = self.logs[k]
            write((len(b) // w,))
            for o in range(0, len(b), w):
                write(struct.unpack_from(f, b, o))

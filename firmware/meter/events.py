# Last-10 event records (spec prepaid-meter.md section 8), newest first, with a total count
# per kind. Records are short tuples of ints (one heap block each, where a list takes two) so
# they store as JSON and read back as DIs:
#   TRIP / CLOSE: [t, operator, forward_wh, reverse_wh]   (operator 0xFFFFFFFF = the meter)
#   PURCHASE:     [t, count_after, amount, before, after, total_bought]   (fen)
#   PROGRAM:      [t, operator, di]
#   MACFAIL:      [t, operator, control, di]
#   FREEZE:       [t, forward_wh, T1_wh, T2_wh, T3_wh, T4_wh]   (daily and 16H freezes, DIs 0506)
#   FAULT:        [t, code, info]   (the meter's own faults, DIs 033F; codes below)
#   TOKEN:        [t, kind, tid, value, before, after]   (keypad tokens, meter.token.enter; DIs 033D)
# Freezes are kept here, not beside the state, so they are written only when a new one is taken.

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


class Events:
    def __init__(self):
        self.counts = [0] * _KINDS
        self.recs = [[] for _ in range(_KINDS)]
        self.dirty = True  # changed since the store last wrote it

    def add(self, kind, rec):
        """Record rec (a tuple) as the newest of its kind."""
        r = self.recs[kind]
        r.insert(0, rec)
        if len(r) > _KEEP:
            r.pop()
        self.counts[kind] += 1
        self.dirty = True

    def last(self, kind, n):
        """The n-th last record (1 = newest) as a list, or None."""
        r = self.recs[kind]
        return list(r[n - 1]) if 1 <= n <= len(r) else None

    # The meter's record keeps the log as packed binary (see Tariff.pack): the counts, then per
    # kind the number of records and the records. unpack() makes the final tuples directly.

    def pack(self, write):
        write(self.counts)
        for r in self.recs:
            write((len(r),))
            for x in r:
                write(x)

    def unpack(self, read):
        c = list(read())
        k = len(c)  # kinds in the record: one written before a kind existed has fewer
        while len(c) < _KINDS:
            c.append(0)
        self.counts = c
        for i in range(_KINDS):
            r = self.recs[i]
            del r[:]
            if i < k:
                for _ in range(read()[0]):
                    r.append(read())
        self.dirty = True

    def load(self, obj):
        self.counts = list(obj[0])
        self.recs = [[tuple(x) for x in r] for r in obj[1]]
        while len(self.recs) < _KINDS:  # a record written before freezes (or faults) existed
            self.recs.append([])
            self.counts.append(0)
        self.dirty = True

# A 4x4 matrix keypad for typing recharge tokens (protocol/TOKENS.md). Rows are outputs, columns
# inputs with pull-ups: a scan drives one row low at a time and a pressed key pulls its column low.
# A key counts once per press, after it has read down on two scans in a row (contact bounce lasts
# a few ms; the main loop scans every ~5 ms), and again only after it has read up.
#
#     1 2 3 A
#     4 5 6 B
#     7 8 9 C
#     * 0 # D        digits type, * clears, # enters (meter.app.MeterApp.key)

_KEYS = "123A456B789C*0#D"


class Keypad:
    """Keypad(rows, cols): 4 output and 4 input pin objects (machine.Pin, or any with .value()).
    take() scans once and returns the keys newly pressed, as text."""

    def __init__(self, rows, cols):
        self._rows = rows
        self._cols = cols
        for r in rows:
            r.value(1)
        self._down = 0  # bit i: key i read down on the last scan
        self._held = 0  # bit i: key i counted, not yet released

    def take(self):
        now = 0
        for i in range(4):
            r = self._rows[i]
            r.value(0)
            for j in range(4):
                if not self._cols[j].value():
                    now |= 1 << (4 * i + j)
            r.value(1)
        new = now & self._down & ~self._held
        self._held = (self._held | new) & now
        self._down = now
        out = ""
        if new:
            for i in range(16):
                if new >> i & 1:
                    out += _KEYS[i]
        return out

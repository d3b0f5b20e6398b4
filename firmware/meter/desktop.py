# What the desktop uses of the meter and a board never does (tests, benches, the simulated
# fleet): a flash object in RAM, whole records written at once, a frame built in one call, and the
# JSON layout of the records earlier images wrote. A board never imports this module, so none of
# it takes a board's heap.

import json

from meter.codec import MAX_DATA, addr_bytes, encode_into


class RamFlash:
    """A flash object in RAM: .size, .read(offset, n), .write(offset, data), .sync() (pushes the
    record out; here there is nothing to push)."""

    def __init__(self, size=8192):
        self.size = size
        self.mem = bytearray(size)  # blank = no magic; one allocation, no temporary copy

    def read(self, offset, n):
        return bytes(self.mem[offset:offset + n])

    def write(self, offset, data):
        self.mem[offset:offset + len(data)] = data

    def sync(self):
        pass


def save(st, obj):
    """Write obj as st's (a meter.store.Store's) newest record, all JSON: the layout records had
    before the binary head."""
    save_parts(st, (json.dumps(obj).encode(),))


def save_parts(st, parts):
    """Write the concatenation of parts as st's newest record. A part is a buffer, or a tuple
    (offset, length): those bytes of the newest record's payload, copied flash to flash."""
    n = 0
    for p in parts:
        n += p[1] if isinstance(p, tuple) else len(p)
    st.begin(n)
    for p in parts:
        if isinstance(p, tuple):
            st.copy(p[0], p[1])
        else:
            st.put(p)
    st.end()


def build(addr, ctrl, data=b"", preamble=0):
    """A frame (allocates): same bytes as protocol.build_frame(addr_str(addr), ctrl, data, preamble)."""
    if isinstance(addr, str):
        addr = addr_bytes(addr)
    if len(data) > MAX_DATA:
        raise ValueError("length")
    out = bytearray(12 + preamble + len(data))
    encode_into(out, addr, ctrl, data, len(data), preamble)
    return bytes(out)


def tariff_dump(t):
    """Tariff t in the JSON form of records written before the binary head (meter.powerup
    tariff_from reads it). Day tables ("d") and zones ("z") are packed ints (meter.tariffcheck)."""
    return {
        "p": [list(x) for x in t.prices],
        "d": [[list(tab) for tab in s] for s in t._days],
        "z": [list(z) for z in t._zones],
        "lt": [list(x) for x in t.thresholds],
        "li": [list(x) for x in t.increments],
        "sw": list(t.switch),
        "st": [list(p) for p in t.settlement],
        "we": [t.weekend, t.weekend_table],
        "ho": list(t.holidays),
    }


def json_state(m):
    """Meter m's whole state in the JSON layout of records written before the binary head."""
    s = m._small_state()
    s["t"] = tariff_dump(m.tariff)
    s["e"] = [m.events.counts, event_records(m.events)]
    return s


def event_records(e):
    """Every kind's kept records (Events.records of each), as a JSON record holds them."""
    return [e.records(k) for k in range(len(e.logs))]

# Power-fail-safe state: two alternating records, each
#   "P6" | seq (4, LE) | length (2, LE) | payload | crc32 (4, LE) over everything before it,
# one in each half of the flash object. A save writes the half NOT holding the newest good
# record, so a cut at any byte leaves that newest record intact; load takes the good record
# with the higher sequence. The payload is JSON (every port has json; the state is small).

import json

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

try:
    from binascii import crc32
except ImportError:  # a port built without it
    def crc32(data, crc=0):
        crc ^= 0xFFFFFFFF
        for b in data:
            crc ^= b
            for _ in range(8):
                crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1))
        return crc ^ 0xFFFFFFFF

_MAGIC = b"P6"
_HEAD = const(8)
_CHUNK = const(128)  # bytes per flash-to-flash copy step


class Store:
    def __init__(self, flash):
        self.flash = flash
        self.half = flash.size // 2
        self.seq = 0
        self.slot = 1  # the next save goes to slot 0 on a blank flash

    def _read_slot(self, slot):
        off = slot * self.half
        h = self.flash.read(off, _HEAD)
        if len(h) < _HEAD or h[0:2] != _MAGIC:
            return -1, None
        seq = h[2] | h[3] << 8 | h[4] << 16 | h[5] << 24
        n = h[6] | h[7] << 8
        if _HEAD + n + 4 > self.half:
            return -1, None
        rest = self.flash.read(off + _HEAD, n + 4)
        c = rest[n] | rest[n + 1] << 8 | rest[n + 2] << 16 | rest[n + 3] << 24
        if crc32(memoryview(rest)[:n], crc32(h)) & 0xFFFFFFFF != c:
            return -1, None
        return seq, rest[:n]

    def load(self):
        """The newest intact state object, or None on a blank or wholly corrupt flash."""
        s0, p0 = self._read_slot(0)
        s1, p1 = self._read_slot(1)
        if p0 is not None and (p1 is None or s0 > s1):
            self.seq, self.slot = s0, 0
            return json.loads(p0)
        if p1 is not None:
            self.seq, self.slot = s1, 1
            return json.loads(p1)
        return None

    def payload(self, offset, n):
        """n bytes at offset in the newest record's payload (after load() or a save)."""
        return self.flash.read(self.slot * self.half + _HEAD + offset, n)

    def save(self, obj):
        """Write obj as the newest record."""
        self.save_parts((json.dumps(obj).encode(),))

    def save_parts(self, parts):
        """Write the concatenation of parts (together one JSON text) as the newest record.
        A part is a buffer, or a tuple (offset, length): those bytes of the newest record's
        payload, copied flash to flash in small chunks, so text that has not changed since
        the last save need not be kept in RAM. Header, parts and CRC go out as separate
        writes: no copy of the whole record is ever made (a 2 KB contiguous block is what a
        fragmented heap lacks)."""
        n = 0
        for p in parts:
            n += p[1] if isinstance(p, tuple) else len(p)
        if _HEAD + n + 4 > self.half:
            raise ValueError("state too big for flash")
        seq = self.seq + 1
        h = bytearray(_HEAD)
        h[0:2] = _MAGIC
        for i in range(4):
            h[2 + i] = seq >> (8 * i) & 0xFF
        h[6] = n & 0xFF
        h[7] = n >> 8
        src = self.slot * self.half + _HEAD  # the newest record's payload: copies come from it
        slot = 1 - self.slot
        off = slot * self.half
        fl = self.flash
        fl.write(off, h)
        c = crc32(h)
        off += _HEAD
        for p in parts:
            if isinstance(p, tuple):
                o = src + p[0]
                k = p[1]
                while k > 0:
                    m = k if k < _CHUNK else _CHUNK
                    chunk = fl.read(o, m)
                    fl.write(off, chunk)
                    c = crc32(chunk, c)
                    off += m
                    o += m
                    k -= m
                continue
            p = memoryview(p)  # a MicroPython str is a buffer: the meter keeps its pieces as str
            fl.write(off, p)
            c = crc32(p, c)
            off += len(p)
        c &= 0xFFFFFFFF
        fl.write(off, bytes((c & 0xFF, c >> 8 & 0xFF, c >> 16 & 0xFF, c >> 24)))
        # only once the CRC is down is the new record the newest one
        self.seq = seq
        self.slot = slot


class RamFlash:
    """A flash object in RAM (tests, benches): .size, .read(offset, n), .write(offset, data)."""

    def __init__(self, size=8192):
        self.size = size
        self.mem = bytearray(size)  # blank = no magic; one allocation, no temporary copy

    def read(self, offset, n):
        return bytes(self.mem[offset:offset + n])

    def write(self, offset, data):
        self.mem[offset:offset + len(data)] = data

# Power-fail-safe state: two alternating records, each
#   "P6" | seq (4, LE) | length (2, LE) | payload | crc32 (4, LE) over everything before it,
# one in each half of the flash object. A save writes the half NOT holding the newest good
# record, so a cut at any byte leaves that newest record intact; load takes the good record
# with the higher sequence. The payload is either
#   JSON text (starts with "{"; every record before the binary head, and Store.save), or
#   F | b (2, LE) | b bytes of packed binary | JSON text,
# F = 2 where the owner's times count from 2024 (meter.clock), 1 (and JSON text) where firmware
# that counted from 2000 wrote it: Store.shift says how far to move such a record's times.
# The binary head holds what is big and made of ints (the meter's tariff and event log): the
# owner reads it piece by piece with payload(), straight into its final form, so no parse
# tree of the whole record is ever held (at power-up that tree was the heap's peak).

import gc
import json
import struct
import sys

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

MAGIC = b"P6"
HEAD = const(8)
_CHUNK = const(128)  # bytes per flash-to-flash copy step


class Store:
    shift = 0  # seconds to subtract from the loaded record's times (set for a 2000-based record)

    def __init__(self, flash):
        self.flash = flash
        self.half = flash.size // 2
        self.seq = 0
        self.slot = 1  # the next save goes to slot 0 on a blank flash
        self.fell_back = False

    def load(self):
        """The newest intact record's JSON object (for a record with a binary head, its JSON
        text; the head is read with payload() from offset 3), or None on a blank or wholly
        corrupt flash. ValueError for an intact record of a format this code does not know.
        The reading is meter.powerup's (power-up code: its caller lets it go)."""
        from meter.powerup import load
        return load(self)

    def payload(self, offset, n):
        """n bytes at offset in the newest record's payload (after load() or a save)."""
        return self.flash.read(self.slot * self.half + HEAD + offset, n)

    # A record is written as a stream: begin(n) (the payload's length, known before a byte is
    # written: the owner counts its packed tables with ints_size first), then put() and copy()
    # front to back, then end(). Nothing of the record is gathered in RAM: a fragmented heap has
    # many small holes and no 2 KB one, and the meter writes its record while the heap holds it.

    def begin(self, n):
        """Start the next record, of n payload bytes (ValueError, nothing written, when it does
        not fit the flash)."""
        if HEAD + n + 4 > self.half:
            raise ValueError("state too big for flash")
        seq = self.seq + 1
        h = bytearray(HEAD)
        h[0:2] = MAGIC
        for i in range(4):
            h[2 + i] = seq >> (8 * i) & 0xFF
        h[6] = n & 0xFF
        h[7] = n >> 8
        self._src = self.slot * self.half + HEAD  # the newest record's payload: copies come from it
        self._next = seq
        self._off = (1 - self.slot) * self.half
        self._crc = 0
        self.put(h)

    def put(self, p):
        """The next bytes of the record (a MicroPython str is a buffer: the meter's text pieces
        go as they are)."""
        p = memoryview(p)
        self.flash.write(self._off, p)
        self._crc = crc32(p, self._crc)
        self._off += len(p)

    def copy(self, offset, n):
        """The next n bytes of the record copied from offset of the newest record's payload, flash
        to flash in small chunks: what has not changed since the last save is not kept in RAM."""
        o = self._src + offset
        while n > 0:
            m = n if n < _CHUNK else _CHUNK
            self.put(self.flash.read(o, m))
            o += m
            n -= m

    def put_ints(self, seq):
        """The next sequence of the record's packed ints (Tariff.pack, Events.pack write with it)."""
        self.put(_packed(seq))

    def end(self):
        """The CRC, then one flush: the record is the newest from here on."""
        c = self._crc & 0xFFFFFFFF
        self.flash.write(self._off, bytes((c & 0xFF, c >> 8 & 0xFF, c >> 16 & 0xFF, c >> 24)))
        # one flush per record: on littlefs every flush rewrites the file from the block it
        # touches on, so a flush per piece cost tens of block erases per record
        self.flash.sync()
        # only once the CRC is down is the new record the newest one
        self.seq = self._next
        self.slot = 1 - self.slot


# --- packing the owner's record in pieces --------------------------------------------------
# The meter (meter.core) writes its record as a binary head of packed int sequences (its tariff
# and event log) and the small state as JSON text in pieces of at most a few hundred bytes.

_PIECE = const(128)


_SEP = const((",", ":"))  # no spaces: the text kept in RAM and written to flash is a sixth shorter


# Packed ints in the record's binary head: a sequence is one byte (count | width code << 6)
# then its ints, each 2, 4 or 8 bytes signed LE, the narrowest that holds them all.

def _width(seq):
    w = 0
    for v in seq:
        if v < -0x8000 or v > 0x7FFF:
            w = 1 if w < 2 and -0x80000000 <= v <= 0x7FFFFFFF else 2
    return w


def _packed(seq):
    w = _width(seq)
    return struct.pack("<B%d%s" % (len(seq), "hiq"[w]), len(seq) | w << 6, *seq)


def ints_size(seq):
    """Bytes seq takes packed (Store.put_ints), counted without packing it."""
    return 1 + len(seq) * (2, 4, 8)[_width(seq)]


def text_pieces(obj):
    """The JSON text of dict obj (the meter's small state: short lists and scalars, each value
    written whole) as buffers of at most about _PIECE bytes, which Store.put writes one by one: each
    piece is joined once, so building it leaves no trail of ever longer partial strings to collect,
    and no piece needs a block a fragmented heap lacks."""
    out = []
    cur = ["{"]
    n = 1
    sep = ""
    for k in obj:
        s = sep + json.dumps(k) + ":" + json.dumps(obj[k], separators=_SEP)
        sep = ","
        if n + len(s) > _PIECE:
            out.append(_buf("".join(cur)))
            cur = []
            n = 0
        cur.append(s)
        n += len(s)
    cur.append("}")
    out.append(_buf("".join(cur)))
    return out


if sys.implementation.name == "micropython":
    def _buf(s):
        return s  # a MicroPython str is a buffer: the store writes it without an encoded copy

    collect = gc.collect
else:
    def _buf(s):
        return s.encode()

    def collect():
        pass  # CPython's heap is not fragmented by a power-up; a full collection costs ms

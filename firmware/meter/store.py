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

_MAGIC = const(b"P6")
_HEAD = const(8)
_FORMAT = const(2)  # the first payload byte of a record with a binary head, times from 2024
_SHIFT_2000 = const(757382400)  # seconds from 2000-01-01 to 2024-01-01: records before _FORMAT
_CHUNK = const(128)  # bytes per flash-to-flash copy step


class Store:
    shift = 0  # seconds to subtract from the loaded record's times (set for a 2000-based record)

    def __init__(self, flash):
        self.flash = flash
        self.half = flash.size // 2
        self.seq = 0
        self.slot = 1  # the next save goes to slot 0 on a blank flash
        self.fell_back = False

    def _read_slot(self, slot):
        # (seq, payload length) of the slot's record, (-1, 0) when it is not intact. The CRC
        # is checked in small reads: no copy of the whole record is made
        off = slot * self.half
        fl = self.flash
        h = fl.read(off, _HEAD)
        if len(h) < _HEAD or h[0:2] != _MAGIC:
            return -1, 0
        seq = h[2] | h[3] << 8 | h[4] << 16 | h[5] << 24
        n = h[6] | h[7] << 8
        if _HEAD + n + 4 > self.half:
            return -1, 0
        c = crc32(h)
        o = off + _HEAD
        k = n
        while k > 0:
            m = k if k < _CHUNK else _CHUNK
            c = crc32(fl.read(o, m), c)
            o += m
            k -= m
        e = fl.read(o, 4)
        if len(e) < 4 or c & 0xFFFFFFFF != e[0] | e[1] << 8 | e[2] << 16 | e[3] << 24:
            return -1, 0
        return seq, n

    def load(self):
        """The newest intact record's JSON object (for a record with a binary head, its JSON
        text; the head is read with payload() from offset 3), or None on a blank or wholly
        corrupt flash. ValueError for an intact record of a format this code does not know."""
        s0, n0 = self._read_slot(0)
        s1, n1 = self._read_slot(1)
        if s0 < 0 and s1 < 0:
            return None
        if s0 > s1:
            self.seq, self.slot, n = s0, 0, n0
        else:
            self.seq, self.slot, n = s1, 1, n1
        # the other slot holds a record that is not intact: the newest may be lost (a bit flip,
        # a write torn by a power cut on a layout that can tear); the owner records the fallback
        self.fell_back = min(s0, s1) < 0 and self.flash.read((1 - self.slot) * self.half, 2) == _MAGIC
        h = self.payload(0, 3)
        if h[0] != _FORMAT:
            self.shift = _SHIFT_2000
        elif self.shift:
            self.shift = 0
        if h[0] == 0x7B:  # "{": all JSON
            return json.loads(self.payload(0, n))
        if h[0] > _FORMAT or h[0] < 1 or len(h) < 3:
            raise ValueError("state record of unknown format %d: written by newer firmware? "
                             "Refusing it rather than starting from an empty state" % h[0])
        b = 3 + (h[1] | h[2] << 8)
        return json.loads(self.payload(b, n - b))

    def payload(self, offset, n):
        """n bytes at offset in the newest record's payload (after load() or a save)."""
        return self.flash.read(self.slot * self.half + _HEAD + offset, n)

    def ints_reader(self, offset, n):
        """read() for the owner's packed tables (the sequences of put_ints) in the n bytes at
        offset of the newest record's payload."""
        return _ints_reader(self, offset, n)

    # A record is written as a stream: begin(n) (the payload's length, known before a byte is
    # written: the owner counts its packed tables with ints_size first), then put() and copy()
    # front to back, then end(). Nothing of the record is gathered in RAM: a fragmented heap has
    # many small holes and no 2 KB one, and the meter writes its record while the heap holds it.

    def begin(self, n):
        """Start the next record, of n payload bytes (ValueError, nothing written, when it does
        not fit the flash)."""
        if _HEAD + n + 4 > self.half:
            raise ValueError("state too big for flash")
        seq = self.seq + 1
        h = bytearray(_HEAD)
        h[0:2] = _MAGIC
        for i in range(4):
            h[2 + i] = seq >> (8 * i) & 0xFF
        h[6] = n & 0xFF
        h[7] = n >> 8
        self._src = self.slot * self.half + _HEAD  # the newest record's payload: copies come from it
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


def _ints_reader(st, off, n):
    # read() for Tariff.unpack / Events.unpack: the next sequence of the n bytes at off in the
    # newest record's payload. They are read at once and each format made once, so the tuples
    # kept land side by side, and what is let go after is one hole, not one between each two
    b = st.payload(off, n)
    pos = [0]
    fm = {}

    def read():
        o = pos[0]
        h = b[o]
        f = fm.get(h)
        if f is None:
            f = fm[h] = "<%d%s" % (h & 63, "hiq"[h >> 6])
        pos[0] = o + 1 + struct.calcsize(f)
        return struct.unpack_from(f, b, o + 1)
    return read


def text_pieces(obj):
    """The JSON text of obj as buffers of about _PIECE bytes (Store.put writes each)."""
    return [_buf(x) for x in _pieces(obj)]


def _pieces(obj):
    """The JSON text of obj as strings of about _PIECE characters."""
    out = []
    cur = []
    _json_pieces(obj, out, cur, 0)
    if cur:
        out.append("".join(cur))
    return out


def _json_pieces(obj, out, cur, n):
    # whole pieces go to out, the fragments of the next one to cur (n characters); each piece
    # is joined once, so building it leaves no trail of ever longer partial strings to collect
    if (isinstance(obj, dict) or isinstance(obj, list)) and _big(obj):
        d = isinstance(obj, dict)
        n = _piece(out, cur, n, "{" if d else "[")
        first = True
        for k in obj:
            if not first:
                n = _piece(out, cur, n, ",")
            first = False
            if d:
                n = _piece(out, cur, n, json.dumps(k) + ":")
                n = _json_pieces(obj[k], out, cur, n)
            else:
                n = _json_pieces(k, out, cur, n)
        return _piece(out, cur, n, "}" if d else "]")
    return _piece(out, cur, n, json.dumps(obj, separators=_SEP))


def _big(obj):
    # worth splitting: a long container, or one holding containers (the tariff's 2-item
    # lists hold whole sets of day tables: dumped at once they made a 1.8 KB string, a block
    # a fragmented heap lacks). A tuple is a packed table of <= 14 ints: one piece.
    if len(obj) > 16:
        return True
    for k in obj:
        v = obj[k] if isinstance(obj, dict) else k
        if isinstance(v, (list, dict, tuple)):
            return True
    return False


def _piece(out, cur, n, s):
    if cur and n + len(s) > _PIECE:
        out.append("".join(cur))
        del cur[:]
        n = 0
    elif len(cur) == 16:  # fold the fragments so far: the list never outgrows 16 slots
        f = "".join(cur)
        del cur[:]
        cur.append(f)
    cur.append(s)
    return n + len(s)


if sys.implementation.name == "micropython":
    def _buf(s):
        return s  # a MicroPython str is a buffer: the store writes it without an encoded copy

    collect = gc.collect
else:
    def _buf(s):
        return s.encode()

    def collect():
        pass  # CPython's heap is not fragmented by a power-up; a full collection costs ms

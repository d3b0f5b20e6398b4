# DL/T 645-2007 frame codec for the meter: struct-free byte loops over buffers the caller
# owns, so decoding a request and encoding its reply take nothing from the heap.
# It must stay byte-identical to protocol/ (the head-end's construct schema); the shared
# vectors and tests/firmware/test_codec*.py hold both to that.
#
# Frame: [FE..] 68 A0..A5 68 C L DATA(+33H each) CS 16; CS = sum of bytes 68..last data.

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_START = const(0x68)
_END = const(0x16)
_PRE = const(0xFE)
_OFFSET = const(0x33)
MAX_DATA = const(255)
FRAME_MAX = const(267)  # 12 + 255

# decode results (0 = a good frame)
OK = const(0)
_E_SHORT = const(1)
_E_START = const(2)
_E_LENGTH = const(3)
_E_CHECKSUM = const(4)
_E_END = const(5)


def addr_bytes(s):
    """'123456789012' (high digit first, 'AA' pairs allowed) -> 6 wire bytes, low byte first."""
    if len(s) != 12:
        raise ValueError("address")
    out = bytearray(6)
    for i in range(6):
        pair = s[10 - 2 * i:12 - 2 * i]
        if pair == "AA" or pair == "aa":
            out[i] = 0xAA
        else:
            hi = ord(pair[0]) - 48
            lo = ord(pair[1]) - 48
            if not (0 <= hi <= 9 and 0 <= lo <= 9):
                raise ValueError("address")
            out[i] = hi << 4 | lo
    return bytes(out)


def addr_str(b):
    """6 wire bytes -> '123456789012' (AA bytes shown as 'AA')."""
    s = ""
    for i in range(5, -1, -1):
        v = b[i]
        s += "AA" if v == 0xAA else "%02X" % v
    return s


def encode_into(out, addr, ctrl, data, n, preamble=0):
    """Write a frame with n PLAIN data bytes into out; return its length."""
    p = 0
    while p < preamble:
        out[p] = _PRE
        p += 1
    out[p] = _START
    out[p + 7] = _START
    for i in range(6):
        out[p + 1 + i] = addr[i]
    out[p + 8] = ctrl
    out[p + 9] = n
    j = p + 10
    for i in range(n):
        out[j + i] = (data[i] + _OFFSET) & 0xFF
    cs = 0
    for i in range(p, j + n):
        cs += out[i]
    out[j + n] = cs & 0xFF
    out[j + n + 1] = _END
    return j + n + 2


class Frame:
    """A reusable decode target: decode() fills it in place."""

    def __init__(self):
        self.addr = bytearray(6)
        self.ctrl = 0
        self.n = 0
        self.data = bytearray(MAX_DATA)  # PLAIN data (33H removed)
        self.preamble = 0
        self.size = 0  # bytes of the frame after the preamble


def decode(raw, fr, length=-1):
    """Check and decode one whole frame (optional FE preamble) into fr; 0 or an E_ code."""
    end = len(raw) if length < 0 else length
    p = 0
    while p < end and raw[p] == _PRE:
        p += 1
    if end - p < 12:
        return _E_SHORT
    if raw[p] != _START or raw[p + 7] != _START:
        return _E_START
    n = raw[p + 9]
    if end - p != 12 + n:
        return _E_SHORT if end - p < 12 + n else _E_LENGTH
    cs = 0
    for i in range(p, p + 10 + n):
        cs += raw[i]
    if cs & 0xFF != raw[p + 10 + n]:
        return _E_CHECKSUM
    if raw[p + 11 + n] != _END:
        return _E_END
    a = fr.addr
    for i in range(6):
        a[i] = raw[p + 1 + i]
    fr.ctrl = raw[p + 8]
    fr.n = n
    d = fr.data
    j = p + 10
    for i in range(n):
        d[i] = (raw[j + i] - _OFFSET) & 0xFF
    fr.preamble = p
    fr.size = 12 + n
    return OK


def checksum_ok(buf, start, n):
    cs = 0
    for i in range(start, start + 10 + n):
        cs += buf[i]
    return cs & 0xFF == buf[start + 10 + n]


class Deframer:
    """Cuts whole frames out of a byte stream (TCP or UART pieces, noise, FE preambles).

    Same rules as protocol.Deframer, so both ends of a link cut a stream alike: hunt for
    68 xx*6 68, trust L (never the first 16H), check 16H and the checksum; a bad candidate
    loses only its first byte; an incomplete candidate is given up when a complete, sound
    frame starts after it (its L byte was noise). `discarded` counts dropped non-FE bytes.
    A babbling line cannot grow memory: past max_buffer the oldest bytes are dropped.
    Feed at most a few hundred bytes between next_frame() calls (Meter.feed does).
    """

    def __init__(self, max_buffer=1024):
        self.buf = bytearray(max_buffer)
        self._mv = memoryview(self.buf)  # frames are handed out as views of it: no second buffer
        self.s = 0  # first unread byte
        self.e = 0  # end of data
        self.discarded = 0

    def feed(self, chunk):
        k = len(chunk)
        cap = len(self.buf)
        if self.e + k > cap:
            over = self.e - self.s + k - cap  # keep only the newest cap bytes
            if over > 0:
                old = self.e - self.s
                if over >= old:
                    self._drop(old)
                    cut = over - old
                    for i in range(cut):
                        if chunk[i] != _PRE:
                            self.discarded += 1
                    chunk = memoryview(chunk)[cut:]
                    k = len(chunk)
                else:
                    self._drop(over)
            self._compact()
        e = self.e
        self.buf[e:e + k] = chunk
        self.e = e + k

    def _compact(self):
        s = self.s
        if s:
            buf = self.buf
            n = self.e - s
            for i in range(n):
                buf[i] = buf[s + i]
            self.s = 0
            self.e = n

    def _drop(self, n):
        buf = self.buf
        s = self.s
        for i in range(s, s + n):
            if buf[i] != _PRE:
                self.discarded += 1
        self.s = s + n

    def _complete_at(self, p):
        # end of a complete, sound frame at p; 0 if none can start here; -1 if it may be arriving
        buf = self.buf
        n = self.e
        if n - p < 12:
            return -1 if n - p < 8 or buf[p + 7] == _START else 0
        if buf[p + 7] != _START:
            return 0
        end = p + 12 + buf[p + 9]
        if end > n:
            return -1
        if buf[end - 1] == _END and checksum_ok(buf, p, end - p - 12):
            return end
        return 0

    def next_frame(self):
        """A memoryview of the next whole frame, or None. It is a view of the stream's buffer,
        valid until the next feed() (which may move the bytes)."""
        buf = self.buf
        while self.s < self.e:
            s = self.s
            e = self.e
            p = s
            while p < e and buf[p] != _START:
                p += 1
            if p > s:
                self._drop(p - s)
            if p == e:
                break
            end = self._complete_at(p)
            if end > 0:
                self.s = end
                return self._mv[p:end]
            if end < 0:
                q = p + 1
                while q < e:
                    if buf[q] == _START and self._complete_at(q) > 0:
                        break
                    q += 1
                if q >= e:
                    return None  # plausible start of a frame: wait for the rest
                self._drop(q - p)
            else:
                self._drop(1)
        self.s = self.e = 0
        return None


# BCD helpers: values go low byte first, as on the wire.

def put_bcd(buf, off, v, n):
    for i in range(n):
        buf[off + i] = (v // 10 % 10) << 4 | v % 10
        v //= 100


def put_sbcd(buf, off, v, n):
    # signed quantities carry the sign in bit7 of the most significant (last) byte
    put_bcd(buf, off, -v if v < 0 else v, n)
    if v < 0:
        buf[off + n - 1] |= 0x80


def get_bcd(buf, off, n):
    """The BCD number at buf[off:off+n] (low byte first), or -1 if a nibble is not a digit."""
    v = 0
    for i in range(off + n - 1, off - 1, -1):
        b = buf[i]
        hi = b >> 4
        lo = b & 15
        if hi > 9 or lo > 9:
            return -1
        v = v * 100 + hi * 10 + lo
    return v


def put_le(buf, off, v, n):
    for i in range(n):
        buf[off + i] = v & 0xFF
        v >>= 8


def get_le(buf, off, n):
    v = 0
    for i in range(off + n - 1, off - 1, -1):
        v = v << 8 | buf[i]
    return v


def get_sle(buf, off, n):
    v = get_le(buf, off, n)
    if v >= 1 << (8 * n - 1):
        v -= 1 << (8 * n)
    return v

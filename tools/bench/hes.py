# The head-end's side of protocol/SECURITY.md, written from that document for the firmware
# tests and benches (tools/bench/bench_firmware.py; tests import it from here). MicroPython-clean so the prepaid-life scenario can run under the real binary;
# the HMAC function is passed in (CPython tests pass the standard library's hmac, so the
# meter's own HMAC is checked against an independent one).

from meter import codec, desktop

try:
    from meter.clock import to_fields
except ImportError:  # pragma: no cover
    to_fields = None

# meter.codec.decode's results, by number (the meter keeps only the numbers)
_REASONS = ("ok", "truncated", "start", "length", "checksum", "terminator")


def le(v, n):
    return bytes((v >> (8 * i)) & 0xFF for i in range(n))


def bcd(v, n):
    out = bytearray(n)
    codec.put_bcd(out, 0, v, n)
    return bytes(out)


def dt6(t):
    y, mo, d, h, mi, s, _ = to_fields(t)
    return bytes((bcd(s, 1)[0], bcd(mi, 1)[0], bcd(h, 1)[0], bcd(d, 1)[0], bcd(mo, 1)[0], bcd(y - 2000, 1)[0]))


def parse(raw):
    """(control, plain data) of a reply frame."""
    fr = codec.Frame()
    r = codec.decode(raw, fr)
    if r:
        raise ValueError("bad reply frame: " + _REASONS[r])
    return fr.ctrl, bytes(fr.data[:fr.n])


class HeadEnd:
    def __init__(self, address, key, hmac_fn, meter_number=None, preamble=4):
        self.address = address
        self.addr = codec.addr_bytes(address)
        self.number = codec.addr_bytes(meter_number or address)
        self.key = key
        self.h = hmac_fn
        self.pre = preamble
        self.s = None
        self.r2 = None
        self.seq = 0

    def frame(self, ctrl, data=b""):
        return desktop.build(self.addr, ctrl, data, self.pre)

    # --- reads ---
    def read(self, di):
        return self.frame(0x11, le(di, 4))

    # --- 03H ---
    def challenge(self, op=0):
        return self.frame(0x03, le(0x070003FF, 4) + le(op, 4))

    def challenged(self, reply):
        ctrl, data = parse(reply)
        if ctrl != 0x83:
            raise ValueError("challenge refused: %02x %s" % (ctrl, data))
        self.rm = data[4:12]
        return self.rm

    def login(self, send, r1):
        """Challenge, then authenticate with R1; send(frame) -> the meter's reply."""
        self.challenged(send(self.challenge()))
        return self.authed(send(self.auth(r1)))

    def auth(self, r1, op=0):
        d = b"\x00\x00" + self.number
        rm = getattr(self, "rm", None) or bytes(8)
        c1 = self.h(self.key, b"auth" + rm + r1 + d)[:8]
        self.r1 = r1
        return self.frame(0x03, le(0x070000FF, 4) + le(op, 4) + c1 + r1 + d)

    def authed(self, reply):
        ctrl, data = parse(reply)
        if ctrl != 0x83:
            raise ValueError("authentication refused: %02x %s" % (ctrl, data))
        d = b"\x00\x00" + self.number
        if self.h(self.key, b"meter" + self.r1 + self.rm + d)[:8] != data[4:12]:
            raise ValueError("the meter's proof C2 does not verify")
        self.s = self.h(self.key, b"session" + self.rm + self.r1)[:16]
        self.rm = None
        self.seq = 0
        return data

    def mac(self, ctrl, di4, fields, seq):
        return self.h(self.s, self.addr + bytes([ctrl]) + di4 + fields + le(seq, 4))[:4]

    def _next(self):
        self.seq += 1
        return self.seq

    def sealed(self, reply, di, seq=None):
        """(control, body) of a reply to a MAC'd 03H command after checking its MAC against
        seq (default: the last one sent); body is the data between the DI (or SERR) and the MAC."""
        ctrl, data = parse(reply)
        seq = self.seq if seq is None else seq
        o = 4 if ctrl == 0x83 else 0
        if ctrl == 0xC3 and len(data) == 2:
            raise ValueError("refused before the MAC check: %s" % data)
        if self.mac(ctrl, le(di, 4), data[o:-4], seq) != data[-4:]:
            raise ValueError("reply MAC")
        return ctrl, data[o:-4]

    def purchase(self, amount, count, customer, open_account=False, op=0):
        di = le(0x070101FF if open_account else 0x070102FF, 4)
        seq = self._next()
        ac = le(amount, 4) + le(count, 4)
        cust = codec.addr_bytes(customer)
        return self.frame(0x03, di + le(op, 4) + ac + self.mac(0x03, di, ac, seq) + cust +
                          self.mac(0x03, di, ac + cust, seq))

    def validity(self, minutes, op=0):
        di = le(0x070001FF, 4)
        seq = self._next()
        m = bcd(minutes, 2)
        return self.frame(0x03, di + le(op, 4) + m + self.mac(0x03, di, m, seq))

    def key_update(self, new_krn, new_key, op=0):
        di = le(0x070301FF, 4)
        seq = self._next()
        stream = self.h(self.s, b"wrap" + bytes([new_krn]))[:16]
        wrapped = bytes(new_key[i] ^ stream[i] for i in range(16))
        f = bytes([new_krn]) + b"\x00\x00\x00" + wrapped
        return self.frame(0x03, di + le(op, 4) + f + self.mac(0x03, di, f, seq))

    def query(self, op=0):
        di = le(0x078102FF, 4)
        return self.frame(0x03, di + le(op, 4) + self.mac(0x03, di, b"", self._next()))

    def query_check(self, reply):
        """(balance, count, customer) after checking the meter's MAC over them and the query's seq."""
        ctrl, body = self.sealed(reply, 0x078102FF)
        if ctrl != 0x83:
            raise ValueError("query refused")
        return codec.get_sle(body, 0, 4), codec.get_le(body, 4, 4), codec.addr_str(body[8:14])

    def end(self, op=0):
        di = le(0x070002FF, 4)
        return self.frame(0x03, di + le(op, 4) + self.mac(0x03, di, b"", self._next()))

    # --- 15H, in a session ---
    def write_address(self, new, seq=None):
        seq = self._next() if seq is None else seq
        a = codec.addr_bytes(new)
        return self.frame(0x15, a + le(seq, 4) + self.mac(0x15, b"\x00\x00\x00\x00", a, seq))

    # --- 14H / 1CH, level 99 ---
    def write(self, di, value, op=0, seq=None):
        seq = self._next() if seq is None else seq
        di4 = le(di, 4)
        f = b"\x99\x00\x00\x00" + le(op, 4) + value
        return self.frame(0x14, di4 + f + le(seq, 4) + self.mac(0x14, di4, f, seq))

    def control(self, n1, deadline, n2=0, op=0, seq=None):
        seq = self._next() if seq is None else seq
        f = b"\x99\x00\x00\x00" + le(op, 4) + bytes((n1, n2)) + dt6(deadline)
        return self.frame(0x1C, f + le(seq, 4) + self.mac(0x1C, b"\x00\x00\x00\x00", f, seq))

    # --- bench-mode plain levels ---
    def write_plain(self, di, value, level=4, op=0):
        return self.frame(0x14, le(di, 4) + bytes((level, 0, 0, 0)) + le(op, 4) + value)

    def control_plain(self, n1, deadline, n2=0, level=2, op=0):
        return self.frame(0x1C, bytes((level, 0, 0, 0)) + le(op, 4) + bytes((n1, n2)) + dt6(deadline))

# The head-end's side of protocol/SECURITY.md, written from that document for the firmware
# tests. MicroPython-clean so the prepaid-life scenario can run under the real binary;
# the HMAC function is passed in (CPython tests pass the standard library's hmac, so the
# meter's own HMAC is checked against an independent one).

from meter import codec

try:
    from meter.clock import to_fields
except ImportError:  # pragma: no cover
    to_fields = None


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
        raise ValueError("bad reply frame: " + codec.REASONS[r])
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
        return codec.build(self.addr, ctrl, data, self.pre)

    # --- reads ---
    def read(self, di):
        return self.frame(0x11, le(di, 4))

    # --- 03H ---
    def auth(self, r1, op=0):
        d = b"\x00\x00" + self.number
        c1 = self.h(self.key, b"auth" + r1 + d)[:8]
        self.r1 = r1
        return self.frame(0x03, le(0x070000FF, 4) + le(op, 4) + c1 + r1 + d)

    def authed(self, reply):
        ctrl, data = parse(reply)
        if ctrl != 0x83:
            raise ValueError("authentication refused: %02x %s" % (ctrl, data))
        self.r2 = data[4:8]
        self.s = self.h(self.key, b"session" + self.r1 + self.r2)[:16]
        self.seq = 0
        return data

    def mac(self, ctrl, di4, fields, seq):
        return self.h(self.s, self.addr + bytes([ctrl]) + di4 + fields + le(seq, 4))[:4]

    def _next(self):
        self.seq += 1
        return self.seq

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
        return self.frame(0x03, le(0x078102FF, 4) + le(op, 4))

    def query_check(self, reply):
        """(balance, count, customer) after checking the meter's MACs on them."""
        ctrl, d = parse(reply)
        if ctrl != 0x83:
            raise ValueError("query refused")
        bal, mb, cnt, mc = d[4:8], d[8:12], d[12:16], d[16:20]
        if self.h(self.s, b"bal" + self.addr + bal + self.r2)[:4] != mb:
            raise ValueError("balance MAC")
        if self.h(self.s, b"cnt" + self.addr + cnt + self.r2)[:4] != mc:
            raise ValueError("count MAC")
        b = codec.get_sle(bal, 0, 4)
        return b, codec.get_le(cnt, 0, 4), codec.addr_str(d[20:26])

    def end(self, op=0):
        return self.frame(0x03, le(0x070002FF, 4) + le(op, 4))

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

# The meter's half of protocol/SECURITY.md: HMAC-SHA256 built on hashlib.sha256 (every
# MicroPython port has it; none has hmac), the identity-authentication session, the
# session sequence rule, and the MAC-failure lock that holds until local midnight.

import hashlib
from binascii import hexlify, unhexlify  # every port has binascii; its names cost no heap

from meter import clock

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_BLOCK = const(64)
_LOCK_AFTER = const(5)
_DEFAULT_WINDOW = const(300)  # seconds: 5 minutes


def hmac_sha256(key, msg):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    k = bytearray(_BLOCK)
    k[:len(key)] = key
    for i in range(_BLOCK):
        k[i] ^= 0x36
    inner = hashlib.sha256(k)
    inner.update(msg)
    ih = inner.digest()
    for i in range(_BLOCK):
        k[i] ^= 0x36 ^ 0x5C
    outer = hashlib.sha256(k)
    outer.update(ih)
    return outer.digest()


def ct_eq(a, b):
    # constant time in the contents: a MAC check must not leak how many bytes matched
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


def meter_key(master, addr, krn):
    """K = HMAC(master, "prepaid645/meter" + addr(6, wire order) + KRN)[:16] (head-end side; tests)."""
    return hmac_sha256(master, b"prepaid645/meter" + bytes(addr) + bytes([krn]))[:16]


class Security:
    """Session and lock state. key/krn/fails/fail_day persist (dump/load); the session does not:
    a power cycle ends it, as the spec says."""

    def __init__(self, key, krn, rand):
        self.key = bytes(key)
        self.krn = krn
        self.rand = rand
        self.fails = 0
        self.fail_day = -1
        self.window = _DEFAULT_WINDOW
        self.end()

    def dump(self):
        return [hexlify(self.key).decode(), self.krn, self.fails,
                self.fail_day, self.window]

    def load(self, obj):
        self.key = bytes(unhexlify(obj[0]))
        self.krn, self.fails, self.fail_day, self.window = obj[1], obj[2], obj[3], obj[4]

    # --- MAC failure lock -------------------------------------------------------------
    def locked(self, t):
        if self.fails and t // clock.DAY != self.fail_day:
            self.fails = 0  # a new local day clears the count (also at power-up on a new day)
        return self.fails >= _LOCK_AFTER

    def failure(self, t):
        day = t // clock.DAY
        if day != self.fail_day:
            self.fails = 0
            self.fail_day = day
        self.fails += 1
        if self.fails >= _LOCK_AFTER:
            self.end()

    # --- session ----------------------------------------------------------------------
    def end(self):
        self.s = None
        self.r2 = None
        self.last = 0
        self.expiry = 0
        self.req = None
        self.rep = None

    def active(self, t):
        if self.s is not None and t >= self.expiry:
            self.end()
        return self.s is not None

    def authenticate(self, c1, r1, disp, t):
        """R2 of a new session when C1 proves the key, else None (the caller counts it)."""
        want = hmac_sha256(self.key, b"auth" + bytes(r1) + bytes(disp))[:8]
        if not ct_eq(want, c1):
            return None
        self.end()
        r2 = self.r2 = bytes(self.rand(4))
        self.s = hmac_sha256(self.key, b"session" + bytes(r1) + r2)[:16]
        self.expiry = t + self.window
        return r2

    def set_window(self, minutes, t):
        self.window = minutes * 60
        self.expiry = t + self.window

    def mac(self, addr, ctrl, di4, fields, seq):
        m = bytearray(addr)
        m.append(ctrl)
        m.extend(di4)
        m.extend(fields)
        m.extend(bytes((seq & 0xFF, seq >> 8 & 0xFF, seq >> 16 & 0xFF, seq >> 24 & 0xFF)))
        return hmac_sha256(self.s, m)[:4]

    def tagged(self, label, addr, value):
        # status-query MACs: bind the value to this meter and this session's R2
        return hmac_sha256(self.s, label + bytes(addr) + bytes(value) + self.r2)[:4]

    def wrap_stream(self, krn):
        return hmac_sha256(self.s, b"wrap" + bytes([krn]))[:16]

    def replay(self, raw):
        """The remembered reply when raw repeats the last executed request (a retry)."""
        if self.req is not None and self.req == bytes(raw):
            return self.rep
        return None

    def remember(self, seq, raw, reply):
        self.last = seq
        self.req = bytes(raw)
        self.rep = bytes(reply)  # the reply may be a view of a buffer the next frame reuses

# The meter's half of protocol/SECURITY.md: HMAC-SHA256 built on hashlib.sha256 (every
# MicroPython port has it; none has hmac), the challenge-response identity authentication,
# the session sequence rule, and the failed-proof limit (a level that leaks away with time,
# so a burst of made-up proofs holds the meter back for minutes, never for the day).

import hashlib
from binascii import hexlify, unhexlify  # every port has binascii; its names cost no heap

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_BLOCK = const(64)
_LOCK_AFTER = const(5)  # failed proofs in a burst before proofs are refused unchecked
_LEAK = const(600)  # seconds: one failed proof is forgiven every 10 minutes
_DEFAULT_WINDOW = const(300)  # seconds: 5 minutes, for every new session


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


class Security:
    """Session and failed-proof state. key/krn and the failure level persist (dump/load); the
    session, its validity window and an outstanding challenge do not: a power cycle ends them."""

    def __init__(self, key, krn, rand):
        self.key = bytes(key)
        self.krn = krn
        self.rand = rand
        self.fails = 0  # the failure level: +1 per failed proof, -1 per _LEAK seconds
        self.fail_t = 0  # meter time the level last leaked from
        self.rm = None  # the challenge handed out and not yet used
        self.end()

    def dump(self):
        return [hexlify(self.key).decode(), self.krn, self.fails, self.fail_t]

    def load(self, obj):
        self.key = bytes(unhexlify(obj[0]))
        self.krn = obj[1]
        if len(obj) == 4:
            self.fails, self.fail_t = obj[2], obj[3]
        # a record from before the leaking level kept a day count: the new rule has forgiven it

    # --- failed-proof limit -----------------------------------------------------------
    def locked(self, t):
        """True while proofs are refused unchecked (the level is at the limit)."""
        n = self.fails
        if n:
            k = (t - self.fail_t) // _LEAK
            if k > 0:
                n = self.fails = max(0, n - k)
                self.fail_t += k * _LEAK
            elif t < self.fail_t:
                self.fail_t = t  # the clock went back: leak from now
        return n >= _LOCK_AFTER

    def failure(self, t):
        self.locked(t)  # what has leaked away first
        if self.fails == 0:
            self.fail_t = t
        if self.fails < _LOCK_AFTER:  # at the limit proofs go unchecked: nothing more to count
            self.fails += 1

    # --- session ----------------------------------------------------------------------
    def end(self):
        self.s = None
        self.last = 0
        self.expiry = 0
        self.req = None
        self.rep = None

    def active(self, t):
        if self.s is not None and t >= self.expiry:
            self.end()
        return self.s is not None

    def challenge(self):
        """The challenge Rm (8 bytes) for the next identity authentication: a fresh one once the
        last was used, else the same (a retried or doubled request must not spoil the proof on
        its way; an unused challenge has let nobody in yet)."""
        rm = self.rm
        if rm is None:
            rm = self.rm = bytes(self.rand(8))
        return rm

    def authenticate(self, c1, r1, disp, t):
        """The meter's proof C2 when C1 proves the key over the outstanding challenge, else
        None (the caller counts it). The challenge is used up either way: one guess each."""
        rm = self.rm
        self.rm = None
        if rm is None:
            return None
        want = hmac_sha256(self.key, b"auth" + rm + bytes(r1) + bytes(disp))[:8]
        if not ct_eq(want, c1):
            return None
        self.end()
        self.s = hmac_sha256(self.key, b"session" + rm + bytes(r1))[:16]
        self.expiry = t + _DEFAULT_WINDOW
        return hmac_sha256(self.key, b"meter" + bytes(r1) + rm + bytes(disp))[:8]

    def set_window(self, minutes, t):
        self.expiry = t + minutes * 60  # this session only: the next one starts at 5 minutes

    def mac(self, addr, ctrl, di4, fields, seq):
        m = bytearray(addr)
        m.append(ctrl)
        m.extend(di4)
        m.extend(fields)
        m.extend(bytes((seq & 0xFF, seq >> 8 & 0xFF, seq >> 16 & 0xFF, seq >> 24 & 0xFF)))
        return hmac_sha256(self.s, m)[:4]

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

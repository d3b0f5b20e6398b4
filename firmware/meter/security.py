# The meter's half of protocol/SECURITY.md: HMAC-SHA256 built on hashlib.sha256 (every
# MicroPython port has it; none has hmac), the key and the session's state, and the failed-proof
# limit (a level that leaks away with time, so a burst of made-up proofs holds the meter back for
# minutes, never for the day). The challenge-response identity authentication, the MACs and the
# session sequence rule are meter.protected's.

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


class Security:
    """Session and failed-proof state. key/krn and the failure level persist (dump/load); the
    session, its validity window and an outstanding challenge do not: a power cycle ends them.
    The challenge, the proofs, the MACs and the replay memory work on it from meter.protected,
    loaded for a command: a meter that is only read and metered holds none of their code."""

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

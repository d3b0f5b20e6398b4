# The meter's half of protocol/SECURITY.md: HMAC-SHA256 built on hashlib.sha256 (every
# MicroPython port has it; none has hmac), the challenge-response identity authentication and
# the session's MACs and sequence rule, over the state meter.core.Security keeps (the key, the
# session, the failed-proof level). Loaded for a command under the key or a keypad token and
# let go after it (meter.drop): a meter that is only read holds none of this code.

import hashlib

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_BLOCK = const(64)
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


def challenge(sec):
    """The challenge Rm (8 bytes) sec (meter.core.Security) hands out for the next identity
    authentication: a fresh one once the last was used, else the same (a retried or doubled
    request must not spoil the proof on its way; an unused challenge has let nobody in yet)."""
    rm = sec.rm
    if rm is None:
        rm = sec.rm = bytes(sec.rand(8))
    return rm


def authenticate(sec, c1, r1, disp, t):
    """The meter's proof C2 when C1 proves sec's key over the outstanding challenge (a session
    starts), else None (the caller counts it). The challenge is used up either way: one guess
    each."""
    rm = sec.rm
    sec.rm = None
    if rm is None:
        return None
    want = hmac_sha256(sec.key, b"auth" + rm + bytes(r1) + bytes(disp))[:8]
    if not ct_eq(want, c1):
        return None
    sec.end()
    sec.s = hmac_sha256(sec.key, b"session" + rm + bytes(r1))[:16]
    sec.expiry = t + _DEFAULT_WINDOW
    return hmac_sha256(sec.key, b"meter" + bytes(r1) + rm + bytes(disp))[:8]


def mac(sec, addr, ctrl, di4, fields, seq):
    """The session's 4-byte MAC over a command or reply."""
    m = bytearray(addr)
    m.append(ctrl)
    m.extend(di4)
    m.extend(fields)
    m.extend(bytes((seq & 0xFF, seq >> 8 & 0xFF, seq >> 16 & 0xFF, seq >> 24 & 0xFF)))
    return hmac_sha256(sec.s, m)[:4]


def wrap_stream(sec, krn):
    """The session's key stream for a key update to revision krn."""
    return hmac_sha256(sec.s, b"wrap" + bytes([krn]))[:16]


def replay(sec, raw):
    """The remembered reply when raw repeats the last executed request (a retry)."""
    if sec.req is not None and sec.req == bytes(raw):
        return sec.rep
    return None


def remember(sec, seq, raw, reply):
    """Request raw (sequence seq) executed with reply: the next must be seq + 1, a retry of it
    gets reply again."""
    sec.last = seq
    sec.req = bytes(raw)
    sec.rep = bytes(reply)  # the reply may be a view of a buffer the next frame reuses

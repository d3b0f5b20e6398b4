# The meter's half of protocol/TOKENS.md: a 20-digit keypad token is 2 class bits over a 64-bit
# block enciphered with an 8-round Feistel whose round function is AES-128 (cryptolib ECB, the
# one block cipher MicroPython ports ship). Every string goes through the same steps whether it
# is valid or not, so the time a rejection takes tells a guesser nothing. The used-TID memory and
# the bad-entry limit are pure functions over lists the caller persists.

try:
    from cryptolib import aes
except ImportError:  # CPython (simulator, tests): the same AES-128-ECB from the desktop's library;
    # a board never takes this branch, so its stubs do not know the import
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # pyright: ignore[reportMissingImports]

    class aes:
        def __init__(self, key, mode):
            self._e = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()

        def encrypt(self, src, dst):
            dst[:] = self._e.update(bytes(src))

from meter import topup

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_MEM = const(16)  # token identifiers remembered: tokens within 16 of the newest may come out of order
_BURST = const(5)  # bad entries in a burst before entry is refused unchecked
_LEAK = const(3600)  # seconds: one bad entry forgiven an hour (24 guesses a day, see TOKENS.md)


def decode(key, s):
    """(cls, sub, tid, field) of a token for this key, else None (any reason)."""
    if len(s) != 20 or not s.isdigit():
        return None  # the shape of what was typed is no secret
    n = int(s)
    ok = n < (1 << 66)
    cls = n >> 64 & 3
    b = bytearray((n & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big"))
    a = aes(key, 1)
    x = bytearray(16)
    y = bytearray(16)
    x[0] = cls
    for i in range(7, -1, -1):  # the encoder's rounds backwards; each undoes itself
        t = (i & 1) << 2
        x[1] = i
        x[2:6] = b[4 - t:8 - t]
        a.encrypt(x, y)
        for j in range(4):
            b[t + j] ^= y[j]
    x[0] = 0x10 | cls
    x[1] = 0xFF
    x[2:8] = b[0:6]
    a.encrypt(x, y)
    ok = ok & ((y[0] ^ b[6]) | (y[1] ^ b[7]) == 0)
    sub = b[0] >> 4
    ok = ok & ((cls == 0 and sub == 0) or (cls == 2 and sub < 6))
    if not ok:
        return None
    return cls, sub, b[1] << 16 | b[2] << 8 | b[3], b[4] << 8 | b[5]


def fen(field):
    """The amount a 16-bit field codes: 14-bit mantissa times 10 to a 2-bit exponent."""
    return (field & 0x3FFF) * 10 ** (field >> 14)


def seen(used, tid):
    """0 new, 1 used (remembered), 2 old (before everything the full memory holds)."""
    if tid in used:
        return 1
    if len(used) >= _MEM and tid < used[0]:
        return 2
    return 0


def use(used, tid):
    used.append(tid)
    used.sort()
    del used[:-_MEM]


def locked(lim, t):
    """True while entry is refused; lim = [level, since] leaks one level per _LEAK seconds."""
    if lim[0]:
        k = (t - lim[1]) // _LEAK
        if k > 0:
            lim[0] = max(0, lim[0] - k)
            lim[1] += k * _LEAK
        elif t < lim[1]:
            lim[1] = t  # the clock went back: leak from now
    return lim[0] >= _BURST


def bad(lim, t):
    locked(lim, t)
    if lim[0] == 0:
        lim[1] = t
    if lim[0] < _BURST:
        lim[0] += 1


def key_part(parts, sub, tid, field):
    """Collect key-change part sub-2 (32 key bits and the new revision); the new (key, krn) once
    all four parts of one revision are in, else None. parts is a list of 4 slots."""
    krn = tid >> 16
    parts[sub - 2] = (krn, (tid & 0xFFFF) << 16 | field)
    for p in parts:
        if p is None or p[0] != krn:
            return None
    k = bytearray()
    for p in parts:
        k.extend(p[1].to_bytes(4, "big"))
    for i in range(4):
        parts[i] = None
    return bytes(k), krn


# --- entry: what the meter does with a typed token -------------------------------------------
# The core keeps the token state as one list, persisted with its record (core "k"):
#   [used TIDs, bad-entry limit [level, since], token key revision, token key hex ("" = the
#    revision 0 key derived from the meter key), key-change parts (4 slots)]
# Results (what the display shows): the token did its work, was used before, is not a token
# for this meter, was not checked (too many bad entries), is valid but refused by the balance
# rules (hoarding limit, no account: enter it later), or is one key-change part of four.
OK = 0
USED = 1
INVALID = 2
LOCKED = 3
REFUSED = 4
PART = 5


def enter(m, s, t):
    """Apply token s typed on meter m at meter time t (the caller saves); one result above.
    Every accepted token is a TOKEN record (meter.events): t, kind (cls << 4 | sub), TID,
    value (fen, or the new key revision), balance before, after."""
    from meter import events
    k = m.tok
    if k is None:
        k = m.tok = [[], [0, 0], 0, "", [None] * 4]
    lim = k[1]
    if locked(lim, t):
        return LOCKED
    if k[3]:
        from binascii import unhexlify
        key = unhexlify(k[3])
    else:
        from meter.security import hmac_sha256
        key = hmac_sha256(m.sec.key, b"prepaid645/token\x00")[:16]
    d = decode(key, s)
    if d is None:
        bad(lim, t)
        return INVALID
    cls, sub, tid, v = d
    w = m.wallet
    before = w.balance
    if cls == 2 and sub > 1:
        nk = key_part(k[4], sub, tid, v)
        if nk is None:
            return PART
        from binascii import hexlify
        k[3] = hexlify(nk[0]).decode()
        v = k[2] = nk[1]
        sub = 2  # recorded as one key change, whichever part came last
        tid = 0  # a key part's TID field carries key bits: nothing to remember
    else:
        if seen(k[0], tid):
            return USED
        if cls == 0:
            v = fen(v)
            if m.remote:
                return REFUSED
            # the balance rules of a recharge (meter.topup): an opened account, the hoarding
            # limit, close permitted; the purchase count is the head-end's and stays
            if not w.opened or w.hoard and before + v > w.hoard:
                return REFUSED
            topup.credit(w, v, w.count)
            m._local(topup.topped_up(w), t)
        elif sub == 0:
            m.sec.fails = 0  # clear the MAC lock
            v = 0
        else:
            v = fen(v)
            m._local(topup.set_limits(w, hoard=v), t)
        use(k[0], tid)
    m.events.add(events.TOKEN, (t, cls << 4 | sub, tid, v, before, w.balance))
    return OK

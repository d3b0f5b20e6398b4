"""The head-end's half of protocol/TOKENS.md: token keys, amount fields, encoding, and a
vectorised decoder (the firmware's firmware/meter/token.py decode, on many strings at once).

Both halves are tested against the vectors in protocol/vectors/tokens.json.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Iterable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["CREDIT", "MANAGEMENT", "CLEAR_LOCK", "SET_HOARD", "KEY_PART", "TID_BASE_UNIX", "TokenError",
           "token_key", "amount_field", "field_amount", "encode", "key_change", "decode_many"]

CREDIT, MANAGEMENT = 0, 2          # token classes (1 and 3 are not accepted)
CLEAR_LOCK, SET_HOARD, KEY_PART = 0, 1, 2   # management subclasses; key parts are 2..5
TID_BASE_UNIX = 1704067200         # 2024-01-01T00:00:00Z: TID = minutes since then (24 bits, to 2055)
_TOP = 1 << 66
_M64 = (1 << 64) - 1


class TokenError(ValueError):
    """A token cannot carry what was asked (amount not representable, field out of range)."""


def token_key(meter_key: bytes, tkrn: int) -> bytes:
    """The meter's token key at token-key revision `tkrn`, derived from its protocol key
    (itself HMAC(vending master, meter address + KRN), see protocol/SECURITY.md)."""
    if not 0 <= tkrn <= 255:
        raise TokenError(f"token key revision {tkrn} is out of range 0..255")
    return hmac.new(meter_key, b"prepaid645/token" + bytes([tkrn]), hashlib.sha256).digest()[:16]


def amount_field(fen: int) -> int:
    """The 16-bit field coding `fen` exactly with the smallest exponent (mantissa < 16384 times
    10**e, e in 0..3): 1 fen steps up to 163.83 yuan, 1 jiao to 1,638.30, 1 yuan to 16,383,
    10 yuan to 163,830."""
    if isinstance(fen, bool) or not isinstance(fen, int) or fen < 0:
        raise TokenError(f"amount {fen!r} must be a whole, non-negative number of fen")
    for e in range(4):
        m, r = divmod(fen, 10 ** e)
        if r == 0 and m < 16384:
            return e << 14 | m
    raise TokenError(f"{fen} fen cannot be coded in a token: above 163.83 yuan it must be a whole "
                     "number of jiao, above 1,638.30 of yuan, above 16,383 of 10 yuan, at most 163,830 yuan")


def field_amount(field: int) -> int:
    """The fen a 16-bit amount field codes (the firmware's meter.token.fen)."""
    return (field & 0x3FFF) * 10 ** (field >> 14)


def _ecb(key: bytes, blocks: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(blocks) + enc.finalize()


def _check(key: bytes, cls: int, head: bytes) -> bytes:
    return _ecb(key, bytes([0x10 | cls, 0xFF]) + head + bytes(8))[:2]


def encode(key: bytes, cls: int, sub: int, tid: int, field: int, rnd: int | None = None) -> str:
    """The 20-digit token for (class, subclass, TID, 16-bit field) under `key`; rnd (4 bits)
    is drawn at random unless given (test vectors give it)."""
    if cls not in (CREDIT, MANAGEMENT) or not 0 <= sub < 16 or (cls == CREDIT and sub != 0) \
            or (cls == MANAGEMENT and sub > KEY_PART + 3):
        raise TokenError(f"no token class {cls} subclass {sub}: credit is class 0 subclass 0, "
                         "management class 2 subclasses 0..5")
    if not 0 <= tid < 1 << 24:
        raise TokenError(f"token identifier {tid} is out of range 0..16777215")
    if not 0 <= field < 1 << 16:
        raise TokenError(f"field {field} is out of range 0..65535")
    rnd = secrets.randbelow(16) if rnd is None else rnd
    head = bytes([sub << 4 | rnd]) + tid.to_bytes(3, "big") + field.to_bytes(2, "big")
    b = bytearray(head + _check(key, cls, head))
    for i in range(8):
        t = (i & 1) << 2
        f = _ecb(key, bytes([cls, i]) + bytes(b[4 - t:8 - t]) + bytes(10))
        for j in range(4):
            b[t + j] ^= f[j]
    return f"{cls << 64 | int.from_bytes(b, 'big'):020d}"


def key_change(key: bytes, new_key: bytes, new_tkrn: int, rnd: Iterable[int] | None = None) -> list[str]:
    """The four key-change tokens (enter all four, any order) moving a meter from `key` to
    `new_key` at token-key revision `new_tkrn`."""
    if len(new_key) != 16:
        raise TokenError("a token key is 16 bytes")
    if not 0 <= new_tkrn <= 255:
        raise TokenError(f"token key revision {new_tkrn} is out of range 0..255")
    rnds = list(rnd) if rnd is not None else [None] * 4
    out = []
    for i in range(4):
        w = int.from_bytes(new_key[4 * i:4 * i + 4], "big")
        out.append(encode(key, MANAGEMENT, KEY_PART + i, new_tkrn << 16 | w >> 16, w & 0xFFFF, rnds[i]))
    return out


def _f(key: bytes, prefix: np.ndarray, half: np.ndarray) -> np.ndarray:
    n = len(half)
    blk = np.zeros((n, 16), dtype=np.uint8)
    blk[:, 0:2] = prefix
    blk[:, 2:2 + half.shape[1]] = half
    return np.frombuffer(_ecb(key, blk.tobytes()), dtype=np.uint8).reshape(n, 16)


def decode_many(key: bytes, tokens: Iterable[str]) -> list[tuple[int, int, int, int] | None]:
    """Decode many strings at once: for each, (cls, sub, tid, field) as meter.token.decode gives
    it, else None. AES runs once per round over every block, so a million strings take seconds."""
    toks = list(tokens)
    shaped = [len(s) == 20 and s.isdigit() for s in toks]
    nums = [int(s) if ok else _TOP for s, ok in zip(toks, shaped)]
    n = len(nums)
    ok = np.array([v < _TOP for v in nums], dtype=bool)
    cls = np.array([(v >> 64) & 3 for v in nums], dtype=np.uint8)
    b = np.frombuffer(b"".join((v & _M64).to_bytes(8, "big") for v in nums), dtype=np.uint8).reshape(n, 8).copy()
    pre = np.zeros((n, 2), dtype=np.uint8)
    pre[:, 0] = cls
    for i in range(7, -1, -1):
        t = (i & 1) << 2
        pre[:, 1] = i
        b[:, t:t + 4] ^= _f(key, pre, b[:, 4 - t:8 - t])[:, :4]
    pre[:, 0] = 0x10 | cls
    pre[:, 1] = 0xFF
    y = _f(key, pre, b[:, 0:6])
    ok &= (y[:, 0] == b[:, 6]) & (y[:, 1] == b[:, 7])
    sub = b[:, 0] >> 4
    ok &= ((cls == 0) & (sub == 0)) | ((cls == 2) & (sub < 6))
    tid = (b[:, 1].astype(np.int64) << 16) | (b[:, 2].astype(np.int64) << 8) | b[:, 3]
    fld = (b[:, 4].astype(np.int64) << 8) | b[:, 5]
    return [(int(cls[i]), int(sub[i]), int(tid[i]), int(fld[i])) if ok[i] else None for i in range(n)]

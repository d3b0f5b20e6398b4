"""Write protocol/vectors/tokens.json: keypad token vectors (protocol/TOKENS.md).

Run from the repo root:  .venv/bin/python protocol/vectors/make_token_vectors.py [--check]

Each token record holds the token key, the fields it was made from (class, subclass, rnd, TID,
16-bit field and the amount that field codes) and the 20 digits. The head-end encoder
(headend/vouchers/token.py) writes them; the meter's decoder (firmware/meter/token.py) is
tested against them under CPython and MicroPython, so the two halves cannot drift apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "tokens.json"
MASTER = bytes(range(32))


def make() -> dict:
    from headend.keys import derive_meter_key
    from headend.vouchers import token as T

    keys, tokens = [], []
    for address, krn, tkrn in (("000000000001", 1, 0), ("000000000002", 1, 0), ("123456789012", 3, 7)):
        mk = derive_meter_key(MASTER, address, krn)
        keys.append({"master": MASTER.hex(), "address": address, "krn": krn, "meter_key": mk.hex(),
                     "tkrn": tkrn, "token_key": T.token_key(mk, tkrn).hex()})
    k = bytes.fromhex(keys[0]["token_key"])
    rows = [("credit 0.01 yuan", T.CREDIT, 0, 0, 1, 1),
            ("credit 50.00 yuan", T.CREDIT, 0, 3, 500000, 5000),
            ("credit 163.83 yuan, top of exponent 0", T.CREDIT, 0, 15, 500001, 16383),
            ("credit 1,000.00 yuan (exponent 1)", T.CREDIT, 0, 9, 500002, 100000),
            ("credit 10,000 yuan (exponent 2)", T.CREDIT, 0, 2, 500003, 1000000),
            ("credit 163,830 yuan, the largest", T.CREDIT, 0, 6, 16777215, 16383000),
            ("clear MAC lock", T.MANAGEMENT, T.CLEAR_LOCK, 4, 500004, 0),
            ("set hoarding limit 2,000 yuan", T.MANAGEMENT, T.SET_HOARD, 8, 500005, 2000 * 100)]
    for name, cls, sub, rnd, tid, fen in rows:
        field = T.amount_field(fen)
        tokens.append({"name": name, "key": 0, "cls": cls, "sub": sub, "rnd": rnd, "tid": tid,
                       "field": field, "fen": fen, "token": T.encode(k, cls, sub, tid, field, rnd)})
    new = bytes.fromhex(keys[2]["token_key"])
    for i, tok in enumerate(T.key_change(k, new, 7, rnd=[1, 2, 3, 4])):
        w = int.from_bytes(new[4 * i:4 * i + 4], "big")
        tokens.append({"name": f"key change part {i + 1} of 4 (to token key 2, revision 7)", "key": 0,
                       "cls": T.MANAGEMENT, "sub": T.KEY_PART + i, "rnd": i + 1, "tid": 7 << 16 | w >> 16,
                       "field": w & 0xFFFF, "fen": None, "token": tok})
    good = tokens[1]["token"]
    bad = [{"name": "credit 50.00 yuan with its 7th digit changed", "key": 0,
            "token": good[:6] + str((int(good[6]) + 1) % 10) + good[7:]},
           {"name": "credit 50.00 yuan for meter 000000000001 typed on meter 000000000002", "key": 1,
            "token": good},
           {"name": "above 2**66", "key": 0, "token": "99999999999999999999"},
           {"name": "19 digits", "key": 0, "token": good[:19]}]
    return {"keys": keys, "tokens": tokens, "invalid": bad}


def main(argv: list[str]) -> int:
    data = make()
    text = json.dumps(data, indent=1) + "\n"
    if "--check" in argv:
        # rnd is fixed, so the output is deterministic
        if OUT.read_text() != text:
            print(f"{OUT} is out of date: run protocol/vectors/make_token_vectors.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

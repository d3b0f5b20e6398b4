"""protocol/vectors/tokens.json: the head-end encoder writes every vector, the meter's decoder
reads every one back (CPython and the real MicroPython binary), and both reject the invalid ones."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from headend.keys import derive_meter_key
from headend.vouchers import token as H
from meter import token as T
from tests.mpy import run_micropython

ROOT = Path(__file__).resolve().parents[2]
VEC = json.loads((ROOT / "protocol/vectors/tokens.json").read_text())
KEYS = [bytes.fromhex(k["token_key"]) for k in VEC["keys"]]


def test_vector_file_is_current():
    r = subprocess.run([sys.executable, "protocol/vectors/make_token_vectors.py", "--check"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_token_keys_derive_from_master_address_and_revisions():
    for k in VEC["keys"]:
        mk = derive_meter_key(bytes.fromhex(k["master"]), k["address"], k["krn"])
        assert mk.hex() == k["meter_key"]
        assert H.token_key(mk, k["tkrn"]).hex() == k["token_key"]
    assert len(set(KEYS)) == len(KEYS)


@pytest.mark.parametrize("v", VEC["tokens"], ids=lambda v: v["name"])
def test_encoder_writes_and_meter_decoder_reads_each_vector(v):
    key = KEYS[v["key"]]
    assert H.encode(key, v["cls"], v["sub"], v["tid"], v["field"], v["rnd"]) == v["token"]
    assert len(v["token"]) == 20
    assert T.decode(key, v["token"]) == (v["cls"], v["sub"], v["tid"], v["field"])
    assert H.decode_many(key, [v["token"]]) == [(v["cls"], v["sub"], v["tid"], v["field"])]
    if v["fen"] is not None:
        assert T.fen(v["field"]) == H.field_amount(v["field"]) == v["fen"]


@pytest.mark.parametrize("v", VEC["invalid"], ids=lambda v: v["name"])
def test_invalid_vectors_are_rejected(v):
    assert T.decode(KEYS[v["key"]], v["token"]) is None
    assert H.decode_many(KEYS[v["key"]], [v["token"]]) == [None]


def test_micropython_decodes_every_vector_as_cpython_does():
    cases = [(KEYS[v["key"]].hex(), v["token"]) for v in VEC["tokens"] + VEC["invalid"]]
    code = ("from binascii import unhexlify\nfrom meter import token\n"
            f"for k, s in {cases!r}:\n    print(token.decode(unhexlify(k), s))\n")
    r = run_micropython(code)
    assert r.returncode == 0, r.stderr
    want = [str(T.decode(bytes.fromhex(k), s)) for k, s in cases]
    assert r.stdout.split("\n")[:-1] == want
    assert want.count("None") == len(VEC["invalid"])


def test_key_change_parts_assemble_in_any_order_only_when_all_four_agree():
    old, new = KEYS[0], KEYS[2]
    toks = H.key_change(old, new, 7)
    parts = [None] * 4
    got = [T.key_part(parts, *T.decode(old, s)[1:]) for s in (toks[2], toks[0], toks[3], toks[1])]
    assert got == [None, None, None, (new, 7)]
    assert parts == [None] * 4  # used up: the next change starts afresh
    # a part of another revision does not complete a set
    other = H.key_change(old, KEYS[1], 8)
    for s in toks[:3] + other[3:]:
        last = T.key_part(parts, *T.decode(old, s)[1:])
    assert last is None


def test_amount_coding_covers_large_vouchers_exactly_and_refuses_what_it_cannot_code():
    for fen in (0, 1, 16383, 16390, 163830, 65540, 100000, 163900, 1638300, 10_000_00, 16_383_000):
        assert H.field_amount(H.amount_field(fen)) == fen
        assert T.fen(H.amount_field(fen)) == fen
    for fen in (16384 + 1, 163831, 1638301, 16_383_010, 16_383_001 * 10, -1, 1.5):
        with pytest.raises(H.TokenError):
            H.amount_field(fen)

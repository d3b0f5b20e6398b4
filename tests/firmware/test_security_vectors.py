"""protocol/vectors/security.json is what the firmware produces today, and every key and MAC
in it follows protocol/SECURITY.md when re-derived with the standard library."""

import hashlib
import hmac
import json

import protocol
from tests.firmware import security_vectors


def H(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def test_vector_file_is_current():
    on_disk = json.loads(security_vectors.PATH.read_text())
    assert on_disk == json.loads(json.dumps(security_vectors.build())), \
        "run: .venv/bin/python -m tests.firmware.security_vectors"


def test_vectors_follow_the_document():
    v = json.loads(security_vectors.PATH.read_text())
    master = bytes.fromhex(v["master_key"])
    addr = bytes.fromhex(v["address_wire"])
    k = H(master, b"prepaid645/meter" + addr + bytes([v["krn"]]))[:16]
    assert k.hex() == v["meter_key"]
    rm, r1 = bytes.fromhex(v["challenge"]), bytes.fromhex(v["r1"])
    s = H(k, b"session" + rm + r1)[:16]
    assert s.hex() == v["session_key"]
    steps = {st["name"]: st for st in v["steps"]}
    assert bytes.fromhex(steps["challenge"]["reply_plain_data"])[4:] == rm
    auth = bytes.fromhex(steps["identity_auth"]["request_plain_data"])
    assert auth[8:16] == H(k, b"auth" + rm + r1 + auth[24:32])[:8]
    c2 = bytes.fromhex(steps["identity_auth"]["reply_plain_data"])[4:12]
    assert c2.hex() == v["c2"] == H(k, b"meter" + r1 + rm + auth[24:32])[:8].hex()
    for st in v["steps"]:
        req = protocol.parse_frame(bytes.fromhex(st["request"]))
        rep = protocol.parse_frame(bytes.fromhex(st["reply"]))
        assert req.data.hex(" ") == st["request_plain_data"]
        assert rep.data.hex(" ") == st["reply_plain_data"] and rep.address == v["address"]
        if "seq" in st:
            msg = bytes.fromhex(st["mac_message"])
            assert msg[:6] == addr and msg[-4:] == st["seq"].to_bytes(4, "little")
            mac = H(s, msg)[:4]
            assert mac.hex(" ") == st["mac"]
            assert mac in req.data  # the frame carries exactly this MAC
            assert rep.control in (0x83, 0x94, 0x9C, 0xC3), st["name"]
        if "reply_mac" in st:
            msg = bytes.fromhex(st["reply_mac_message"])
            assert msg[:7] == addr + bytes([rep.control]) and msg[-4:] == st["seq"].to_bytes(4, "little")
            assert H(s, msg)[:4].hex(" ") == st["reply_mac"] and rep.data[-4:] == H(s, msg)[:4]
    assert steps["recharge_retry"]["reply"] == steps["recharge"]["reply"]
    assert steps["recharge_bad_mac"]["reply_plain_data"] == "04 00"  # refused before any MAC: none on the reply
    assert steps["recharge_repeat"]["reply_plain_data"].startswith("02 00 ")
    assert steps["write_wrong_seq"]["reply_plain_data"] == "04"
    q = bytes.fromhex(steps["status_query"]["reply_plain_data"])
    assert int.from_bytes(q[4:8], "little", signed=True) == 15000 and int.from_bytes(q[8:12], "little") == 2

"""Security test vectors for the head-end, made by the meter firmware itself.

`python -m tests.firmware.security_vectors` rewrites protocol/vectors/security.json: a fixed
master key, the derived meter key, one session (challenge Rm, R1, the meter's proof C2, session
key) and a sequence of protected exchanges with the exact request and reply frames, each MAC's
input message and sequence number, and for 03H the reply MAC's. The replies come from
meter.core.Meter; the requests are built with meter.security's HMAC following
protocol/SECURITY.md. tests/firmware/test_security_vectors.py proves the file is current and
re-derives every MAC with the standard library.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "firmware"))

from meter import clock, codec  # noqa: E402
from meter.core import Meter  # noqa: E402
from meter.security import hmac_sha256  # noqa: E402
from meter.desktop import RamFlash  # noqa: E402
from tools.bench.hes import HeadEnd, parse  # noqa: E402
from tools.sim.seeded_rand import Rand  # noqa: E402

PATH = ROOT / "protocol/vectors/security.json"
MASTER = bytes(range(0x40, 0x60))  # 32 bytes
ADDRESS = "123456789012"
KRN = 1
CUSTOMER = "000000000042"
T0 = clock.from_fields(2025, 6, 5, 10, 22, 51)


def build() -> dict:
    addr = codec.addr_bytes(ADDRESS)
    key = hmac_sha256(MASTER, b"prepaid645/meter" + bytes(addr) + bytes([KRN]))[:16]
    m = Meter({"address": ADDRESS, "key": key, "krn": KRN, "mode": "local"}, RamFlash(8192), T0, Rand(645))
    he = HeadEnd(ADDRESS, key, hmac_sha256)
    steps = []

    def step(name, request, note, seq=None, mac_fields=None, di=None, ctrl=None):
        reply = m.handle(request, T0)
        rc, rd = parse(reply)
        qc, qd = parse(request)
        row = {"name": name, "note": note, "request": request.hex(" "), "request_plain_data": qd.hex(" "),
               "reply": reply.hex(" "), "reply_control": "%02X" % rc, "reply_plain_data": rd.hex(" ")}
        if seq is not None:
            di4 = bytes(4) if di is None else di.to_bytes(4, "little")
            msg = addr + bytes([ctrl]) + di4 + mac_fields + seq.to_bytes(4, "little")
            row["seq"] = seq
            row["mac_message"] = msg.hex(" ")
            row["mac"] = hmac_sha256(he.s, msg)[:4].hex(" ")
            if ctrl == 0x03:  # the meter's MAC on its reply: over the reply and the same seq
                body = rd[4:-4] if rc == 0x83 else rd[:-4]
                rmsg = addr + bytes([rc]) + di4 + body + seq.to_bytes(4, "little")
                row["reply_mac_message"] = rmsg.hex(" ")
                row["reply_mac"] = hmac_sha256(he.s, rmsg)[:4].hex(" ")
        steps.append(row)
        return reply

    step("challenge", he.challenge(), "03H 070003FF: the meter's fresh challenge Rm (8 bytes), used by one proof")
    he.rm = parse(bytes.fromhex(steps[-1]["reply"].replace(" ", "")))[1][4:12]
    rm = he.rm
    r1 = bytes.fromhex("0102030405060708")
    step("identity_auth", he.auth(r1), "03H 070000FF: C1 = HMAC(K, 'auth'+Rm+R1+D)[:8]; reply C2 + serial, "
         "C2 = HMAC(K, 'meter'+R1+Rm+D)[:8]")
    he.authed(bytes.fromhex(steps[-1]["reply"].replace(" ", "")))
    c2 = parse(bytes.fromhex(steps[-1]["reply"].replace(" ", "")))[1][4:12]

    def amount_count(a, c):
        return a.to_bytes(4, "little") + c.to_bytes(4, "little")

    step("open_account", he.purchase(10000, 1, CUSTOMER, open_account=True),
         "03H 070101FF, 100.00 yuan, count 1. MAC1 over amount+count, MAC2 over amount+count+customer; "
         "mac/mac_message below are MAC2's (MAC1 drops the customer)",
         1, amount_count(10000, 1) + codec.addr_bytes(CUSTOMER), 0x070101FF, 0x03)
    req = he.purchase(5000, 2, CUSTOMER)
    step("recharge", req, "03H 070102FF, 50.00 yuan, count 2 (MAC2 shown)", 2,
         amount_count(5000, 2) + codec.addr_bytes(CUSTOMER), 0x070102FF, 0x03)
    step("recharge_retry", req, "the identical frame again (reply lost): the same reply, nothing credited")
    q = he.query()
    step("status_query", q, "03H 078102FF + MAC(seq 3): reply balance(4)+count(4)+customer(6)+KRN+000000+MAC "
         "over the reply with the query's seq", 3, b"", 0x078102FF, 0x03)
    value = bytes.fromhex("00200000")
    step("write_alarm1", he.write(0x04001001, value),
         "14H level 99: alarm 1 = 20.00 yuan", 4, b"\x99\x00\x00\x00" + bytes(4) + value, 0x04001001, 0x14)
    deadline = clock.from_fields(2025, 6, 5, 11, 0, 0)
    n = bytes((0x1A, 0)) + bytes.fromhex("000011050625")
    step("relay_trip", he.control(0x1A, deadline),
         "1CH level 99: trip, deadline 2025-06-05 11:00:00; DI4 = 00000000 in the MAC", 5,
         b"\x99\x00\x00\x00" + bytes(4) + n, None, 0x1C)
    step("relay_direct_close", he.control(0x1C, deadline), "1CH level 99: direct close", 6,
         b"\x99\x00\x00\x00" + bytes(4) + bytes((0x1C, 0)) + bytes.fromhex("000011050625"), None, 0x1C)
    step("write_wrong_seq", he.write(0x04001002, value, seq=9),
         "sequence 9 while 7 is due: D4 04, not a MAC failure")
    step("validity", he.validity(10), "03H 070001FF: 10 minutes (BCD 10 00), this session only", 7, bytes.fromhex("1000"),
         0x070001FF, 0x03)
    new_key = bytes(range(0xA0, 0xB0))
    stream = hmac_sha256(he.s, b"wrap" + bytes([KRN + 1]))[:16]
    wrapped = bytes(a ^ b for a, b in zip(new_key, stream))
    step("key_update", he.key_update(KRN + 1, new_key),
         "03H 070301FF: new KRN 2, new key a0..af wrapped with HMAC(S, 'wrap'+KRN)[:16]", 8,
         bytes([KRN + 1, 0, 0, 0]) + wrapped, 0x070301FF, 0x03)
    bad = bytearray(parse(he.purchase(100, 3, CUSTOMER))[1])
    bad[-1] ^= 0xFF
    step("recharge_bad_mac", he.frame(0x03, bytes(bad)), "MAC2 corrupted: C3 + SERR 0004, no reply MAC (counted)")
    he.seq -= 1
    step("recharge_repeat", he.purchase(5000, 2, CUSTOMER), "count 2 again in this session: C3 + SERR 0002 + "
         "the meter's MAC over SERR with seq 9 (a repeat the head-end can trust)", 9,
         amount_count(5000, 2) + codec.addr_bytes(CUSTOMER), 0x070102FF, 0x03)
    step("end_session", he.end(), "03H 070002FF + MAC(seq 10): reply balance(4)+count(4)+customer(6)+KRN+000000+MAC",
         10, b"", 0x070002FF, 0x03)
    return {
        "about": "prepaid645 security vectors from the meter firmware (meter.core.Meter, meter.security); "
                 "layouts in protocol/SECURITY.md. Frames are hex with the FE preamble on requests; plain "
                 "data is after removing +33H. Integers little-endian.",
        "master_key": MASTER.hex(),
        "address": ADDRESS,
        "address_wire": addr.hex(),
        "krn": KRN,
        "meter_key": key.hex(),
        "meter_key_rule": "HMAC(master, b'prepaid645/meter' + address_wire + bytes([krn]))[:16]",
        "meter_number_wire": addr.hex(),
        "time": "2025-06-05 10:22:51",
        "challenge": rm.hex(),
        "r1": r1.hex(),
        "c2": c2.hex(),
        "session_key": he.s.hex(),
        "session_key_rule": "HMAC(K, b'session' + Rm + R1)[:16]",
        "new_key": new_key.hex(),
        "customer": CUSTOMER,
        "steps": steps,
    }


def main() -> None:
    PATH.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()

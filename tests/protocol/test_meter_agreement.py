"""The head-end's registry and the meter image's DI table agree: every registered DI the meter
answers decodes without a fault, and values encoded here are accepted and read back by the meter."""

from __future__ import annotations

from decimal import Decimal

from meter import clock
from meter.core import Meter
from meter.desktop import RamFlash

from protocol import build_frame, di, parse_frame, payloads

ADDRESS = "123456789012"
T0 = clock.from_fields(2025, 6, 5, 10, 22, 51)


def make_meter(bench: bool = False) -> Meter:
    config = {"address": ADDRESS, "key": bytes(16), "krn": 0, "mode": "local", "bench": bench}
    return Meter(config, RamFlash(16384), T0, lambda n: bytes(n))


def read(meter: Meter, code: int):
    reply = meter.handle(build_frame(ADDRESS, 0x11, payloads.read_request(code)), T0)
    frame = parse_frame(bytes(reply))
    assert frame.address == ADDRESS and frame.function == 0x11 and frame.is_reply
    if frame.is_abnormal:
        return None, payloads.decode_err(payloads.parse_payload(frame.control, frame.data)["err"])
    got, value = payloads.parse_read_reply(frame.data)
    assert got == code
    return di.decode_value(code, value), []


def test_every_registered_di_the_meter_answers_decodes():
    meter = make_meter()
    answered = 0
    for item in di.items():
        if "r" not in item.access:
            continue
        value, errors = read(meter, item.di)
        if value is None and errors:
            assert errors == ["no_data"], (hex(item.di), errors)
            continue
        answered += 1
    assert answered >= 200  # energy, money, limits, clock, tables, prices, ladders, records...


def test_spot_values_have_exact_types():
    meter = make_meter()
    assert isinstance(read(meter, di.by_name("remaining_money").di)[0], Decimal)
    assert isinstance(read(meter, di.by_name("status_word_3").di)[0], int)
    assert read(meter, di.by_name("comm_address").di)[0] == ADDRESS


def test_values_encoded_here_are_accepted_by_the_meter():
    meter = make_meter(bench=True)  # bench images take plain level-04 writes
    code = di.by_name("alarm_money_1").di
    data = payloads.write_request(code, di.encode_value(code, Decimal("12.34")), b"\x04\x00\x00\x00", 0)
    reply = parse_frame(bytes(meter.handle(build_frame(ADDRESS, 0x14, data), T0)))
    assert reply.control == 0x94, payloads.parse_payload(reply.control, reply.data)
    assert read(meter, code)[0] == Decimal("12.34")


def _hmac(key: bytes, msg: bytes) -> bytes:
    import hashlib
    import hmac

    return hmac.new(key, msg, hashlib.sha256).digest()


def test_security_layouts_drive_a_real_session():
    """03H, level-99 1CH and level-99 14H built here, MACs per protocol/SECURITY.md, are accepted."""
    from datetime import datetime

    from protocol.frame import address_to_wire

    key = bytes(range(16))
    meter = Meter({"address": ADDRESS, "key": key, "krn": 0, "mode": "local", "bench": False}, RamFlash(16384), T0,
                  lambda n: bytes(range(1, n + 1)))
    addr = address_to_wire(ADDRESS)

    def exchange(control: int, data: bytes) -> tuple[int, dict]:
        reply = parse_frame(bytes(meter.handle(build_frame(ADDRESS, control, data), T0)))
        return reply.control, payloads.parse_payload(reply.control, reply.data)

    control, reply = exchange(0x03, payloads.challenge_request(7))
    assert control == 0x83 and reply["di"] == 0x070003FF, reply
    rm = reply["body"]["challenge"]
    r1 = b"R1R1R1R1"
    dispersion = b"\x00\x00" + addr  # meter number defaults to the address
    c1 = _hmac(key, b"auth" + rm + r1 + dispersion)[:8]
    control, reply = exchange(0x03, payloads.identity_auth_request(7, c1, r1, dispersion))
    assert control == 0x83 and reply["di"] == 0x070000FF, reply
    assert reply["body"] == {"c2": _hmac(key, b"meter" + r1 + rm + dispersion)[:8], "serial": b"\x00\x00" + addr}
    session = _hmac(key, b"session" + rm + r1)[:16]

    def mac(c: int, di4: bytes, fields: bytes, seq: int) -> bytes:
        return _hmac(session, addr + bytes((c,)) + di4 + fields + seq.to_bytes(4, "little"))[:4]

    # open the account with 100.00 yuan (10000 fen), purchase count 1
    customer = "000000000001"
    di4 = di.di_to_wire(0x070101FF)
    money = (10000).to_bytes(4, "little") + (1).to_bytes(4, "little")
    cust_wire = bytes.fromhex(customer)[::-1]
    data = payloads.recharge_request(7, 10000, 1, mac(0x03, di4, money, 1), customer,
                                     mac(0x03, di4, money + cust_wire, 1), open_account=True)
    control, reply = exchange(0x03, data)
    assert control == 0x83 and reply == {"di": 0x070101FF, "body": {"mac": mac(0x83, di4, b"", 1)}}, reply

    query = di.di_to_wire(0x078102FF)
    control, reply = exchange(0x03, payloads.status_query_request(7, mac(0x03, query, b"", 2)))
    body = reply["body"]
    assert control == 0x83 and (body["balance"], body["count"], body["customer"]) == (10000, 1, customer)
    fields = (10000).to_bytes(4, "little") + (1).to_bytes(4, "little") + cust_wire + bytes(4)
    assert body["mac"] == mac(0x83, query, fields, 2)

    # a level-99 write (seq 3) and a level-99 trip (seq 4)
    code = di.by_name("alarm_money_1").di
    value = di.encode_value(code, Decimal("20.00"))
    level99 = b"\x99\x00\x00\x00"
    tag = mac(0x14, di.di_to_wire(code), level99 + (7).to_bytes(4, "little") + value, 3)
    control, reply = exchange(0x14, payloads.write_request(code, value, level99, 7, seq=3, mac=tag))
    assert control == 0x94, reply
    assert read(meter, code)[0] == Decimal("20.00")

    deadline = datetime(2025, 6, 5, 23, 59, 59)
    plain = payloads.relay_request(payloads.TRIP, deadline, level99, 7, seq=0, mac=bytes(4))
    tag = mac(0x1C, bytes(4), plain[:16], 4)
    control, reply = exchange(0x1C, payloads.relay_request(payloads.TRIP, deadline, level99, 7, seq=4, mac=tag))
    assert control == 0x9C, reply

    # a stale sequence number is refused with ERR bit 2
    control, reply = exchange(0x1C, payloads.relay_request(payloads.TRIP, deadline, level99, 7, seq=9, mac=tag))
    assert control == 0xDC and payloads.decode_err(reply["err"]) == ["unauthorised"]

    end = di.di_to_wire(0x070002FF)
    control, reply = exchange(0x03, payloads.end_session_request(7, bytes(4)))
    assert control == 0xC3 and payloads.decode_serr(reply["serr"]) == ["mac_failed"] and reply["mac"] is None
    control, reply = exchange(0x03, payloads.end_session_request(7, mac(0x03, end, b"", 5)))
    assert control == 0x83 and reply["body"] == {"customer": customer, "balance": 10000, "count": 1, "krn": 0,
                                                 "mac": mac(0x83, end, fields, 5)}
    control, reply = exchange(0x15, payloads.write_address_request("000000000777", 6, bytes(4)))
    assert control == 0xD5 and payloads.decode_err(reply["err"]) == ["unauthorised"]  # no session any more


def test_daily_freezes_decode_with_the_registry():
    """The meter's 0506 answers decode with the head-end's registry, and a 16H the head-end builds
    (payloads.freeze_request) is the one the meter takes."""
    from datetime import datetime

    config = {"address": ADDRESS, "key": bytes(16), "krn": 0, "mode": "remote", "bench": False}
    evening = clock.from_fields(2025, 6, 5, 21, 0, 0)
    meter = Meter(config, RamFlash(16384), evening, lambda n: bytes(n))
    meter.add_energy(123456, evening)  # 123.456 kWh: the register shows 123.45
    midnight = clock.from_fields(2025, 6, 6)
    meter.tick(midnight)
    reply = parse_frame(bytes(meter.handle(build_frame(ADDRESS, 0x16, payloads.freeze_request()), midnight + 90)))
    assert reply.control == 0x96 and reply.data == b""

    def at(code: int):
        r = parse_frame(bytes(meter.handle(build_frame(ADDRESS, 0x11, payloads.read_request(code)), midnight + 90)))
        assert r.control == 0x91
        got, value = payloads.parse_read_reply(r.data)
        assert got == code
        return di.decode_value(code, value)

    rate = meter.tariff.rate_at(evening)
    block = [Decimal("123.45")] + [Decimal("123.45") if k == rate else Decimal("0.00") for k in range(4)]
    assert at(di.by_name("daily_freeze_1_time").di) == datetime(2025, 6, 6, 0, 1)  # the instant one
    assert at(di.by_name("daily_freeze_2_time").di) == datetime(2025, 6, 6, 0, 0)
    assert at(di.by_name("daily_freeze_2_forward_active").di) == block
    assert at(di.by_name("daily_freeze_1_forward_active").di) == block
    assert at(di.by_name("daily_freeze_3_time").di) is None  # unused record: zeros, unset
    assert at(di.by_name("daily_freeze_10_forward_active").di) == [Decimal("0.00")] * 5

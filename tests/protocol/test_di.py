"""DI registry and value formats: coverage of spec section 5, exact types, faults named."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal

import pytest

from protocol import ProtocolError, di
from protocol.formats import Bcd, Block, Clock, DateTimeWeek, DateWeek, Digits, SlotEntry, Table, Word, ZoneEntry

# (DI, format picture or kind, unit) for every DI listed in shared/spec/dlt645.md section 5
SPEC_SECTION_5 = [
    (0x00000000, "XXXXXX.XX", "kWh"),
    (0x00010000, "XXXXXX.XX", "kWh"),
    (0x00010100, "XXXXXX.XX", "kWh"),
    (0x00013F00, "XXXXXX.XX", "kWh"),
    (0x0001FF00, "block", "kWh"),
    (0x00020000, "XXXXXX.XX", "kWh"),
    (0x02010100, "XXX.X", "V"),
    (0x0201FF00, "block", "V"),
    (0x02020100, "XXX.XXX", "A"),
    (0x0202FF00, "block", "A"),
    (0x02030000, "XX.XXXX", "kW"),
    (0x02030100, "XX.XXXX", "kW"),
    (0x02060000, "X.XXX", ""),
    (0x02800002, "XX.XX", "Hz"),
    (0x02800020, "XXXX.XXXX", "yuan/kWh"),
    (0x02800021, "XXXX.XXXX", "yuan/kWh"),
    (0x04000101, "YYMMDDWW", ""),
    (0x04000102, "hhmmss", ""),
    (0x0400010C, "YYMMDDWWhhmmss", ""),
    (0x04000401, "digits", ""),
    (0x04000402, "digits", ""),
    (0x0400040E, "digits", ""),
    *[(0x04000500 + k, "word", "") for k in range(1, 8)],
    (0x040005FF, "block", ""),
    (0x00900100, "XXXXXX.XX", "kWh"),
    (0x00900101, "XXXXXX.XX", "kWh"),
    (0x00900200, "XXXXXX.XX", "yuan"),
    (0x00900201, "XXXXXX.XX", "yuan"),
    *[(0x04000F00 + k, "XXXXXX.XX", "kWh") for k in range(1, 5)],
    *[(0x04001000 + k, "XXXXXX.XX", "yuan") for k in range(1, 6)],
    (0x04001006, "XXXXXX.XX", "yuan"),
    *[(0x04000200 + k, "NN", "") for k in (1, 2, 3, 4, 5, 7)],
    *[(0x04000100 + k, "YYMMDDhhmm", "") for k in (6, 7, 8, 9)],
    (0x04010000, "table", ""),
    *[(0x04010000 + k, "table", "") for k in range(1, 9)],
    (0x04020000, "table", ""),
    (0x04050101, "XXXX.XXXX", "yuan/kWh"),
    (0x0405013F, "XXXX.XXXX", "yuan/kWh"),
    (0x040501FF, "block", "yuan/kWh"),
    (0x04050201, "XXXX.XXXX", "yuan/kWh"),
    (0x04060001, "XXXXXX.XX", "kWh"),
    (0x04060101, "XXXX.XXXX", "yuan/kWh"),
    (0x04060201, "XXXXXX.XX", "kWh"),
    (0x04060301, "XXXX.XXXX", "yuan/kWh"),
    *[(0x04000C00 + k, "binary", "") for k in range(1, 11)],
    *[(0x03330100 + k, "YYMMDDhhmm", "") for k in range(1, 11)],
    (0x03330201, "NNNN", ""),
    (0x03330301, "XXXXXX.XX", "yuan"),
    (0x03330401, "XXXXXX.XX", "yuan"),
    (0x03330501, "XXXXXX.XX", "yuan"),
    (0x03330601, "XXXXXX.XX", "yuan"),
    (0x03320301, "XXXXXX.XX", "kWh"),
    (0x1D000001, "NNNNNN", ""),
    (0x1D000101, "YYMMDDhhmmss", ""),
    (0x1D000201, "word", ""),
    (0x1D000301, "XXXXXX.XX", "kWh"),
    (0x1D000401, "XXXXXX.XX", "kWh"),
    (0x1D00FF01, "record", ""),
    (0x1E000101, "YYMMDDhhmmss", ""),
    (0x1E00FF0A, "record", ""),
    (0x03300000, "NNNNNN", ""),
    (0x03300E00, "NNNNNN", ""),
]


@pytest.mark.parametrize("code, kind, unit", SPEC_SECTION_5, ids=[f"{c:08X}" for c, _, _ in SPEC_SECTION_5])
def test_spec_section_5_is_covered(code, kind, unit):
    item = di.lookup(code)
    assert item is not None, f"{code:08X} missing"
    assert item.unit == unit
    fmt = item.fmt
    kinds = {"block": Block, "digits": Digits, "word": Word, "table": Table}
    if kind in kinds:
        assert isinstance(fmt, kinds[kind])
    elif kind == "binary":
        assert item.length == 4 and item.access == "w"
    elif kind == "record":
        assert [n for n, _ in fmt.fields] == ["time", "operator", "forward", "reverse"] and item.length == 18
    else:
        assert fmt.picture == kind
    assert item.access in ("r", "w", "rw")
    assert di.by_name(item.name) is item


def test_names_from_the_api_contract():
    assert di.by_name("forward_active_total").di == 0x00010000
    assert di.by_name("remaining_money").di == 0x00900200
    assert di.by_name("status_word_3").di == 0x04000503
    assert di.by_name("remaining_money").access == "r"
    assert di.by_name("hoarding_money_limit").access == "rw"
    with pytest.raises(KeyError, match="remaining_money"):
        di.by_name("remaining")


def test_wire_order():
    assert di.di_to_wire(0x00010000) == b"\x00\x00\x01\x00"
    assert di.di_from_wire(b"\x00\x00\x01\x00") == 0x00010000
    assert di.di_text(0x0001FF00) == "00 01 FF 00"


@pytest.mark.parametrize(
    "code, raw, value",
    [
        (0x00900200, "45230100", Decimal("123.45")),
        (0x00900200, "00000000", Decimal("0.00")),
        (0x00900200, "99999999", Decimal("999999.99")),
        (0x02020100, "235100", Decimal("5.123")),
        (0x02020100, "235180", Decimal("-5.123")),
        (0x02060000, "0010", Decimal("1.000")),
        (0x02010100, "4822", Decimal("224.8")),
        (0x04000205, "12", 12),
        (0x03330201, "3412", 1234),
        (0x04000503, "5002", 0x0250),
        (0x04000402, "129078563412", "123456789012"),
        (0x04000101, "04050625", DateWeek(date(2025, 6, 5), 4)),
        (0x04000102, "512210", time(10, 22, 51)),
        (0x0400010C, "51221004050625", DateTimeWeek(datetime(2025, 6, 5, 10, 22, 51), 4)),
        (0x04000108, "3014050625", datetime(2025, 6, 5, 14, 30)),
        (0x1D000101, "301514050625", datetime(2025, 6, 5, 14, 15, 30)),
        (0x04010000, "010101020106", [ZoneEntry(1, 1, 1), ZoneEntry(6, 1, 2)]),
        (0x04010001, "010000", [SlotEntry(0, 0, 1)]),
        (0x0201FF00, "40224122", [Decimal("224.0"), Decimal("224.1")]),
        (0x04000C01, "00112233", bytes.fromhex("00112233")),
    ],
)
def test_decode_and_encode(code, raw, value):
    data = bytes.fromhex(raw)
    got = di.decode_value(code, data)
    assert got == value and type(got) is type(value)
    if isinstance(value, Decimal):
        assert str(got) == str(value)  # the picture's decimals are kept
    assert di.encode_value(code, got) == data


def test_money_is_never_float():
    with pytest.raises(ProtocolError) as exc:
        di.encode_value(0x00900200, 123.45)
    assert exc.value.reason == "value" and "float" in str(exc.value)
    assert isinstance(di.decode_value(0x00900200, bytes(4)), Decimal)


@pytest.mark.parametrize(
    "code, value, why",
    [
        (0x00900200, Decimal("1.234"), "decimal place"),
        (0x00900200, Decimal("1000000.00"), "range"),
        (0x00900200, Decimal("-1.00"), "unsigned"),
        (0x02020100, Decimal("800.000"), "range"),
        (0x00900200, Decimal("NaN"), "finite"),
        (0x00900200, True, "int or Decimal"),
        (0x04000102, datetime(2025, 1, 1), "time"),
        (0x04000108, datetime(2025, 1, 1, 0, 0, 30), "seconds"),
        (0x04000101, datetime(2025, 1, 1), "date"),
        (0x04000108, datetime(1999, 1, 1), "year"),
        (0x04000402, "12345678901", "digits"),
        (0x04000503, 0x10000, "16-bit"),
        (0x04010001, [(24, 0, 1)], "time of day"),
        (0x04010000, [(13, 1, 1)], "date"),
        (0x0001FF00, [], "list"),
    ],
)
def test_encode_rejects(code, value, why):
    with pytest.raises(ProtocolError) as exc:
        di.encode_value(code, value)
    assert exc.value.reason == "value"
    assert why in str(exc.value)


@pytest.mark.parametrize(
    "code, raw, reason",
    [
        (0x00900200, "4A230100", "bcd"),
        (0x04000102, "51221A", "bcd"),
        (0x04000102, "516110", "value"),  # minute 61
        (0x04000101, "07050625", "value"),  # weekday 7
        (0x04000101, "04053125", "value"),  # month 31
        (0x04000102, "5122", "length"),
        (0x04000503, "50", "length"),
        (0x0001FF00, "000000", "length"),
        (0x04010001, "0100", "length"),
        (0x1D00FF01, "00", "length"),
        (0x04000402, "1290785634", "length"),
        (0x00900200, "", "length"),
    ],
)
def test_decode_rejects_with_reason(code, raw, reason):
    with pytest.raises(ProtocolError) as exc:
        di.decode_value(code, bytes.fromhex(raw))
    assert exc.value.reason == reason


def test_bcd_message_names_the_byte():
    with pytest.raises(ProtocolError, match=r"byte 0 \(4AH\)"):
        di.decode_value(0x00900200, bytes.fromhex("4A230100"))


def test_length_is_trusted_for_numbers():
    # one real meter answers XX.XXXX kW in 4 bytes; the value keeps the picture's 4 decimals
    assert str(di.decode_value(0x02030000, bytes.fromhex("56341200"))) == "12.3456"
    assert str(di.decode_value(0x02030000, bytes.fromhex("56341280"))) == "-12.3456"
    assert di.encode_value(0x02030000, Decimal("0.0000"), 4) == bytes(4)


def test_unknown_di_is_flagged_raw_bytes():
    value = di.decode_value(0x06000001, b"\x01\x02")
    assert value == b"\x01\x02" and isinstance(value, bytes) and value.unknown and value.di == 0x06000001
    reading = di.decode(0x06000001, b"\x01\x02")
    assert reading.unknown and reading.item is None
    assert di.encode_value(0x06000001, b"\x01\x02") == b"\x01\x02"
    with pytest.raises(ProtocolError) as exc:
        di.encode_value(0x06000001, 5)
    assert exc.value.reason == "unknown-di"
    assert not di.decode(0x00010000, bytes(4)).unknown


def test_weekday_that_disagrees_with_the_date_round_trips():
    raw = bytes.fromhex("01091225")  # 2025-12-09 is a Tuesday, the meter says 1
    value = di.decode_value(0x04000101, raw)
    assert value == DateWeek(date(2025, 12, 9), 1)
    assert di.encode_value(0x04000101, value) == raw
    assert di.encode_value(0x04000101, date(2025, 12, 9)) == bytes.fromhex("02091225")


def test_negative_zero_current_round_trips():
    raw = bytes.fromhex("000080")
    assert di.encode_value(0x02020100, di.decode_value(0x02020100, raw)) == raw


def test_status_flags():
    assert di.status_flags(0x04000503, 0x0250) == ["relay_open", "relay_command_open", "supply_mains", "money_prepaid"]
    assert "power_hold" in di.status_flags(0x04000503, 0x1000)
    assert "overdraft" in di.status_flags(0x04000501, 1 << 14)
    assert di.status_flags(0x04000502, 0x0013) == ["phase_a_active_reverse", "phase_b_active_reverse",
                                                   "phase_a_reactive_reverse"]
    for word in (0x04000504, 0x04000505, 0x04000506):  # phase A, B, C faults: the same bits
        assert di.status_flags(word, 0x0181) == ["loss_of_voltage", "phase_break", "current_break"]
    assert di.status_flags(0x04000507, 0x0120) == ["power_down", "current_severe_imbalance"]
    assert di.status_flags(0x04000507, 0x8000) == ["bit15"]  # reserved by the standard
    for word in di.STATUS_WORDS:
        assert di.status_flags(word, 0) == ([] if word != 0x04000503 else ["supply_mains", "non_prepaid"])


def test_bcd_picture_validation():
    with pytest.raises(ValueError):
        Bcd("XXX")
    with pytest.raises(ValueError):
        Clock("YYQQ")


def test_all_zero_date_picture_means_not_set():
    # the meter answers zeros for a switch-over time never set and an n-th last event not yet seen
    assert di.decode_value(0x04000108, bytes(5)) is None
    assert di.encode_value(0x04000108, None) == bytes(5)
    assert di.decode_value(0x1D00FF01, bytes(18)) == {
        "time": None, "operator": 0, "forward": Decimal("0.00"), "reverse": Decimal("0.00")
    }
    # a time of day has no date, so zeros there are midnight
    assert di.decode_value(0x04000102, bytes(3)) == time(0, 0, 0)


def test_purchase_balances_may_be_overdrawn():
    raw = bytes.fromhex("00150080")  # -15.00: balance before a top-up, overdrawn
    assert di.decode_value(0x03330401, raw) == Decimal("-15.00")
    assert di.encode_value(0x03330501, Decimal("-15.00")) == raw
    with pytest.raises(ProtocolError):
        di.encode_value(0x03330301, Decimal("-15.00"))  # the amount bought is never negative


def test_max_demand_items_carry_value_and_time():
    from datetime import datetime
    from decimal import Decimal

    raw = bytes.fromhex("452301") + bytes.fromhex("3010050326")  # 01.2345 kW at 26-03-05 10:30
    for code, name, unit in ((0x01010000, "forward_active_max_demand_total", "kW"),
                             (0x01020300, "reverse_active_max_demand_t3", "kW"),
                             (0x01030001, "combined_reactive_1_max_demand_total_last1", "kvar"),
                             (0x0104010C, "combined_reactive_2_max_demand_t1_last12", "kvar")):
        item = di.lookup(code)
        assert item is not None and item.name == name and item.unit == unit and item.length == 8
        assert di.by_name(name).di == code
        assert di.decode_value(code, raw) == {"demand": Decimal("1.2345"), "time": datetime(2026, 3, 5, 10, 30)}
        assert di.encode_value(code, di.decode_value(code, raw)) == raw
    block = di.decode_value(0x0101FF00, raw * 3)  # total, tariff 1, tariff 2
    assert len(block) == 3 and block[2]["demand"] == Decimal("1.2345")
    assert di.lookup(0x01050000) is None  # only the four demand quantities of the standard

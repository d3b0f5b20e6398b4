"""Write protocol/vectors/dlt645.json: every shared golden frame plus the project's own.

Run from the repo root:  .venv/bin/python protocol/vectors/make_vectors.py [--check]

Each record keeps the shared file's fields (name, hex, preamble text, meaning, conformance,
source) and adds what the codecs need in machine form:

* ``frame``/``address``/``control``/``data``/``preamble``: the frame as bytes on the wire, the
  address as people write it, the control byte, the PLAIN data field (hex) and the FE count;
* ``expect``: the frame's meaning, typed by hand from the shared ``meaning`` text (not from any
  codec's output): ``di``, decoded ``value`` (typed, see ``tests/protocol/test_vectors.py``),
  payload ``fields``, ``err``/``serr`` flags.

The address/control/data columns come from an independent framing reference: the plain data
is written here by hand and wrapped with dlt645 3.2.0's ``DLT645Protocol.build_frame`` for the
project's own frames; for the shared frames they are taken apart by hand-checked slicing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = HERE / "dlt645.json"
SHARED_NAME = Path("shared") / "vectors" / "dlt645.json"


def shared_vectors() -> Path:
    """The shared golden frames: $PREPAID645_SHARED_VECTORS, else shared/vectors/dlt645.json in the
    repo or the nearest directory above it (a worktree sits deeper than the main checkout)."""
    if os.environ.get("PREPAID645_SHARED_VECTORS"):
        return Path(os.environ["PREPAID645_SHARED_VECTORS"])
    for d in (REPO, *REPO.parents):
        if (d / SHARED_NAME).is_file():
            return d / SHARED_NAME
    raise SystemExit(f"no {SHARED_NAME} in {REPO} or above it: set PREPAID645_SHARED_VECTORS to the file")


def D(text: str) -> dict:
    return {"type": "Decimal", "value": text}


def DT(text: str) -> dict:
    return {"type": "datetime", "value": text}


def B(text: str) -> dict:
    return {"type": "bytes", "value": text.replace(" ", "").lower()}


def DW(day: str, weekday: int) -> dict:
    return {"type": "DateWeek", "value": [day, weekday]}


def T(text: str) -> dict:
    return {"type": "time", "value": text}


def L(*items) -> dict:
    return {"type": "list", "value": list(items)}


QUIRK_0203 = (
    "source wrote DI 02030000 in reading order; in standard wire order (DI0 first) the bytes are DI 00000302, "
    "unknown, so the value stays raw (flagged)"
)

# Expected meaning of every shared vector, typed from its "meaning" text.
SHARED_EXPECT: dict[str, dict] = {
    "pub_eet_read_00000000_request": {"address": "652022122003", "control": 0x11, "di": "00000000", "name": "combined_active_total"},
    "pub_eet_read_00000000_reply_0kWh": {"address": "652022122003", "control": 0x91, "di": "00000000", "value": D("0.00"), "unit": "kWh"},
    "pub_eet_read_0201FF00_voltage_block_reply": {
        "address": "652022122018", "control": 0x91, "di": "0201FF00", "value": L(D("0.0"), D("0.0"), D("239.4")), "unit": "V",
    },
    "pub_553668_read_00010000_request": {"address": "000102030425", "control": 0x11, "di": "00010000", "name": "forward_active_total"},
    "pub_553668_read_address_3FE": {"address": "AAAAAAAAAAAA", "control": 0x13, "fields": {}},
    "pub_blog_read_address_request": {"address": "AAAAAAAAAAAA", "control": 0x13, "fields": {}},
    "pub_blog_read_00010000_request": {"address": "558890213594", "control": 0x11, "di": "00010000"},
    "pub_blog_read_00010000_reply_2.26kWh": {"address": "558890213594", "control": 0x91, "di": "00010000", "value": D("2.26"), "unit": "kWh"},
    "pub_blog_read_02010100_reply_224.8V": {"address": "558890213594", "control": 0x91, "di": "02010100", "value": D("224.8"), "unit": "V"},
    "pub_blog_read_02020100_request": {"address": "558890213594", "control": 0x11, "di": "02020100", "name": "current_a"},
    # Quirk: this source sent the DI bytes in reading order (02 03 00 00 -> 35 36 33 33). Read
    # DI0 first, as the standard says, they are DI 00 00 03 02, which no meter defines: a
    # standard parser sees an unknown DI and keeps its value as flagged raw bytes.
    "pub_blog_read_02030000_request": {"address": "558890213594", "control": 0x11, "di": "00000302", "quirk": QUIRK_0203},
    "pub_blog_read_02030000_reply_0kW_4bytes": {
        "address": "558890213594", "control": 0x91, "di": "00000302", "unknown": True, "value": B("00000000"), "quirk": QUIRK_0203,
    },
    "pub_blog_relay_1C_reply_9C": {"address": "558890213594", "control": 0x9C, "fields": {}},
    "pub_blog_relay_1C_trip_template": {
        "address": "558890213594", "control": 0x1C,
        "fields": {"password": B("02000000"), "operator": 0, "n1": 0x1A, "n2": 0, "deadline": DT("2021-07-07T18:40:02")},
    },
    "pub_wkjay_issue10_wildcard_read_request": {"address": "AAAAAAAAAAAA", "control": 0x11, "di": "02010100"},
    "pub_concentrator_time_to_single_address": {"address": "111111111111", "control": 0x08, "fields": {"time": DT("2017-06-05T10:40:25")}},
    "pub_go645_read_04000402_meter_number_request": {"address": "002241020208", "control": 0x11, "di": "04000402", "name": "meter_number"},
    "pub_go645_read_address_reply": {"address": "002241020208", "control": 0x93, "fields": {"address": "002241020208"}},
    "read_address_request": {"address": "AAAAAAAAAAAA", "control": 0x13, "fields": {}},
    "read_address_reply": {"address": "123456789012", "control": 0x93, "fields": {"address": "123456789012"}},
    "read_reply_00000000_1234.56kWh": {"address": "123456789012", "control": 0x91, "di": "00000000", "value": D("1234.56"), "unit": "kWh"},
    "read_request_00010000_forward_active_total": {"address": "123456789012", "control": 0x11, "di": "00010000"},
    "read_request_0001FF00_forward_active_block": {"address": "123456789012", "control": 0x11, "di": "0001FF00", "name": "forward_active_block"},
    "read_reply_0001FF00_block_5_values": {
        "address": "123456789012", "control": 0x91, "di": "0001FF00",
        "value": L(D("5678.90"), D("1000.00"), D("2000.00"), D("1678.90"), D("1000.00")), "unit": "kWh",
    },
    "read_reply_02020100_Ia_5.123A": {"address": "123456789012", "control": 0x91, "di": "02020100", "value": D("5.123"), "unit": "A"},
    "read_reply_02020100_Ia_minus_5.123A": {"address": "123456789012", "control": 0x91, "di": "02020100", "value": D("-5.123"), "unit": "A"},
    "read_reply_04000101_date_2025-06-05_Thu": {"address": "123456789012", "control": 0x91, "di": "04000101", "value": DW("2025-06-05", 4)},
    "read_reply_04000102_time_10:22:51": {"address": "123456789012", "control": 0x91, "di": "04000102", "value": T("10:22:51")},
    "read_reply_00900200_123.45yuan": {"address": "123456789012", "control": 0x91, "di": "00900200", "value": D("123.45"), "unit": "yuan", "name": "remaining_money"},
    "read_reply_00900201_overdraft_12.50yuan": {"address": "123456789012", "control": 0x91, "di": "00900201", "value": D("12.50"), "unit": "yuan", "name": "overdraft_money"},
    "read_reply_04000503_relay_open_money_prepaid": {
        "address": "123456789012", "control": 0x91, "di": "04000503", "value": 0x0250,
        "flags": ["relay_open", "relay_command_open", "money_prepaid"], "not_flags": ["pre_trip_alarm"],
    },
    "read_reply_04000503_relay_closed_prealarm": {
        "address": "123456789012", "control": 0x91, "di": "04000503", "value": 0x0280,
        "flags": ["pre_trip_alarm", "money_prepaid"], "not_flags": ["relay_open"],
    },
    "read_error_reply_D1_no_data": {"address": "123456789012", "control": 0xD1, "err": ["no_data"]},
    "read_request_wildcard_short_address": {"address": "AAAAAAAA9012", "control": 0x11, "di": "00010000"},
    "read_followup_request_12_seq1": {"address": "123456789012", "control": 0x12, "fields": {"di": 0x0001FF00, "seq": 1}},
    "read_followup_reply_92_last": {
        "address": "123456789012", "control": 0x92, "di": "0001FF00", "value": L(D("1000.00")), "fields": {"seq": 1},
    },
    "write_reply_94_ok": {"address": "123456789012", "control": 0x94, "fields": {}},
    "write_error_reply_D4_password": {"address": "123456789012", "control": 0xD4, "err": ["unauthorised"]},
    "relay_control_reply_9C_ok": {"address": "123456789012", "control": 0x9C, "fields": {}},
    "broadcast_time_08_2025-06-05_10:22:51": {"address": "999999999999", "control": 0x08, "fields": {"time": DT("2025-06-05T10:22:51")}},
    "freeze_16_broadcast_instant_99999999": {
        "address": "999999999999", "control": 0x16,
        "fields": {"time": {"type": "dict", "value": {"month": None, "day": None, "hour": None, "minute": None}}},
    },
    "freeze_reply_96_ok": {"address": "123456789012", "control": 0x96, "fields": {}},
    "change_baud_17_to_9600": {"address": "123456789012", "control": 0x17, "fields": {"baud": 9600}},
    "change_baud_error_D7_08": {"address": "123456789012", "control": 0xD7, "err": ["baud_unchangeable"]},
    "change_password_18_level02": {
        "address": "123456789012", "control": 0x18,
        "fields": {"di": 0x04000C03, "old": B("02000000"), "new": B("02112233")},
    },
    "max_demand_clear_19": {"address": "123456789012", "control": 0x19, "fields": {"password": B("02000000"), "operator": 0}},
    "meter_clear_1A": {"address": "123456789012", "control": 0x1A, "fields": {"password": B("02000000"), "operator": 0}},
    "event_clear_1B_all": {
        "address": "123456789012", "control": 0x1B, "fields": {"password": B("02000000"), "operator": 0, "di": 0xFFFFFFFF},
    },
    "write_address_15_to_123456789012": {"address": "AAAAAAAAAAAA", "control": 0x15, "fields": {"address": "123456789012"}},
    "security_03_identity_auth_070000FF_dummy": {
        "address": "123456789012", "control": 0x03,
        "fields": {
            "di": 0x070000FF, "operator": 0,
            "body": {"type": "dict", "value": {"c1": B("11" * 8), "r1": B("22" * 8), "dispersion": B("129078563412 0000")}},
        },
    },
    "security_03_identity_auth_reply_83_dummy": {
        "address": "123456789012", "control": 0x83,
        "fields": {"di": 0x070000FF, "body": {"type": "dict", "value": {"r2": B("AABBCCDD"), "serial": B("0102030405060708")}}},
    },
    "security_03_error_reply_C3_repeat_recharge": {"address": "123456789012", "control": 0xC3, "serr": ["repeat_recharge"]},
    "security_03_recharge_070102FF_dummy_100.00yuan": {
        "address": "123456789012", "control": 0x03,
        "fields": {
            "di": 0x070102FF, "operator": 0,
            "body": {"type": "dict", "value": {
                "amount": 10000, "count": 3, "mac1": B("A1A2A3A4"), "customer": "000000000001", "mac2": B("B1B2B3B4"),
            }},
        },
    },
    # dlt645 3.2.0 put the address string '123456781012' on the wire unreversed, so read as the
    # standard says (low byte first) the meter's address is 121078563412.
    "pkg_dlt645_read_request_00010000": {"address": "121078563412", "control": 0x11, "di": "00010000"},
    "pkg_dlt645_read_reply_00010000_1206.42kWh": {"address": "121078563412", "control": 0x91, "di": "00010000", "value": D("1206.42"), "unit": "kWh"},
    "pkg_dlt645_read_error_reply_D1_02": {"address": "121078563412", "control": 0xD1, "err": ["no_data"]},
    "pkg_dlt645_write_request_04000101": {
        "address": "121078563412", "control": 0x14, "di": "04000101", "value": DW("2025-12-09", 1),
        "fields": {"password": B("04000000"), "operator": 0},
    },
    "pkg_dlt645_write_error_D4_04": {"address": "121078563412", "control": 0xD4, "err": ["unauthorised"]},
    "pkg_dlt645_change_password_reply_98": {"address": "121078563412", "control": 0x98, "fields": {"new": B("04999999")}},
    "pkg_dlt645_event_clear_1B": {
        "address": "121078563412", "control": 0x1B, "fields": {"password": B("02123456"), "operator": 0, "di": 0xFFFFFFFF},
    },
    "pkg_dlt645_freeze_reply_96": {"address": "121078563412", "control": 0x96, "fields": {}},
}
for _n1, _name in ((0x1A, "1A"), (0x1B, "1B"), (0x2A, "2A"), (0x2B, "2B"), (0x3B, "3B")):
    SHARED_EXPECT[f"relay_control_1C_N1_{_name}"] = {
        "address": "123456789012", "control": 0x1C,
        "fields": {"password": B("02000000"), "operator": 0, "n1": _n1, "n2": 0, "deadline": DT("2025-06-05T23:59:59")},
    }

# The project's own frames: plain data typed by hand from protocol/SECURITY.md and
# protocol/README.md, framed by dlt645 3.2.0 (an independent encoder).
A = "123456789012"
PROJECT: list[dict] = [
    {
        "name": "prj_read_request_load_record_n3_start",
        "address": A, "control": 0x11, "preamble": 4,
        "data": "01 00 00 06" + "03" + "30 14 05 06 25",
        "meaning": {"DI": "06 00 00 01 (a load-record DI, not in the registry)", "N": "03 (BCD)", "start": "mm hh DD MM YY = 2025-06-05 14:30"},
        "expect": {"control": 0x11, "fields": {"di": 0x06000001, "n": 3, "start": DT("2025-06-05T14:30:00")}},
    },
    {
        "name": "prj_read_reply_B1_more_follows",
        "address": A, "control": 0xB1, "preamble": 0,
        "data": "00 FF 01 00" + "90 78 56 00" + "00 00 10 00",
        "meaning": {"C": "B1 normal reply, more frames follow", "DI": "0001FF00", "values": "5678.90, 1000.00 kWh"},
        "expect": {"control": 0xB1, "has_more": True, "di": "0001FF00", "value": L(D("5678.90"), D("1000.00")), "unit": "kWh"},
    },
    {
        "name": "prj_read_reply_unknown_di_raw",
        "address": A, "control": 0x91, "preamble": 0,
        "data": "01 00 00 06" + "DE AD BE EF",
        "meaning": {"DI": "06000001 (unknown to the registry)", "value": "raw bytes DE AD BE EF, flagged unknown"},
        "expect": {"control": 0x91, "di": "06000001", "unknown": True, "value": B("DEADBEEF")},
    },
    {
        "name": "prj_read_reply_customer_number",
        "address": A, "control": 0x91, "preamble": 0,
        "data": "0E 04 00 04" + "01 00 00 00 00 00",
        "meaning": {"DI": "0400040E customer number", "value": "000000000001"},
        "expect": {"control": 0x91, "di": "0400040E", "value": "000000000001"},
    },
    {
        "name": "prj_read_reply_alarm_money_1_10.00yuan",
        "address": A, "control": 0x91, "preamble": 0,
        "data": "01 10 00 04" + "00 10 00 00",
        "meaning": {"DI": "04001001 alarm money limit 1", "value": "000010.00 yuan"},
        "expect": {"control": 0x91, "di": "04001001", "value": D("10.00"), "unit": "yuan", "name": "alarm_money_1"},
    },
    {
        "name": "prj_read_reply_trip_record_1",
        "address": A, "control": 0x91, "preamble": 0,
        "data": "01 FF 00 1D" + "30 15 14 05 06 25" + "78 56 34 12" + "56 34 12 00" + "00 00 00 00",
        "meaning": {"DI": "1D00FF01 last trip record", "time": "2025-06-05 14:15:30", "operator": "12345678H", "forward": "1234.56 kWh", "reverse": "0.00 kWh"},
        "expect": {"control": 0x91, "di": "1D00FF01", "value": {"type": "dict", "value": {
            "time": DT("2025-06-05T14:15:30"), "operator": 0x12345678, "forward": D("1234.56"), "reverse": D("0.00")}}},
    },
    {
        "name": "prj_read_reply_day_table_set1_1",
        "address": A, "control": 0x91, "preamble": 0,
        "data": "01 00 01 04" + "03 00 00" + "01 00 08" + "02 00 22",
        "meaning": {"DI": "04010001 day table 1 of set 1", "slots": "00:00 tariff 3, 08:00 tariff 1, 22:00 tariff 2 (hhmmNN, NN sent first)"},
        "expect": {"control": 0x91, "di": "04010001", "value": L(L(0, 0, 3), L(8, 0, 1), L(22, 0, 2))},
    },
    {
        "name": "prj_write_level99_alarm_money_1",
        "address": A, "control": 0x14, "preamble": 4,
        "data": "01 10 00 04" + "99 00 00 00" + "01 00 00 00" + "00 20 00 00" + "07 00 00 00" + "C0 FF EE 01",
        "meaning": {"DI": "04001001", "password": "99 000000", "operator": "00000001", "value": "20.00 yuan", "seq": "7", "MAC": "C0 FF EE 01 (dummy)"},
        "expect": {"control": 0x14, "di": "04001001", "value": D("20.00"), "fields": {
            "password": B("99000000"), "operator": 1, "seq": 7, "mac": B("C0FFEE01")}},
    },
    {
        "name": "prj_control_level99_trip",
        "address": A, "control": 0x1C, "preamble": 4,
        "data": "99 00 00 00" + "01 00 00 00" + "1A 00" + "59 59 23 05 06 25" + "02 00 00 00" + "01 02 03 04",
        "meaning": {"password": "99 000000", "operator": "00000001", "N1": "1A trip", "deadline": "2025-06-05 23:59:59", "seq": "2", "MAC": "01020304 (dummy)"},
        "expect": {"control": 0x1C, "fields": {
            "password": B("99000000"), "operator": 1, "n1": 0x1A, "n2": 0, "deadline": DT("2025-06-05T23:59:59"), "seq": 2, "mac": B("01020304")}},
    },
    {
        "name": "prj_control_level98_cipher",
        "address": A, "control": 0x1C, "preamble": 4,
        "data": "98 00 00 00" + "01 00 00 00" + "AB" * 16 + "CD" * 4,
        "meaning": {"password": "98 000000", "operator": "00000001", "N1..N8": "16-byte ciphertext + 4-byte MAC (dummy)"},
        "expect": {"control": 0x1C, "fields": {"password": B("98000000"), "cipher": B("AB" * 16 + "CD" * 4), "n1": None}},
    },
    {
        "name": "prj_control_error_DC_unauthorised",
        "address": A, "control": 0xDC, "preamble": 0,
        "data": "04",
        "meaning": {"C": "DC abnormal reply to 1C", "ERR": "04 unauthorised / power hold / expired deadline"},
        "expect": {"control": 0xDC, "err": ["unauthorised"]},
    },
    {
        "name": "prj_security_set_validity_10min",
        "address": A, "control": 0x03, "preamble": 4,
        "data": "FF 01 00 07" + "01 00 00 00" + "10 00" + "11 22 33 44",
        "meaning": {"DI": "070001FF", "operator": "00000001", "minutes": "0010 BCD = 10", "MAC": "11223344 (dummy)"},
        "expect": {"control": 0x03, "fields": {"di": 0x070001FF, "operator": 1,
                   "body": {"type": "dict", "value": {"minutes": 10, "mac": B("11223344")}}}},
    },
    {
        "name": "prj_security_challenge",
        "address": A, "control": 0x03, "preamble": 4,
        "data": "FF 03 00 07" + "01 00 00 00",
        "meaning": {"DI": "070003FF", "operator": "00000001"},
        "expect": {"control": 0x03, "fields": {"di": 0x070003FF, "operator": 1, "body": {"type": "dict", "value": {}}}},
    },
    {
        "name": "prj_security_challenge_reply",
        "address": A, "control": 0x83, "preamble": 0,
        "data": "FF 03 00 07" + "01 02 03 04 05 06 07 08",
        "meaning": {"DI": "070003FF", "challenge": "0102030405060708 (dummy)"},
        "expect": {"control": 0x83, "fields": {"di": 0x070003FF, "body": {"type": "dict", "value": {
            "challenge": B("0102030405060708")}}}},
    },
    {
        "name": "prj_security_identity_auth_reply",
        "address": A, "control": 0x83, "preamble": 0,
        "data": "FF 00 00 07" + "C2" * 8 + "00 00 12 90 78 56 34 12",
        "meaning": {"DI": "070000FF", "C2": "C2 x 8 (dummy)", "serial": "0000 + meter number"},
        "expect": {"control": 0x83, "fields": {"di": 0x070000FF, "body": {"type": "dict", "value": {
            "c2": B("C2" * 8), "serial": B("0000129078563412")}}}},
    },
    {
        "name": "prj_security_end_session",
        "address": A, "control": 0x03, "preamble": 4,
        "data": "FF 02 00 07" + "01 00 00 00" + "E1 E2 E3 E4",
        "meaning": {"DI": "070002FF", "operator": "00000001", "MAC": "E1E2E3E4 (dummy)"},
        "expect": {"control": 0x03, "fields": {"di": 0x070002FF, "operator": 1, "body": {"type": "dict", "value": {
            "mac": B("E1E2E3E4")}}}},
    },
    {
        "name": "prj_security_end_session_reply",
        "address": A, "control": 0x83, "preamble": 0,
        "data": "FF 02 00 07" + "18 FC FF FF" + "05 00 00 00" + "01 00 00 00 00 00" + "02" + "00 00 00" + "D1 D2 D3 D4",
        "meaning": {"DI": "070002FF", "balance": "-1000 fen (-10.00 yuan)", "count": "5", "customer": "000000000001",
                    "KRN": "2", "MAC": "D1D2D3D4 (dummy)"},
        "expect": {"control": 0x83, "fields": {"di": 0x070002FF, "body": {"type": "dict", "value": {
            "balance": -1000, "count": 5, "customer": "000000000001", "krn": 2, "mac": B("D1D2D3D4")}}}},
    },
    {
        "name": "prj_security_status_query_reply",
        "address": A, "control": 0x83, "preamble": 0,
        "data": "FF 02 81 07" + "39 30 00 00" + "03 00 00 00" + "01 00 00 00 00 00" + "01" + "00 00 00" + "AA BB CC DD",
        "meaning": {"DI": "078102FF", "balance": "12345 fen", "count": "3", "customer": "000000000001", "KRN": "1",
                    "MAC": "AABBCCDD (dummy)"},
        "expect": {"control": 0x83, "fields": {"di": 0x078102FF, "body": {"type": "dict", "value": {
            "balance": 12345, "count": 3, "customer": "000000000001", "krn": 1, "mac": B("AABBCCDD")}}}},
    },
    {
        "name": "prj_security_error_C3_repeat_recharge_sealed",
        "address": A, "control": 0xC3, "preamble": 0,
        "data": "02 00" + "5E 5E 5E 5E",
        "meaning": {"SERR": "0002: repeat recharge", "MAC": "5E5E5E5E (dummy): the meter's MAC over SERR and the seq"},
        "expect": {"control": 0xC3, "serr": ["repeat_recharge"]},
    },
    {
        "name": "prj_write_address_15_in_session",
        "address": A, "control": 0x15, "preamble": 4,
        "data": "77 07 00 00 00 00" + "03 00 00 00" + "A5 A5 A5 A5",
        "meaning": {"address": "000000000777", "seq": "3", "MAC": "A5A5A5A5 (dummy)"},
        "expect": {"control": 0x15, "fields": {"address": "000000000777", "seq": 3, "mac": B("A5A5A5A5")}},
    },
    {
        "name": "prj_security_key_update",
        "address": A, "control": 0x03, "preamble": 4,
        "data": "FF 01 03 07" + "01 00 00 00" + "03" + "00 00 00" + "5A" * 16 + "0A 0B 0C 0D",
        "meaning": {"DI": "070301FF", "operator": "00000001", "newKRN": "3", "wrapped": "5A x 16 (dummy)", "MAC": "0A0B0C0D"},
        "expect": {"control": 0x03, "fields": {"di": 0x070301FF, "operator": 1, "body": {"type": "dict", "value": {
            "krn": 3, "wrapped": B("5A" * 16), "mac": B("0A0B0C0D")}}}},
    },
    {
        "name": "prj_security_error_C3_mac_and_auth",
        "address": A, "control": 0xC3, "preamble": 0,
        "data": "0C 00",
        "meaning": {"SERR": "000C: bit2 MAC failed, bit3 authentication failed/expired"},
        "expect": {"control": 0xC3, "serr": ["mac_failed", "auth_failed"]},
    },
    {
        "name": "prj_freeze_daily_at_00:00",
        "address": A, "control": 0x16, "preamble": 4,
        "data": "00 00 99 99",
        "meaning": {"data": "mm hh DD MM = 00 00 99 99: daily freeze at 00:00"},
        "expect": {"control": 0x16, "fields": {"time": {"type": "dict", "value": {"month": None, "day": None, "hour": 0, "minute": 0}}}},
    },
    {
        "name": "prj_change_baud_reply_97_2400",
        "address": A, "control": 0x97, "preamble": 0,
        "data": "08",
        "meaning": {"C": "97 reply echoes Z", "Z": "08 = 2400 bps"},
        "expect": {"control": 0x97, "fields": {"baud": 2400}},
    },
    {
        "name": "prj_output_1D_slot_switch",
        "address": A, "control": 0x1D, "preamble": 4,
        "data": "02",
        "meaning": {"C": "1D multi-function output", "mode": "02 time-slot switch"},
        "expect": {"control": 0x1D, "fields": {"mode": 2}},
    },
]


def _shared_record(v: dict) -> dict:
    raw = bytes.fromhex(v["hex"])
    i = len(raw) - len(raw.lstrip(b"\xfe"))
    body = raw[i:]
    length = body[9]
    data = bytes((b - 0x33) & 0xFF for b in body[10 : 10 + length])
    expect = SHARED_EXPECT[v["name"]]
    return {
        **v,
        "origin": "shared",
        "frame": v["hex"],
        "address": expect["address"],
        "control": body[8],
        "data": data.hex().upper(),
        "preamble_count": i,
        "expect": expect,
    }


def _project_record(p: dict) -> dict:
    from dlt645.protocol.protocol import DLT645Protocol

    data = bytes.fromhex(p["data"])
    wire_addr = bytes.fromhex(p["address"])[::-1]
    raw = bytes(DLT645Protocol.build_frame(wire_addr, p["control"], data, p["preamble"]))
    text = raw.hex(" ").upper()
    return {
        "name": p["name"],
        "hex": text,
        "preamble": f"{p['preamble']} x FE" if p["preamble"] else "none",
        "meaning": p["meaning"],
        "conformance": "project (protocol/SECURITY.md, protocol/README.md)",
        "source": "prepaid645: plain data written by hand, framed by dlt645 3.2.0 DLT645Protocol.build_frame",
        "origin": "project",
        "frame": text,
        "address": p["address"],
        "control": p["control"],
        "data": data.hex().upper(),
        "preamble_count": p["preamble"],
        "expect": {"address": p["address"], **p["expect"]},
    }


def make() -> list[dict]:
    shared = json.loads(shared_vectors().read_text())
    missing = {v["name"] for v in shared} - set(SHARED_EXPECT)
    if missing:
        raise SystemExit(f"no expected meaning typed for shared vectors: {sorted(missing)}")
    return [_shared_record(v) for v in shared] + [_project_record(p) for p in PROJECT]


def main(argv: list[str]) -> int:
    text = json.dumps(make(), indent=1, ensure_ascii=False) + "\n"
    if "--check" in argv:
        if OUT.read_text() != text:
            print(f"{OUT} is stale; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Bank file profiles and their codec: both layouts and GBK round-trip; every malformed line is
reported with its number."""

from __future__ import annotations

import pytest

from headend.bank import ProfileError, known_profiles, load_profile, read_file, write_file
from headend.bank.layout import parse_profile

HEAD = {"bank": "ICBC", "batch": 7, "date": "20251205", "count": 2, "total_fen": 12345}
ROWS = [{"seq": 1, "customer": "100000000000", "account": "6222000000000001", "holder": "王小明",
         "amount_fen": 5000},
        {"seq": 2, "customer": "100000000001", "account": "6222000000000002", "holder": "Zhao, \"Liu\"",
         "amount_fen": 7345}]
TRAIL = {"count": 2, "total_fen": 12345}


def gbk_csv() -> str:
    """The CCB profile as GBK with semicolons: a third layout made only of settings."""
    text = load_profile("CCB").source
    return open(text, encoding="utf-8").read().replace('encoding = "utf-8"', 'encoding = "gbk"') \
        .replace('delimiter = ","', 'delimiter = ";"')


@pytest.mark.parametrize("bank", ["ICBC", "CCB"])
def test_both_shipped_layouts_round_trip_with_chinese_names(bank):
    p = load_profile(bank)
    head = dict(HEAD, bank=bank)
    data = write_file(p, "request", head, ROWS, TRAIL)
    back = read_file(p, "request", data)
    assert back.errors == []
    assert back.header == dict(head, kind=p.records["request"]["header"][0].value)
    assert [d for _, d in back.details] == [dict(r, kind=p.records["request"]["detail"][0].value) for r in ROWS]
    assert [ln for ln, _ in back.details] == [2, 3]
    assert back.trailer["total_fen"] == 12345


def test_fixed_width_counts_gbk_bytes_and_pads_numbers_with_zeros():
    p = load_profile("ICBC")
    data = write_file(p, "request", HEAD, ROWS, TRAIL)
    lines = data.split(b"\r\n")
    assert "王小明".encode("gbk") in lines[1]
    assert len(lines[1]) == len(lines[2]) == sum(f.width for f in p.records["request"]["detail"])
    assert lines[1].endswith(b"000000005000")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")


def test_a_gbk_csv_profile_round_trips_and_quotes_its_delimiter():
    p = parse_profile(gbk_csv(), "gbk-csv")
    rows = [dict(ROWS[0], holder="王;小明"), ROWS[1]]
    data = write_file(p, "request", dict(HEAD, bank="CCB"), rows, TRAIL)
    assert "王".encode("gbk") in data
    back = read_file(p, "request", data)
    assert back.errors == [] and back.details[0][1]["holder"] == "王;小明"


def test_a_value_too_wide_for_its_field_is_refused_naming_it():
    p = load_profile("ICBC")
    with pytest.raises(ValueError, match="holder.*takes 42 bytes in gbk, more than its 40"):
        write_file(p, "request", HEAD, [dict(ROWS[0], holder="王" * 21)], TRAIL)


@pytest.mark.parametrize("bank", ["ICBC", "CCB"])
def test_malformed_lines_are_reported_with_their_numbers(bank):
    p = load_profile(bank)
    good = write_file(p, "request", dict(HEAD, bank=bank), ROWS, TRAIL)
    lines = good.split(p.newline)[:-1]
    nl = p.newline

    truncated = nl.join(lines[:2]) + nl
    assert read_file(p, "request", truncated).errors == ["line 3: the file ends without its trailer (truncated?)"]
    cut_mid_line = good[:-5]
    assert any("line 4" in e for e in read_file(p, "request", cut_mid_line).errors)

    errs = read_file(p, "request", nl.join([lines[0], lines[1].replace(b"5000", b"50.0"), *lines[2:]]) + nl).errors
    assert errs == ["line 2: amount_fen '50.0' has decimals; the file must give whole fen"]

    wrong_enc = nl.join([lines[0], lines[1].replace("王小明".encode("gbk" if bank == "ICBC" else "utf-8"),
                                                    b"\xff\xfe\xff\xfe\xff\xfe"), *lines[2:]]) + nl
    [e] = read_file(p, "request", wrong_enc).errors
    assert e.startswith("line 2: ") and "not valid" in e

    after = nl.join([*lines, lines[1]]) + nl
    assert read_file(p, "request", after).errors == ["line 5: record after the trailer"]
    assert read_file(p, "request", nl.join(lines[1:]) + nl).errors[0] == "line 1: the file does not start with its header"


def test_profiles_with_missing_or_wrong_settings_are_refused_naming_them():
    text = gbk_csv()
    with pytest.raises(ProfileError, match="unknown encoding 'klingon'"):
        parse_profile(text.replace('encoding = "gbk"', 'encoding = "klingon"'), "x")
    with pytest.raises(ProfileError, match="format must be fixed or csv"):
        parse_profile(text.replace('format = "csv"', 'format = "xml"'), "x")
    with pytest.raises(ProfileError, match=r"\[results\] maps"):
        parse_profile(text.replace('"F02" = "closed"', ''), "x")
    with pytest.raises(ProfileError, match="no profile for bank 'NOPE'; known: CCB, ICBC"):
        load_profile("NOPE")
    assert set(known_profiles()) == {"ICBC", "CCB"}

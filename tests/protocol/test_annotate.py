"""Frames explained for people, and `headend decode` end to end (the real console script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from headend.cli.main import main as headend_main
from protocol import ProtocolError
from protocol.annotate import annotate, describe, parse_hex

ROOT = Path(__file__).resolve().parents[2]
HEADEND = Path(sys.executable).parent / "headend"

ENERGY = "68 12 90 78 56 34 12 68 91 08 33 33 33 33 89 67 45 33 53 16"
ENERGY_BAD_CS = ENERGY[:-5] + "54 16"
STATUS = "68 12 90 78 56 34 12 68 91 06 36 38 33 37 83 35 AD 16"
D1 = "68 12 90 78 56 34 12 68 D1 01 35 8D 16"
C3 = "68 12 90 78 56 34 12 68 C3 02 35 33 B3 16"
TRIP = "FE FE FE FE 68 12 90 78 56 34 12 68 1C 10 35 33 33 33 33 33 33 33 4D 33 8C 8C 56 38 39 58 03 16"


def fields(hex_text: str) -> dict[str, str]:
    return dict(describe(parse_hex(hex_text)).lines)


def test_read_reply_annotation():
    f = fields(ENERGY)
    assert f["address"] == "123456789012"
    assert f["direction"].startswith("meter -> master (normal reply")
    assert f["function"].startswith("11H read data (control 91H")
    assert "combined_active_total" in f["DI"]
    assert f["value"] == "1234.56 kWh"
    assert f["checksum"] == "OK (53H)"


def test_status_word_flags():
    f = fields(STATUS)
    assert f["value"] == "0250H"
    assert "relay_open" in f["flags"] and "money_prepaid" in f["flags"]


def test_err_and_serr_flags():
    assert fields(D1)["error"] == "ERR 02H: no_data"
    assert fields(C3)["error"] == "SERR 0002H: repeat_recharge"


def test_relay_request_annotation():
    f = fields(TRIP)
    assert f["N1"] == "1AH trip" and f["deadline"] == "2025-06-05 23:59:59"
    assert f["direction"] == "master -> meter (request)"


def test_bad_checksum_is_shown_untrusted():
    desc = describe(parse_hex(ENERGY_BAD_CS))
    assert not desc.trusted and desc.error is not None and desc.error.reason == "checksum"
    assert dict(desc.lines)["checksum"] == "WRONG: frame says 54H, the bytes sum to 53H"
    assert "UNTRUSTED" in annotate(parse_hex(ENERGY_BAD_CS))


def test_other_faults_say_why():
    text = annotate(parse_hex(ENERGY[:-2] + "17"))
    assert "INVALID (terminator)" in text


@pytest.mark.parametrize("text, reason", [("", "value"), ("68 1", "value"), ("68 ZZ", "value")])
def test_parse_hex_rejects(text, reason):
    with pytest.raises(ProtocolError) as exc:
        parse_hex(text)
    assert exc.value.reason == reason


def test_parse_hex_accepts_common_spellings():
    assert parse_hex("0x68,0x16") == parse_hex("68:16") == parse_hex("6816") == b"\x68\x16"


def test_cli_in_process(capsys):
    assert headend_main(["decode", ENERGY]) == 0
    out = capsys.readouterr().out
    assert "1234.56 kWh" in out and "checksum   OK (53H)" in out


def test_cli_single_byte_arguments_are_one_frame(capsys):
    assert headend_main(["decode", *D1.split()]) == 0
    assert "ERR 02H: no_data" in capsys.readouterr().out


def test_cli_bad_input_exits_2(capsys):
    assert headend_main(["decode", ENERGY_BAD_CS]) == 2
    captured = capsys.readouterr()
    assert "checksum" in captured.out and "1 of 1 frame(s) invalid" in captured.err


def test_cli_console_script_reads_a_capture_log_on_stdin():
    log = "\n".join(
        [
            "# capture from the RS-485 port",
            f"10:22:51.100 TX {TRIP}",
            f"10:22:51.400 RX: {D1}",
            "",
            STATUS,
            "not hex at all",
        ]
    )
    done = subprocess.run([str(HEADEND), "decode"], input=log, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "1AH trip" in done.stdout and "ERR 02H: no_data" in done.stdout and "0250H" in done.stdout
    assert "line 6: not hex at all" in done.stdout and "INVALID (value)" in done.stdout
    assert "1 of 4 frame(s) invalid" in done.stderr


def test_cli_json_output():
    done = subprocess.run(
        [str(HEADEND), "decode", "--json", ENERGY, ENERGY_BAD_CS], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 2
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows[0]["valid"] and rows[0]["fields"]["value"] == "1234.56 kWh"
    assert not rows[1]["valid"] and rows[1]["reason"] == "checksum"


def test_cli_empty_stdin_is_usage_error():
    done = subprocess.run([str(HEADEND), "decode"], input="", capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and "no frames" in done.stderr


def test_cli_sound_frame_with_contents_it_rejects_exits_2(capsys):
    # checksum and framing fine, but the write carries no DI, and the date 99-99-99 is no date
    short_write = "68 12 90 78 56 34 12 68 14 01 34 CF 16"
    bad_date = "68 12 90 78 56 34 12 68 91 08 34 34 33 37 CC CC CC CC 21 16"
    for frame, says in ((short_write, "NOT DECODED (truncated)"), (bad_date, "month must be in 1..12")):
        assert headend_main(["decode", frame]) == 2
        captured = capsys.readouterr()
        assert says in captured.out and "1 of 1 frame(s) invalid" in captured.err
        assert headend_main(["decode", "--json", frame]) == 2
        row = json.loads(capsys.readouterr().out)
        assert row["valid"] is False and row["error"]
    assert describe(parse_hex(bad_date)).sound is False and describe(parse_hex(ENERGY)).sound is True

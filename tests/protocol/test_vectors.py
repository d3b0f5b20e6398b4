"""Golden vectors: every frame parses to its stated meaning and rebuilds byte-identically,
through the fast codec, the canonical construct schema and an independent encoder (dlt645 3.2.0)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dlt645.protocol.protocol import DLT645Protocol

from protocol import build_frame, di, parse_frame, payloads
from protocol.formats import DateWeek
from protocol.frame import schema_build, schema_parse

ROOT = Path(__file__).resolve().parents[2]
VECTORS_FILE = ROOT / "protocol" / "vectors" / "dlt645.json"


def _shared_file() -> Path:
    """Where make_vectors.py finds the shared golden frames (in or above the repo), or a missing path."""
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "protocol" / "vectors" / "make_vectors.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.shared_vectors()
    except SystemExit:
        return ROOT / module.SHARED_NAME


SHARED_FILE = _shared_file()
VECTORS = json.loads(VECTORS_FILE.read_text())


def typed(spec: Any) -> Any:
    """Expected value as written in the vectors file -> the Python value it stands for."""
    if not isinstance(spec, dict):
        return spec
    kind, value = spec["type"], spec["value"]
    if kind == "Decimal":
        return Decimal(value)
    if kind == "datetime":
        return datetime.fromisoformat(value)
    if kind == "time":
        return time.fromisoformat(value)
    if kind == "bytes":
        return bytes.fromhex(value)
    if kind == "DateWeek":
        return DateWeek(date.fromisoformat(value[0]), value[1])
    if kind == "list":
        return [typed(v) for v in value]
    if kind == "dict":
        return {k: typed(v) for k, v in value.items()}
    raise AssertionError(f"unknown type {kind}")


def same(actual: Any, expected: Any) -> bool:
    """Equal, and Decimals also equal in their written form (1.20 is not 1.2)."""
    if isinstance(expected, Decimal):
        return isinstance(actual, Decimal) and str(actual) == str(expected)
    if isinstance(expected, list):
        return isinstance(actual, (list, tuple)) and len(actual) == len(expected) and all(map(same, actual, expected))
    if isinstance(expected, dict):
        return isinstance(actual, dict) and actual.keys() >= expected.keys() and all(same(actual[k], v) for k, v in expected.items())
    if expected is None:
        return actual is None
    return isinstance(actual, type(expected)) and actual == expected


def test_vectors_file_is_current():
    if not SHARED_FILE.exists():
        pytest.skip("shared vectors not present on this machine")
    done = subprocess.run(
        [sys.executable, str(ROOT / "protocol" / "vectors" / "make_vectors.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_every_shared_frame_is_included():
    if not SHARED_FILE.exists():
        pytest.skip("shared vectors not present on this machine")
    shared = json.loads(SHARED_FILE.read_text())
    ours = {v["name"]: v["hex"] for v in VECTORS}
    assert shared and all(ours.get(v["name"]) == v["hex"] for v in shared)


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_frame_columns_and_rebuild(v):
    raw = bytes.fromhex(v["frame"])
    frame = parse_frame(raw)
    assert frame.address == v["address"] == v["expect"]["address"]
    assert frame.control == v["control"] == v["expect"]["control"]
    assert frame.data == bytes.fromhex(v["data"])
    assert frame.preamble == v["preamble_count"]
    assert build_frame(frame.address, frame.control, frame.data, frame.preamble) == raw
    assert schema_parse(raw) == frame
    assert schema_build(frame.address, frame.control, frame.data, frame.preamble) == raw
    # an independent encoder agrees on the framing (+33H, checksum, address order)
    wire_address = bytes.fromhex(frame.address.replace("AA", "aa"))[::-1]
    assert bytes(DLT645Protocol.build_frame(wire_address, frame.control, frame.data, frame.preamble)) == raw


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_meaning(v):
    frame = parse_frame(bytes.fromhex(v["frame"]))
    expect = v["expect"]
    fields = payloads.parse_payload(frame.control, frame.data)
    assert payloads.build_payload(frame.control, fields) == frame.data
    for key, spec in expect.get("fields", {}).items():
        assert same(fields[key], typed(spec)), (key, fields[key], spec)
    if "has_more" in expect:
        assert frame.has_more is expect["has_more"]
    if "err" in expect:
        assert frame.is_abnormal and payloads.decode_err(fields["err"]) == expect["err"]
    if "serr" in expect:
        assert frame.is_abnormal and payloads.decode_serr(fields["serr"]) == expect["serr"]
    if "di" in expect:
        di_value = int(expect["di"], 16)
        assert fields["di"] == di_value
        item = di.lookup(di_value)
        if "name" in expect:
            assert item is not None and item.name == expect["name"]
        if "unit" in expect:
            assert item is not None and item.unit == expect["unit"]
        if "value" in expect:
            value = di.decode_value(di_value, fields["value"])
            want = typed(expect["value"])
            assert same(value, want), (value, want)
            assert bool(getattr(value, "unknown", False)) is expect.get("unknown", False)
            length = len(fields["value"]) if item and item.length and len(fields["value"]) != item.length else None
            if not isinstance(value, list) or item is None:
                assert di.encode_value(di_value, value, length) == fields["value"]
            else:
                assert di.encode_value(di_value, value) == fields["value"]
        if "flags" in expect:
            flags = di.status_flags(di_value, di.decode_value(di_value, fields["value"]))
            assert set(expect["flags"]) <= set(flags)
            assert not set(expect.get("not_flags", [])) & set(flags)

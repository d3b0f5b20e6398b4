"""The codecs the benchmark compares decode and encode exactly what parse_frame/build_frame do,
so its frames/s figures compare like with like."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol import ProtocolError, parse_frame
from protocol.frame import FrameSchema
from tools.bench import bench_protocol as bench

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "protocol" / "vectors" / "dlt645.json").read_text())
PLAIN_ADDRESS = [v for v in VECTORS if "AA" not in v["address"]]


@pytest.mark.parametrize("v", PLAIN_ADDRESS, ids=[v["name"] for v in PLAIN_ADDRESS])
def test_bench_codecs_agree_with_fast_path(v):
    raw = bytes.fromhex(v["frame"])
    frame = parse_frame(raw)
    expected = (frame.address, frame.control, frame.data)
    assert bench.baseline_parse(raw) == expected
    assert bench.flat_compiled_parse(raw) == expected
    body = raw.lstrip(b"\xfe")
    assert bench.baseline_build(*expected) == body
    assert bench.flat_compiled_build(*expected) == body


def test_compiled_schema_keeps_every_check():
    assert bench.compiled_is_safe(FrameSchema.compile())


@pytest.mark.parametrize("raw", bench._faulty_frames())
def test_bench_codecs_reject_faults(raw):
    with pytest.raises(ValueError):
        bench.baseline_parse(raw)
    with pytest.raises(ProtocolError):
        bench.flat_compiled_parse(raw)
    with pytest.raises(ProtocolError):
        parse_frame(raw)

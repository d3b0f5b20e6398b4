"""The meter's DI table against the head-end's (protocol.di): every item the meter answers
has the length and format the head-end decodes, and the prepaid set is all there."""

import protocol.di as di
from tests.firmware.core_support import T0, opened
from tools.bench.hes import parse

PREPAID = [0x00000000, 0x00010000, 0x00010100, 0x00010400, 0x00020000, 0x00900200, 0x00900201,
           0x02010100, 0x02020100, 0x02030000, 0x02800020, 0x04000101, 0x04000102, 0x04000401,
           0x04000402, 0x0400040E, 0x04000503, 0x04001001, 0x04001002, 0x04001003, 0x04001004,
           0x04001005, 0x04001401, 0x04050101, 0x04060001, 0x04060101, 0x03330101, 0x03330201,
           0x03330301, 0x03330401, 0x03330501, 0x03330601, 0x1D000001, 0x1D000101, 0x1E000001,
           0x03300000, 0x03300001, 0x033E0000]


def test_every_answered_item_decodes_as_the_head_end_expects():
    m, he, _ = opened(5000)
    m.add_energy(4321, T0)
    answered = set()
    for item in di.items():
        if "r" not in item.access:
            continue
        ctrl, data = parse(m.handle(he.read(item.di), T0))
        if ctrl != 0x91:
            assert (ctrl, data) == (0xD1, b"\x02"), hex(item.di)
            continue
        value = data[4:]
        if getattr(item, "length", None) is not None:
            assert len(value) == item.length, (hex(item.di), item.name)
        assert not di.decode(item.di, value).unknown, item.name
        answered.add(item.di)
    assert set(PREPAID) <= answered
    assert len(answered) > 250

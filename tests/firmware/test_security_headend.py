"""The head-end's own security client (headend.link.security) against the meter: both
sides written from protocol/SECURITY.md by different hands must agree on every byte."""

import protocol
from headend.link import security
from tests.firmware.core_support import ADDR, KEY, T0, make



def _exchange(m, control, data, now=T0):
    r = m.handle(protocol.build_frame(ADDR, control, data), now)
    f = protocol.parse_frame(r)
    return f.control, f.data


def test_headend_session_drives_the_meter():
    m, _ = make()
    s = security.SecuritySession(ADDR, KEY, rand=lambda n: bytes(range(1, n + 1)))
    ctrl, data = _exchange(m, 0x03, s.auth_request())
    assert ctrl == 0x83
    s.accept_auth_reply(data, 0.0)
    req, seq = s.recharge_request(8000, 1, "000000000042", open_account=True)
    assert _exchange(m, 0x03, req)[0] == 0x83
    s.confirm(seq)
    req, seq = s.recharge_request(2000, 2, "000000000042")
    assert _exchange(m, 0x03, req)[0] == 0x83
    s.confirm(seq)
    st = s.parse_status_reply(_exchange(m, 0x03, s.status_request())[1])
    assert (st.balance_fen, st.purchase_count, st.customer) == (10000, 2, "000000000042")
    req, seq = s.write_request(0x04001002, bytes.fromhex("00080000"))  # alarm 2 = 8.00 yuan
    assert _exchange(m, 0x14, req)[0] == 0x94
    s.confirm(seq)
    assert m.wallet.alarm2 == 800
    req, seq = s.control_request(bytes((0x1A, 0)) + bytes.fromhex("000011050625"))
    assert _exchange(m, 0x1C, req)[0] == 0x9C
    s.confirm(seq)
    assert m.relay_open
    req, seq = s.set_validity_request(10)
    assert _exchange(m, 0x03, req)[0] == 0x83
    s.confirm(seq)
    assert _exchange(m, 0x03, s.end_session_request())[0] == 0x83

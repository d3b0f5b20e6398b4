"""The head-end's own security client (headend.link.security) against the meter: both
sides written from protocol/SECURITY.md by different hands must agree on every byte."""

import protocol
from headend.link import security
from tests.firmware.core_support import ADDR, KEY, T0, make



def _exchange(m, control, data, now=T0, address=ADDR):
    r = m.handle(protocol.build_frame(address, control, data), now)
    f = protocol.parse_frame(r)
    return f.control, f.data


def test_headend_session_drives_the_meter():
    m, _ = make()
    s = security.SecuritySession(ADDR, KEY, rand=lambda n: bytes(range(1, n + 1)))
    ctrl, data = _exchange(m, 0x03, s.challenge_request())
    assert ctrl == 0x83
    ctrl, data = _exchange(m, 0x03, s.auth_request(data))
    assert ctrl == 0x83
    s.accept_auth_reply(data, 0.0)
    req, seq = s.recharge_request(8000, 1, "000000000042", open_account=True)
    assert _exchange(m, 0x03, req)[0] == 0x83
    s.confirm(seq)
    req, seq = s.recharge_request(2000, 2, "000000000042")
    assert _exchange(m, 0x03, req)[0] == 0x83
    s.confirm(seq)
    req, seq = s.status_request()
    st = s.parse_status_reply(_exchange(m, 0x03, req)[1], seq)
    s.confirm(seq)
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
    req, seq = s.write_address_request("000000000777")
    assert protocol.parse_frame(m.handle(protocol.build_frame(ADDR, 0x15, req), T0)).control == 0x95
    s.confirm(seq)
    assert m.status()["address"] == "000000000777"
    req, seq = s.end_session_request()
    assert _exchange(m, 0x03, req, address="000000000777") == (0xC3, b"\x08\x00")  # re-addressing ended it
    # the key and the meter number stay: a session at the new address
    s = security.SecuritySession("000000000777", KEY, meter_number=ADDR)
    ctrl, data = _exchange(m, 0x03, s.challenge_request(), address="000000000777")
    s.accept_auth_reply(_exchange(m, 0x03, s.auth_request(data), address="000000000777")[1], 0.0)
    req, seq = s.end_session_request()
    ctrl, data = _exchange(m, 0x03, req, address="000000000777")
    s.check_reply(ctrl, data, 0x070002FF, seq)
    assert security.WalletStatus.from_reply(data).balance_fen == 10000

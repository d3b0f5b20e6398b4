"""Keypad tokens on the meter (protocol/TOKENS.md "Acceptance on the meter"): a typed token is a
purchase record under the balance rules of a remote recharge, accepted once and only on its own
meter, out of order within the window; bad entries are limited across power cycles; management
tokens act; the record is read over DL/T 645; a power cut at any byte of the save leaves the
token either wholly applied or not at all."""

from headend.vouchers import token as H
from meter import disrec, events, wallet
from meter import token as T
from meter import topup
from meter.app import MeterApp
from meter.core import Meter
from protocol import di as D
from tests.firmware.core_support import ADDR, KEY, T0, ask, headend, make, opened
from tests.firmware.test_store import CutFlash, PowerCut
from tests.mpy import run_micropython

TK = H.token_key(KEY, 0)  # the meter's token key at revision 0, as the head-end derives it
OTHER = H.token_key(bytes(range(1, 17)), 0)


def credit(fen, tid, key=TK):
    return H.encode(key, H.CREDIT, 0, tid, H.amount_field(fen))


def restart(flash):
    m, _ = make(flash=flash)
    return m


def test_a_credit_token_is_a_purchase_record_once_and_a_replay_adds_nothing():
    m, _, flash = opened(1000)
    tok = credit(2500, 500)
    assert m.token(tok, T0 + 60) == T.OK
    st = m.status()
    assert (st["balance_fen"], st["total_bought"], st["count"]) == (3500, 3500, 1)  # the count is the head-end's
    assert disrec.last(m.events, events.TOKEN, 1) == [T0 + 60, 0x00, 500, 2500, 1000, 3500]
    assert m.token(tok, T0 + 61) == T.USED
    m = restart(flash)  # the used-TID memory is in the saved record
    assert m.token(tok, T0 + 62) == T.USED
    assert m.status()["balance_fen"] == 3500 and m.events.counts[events.TOKEN] == 1


def test_tokens_out_of_order_within_the_window_all_count_and_older_ones_are_refused():
    m, _, flash = opened(0)
    toks = [credit(100, 1000 + i) for i in range(20)]
    for i in (5, 1, 0, 3, 2, 4):
        assert m.token(toks[i], T0) == T.OK
    for i in range(6, 20):
        m = restart(flash)
        assert m.token(toks[i], T0) == T.OK
    assert m.status()["balance_fen"] == 2000
    for i in range(4):  # fell out of the 16 remembered: older than all of them, so "used"
        assert m.token(toks[i], T0) == T.USED
    assert m.token(credit(100, 900), T0) == T.USED
    assert m.status()["balance_fen"] == 2000


def test_another_meters_token_is_invalid_and_bad_entries_lock_entry_across_a_power_cut():
    m, _, flash = opened(0)
    for i in range(5):
        assert m.token(credit(100, 10 + i, OTHER), T0 + i) == T.INVALID
    good = credit(100, 50)
    assert m.token(good, T0 + 10) == T.LOCKED  # not even checked
    m = restart(flash)
    assert m.token(good, T0 + 20) == T.LOCKED
    assert m.token(good, T0 + 3600) == T.OK  # one bad entry leaked away an hour after the first
    assert m.token("12345678901234567890", T0 + 3601) == T.INVALID
    assert m.token(credit(100, 51), T0 + 3602) == T.LOCKED
    assert m.status()["balance_fen"] == 100


def test_used_locked_and_refused_entries_write_no_flash():
    m, _, flash = opened(0)
    writes = []
    real = flash.write
    flash.write = lambda off, data: (writes.append(len(data)), real(off, data))
    tok = credit(100, 70)
    assert m.token(tok, T0) == T.OK and writes
    writes.clear()
    for _ in range(50):
        assert m.token(tok, T0) == T.USED
    topup.set_limits(m.wallet, hoard=50)
    assert m.token(credit(100, 71), T0) == T.REFUSED
    assert writes == []
    topup.set_limits(m.wallet, hoard=0)
    for i in range(5):
        assert m.token(credit(100, 80 + i, OTHER), T0 + i) == T.INVALID  # each counted, so saved
    assert len(writes) > 5
    writes.clear()
    for i in range(50):
        assert m.token(credit(100, 90, OTHER), T0 + 10 + i) == T.LOCKED
    assert writes == []
    m = restart(flash)
    assert m.token(credit(100, 72), T0 + 20) == T.LOCKED  # the saved level still holds
    assert m.token(credit(100, 72), T0 + 3600) == T.OK   # and leaks from its saved start


def test_a_token_follows_the_hoarding_limit_and_close_permitted_as_a_recharge_does():
    m, _, flash = opened(1000)
    assert m.token(H.encode(TK, H.MANAGEMENT, H.SET_HOARD, 20, H.amount_field(5000)), T0) == T.OK
    assert m.wallet.hoard == 5000
    big = credit(4500, 21)
    assert m.token(big, T0) == T.REFUSED  # 1000 + 4500 > 5000: refused, not used up
    assert m.status()["balance_fen"] == 1000
    assert m.token(H.encode(TK, H.MANAGEMENT, H.SET_HOARD, 22, H.amount_field(10000)), T0) == T.OK
    assert m.token(big, T0) == T.OK
    assert m.status()["balance_fen"] == 5500
    # close permitted: an overdrawn meter closes only once a token takes it above the amount
    topup.set_limits(m.wallet, close_ok=2000)
    m.wallet.balance = -100
    m.wallet.deduct(0)
    m.wallet.state = wallet.OVERDRAFT
    m.relay.local(wallet.TRIP, T0)
    assert m.relay_open
    assert m.token(credit(1500, 30), T0 + 5) == T.OK
    assert m.status()["state"] == wallet.OVERDRAFT and m.relay_open  # 1400 <= 2000
    assert m.token(credit(1000, 31), T0 + 6) == T.OK
    assert m.status()["state"] != wallet.OVERDRAFT
    m = restart(flash)
    assert m.status()["balance_fen"] == 2400


def test_no_credit_before_account_opening_nor_on_a_remote_meter():
    m, _ = make()
    assert m.token(credit(100, 1), T0) == T.REFUSED
    r, _ = make(mode="remote")
    assert r.token(credit(100, 1), T0) == T.REFUSED
    assert m.token(credit(100, 1), T0) == T.REFUSED  # still not used: it works once the account is open


def test_clear_lock_resets_the_failed_proof_limit():
    m, _, _ = opened(0)
    for i in range(5):
        m.sec.failure(T0 + i)
    assert m.sec.locked(T0 + 10)
    assert m.token(H.encode(TK, H.MANAGEMENT, H.CLEAR_LOCK, 40, 0), T0 + 10) == T.OK
    assert not m.sec.locked(T0 + 11) and m.status()["mac_fails"] == 0
    assert disrec.last(m.events, events.TOKEN, 1)[1] == 0x20


def test_a_key_change_needs_all_four_parts_in_any_order_and_survives_a_restart():
    m, _, flash = opened(0)
    new = H.token_key(KEY, 1)
    parts = H.key_change(TK, new, 1)
    for p in (parts[2], parts[0], parts[3]):
        assert m.token(p, T0) == T.PART
    m = restart(flash)  # the parts entered so far are kept
    assert m.token(parts[1], T0) == T.OK
    assert disrec.last(m.events, events.TOKEN, 1)[1:4] == [0x22, 0, 1]  # key change, no TID, new revision 1
    assert m.token(credit(100, 60), T0) == T.INVALID  # the old key's tokens are no longer valid
    m = restart(flash)
    assert m.token(credit(100, 61, new), T0) == T.OK
    assert m.status()["balance_fen"] == 100


def test_the_token_record_is_read_over_dlt645_as_the_registry_says():
    m, _, _ = opened(1000)
    topup.set_limits(m.wallet, hoard=0)
    assert m.token(credit(1234500, 78), T0 + 120) == T.OK  # 12,345 yuan: above 655.35 with the exponent
    he = headend()
    ctrl, data = ask(m, he.read(0x033D0001))
    assert ctrl == 0x91
    rec = D.decode(0x033D0001, bytes(data[4:])).value
    assert rec["tid"] == 78 and rec["kind"] == 0
    assert rec["value"] * 100 == 1234500 and rec["after"] * 100 == 1235500 and rec["before"] * 100 == 1000
    ctrl, data = ask(m, he.read(0x033D0000))
    assert D.decode(0x033D0000, bytes(data[4:])).value == 1
    ctrl, data = ask(m, he.read(0x033D0002))
    assert ctrl == 0x91 and bytes(data[4:]) == bytes(23)  # no second record yet


def test_a_power_cut_at_every_byte_of_the_save_leaves_the_token_applied_once_or_not_at_all():
    m, _, flash = opened(1000)
    image = bytes(flash.mem)
    tok = credit(2500, 300)
    ref_flash = CutFlash(image)
    ref = restart(ref_flash)
    ref_flash.writes.clear()
    assert ref.token(tok, T0) == T.OK
    sizes = list(ref_flash.writes)
    assert sizes
    checked = applied = 0
    for w, size in enumerate(sizes, 1):
        for k in range(size + 1):
            f = CutFlash(image)
            mm = restart(f)
            f.arm(w, k)
            try:
                mm.token(tok, T0)
            except PowerCut:
                pass
            f.arm(0, 0)
            back = restart(f)
            bal = back.status()["balance_fen"]
            n = back.events.counts[events.TOKEN]
            assert (bal, n, back.tok is not None and 300 in back.tok[0]) in ((1000, 0, False), (3500, 1, True))
            applied += bal == 3500
            # typed again after the restart: credited exactly once in all
            again = back.token(tok, T0 + 1)
            assert again == (T.USED if bal == 3500 else T.OK)
            assert back.status()["balance_fen"] == 3500
            checked += 1
    assert checked > 100 and 0 < applied < checked


def test_the_keypad_entry_types_clears_and_enters():
    m, _, _ = opened(0)

    class NoPulses:
        def take(self):
            return 0

    app = MeterApp(m, NoPulses(), 1000)
    tok = credit(700, 90)
    for c in "99*" + tok[:10] + "A" + tok[10:]:
        app.key(c, T0)
    assert app.entry == tok
    app.key("#", T0)
    assert app.shown == T.OK and app.entry == "" and m.status()["balance_fen"] == 700
    for c in tok + "#":
        app.key(c, T0)
    assert app.shown == T.USED
    for c in tok + "1#":  # 21 digits: no token, and not counted as a guess
        app.key(c, T0)
    assert app.shown == T.INVALID and m.tok[1][0] == 0


def test_the_meter_applies_a_token_under_micropython():
    code = ("from meter.core import Meter\nfrom meter.desktop import RamFlash\n"
            f"m = Meter({{'address': {ADDR!r}, 'key': {KEY!r}, 'krn': 0, 'mode': 'local'}}, RamFlash(16384), {T0}, "
            "lambda n: bytes(n))\n"
            "m.wallet.opened = True\n"
            f"print(m.token({credit(2500, 5)!r}, {T0}), m.token({credit(2500, 5)!r}, {T0}), "
            f"m.token({credit(2500, 6, OTHER)!r}, {T0}), m.status()['balance_fen'])\n")
    r = run_micropython(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(T.OK), str(T.USED), str(T.INVALID), "2500"]


FULL_TOKEN = r"""
import gc
from meter.core import Meter
%(file_flash)s
m = Meter({"address": %(addr)r, "key": %(key)r, "krn": 1, "mode": "local"}, FileFlash(%(flash)r, 16384), %(t)d, None)
gc.collect()
r = m.token(%(tok)r, %(t)d)
r2 = m.token(%(tok)r, %(t)d)
gc.collect()
print("result", r, r2, m.status()["balance_fen"], gc.mem_alloc())
"""


def test_a_fully_programmed_meter_takes_a_token_within_its_heap_budget(tmp_path):
    """The token module is loaded by the first token: a meter with every table and log full, powered
    up from its flash, still takes one (and saves it) in the budget of tests/firmware/test_core_heap.py."""
    from tests.firmware.test_core_heap import FULL_BUDGET
    from tools import mpy
    from tools.bench import bench_firmware as bf

    image, t, _ = bf.programmed_meter()
    ref = Meter(bf._config(), bf._flash_of(image), t, None)
    before = ref.status()["balance_fen"]
    tok = H.encode(H.token_key(ref.sec.key, 0), H.CREDIT, 0, 9000, H.amount_field(100))
    dest = bf.build_o3(tmp_path / "mpy")
    (tmp_path / "flash.bin").write_bytes(image)
    (dest / "full_token.py").write_text(FULL_TOKEN % {"file_flash": bf._FILE_FLASH, "addr": bf.ADDR, "key": bf.KEY,
                                                      "flash": bf.beside(dest, tmp_path / "flash.bin", "flash.bin"), "t": t,
                                                      "tok": tok})
    mpy.cross_compile("full_token.py", dest / "full_token.mpy", cwd=dest)
    (dest / "full_token.py").unlink()
    r = bf.run_mpy(dest, "import full_token", heapsize=FULL_BUDGET)
    line = [x for x in r.stdout.splitlines() if x.startswith("result")]
    assert line, r.stdout + r.stderr
    ok, again, balance, _kept = (int(x) for x in line[0].split()[1:])
    assert (ok, again, balance) == (T.OK, T.USED, before + 100)

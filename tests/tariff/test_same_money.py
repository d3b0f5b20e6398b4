"""Same money as the meter: a simulated year through the firmware's local cost control
(meter.tariff + meter.wallet, driven the way meter.core.Meter.add_energy drives them) and through
the head-end core gives the same balance to the fen and the same sub-fen remainder."""

import numpy as np
import pytest

from headend.tariff.model import TariffBook, beijing_tou, meter_time, zhejiang
from headend.tariff.rating import rate_batch
from headend.tariff.reference import rate_reference
from meter import tariff as fw_tariff
from meter import tariffcheck, topup
from meter import wallet as fw_wallet


def firmware_tariff(t, set_no=0, fw=None):
    """Load a head-end tariff version into one set of the meter's tables (as the DI writes do)."""
    fw = fw or fw_tariff.Tariff()
    tariffcheck.set_prices(fw, set_no, list(t.prices))
    for k, table in enumerate(t.day_tables):
        tariffcheck.set_day_table(fw, set_no, k, list(table.points))
    tariffcheck.set_zones(fw, set_no, list(t.zones))
    tariffcheck.set_ladder(fw, set_no, list(t.ladder.thresholds_wh), list(t.ladder.increments))
    tariffcheck.set_settlement(fw, list(t.ladder.settlements))
    return fw


def meter_year(fw, starts, energy, ladder_wh, balance, topups):
    """The meter's path: settle, charge, deduct per registration (meter.core.Meter.add_energy)."""
    w = fw_wallet.Wallet(overdraft=0)
    assert topup.open_account(w, balance, 1, "000000000042")[0] == fw_wallet.OK
    count = 1
    last_t = int(starts[0]) - 1
    for i, (t, wh) in enumerate(zip(starts.tolist(), energy.tolist())):
        if i in topups:
            count += 1
            assert topup.recharge(w, topups[i], count, "000000000042")[0] == fw_wallet.OK
        if wh <= 0:
            continue
        fw.roll(t)
        ladder_wh = fw.settle(t, last_t, ladder_wh)
        subfen, ladder_wh, _rate = fw.charge(wh, t, ladder_wh)
        w.deduct(subfen)
        last_t = t
    return w.balance, w.rem, ladder_wh


def headend_year(book, starts, energy, ladder_wh, balance, topups, engine=None, batch=96):
    """The head-end's path: rate batches of intervals, debit fen, top-ups straight into the balance."""
    rem = 0
    lad = ladder_wh
    prev = int(starts[0]) - 1
    kw = {} if engine is None else {"engine": engine}
    for lo in range(0, starts.size, batch):
        hi = min(lo + batch, starts.size)
        for i in range(lo, hi):
            balance += topups.get(i, 0)
        got = rate_batch(book, energy[None, lo:hi], starts[lo:hi], prev, [lad], [rem], **kw)
        balance -= int(got.fen[0])
        rem, lad = int(got.rem[0]), int(got.ladder_wh[0])
        prev = int(starts[hi - 1])
    return balance, rem, lad


def simulated_load(n, seed, step_s):
    rng = np.random.default_rng(seed)
    wh = rng.gamma(2.0, 0.35, n) * (step_s / 3600) * 1000          # ~6000 kWh a year
    wh[rng.random(n) < 0.05] = 0                                     # away: no pulses at all
    return np.rint(wh).astype(np.int32)


@pytest.mark.parametrize("step_s, batch", [(3600, 24), (900, 96)])
def test_a_year_of_beijing_ladder_and_tou_debits_the_same_fen(step_s, batch):
    t = beijing_tou(effective=0)
    start = meter_time(2025, 7, 1)
    n = 366 * 86400 // step_s
    starts = start + step_s * np.arange(n, dtype=np.int64)
    energy = simulated_load(n, seed=step_s, step_s=step_s)
    topups = {i: 50_000 for i in range(0, n, n // 12)}               # 500 yuan a month
    ladder0 = 2_000_000
    meter = meter_year(firmware_tariff(t), starts, energy, ladder0, 10_000, dict(topups))
    head = headend_year(t, starts, energy, ladder0, 10_000, dict(topups), batch=batch)
    assert head == meter
    # the year really exercised the ladder: settlement on 1 January and both thresholds crossed
    assert energy.sum() > 4_800_000 and meter[2] < energy.sum()


def test_a_tariff_change_mid_year_debits_the_same_fen():
    switch = meter_time(2026, 3, 1)
    old = beijing_tou()
    new = zhejiang(effective=switch, version=2)
    book = TariffBook((old, new))
    fw = firmware_tariff(old)
    firmware_tariff(new, set_no=1, fw=fw)
    for kind in (fw_tariff._SW_ZONES, fw_tariff._SW_DAYS, fw_tariff._SW_PRICES, fw_tariff._SW_LADDER):
        tariffcheck.set_switch(fw, kind, switch)
    start = meter_time(2025, 12, 1)
    n = 120 * 24
    starts = start + 3600 * np.arange(n, dtype=np.int64)
    energy = simulated_load(n, seed=5, step_s=3600) * 3
    meter = meter_year(fw, starts, energy, 4_700_000, 500_000, {})
    head = headend_year(book, starts, energy, 4_700_000, 500_000, {}, batch=100)
    ref = headend_year(book, starts, energy, 4_700_000, 500_000, {}, engine=rate_reference, batch=1000)
    assert head == meter == ref

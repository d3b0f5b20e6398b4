import numpy as np
import pytest

from headend.tariff.readings import MISSING, Replacement, assemble, intervals_from_registers

M1, M2 = 410000000001, 410000000002


def records(rows):
    """rows: (account, interval, register, meter) tuples -> the four arrays assemble() takes."""
    a = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return a[:, 0], a[:, 1], a[:, 2], a[:, 3]


def kinds(out):
    return [(p.kind, p.account, p.interval) for p in out.problems]


def test_clean_readings_give_differences_and_no_problems():
    regs = np.array([[105, 110, 110, 130], [7, 8, 9, 10]])
    out = intervals_from_registers(regs, np.array([[M1] * 4, [M2] * 4]), [100, 5], [M1, M2])
    assert out.energy_wh.tolist() == [[5, 5, 0, 20], [2, 1, 1, 1]]
    assert out.energy_wh.dtype == np.int32
    assert out.last_register.tolist() == [130, 10] and out.problems == []


def test_gap_energy_is_billed_with_the_next_reading_and_a_trailing_gap_carries_over():
    regs = np.array([[105, MISSING, MISSING, 130, MISSING]])
    out = intervals_from_registers(regs, np.full((1, 5), M1), [100], [M1])
    assert out.energy_wh.tolist() == [[5, 0, 0, 25, 0]]
    assert kinds(out) == [("gap", 0, 1), ("gap", 0, 4)]
    assert out.last_register.tolist() == [130]          # next batch bills from 130: nothing lost
    nxt = intervals_from_registers(np.array([[140]]), np.array([[M1]]), out.last_register, out.last_meter)
    assert nxt.energy_wh.tolist() == [[10]]
    assert out.energy_wh.sum() + nxt.energy_wh.sum() == 140 - 100


def test_backwards_reading_is_not_used_and_energy_is_billed_once_when_it_recovers():
    regs = np.array([[105, 90, 120]])
    out = intervals_from_registers(regs, np.full((1, 3), M1), [100], [M1])
    assert out.energy_wh.tolist() == [[5, 0, 15]]
    assert kinds(out) == [("backwards", 0, 1)]


def test_duplicates_count_once_and_conflicts_are_not_used():
    acc, itv, reg, mtr = records([(0, 0, 105, M1), (0, 0, 105, M1), (0, 1, 110, M1),
                                  (1, 0, 50, M2), (1, 0, 52, M2), (1, 1, 60, M2)])
    out = assemble(acc, itv, reg, mtr, [100, 40], [M1, M2], 2)
    assert out.energy_wh.tolist() == [[5, 5], [0, 20]]
    assert ("duplicate", 0, 0) in kinds(out)
    assert ("conflict", 1, 0) in kinds(out) and ("gap", 1, 0) in kinds(out)
    assert out.energy_wh.sum() == (110 - 100) + (60 - 40)   # nothing billed twice, nothing lost


def test_readings_outside_the_batch_are_reported():
    acc, itv, reg, mtr = records([(0, 0, 105, M1), (3, 0, 1, M1), (0, 9, 200, M1)])
    out = assemble(acc, itv, reg, mtr, [100], [M1], 1)
    assert ("out_of_batch", 3, 0) in kinds(out) and ("out_of_batch", 0, 9) in kinds(out)
    assert out.energy_wh.tolist() == [[5]]


def test_meter_replaced_with_a_record_bills_both_meters():
    regs = np.array([[105, 12, 30]])
    mtrs = np.array([[M1, M2, M2]])
    rep = Replacement(account=0, interval=1, old_final_wh=108, new_initial_wh=2)
    out = intervals_from_registers(regs, mtrs, [100], [M1], (rep,))
    assert out.energy_wh.tolist() == [[5, 3 + 10, 18]]
    assert kinds(out) == [("meter_replaced", 0, 1)]
    assert out.last_meter.tolist() == [M2] and out.last_register.tolist() == [30]


def test_meter_replaced_without_a_record_is_reported_and_not_guessed():
    out = intervals_from_registers(np.array([[105, 12, 30]]), np.array([[M1, M2, M2]]), [100], [M1])
    assert out.energy_wh.tolist() == [[5, 0, 18]]
    assert kinds(out) == [("meter_replaced", 0, 1)]
    assert "re-rate" in out.problems[0].detail


def test_a_replacement_record_that_contradicts_the_readings_is_reported():
    rep = Replacement(0, 1, old_final_wh=90, new_initial_wh=2)
    out = intervals_from_registers(np.array([[105, 12]]), np.array([[M1, M2]]), [100], [M1], (rep,))
    assert kinds(out) == [("backwards", 0, 1)] and out.energy_wh.tolist() == [[5, 0]]


def test_large_matrix_fast_path_matches_the_walk():
    rng = np.random.default_rng(2)
    steps = rng.integers(0, 400, (500, 96))
    start = rng.integers(0, 10**9, 500)
    regs = start[:, None] + np.cumsum(steps, axis=1)
    mtrs = np.full((500, 96), M1)
    regs[7, 30] = MISSING                        # one anomaly forces account 7 through the walk
    out = intervals_from_registers(regs, mtrs, start, np.full(500, M1))
    expected = steps.copy()
    expected[7, 30] = 0
    expected[7, 31] += steps[7, 30]
    assert np.array_equal(out.energy_wh, expected)
    assert kinds(out) == [("gap", 7, 30)]


def test_bad_start_state_is_refused():
    with pytest.raises(ValueError, match="start_register"):
        intervals_from_registers(np.array([[1]]), np.array([[M1]]), [-1], [M1])


def test_an_implausible_step_is_reported_and_not_billed():
    regs = np.array([[105, 105 + (1 << 31), 110]])
    out = intervals_from_registers(regs, np.full((1, 3), M1), [100], [M1])
    assert kinds(out) == [("implausible", 0, 1)]
    assert out.energy_wh.tolist() == [[5, 0, 5]]


def test_broadcast_meter_ids_and_int32_output_for_a_big_clean_batch():
    start = np.array([10, 20])
    regs = start[:, None] + np.array([[1, 2, 3], [0, 0, 4]])
    meters = np.broadcast_to(np.array([M1, M2])[:, None], regs.shape)   # one meter per account, not copied
    out = intervals_from_registers(regs, meters, start, [M1, M2])
    assert out.energy_wh.tolist() == [[1, 1, 1], [0, 0, 4]] and out.problems == []

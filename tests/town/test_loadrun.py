"""The load-and-fault run at a small size (tools/loadrun.py): a storm of payments through the API
while `headend serve` is SIGKILLed twice, a bus answers noise and meters lose power; money is
conserved to the fen and no recharge is lost or applied twice."""

from __future__ import annotations

from pathlib import Path

from tools.loadrun import run_load


def test_conservation_and_no_lost_or_double_command_under_faults(tmp_path: Path) -> None:
    out = run_load(240, seed=5, workdir=tmp_path / "run", rounds=1, window_s=0.3, kills=2, garbage_s=5,
                   power_loss_share=0.02, concurrency=32, log=lambda s: None)
    assert out["faults"]["kills"] == 2 and out["faults"]["power_loss"] == 4 and out["faults"]["garbage_bus"] >= 32
    assert out["town_stats"]["restarts"] == 4
    assert out["payments_confirmed"] == out["payments"] == 240 and not out["payment_refused"]
    assert out["posted_fen"] == out["expected_fen"] == out["on_local_meters_fen"] + out["remote_balances_fen"]
    assert out["conservation_ok"] and out["local_balances_fen"] == out["on_local_meters_fen"]
    assert out["meters_wrong_count"] == 0, out["meters_wrong"]
    assert out["commands_not_confirmed"] == 0 and out["commands_confirmed"] > 0
    assert set(out["payment_states"]) <= {"confirmed_on_meter", "credited"}
    assert all(v < 1024 for v in out["peak_mb"].values())

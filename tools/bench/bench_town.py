"""The load-and-fault run at bench size (tools/loadrun.py; the 10,000-meter run is
`python -m tools.loadrun --meters 10000`): BENCH_TOWN_METERS meters (default 1,500) on 40+ buses.

Figures: read cycles of the head-end against the plain-asyncio ceiling on the same buses (same
far end: the town's meter cores), interleaved; one cost-control cycle; payments through the API
to their confirmation while `headend serve` is SIGKILLed twice, a bus answers noise and 1% of
the meters lose power; peak memory of each process; retries; and the conservation check, which
raises when broken (a benchmark that loses money must not report a speed).
"""

from __future__ import annotations

import os

N_METERS = int(os.environ.get("BENCH_TOWN_METERS", "1500"))


def run(report) -> None:  # noqa: ANN001
    from tools.loadrun import run_load

    out = run_load(N_METERS, rounds=5, window_s=1.0, log=lambda s: None)
    if not out["conservation_ok"] or out["meters_wrong_count"] or out["payments_confirmed"] != out["payments"]:
        raise RuntimeError(f"town: conservation or commands broken: {out}")
    size = f"{N_METERS:,}-meter town, {out['buses']} buses + {out['solo_links']} solo links"
    report(f"town: read cycles (every reading stored) vs plain asyncio (Protocol callbacks, nothing decoded), "
           f"same buses and meter cores ({size})",
           out["reads_per_s"], "reads/s", baseline=out["ceiling_reads_per_s"], pairs=_pairs(out))
    report(f"  read cycle of all {N_METERS:,} meters (median)", out["read_cycle_s"] * 1000, "ms")
    report(f"  cost-control cycle ({out['costctl_accounts']} remote accounts, headend costctl run)",
           out["costctl_cycle_s"] * 1000, "ms")
    report(f"town: payments through the API, one per meter, with 2 SIGKILLs of serve ({size})",
           out["payments"] / out["storm_wall_s"], "payments/s")
    report("  commands confirmed per second during the storm (recharges to local meters)", out["commands_per_s"],
           "commands/s")
    cpu = out["storm_cpu_s"]
    report("  meters' share of the CPU during the storm (town process / town + headend serve + API clients)",
           100 * out["meters_cpu_share"], "%")
    report("  headend serve's share of the CPU during the storm", 100 * cpu["headend serve"] / sum(cpu.values()), "%")
    for p in (50, 95, 99):
        report(f"  payment to confirmation p{p}", out[f"payment_p{p}_s"] * 1000, "ms")
    report("  retries: API requests sent again (serve down, receipts polled meanwhile)", out["api_retries"], "requests")
    report("  retries: outbox command attempts beyond the first", out["command_retries"], "attempts")
    for name, mb in out["peak_mb"].items():
        report(f"  peak memory: {name}", mb, "MB")
    report("town: conservation (posted == local meters + remote balances), fen difference",
           out["posted_fen"] - out["on_local_meters_fen"] - out["remote_balances_fen"], "fen")


def _pairs(out):  # noqa: ANN001, ANN202
    from tools.bench.interleave import Interleaved

    return Interleaved(out["reads_per_s"], out["ceiling_reads_per_s"], out["read_vs_ceiling"],
                       out["read_vs_ceiling_low"], out["read_vs_ceiling_high"], out["read_pairs"])

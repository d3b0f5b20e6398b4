"""Withholding scenarios: a store with customers under agreements, a bank that answers a batch
file with a return file (results chosen by the test), and ways to spoil a return file."""

from __future__ import annotations

from headend.bank import add_agreement, export_batch, load_profile, read_file, write_file
from headend.bank.layout import Profile
from headend.store import Store, open_store
from tests.headend.payments_support import KEYS, T0
from tests.headend.store_support import Clock

DAY = "2025-12-05"                 # T0's day, China time
HOLDERS = ("张三", "李四", "王小明", "Zhao Liu")


def local_customer(i: int) -> str:
    return f"{100000000000 + i:012d}"


def remote_customer(i: int) -> str:
    return f"{200000000000 + i:012d}"


def bank_store(path: str, *, bank: str = "ICBC", locals_: int = 4, remotes: int = 2) -> Store:
    """Customers with local meters and a top-up agreement (balance 0, so all due: 50 yuan each) and
    remote accounts owing 30 yuan + i fen with a month-settlement agreement."""
    s = open_store(path, clock=Clock(T0))
    for i in range(locals_):
        c = local_customer(i)
        s.add_account(c, actor="t", name=HOLDERS[i % 4])
        s.add_meter(f"{i + 1:012d}", link="tcp://127.0.0.1:9", customer=c, actor="t", mode="local")
        add_agreement(s, KEYS, c, bank=bank, account=f"62220000{i:08d}", holder=HOLDERS[i % 4],
                      agreement=f"W-{i}", rule="topup", amount_fen=5000, below_fen=2000, actor="t")
    for i in range(remotes):
        c = remote_customer(i)
        s.add_account(c, actor="t", name=f"R{i}")
        s.add_meter(f"{900000 + i:012d}", link="tcp://127.0.0.1:9", customer=c, actor="t", mode="remote")
        s.charge_accounts(f"bill-{i}", [(c, 3000 + i, 0, 0)], actor="t")
        add_agreement(s, KEYS, c, bank=bank, account=f"62280000{i:08d}", holder=f"R{i}",
                      agreement=f"M-{i}", rule="settle_month", actor="t")
    return s


def bank_answer(p: Profile, request: bytes, results: dict[int, tuple[str, int]] | None = None) -> bytes:
    """The bank's return file for a request file: every row debited in full unless ``results``
    gives (result, debited fen) for its sequence number."""
    req = read_file(p, "request", request)
    assert req.errors == [] and req.header is not None
    rows = []
    for _, d in req.details:
        result, debited = (results or {}).get(d["seq"], ("debited", d["amount_fen"]))
        rows.append({"seq": d["seq"], "customer": d["customer"], "account": d["account"],
                     "amount_fen": d["amount_fen"], "result": p.code_of(result), "debited_fen": debited,
                     "serial": f"SN{req.header['batch']:04d}{d['seq']:06d}"})
    return write_file(p, "return", req.header, rows,
                      {"count": len(rows), "debited_fen": sum(r["debited_fen"] for r in rows)})


def exported(store: Store, bank: str = "ICBC", day: str = DAY) -> tuple[Profile, bytes]:
    p = load_profile(bank)
    batch, _ = export_batch(store, KEYS, p, day, actor="t")
    return p, batch.content

"""The payment-parts bench measures what its labels say: each side's round writes the rows it claims."""

import sqlite3

from tools.bench import bench_payment_parts as parts


def _counts(path):
    with sqlite3.connect(path) as c:
        return {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("payments", "notifications", "api_nonces", "audit")}


def test_each_side_leaves_out_only_its_part(tmp_path):
    sides = {name: parts._Site(tmp_path, name, **kw) for name, kw in {
        "full": {}, "notice": {"notify": True}, "nononce": {"nonces": False}, "audit": {"audit": True},
        "page1k": {"page_size": 1024}}.items()}
    before = {name: _counts(tmp_path / f"{name}.db") for name in sides}
    for site in sides.values():
        site.round()
    grew = {name: {t: n - before[name][t] for t, n in _counts(tmp_path / f"{name}.db").items()} for name in sides}
    for site in sides.values():
        site.store.close()
    r = parts.ROUND
    assert grew["full"] == {"payments": r, "notifications": 0, "api_nonces": r, "audit": 0}
    assert grew["notice"] == {"payments": r, "notifications": r, "api_nonces": r, "audit": 0}
    assert grew["nononce"] == {"payments": r, "notifications": 0, "api_nonces": 0, "audit": 0}
    assert grew["audit"] == {"payments": r, "notifications": 0, "api_nonces": r, "audit": r}
    assert grew["page1k"] == grew["full"]
    with sqlite3.connect(tmp_path / "page1k.db") as c:
        assert c.execute("PRAGMA page_size").fetchone()[0] == 1024

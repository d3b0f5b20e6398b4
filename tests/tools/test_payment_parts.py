"""The payment-parts bench measures what its labels say: each side's round writes the rows it claims."""

import sqlite3

from tools.bench import bench_payment_parts as parts


def _counts(path):
    with sqlite3.connect(path) as c:
        out = {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("payments", "notifications", "audit")}
        # a round's nonces are one row, a line each
        out["nonces"] = sum(len(text.split("\n")) for (text,) in c.execute("SELECT nonces FROM api_nonce_rounds"))
        return out


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
    assert grew["full"] == {"payments": r, "notifications": 0, "nonces": r, "audit": 0}
    assert grew["notice"] == {"payments": r, "notifications": r, "nonces": r, "audit": 0}
    assert grew["nononce"] == {"payments": r, "notifications": 0, "nonces": 0, "audit": 0}
    assert grew["audit"] == {"payments": r, "notifications": 0, "nonces": r, "audit": r}
    assert grew["page1k"] == grew["full"]
    with sqlite3.connect(tmp_path / "page1k.db") as c:
        assert c.execute("PRAGMA page_size").fetchone()[0] == 1024


def test_the_local_meter_pair_differs_only_in_the_in_flight_index(tmp_path):
    sides = {name: parts._LocalSite(tmp_path, name, in_flight_index=name == "with", earlier=500)
             for name in ("with", "without")}
    for site in sides.values():
        site.round()
        site.store.close()
    for name in sides:
        with sqlite3.connect(tmp_path / f"{name}.db") as c:
            indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            assert ("payments_in_flight" in indexes) == (name == "with")
            assert c.execute("SELECT COUNT(*) FROM payments WHERE state = 'sent_to_meter'").fetchone()[0] == parts.ROUND
            assert c.execute("SELECT COUNT(*) FROM payments").fetchone()[0] == 500 + parts.ROUND

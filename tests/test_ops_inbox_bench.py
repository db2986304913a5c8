"""`bankbot bench ops-inbox` end to end on a small scale: the gateway's pages are timed and the counts add up."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bankbot.ops_inbox_bench import fill_tracker, run_bench


def test_the_planted_tracker_store_looks_like_rasas(tmp_path: Path) -> None:
    path = tmp_path / "tracker.db"
    next_id = fill_tracker(f"sqlite:///{path}", 200, seed=3)
    with sqlite3.connect(path) as db:
        types = dict(db.execute("SELECT type_name, COUNT(*) FROM events GROUP BY type_name").fetchall())
        channels = {row[0].split(":")[0] for row in db.execute("SELECT DISTINCT sender_id FROM events")}
        indexes = {row[1] for row in db.execute("PRAGMA index_list('events')")}
    assert next_id == 801 and types == {"user": 200, "action": 400, "bot": 200}
    assert channels == {"webchat", "wecom", "miniprogram", "ivr"}
    assert "ix_events_sender_id" in indexes


def test_the_bench_times_every_page_and_reads_all_messages(tmp_path: Path) -> None:
    result = run_bench(400, 2, seed=5, out=tmp_path / "bench.json", keep=tmp_path / "work")
    # Every customer message is in the inbox (1,000 more arrive mid-bench); none is reviewed yet.
    assert result["new_messages"] == 400 and result["new_messages_after"] == 1400
    names = [t["name"] for t in result["timings"]]
    assert "last page" in names and "dashboard, 30 days" in names
    assert all(t["requests"] >= 2 and t["p95_ms"] > 0 for t in result["timings"])
    assert result["passed"] == (result["inbox_worst_p95_ms"] < 1000)
    assert (tmp_path / "bench.json").exists()

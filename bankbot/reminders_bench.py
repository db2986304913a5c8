"""Reminder store and dispatch throughput: plan N reminders, dispatch them with 1, 2, 4 worker processes to a
counting sender, on SQLite and on a throwaway PostgreSQL; reminders per second, p99 lateness, lost, duplicated.

The worker processes and the PostgreSQL server are the test suite's own (`tests/reminders/race_worker.py`,
`tests/pg_server.py`), so the bench measures exactly what the race tests prove correct.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)
ROOT = Path(__file__).resolve().parent.parent


def register(bench: Any) -> None:
    reminders = bench.add_parser("reminders", help="plan and dispatch N reminders with 1/2/4 workers")
    reminders.add_argument("--reminders", type=int, default=1_000_000)
    reminders.add_argument("--workers", default="1,2,4")
    reminders.add_argument("--databases", default="sqlite,postgresql")
    reminders.add_argument("--out", type=Path, default=Path("reports/reminders/bench.json"))
    reminders.set_defaults(handler=cmd_bench_reminders)


def _tests_module(name: str) -> Any:
    """The test suite's helpers, loaded at run time (the bench reuses them; the type checker stays out of tests)."""
    import importlib

    return importlib.import_module(name)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def _prepare(url: str, count: int, now: dt.datetime) -> float:
    """A migrated database with the customers and `count` due reminders; returns the planning rate."""
    from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
    from bankcore.reminders import store

    support = _tests_module("tests.reminders.store_support")
    migrate(url)
    support._add_customers(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    started = time.perf_counter()
    chunk = 20_000
    for start in range(0, count, chunk):
        with unit_of_work(factory) as session:
            store.add_planned(session, support.planned(min(chunk, count - start), send_after=now, start=start), now)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return count / elapsed


def _lateness(url: str) -> list[float]:
    from sqlalchemy import select

    from bankcore.database import make_engine, make_session_factory, unit_of_work
    from bankcore.models import Reminder, ReminderAttempt

    engine = make_engine(url)
    with unit_of_work(make_session_factory(engine)) as session:
        rows = session.execute(
            select(Reminder.send_after, ReminderAttempt.finished_at)
            .join(ReminderAttempt, ReminderAttempt.reminder_id == Reminder.id)
            .where(ReminderAttempt.result == "delivered")
        ).all()
    engine.dispose()
    return [(finished - send_after).total_seconds() for send_after, finished in rows if finished is not None]


def _run_workers(url: str, workers: int, counts_file: Path, deadline: float) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reminders.race_worker",
                url,
                str(counts_file),
                f"bench-{n}",
                "--batch",
                "200",
                "--deadline",
                str(deadline),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(workers)
    ]
    for process in processes:
        process.communicate()
    return time.perf_counter() - started


def cmd_bench_reminders(args: argparse.Namespace) -> int:
    from channels.scheduler.senders import CountingSender

    results: list[dict[str, Any]] = []
    worker_counts = [int(w) for w in args.workers.split(",")]
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    server = None
    if "postgresql" in databases:
        pg = _tests_module("tests.pg_server")
        if pg.find_bin_dir() is None:
            console.print("PostgreSQL binaries not found: skipping it")
            databases.remove("postgresql")
        else:
            server = pg.PostgresServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="bankbot-reminders-bench-") as tmp:
            for database in databases:
                for workers in worker_counts:
                    name = f"{database}-{workers}w"
                    if database == "sqlite":
                        url = f"sqlite:///{Path(tmp) / (name + '.db')}"
                    else:
                        assert server is not None
                        url = server.create_database(name.replace("-", "_"))
                    now = dt.datetime.now(dt.UTC)
                    plan_rate = _prepare(url, args.reminders, now)
                    counts_file = Path(tmp) / f"{name}.counts"
                    counts_file.touch()
                    elapsed = _run_workers(url, workers, counts_file, deadline=max(120.0, args.reminders / 200))
                    counts = CountingSender.read_counts(counts_file)
                    lateness = _lateness(url)
                    row = {
                        "database": database,
                        "workers": workers,
                        "reminders": args.reminders,
                        "plan_per_s": round(plan_rate),
                        "dispatch_per_s": round(len(counts) / elapsed),
                        "lost": args.reminders - len(counts),
                        "duplicated_sends": sum(counts.values()) - len(counts),
                        "delivered_records": len(lateness),
                        "lateness_p99_s": round(_percentile(lateness, 0.99), 2),
                    }
                    results.append(row)
                    console.print(row)
    finally:
        if server is not None:
            server.stop()
    table = Table("database", "workers", "plan /s", "dispatch /s", "p99 lateness s", "lost", "duplicate sends")
    for row in results:
        table.add_row(
            row["database"],
            str(row["workers"]),
            str(row["plan_per_s"]),
            str(row["dispatch_per_s"]),
            str(row["lateness_p99_s"]),
            str(row["lost"]),
            str(row["duplicated_sends"]),
        )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0 if all(r["lost"] == 0 and r["duplicated_sends"] == 0 for r in results) else 1

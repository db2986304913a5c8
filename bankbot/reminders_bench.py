"""Reminder store and dispatch throughput: plan N reminders, dispatch them with 1, 2, 4 worker processes to a
counting sender, on SQLite and on a throwaway PostgreSQL; reminders per second, p99 lateness, lost, duplicated.

The worker processes and the PostgreSQL server are the test suite's own (`tests/reminders/race_worker.py`,
`tests/pg_server.py`), so the bench measures exactly what the race tests prove correct.

`reminders-chaos` dispatches on PostgreSQL while it SIGKILLs a random worker every ~2 s (starting a replacement)
and restarts the server once; then it checks that every reminder reached the channel and is recorded once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bankbot.turn_bench import percentile

console = Console(soft_wrap=True)
ROOT = Path(__file__).resolve().parent.parent


def register(bench: Any) -> None:
    reminders = bench.add_parser("reminders", help="plan and dispatch N reminders with 1/2/4 workers")
    reminders.add_argument("--reminders", type=int, default=1_000_000)
    reminders.add_argument("--workers", default="1,2,4")
    reminders.add_argument("--databases", default="sqlite,postgresql")
    reminders.add_argument("--out", type=Path, default=Path("reports/reminders/bench.json"))
    reminders.set_defaults(handler=cmd_bench_reminders)

    chaos = bench.add_parser(
        "reminders-chaos", help="dispatch N reminders on PostgreSQL while killing workers and restarting the server"
    )
    chaos.add_argument("--reminders", type=int, default=5000)
    chaos.add_argument("--workers", type=int, default=4)
    chaos.add_argument("--seconds", type=float, default=30.0, help="how long the chaos lasts (and the paced run)")
    chaos.add_argument("--kill-every", type=float, default=2.0)
    chaos.add_argument("--lease", type=float, default=5.0, help="worker lease: how soon a dead worker's claims return")
    chaos.add_argument("--seed", type=int, default=None)
    chaos.add_argument("--out", type=Path, default=Path("reports/reminders/chaos.json"))
    chaos.set_defaults(handler=cmd_bench_reminders_chaos)


def _tests_module(name: str) -> Any:
    """The test suite's helpers, loaded at run time (the bench reuses them; the type checker stays out of tests)."""
    import importlib

    return importlib.import_module(name)


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
                        "lateness_p99_s": round(percentile(lateness, 0.99), 2),
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


WORKER_CONCURRENCY = 8  # race_worker's Dispatcher(concurrency=8)


def _start_chaos_worker(
    url: str, counts_file: Path, worker_id: str, logs: Path, *, lease: float, send_delay: float, deadline: float
) -> subprocess.Popen[bytes]:
    # Output to files, never pipes: nobody reads a pipe of a worker about to be killed, and a full one blocks it.
    with (logs / f"{worker_id}.out").open("wb") as out, (logs / f"{worker_id}.log").open("wb") as err:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reminders.race_worker",
                url,
                str(counts_file),
                worker_id,
                "--lease",
                str(lease),
                "--send-delay",
                str(send_delay),
                "--deadline",
                str(deadline),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=err,
        )


def _chaos_outcome(url: str, keys: set[str], counts_file: Path) -> dict[str, int]:
    from sqlalchemy import func, select

    from bankcore.database import make_engine, make_session_factory, unit_of_work
    from bankcore.models import Reminder, ReminderAttempt
    from channels.scheduler.senders import CountingSender

    received = CountingSender.read_counts(counts_file)
    engine = make_engine(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            statuses = dict(session.execute(select(Reminder.key, Reminder.status)).tuples().all())
            delivered_rows = session.execute(
                select(ReminderAttempt.reminder_id, func.count())
                .where(ReminderAttempt.result == "delivered")
                .group_by(ReminderAttempt.reminder_id)
            ).all()
    finally:
        engine.dispose()
    # Lost: the customer never got it, or the database does not say it was delivered (it would be re-sent).
    lost = {key for key in keys if key not in received or statuses.get(key) != "delivered"}
    return {
        "reminders": len(keys),
        "delivered_distinct": len(set(received) & keys),
        "lost": len(lost),
        "duplicate_sends": sum(count - 1 for count in received.values() if count > 1),
        "reminders_sent_more_than_once": sum(1 for count in received.values() if count > 1),
        "double_recorded": sum(1 for _reminder, count in delivered_rows if count > 1),
    }


def cmd_bench_reminders_chaos(args: argparse.Namespace) -> int:
    pg = _tests_module("tests.pg_server")
    support = _tests_module("tests.reminders.store_support")
    if pg.find_bin_dir() is None:
        console.print("PostgreSQL binaries not found (apt-get install postgresql): nothing to run")
        return 2
    chance = random.Random(args.seed)
    # Paced so that the run lasts about --seconds: otherwise a few thousand reminders are gone before the
    # first kill, and the chaos would test nothing.
    send_delay = WORKER_CONCURRENCY * args.workers * args.seconds / max(args.reminders, 1)
    deadline = args.seconds * 4 + 120  # a worker's own limit: far beyond the run, only against a hung worker
    server = pg.PostgresServer().start()
    kills = restarts = 0
    try:
        with tempfile.TemporaryDirectory(prefix="bankbot-reminders-chaos-") as tmp:
            logs = Path(tmp)
            url = server.create_database("chaos")
            now = dt.datetime.now(dt.UTC)
            _prepare(url, args.reminders, now)
            keys = {reminder.key for reminder in support.planned(args.reminders, send_after=now)}
            counts_file = logs / "sent.tsv"
            counts_file.touch()

            def start(worker_id: str) -> subprocess.Popen[bytes]:
                return _start_chaos_worker(
                    url, counts_file, worker_id, logs, lease=args.lease, send_delay=send_delay, deadline=deadline
                )

            started = time.monotonic()
            workers = {f"chaos-{n}": start(f"chaos-{n}") for n in range(args.workers)}
            spawned = args.workers
            next_kill = started + args.kill_every * chance.uniform(0.75, 1.25)
            restart_at = started + args.seconds / 2
            while time.monotonic() < started + args.seconds:
                if all(process.poll() is not None for process in workers.values()):
                    break  # everything delivered before the chaos window ended
                if time.monotonic() >= next_kill:
                    victim = chance.choice(sorted(name for name, process in workers.items() if process.poll() is None))
                    workers[victim].send_signal(signal.SIGKILL)
                    workers[victim].wait()
                    kills += 1
                    del workers[victim]
                    replacement = f"chaos-{spawned}"
                    spawned += 1
                    workers[replacement] = start(replacement)
                    next_kill = time.monotonic() + args.kill_every * chance.uniform(0.75, 1.25)
                if not restarts and time.monotonic() >= restart_at:
                    # Immediate: a crash and recovery, the harshest restart; down a second so connects are refused.
                    server.restart(mode="immediate", down_for=1.0)
                    restarts += 1
                time.sleep(0.05)
            for process in workers.values():
                try:
                    process.wait(timeout=deadline)
                except subprocess.TimeoutExpired:
                    process.kill()
            wall = time.monotonic() - started
            unclean = sum(1 for process in workers.values() if process.returncode != 0)
            # Only the last workers report (the killed ones die silently): proof that the restart was noticed.
            database_errors = 0
            for name in workers:
                lines = (logs / f"{name}.out").read_text(encoding="utf-8").strip().splitlines()
                if lines:
                    database_errors += int(json.loads(lines[-1]).get("database_errors", 0))
            outcome = _chaos_outcome(url, keys, counts_file)
    finally:
        server.stop()
    row: dict[str, Any] = {
        **outcome,
        "workers": args.workers,
        "kills": kills,
        "restarts": restarts,
        "workers_exited_uncleanly": unclean,
        "database_errors_seen_by_last_workers": database_errors,
        "send_delay_s": round(send_delay, 4),
        "lease_s": args.lease,
        "wall_s": round(wall, 2),
    }
    table = Table("figure", "value")
    for name, value in row.items():
        table.add_row(name, str(value))
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2), encoding="utf-8")
    return 0 if row["lost"] == 0 and row["double_recorded"] == 0 and unclean == 0 else 1

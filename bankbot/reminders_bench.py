"""Reminder store and dispatch throughput: plan N reminders, dispatch them with 1, 2, 4 worker processes to a
counting sender, on SQLite and on a throwaway PostgreSQL; reminders per second, p99 lateness, lost, duplicated.

The worker processes are the test suite's own (`tests/reminders/race_worker.py`) and the PostgreSQL server is the
one the tests use (`bankbot/engines/postgres_server.py`), so the bench measures exactly what the race tests prove
correct.

`reminders-chaos` dispatches on PostgreSQL while it SIGKILLs a random worker every ~2 s (starting a replacement)
and restarts the server once. Its workers decide with the real policy layer (the rules file's quiet hours,
consent, caps, settlement) for customers spread over zones from Auckland to New York, so that at any moment
some are inside their quiet hours (21:00-08:00 local) and some outside; the counting sender records each send's
customer and wall time. Then it checks every reminder against the customer's clock (`quiet_hours_outcome`):
nothing was sent inside quiet hours, every reminder was delivered and recorded once or is parked until its
customer's window opens, and none is recorded twice.
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
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from bankbot.turn_bench import percentile

if TYPE_CHECKING:
    from bankcore.reminders.policy import QuietHours
    from channels.scheduler.senders import Receipt

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
    chaos.add_argument("--rules", type=Path, default=None, help="rules file whose policy the workers apply")
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
        from bankbot.engines import postgres_server as pg

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


@dataclass(frozen=True)
class StoredReminder:
    """What the outcome reads of one reminder after the run."""

    status: str
    next_attempt_at: dt.datetime | None
    timezone: str  # its customer's
    delivered_records: int  # `delivered` attempt rows


def quiet_hours_outcome(
    reminders: Mapping[str, StoredReminder],
    receipts: Sequence[Receipt],
    quiet: QuietHours,
    run_start: dt.datetime,
    run_end: dt.datetime,
) -> dict[str, int]:
    """The chaos run's figures, every reminder checked against its customer's clock.

    `receipts` are the counting sender's (key, customer_id, sent_at); `run_start` is when the first worker
    started, `run_end` the last moment the surviving workers found nothing due (everything after it is parked).

    - sent_in_quiet_hours: receipts (repeats included) whose customer-local time is inside quiet hours.
    - delivered: received by the channel and recorded `delivered` in the database.
    - deferred_to_window: not delivered, but due again exactly when the quiet hours its customer is in at
      `run_end` end (`next_allowed(run_end)`, later than `run_end`): legitimately waiting, not lost.
    - lost: every other reminder, whatever its customer's clock did: never received, received but not
      recorded (it would be sent again), ended in another state (failed, suppressed, cancelled), or left due
      with nobody to send it. Stricter than "undelivered among customers outside quiet hours", which is
      reported too as lost_outside_quiet_hours: those customers must all have been delivered to.
    - reminders_outside/inside_quiet_hours_all_run and reminders_crossing_a_window_edge: the customers whose
      quiet hours did not touch [run_start, run_end], covered all of it, or began or ended inside it.
    """
    from bankcore.reminders.policy import in_quiet_hours, next_allowed, quiet_hours_begin, zone_of

    received: Counter[str] = Counter(receipt.key for receipt in receipts)
    zones = {name: zone_of(name) for name in {reminder.timezone for reminder in reminders.values()}}
    sent_in_quiet = sum(
        1
        for receipt in receipts
        if receipt.key in reminders and in_quiet_hours(receipt.sent_at, zones[reminders[receipt.key].timezone], quiet)
    )
    run_of_zone: dict[str, str] = {}
    parked_until: dict[str, dt.datetime | None] = {}
    for name, zone in zones.items():
        begins = quiet_hours_begin(run_start, zone, quiet)
        if in_quiet_hours(run_start, zone, quiet):
            run_of_zone[name] = "inside" if next_allowed(run_start, zone, quiet) > run_end else "crossing"
        else:
            run_of_zone[name] = "outside" if begins is None or begins > run_end else "crossing"
        opens = next_allowed(run_end, zone, quiet)
        parked_until[name] = opens if opens > run_end else None  # None: not in quiet hours at run_end
    delivered = deferred = lost = lost_outside = 0
    spans: Counter[str] = Counter()
    for key, reminder in reminders.items():
        spans[run_of_zone[reminder.timezone]] += 1
        if key in received and reminder.status == "delivered":
            delivered += 1
        elif (
            reminder.status == "due"
            and parked_until[reminder.timezone] is not None
            and reminder.next_attempt_at == parked_until[reminder.timezone]
        ):
            deferred += 1
        else:
            lost += 1
            lost_outside += run_of_zone[reminder.timezone] == "outside"
    return {
        "reminders": len(reminders),
        "reminders_outside_quiet_hours_all_run": spans["outside"],
        "reminders_inside_quiet_hours_all_run": spans["inside"],
        "reminders_crossing_a_window_edge": spans["crossing"],
        "delivered": delivered,
        "deferred_to_window": deferred,
        "sent_in_quiet_hours": sent_in_quiet,
        "lost": lost,
        "lost_outside_quiet_hours": lost_outside,
        "duplicate_sends": sum(count - 1 for key, count in received.items() if count > 1 and key in reminders),
        "reminders_sent_more_than_once": sum(1 for key, count in received.items() if count > 1 and key in reminders),
        "double_recorded": sum(1 for reminder in reminders.values() if reminder.delivered_records > 1),
    }


def stored_reminders(url: str) -> dict[str, StoredReminder]:
    """Every reminder's state after a run, with its customer's zone and its count of `delivered` records."""
    from sqlalchemy import func, select

    from bankcore.database import make_engine, make_session_factory, unit_of_work
    from bankcore.models import Customer, Reminder, ReminderAttempt

    engine = make_engine(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            delivered = {
                int(reminder_id): int(count)
                for reminder_id, count in session.execute(
                    select(ReminderAttempt.reminder_id, func.count())
                    .where(ReminderAttempt.result == "delivered")
                    .group_by(ReminderAttempt.reminder_id)
                )
            }
            rows = session.execute(
                select(Reminder.id, Reminder.key, Reminder.status, Reminder.next_attempt_at, Customer.timezone).join(
                    Customer, Customer.id == Reminder.customer_id
                )
            ).all()
    finally:
        engine.dispose()
    return {
        key: StoredReminder(status, next_attempt_at, timezone, int(delivered.get(reminder_id, 0)))
        for reminder_id, key, status, next_attempt_at, timezone in rows
    }


def _prepare_zoned(url: str, count: int, now: dt.datetime) -> None:
    """A migrated database with `count` customers spread over the zones, and one due reminder for each."""
    from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
    from bankcore.reminders import store

    support = _tests_module("tests.reminders.store_support")
    migrate(url)
    support.add_zoned_customers(url, count)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    chunk = 20_000
    for start in range(0, count, chunk):
        with unit_of_work(factory) as session:
            planned = support.zoned_planned(min(chunk, count - start), send_after=now, start=start)
            store.add_planned(session, planned, now)
    engine.dispose()


def _start_chaos_worker(
    url: str,
    counts_file: Path,
    worker_id: str,
    logs: Path,
    *,
    lease: float,
    send_delay: float,
    deadline: float,
    rules: Path,
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
                # The receipt's time is the hand-off's: the moment checked against the customer's quiet hours.
                "--delay-after-receipt",
                "--deadline",
                str(deadline),
                "--policy",
                "quiet-hours",
                "--rules",
                str(rules),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=err,
        )


def cmd_bench_reminders_chaos(args: argparse.Namespace) -> int:
    from bankbot.engines import postgres_server as pg
    from bankcore.reminders.policy import in_quiet_hours, zone_of
    from bankcore.reminders.rules import DEFAULT_RULES_PATH, load_rules
    from channels.scheduler.senders import CountingSender

    support = _tests_module("tests.reminders.store_support")
    if pg.find_bin_dir() is None:
        console.print("PostgreSQL binaries not found (apt-get install postgresql): nothing to run")
        return 2
    rules_path = args.rules or DEFAULT_RULES_PATH
    quiet = load_rules(rules_path).policy().quiet
    chance = random.Random(args.seed)
    deadline = args.seconds * 4 + 120  # a worker's own limit: far beyond the run, only against a hung worker
    server = pg.PostgresServer().start()
    kills = restarts = 0
    try:
        with tempfile.TemporaryDirectory(prefix="bankbot-reminders-chaos-") as tmp:
            logs = Path(tmp)
            url = server.create_database("chaos")
            now = dt.datetime.now(dt.UTC)
            _prepare_zoned(url, args.reminders, now)
            # Paced so that the run lasts about --seconds: otherwise a few thousand reminders are gone before the
            # first kill, and the chaos would test nothing. Only the customers outside quiet hours get sends.
            zones = [support.zone_of_customer(number) for number in range(args.reminders)]
            sendable = sum(1 for name in zones if not in_quiet_hours(now, zone_of(name), quiet))
            send_delay = WORKER_CONCURRENCY * args.workers * args.seconds / max(sendable, 1)
            counts_file = logs / "sent.tsv"
            counts_file.touch()

            def start(worker_id: str) -> subprocess.Popen[bytes]:
                return _start_chaos_worker(
                    url,
                    counts_file,
                    worker_id,
                    logs,
                    lease=args.lease,
                    send_delay=send_delay,
                    deadline=deadline,
                    rules=rules_path,
                )

            run_start = dt.datetime.now(dt.UTC)
            started = time.monotonic()
            workers = {f"chaos-{n}": start(f"chaos-{n}") for n in range(args.workers)}
            spawned = args.workers
            next_kill = started + args.kill_every * chance.uniform(0.75, 1.25)
            restart_at = started + args.seconds / 2
            while time.monotonic() < started + args.seconds:
                if all(process.poll() is not None for process in workers.values()):
                    break  # everything sendable delivered before the chaos window ended
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
            run_end = dt.datetime.now(dt.UTC)
            unclean = sum(1 for process in workers.values() if process.returncode != 0)
            # Only the last workers report (the killed ones die silently): proof that the restart was noticed,
            # and when each found nothing left to send. The latest of those is the run's end: at that moment
            # nothing was due, so whatever was not delivered by then was parked.
            database_errors = window_closed = hit_deadline = 0
            idle_times: list[dt.datetime] = []
            for name in workers:
                lines = (logs / f"{name}.out").read_text(encoding="utf-8").strip().splitlines()
                report = json.loads(lines[-1]) if lines else {}
                database_errors += int(report.get("database_errors", 0))
                window_closed += int(report.get("window_closed", 0))
                if report.get("idle_at"):
                    idle_times.append(dt.datetime.fromisoformat(report["idle_at"]))
                else:
                    hit_deadline += 1
            if idle_times:
                run_end = max(idle_times)
            outcome = quiet_hours_outcome(
                stored_reminders(url), CountingSender.read_receipts(counts_file), quiet, run_start, run_end
            )
    finally:
        server.stop()
    row: dict[str, Any] = {
        **outcome,
        "zones": ",".join(support.ZONES),
        "run_start_utc": run_start.isoformat(timespec="seconds"),
        "run_end_utc": run_end.isoformat(timespec="seconds"),
        "workers": args.workers,
        "kills": kills,
        "restarts": restarts,
        "workers_exited_uncleanly": unclean,
        "last_workers_without_an_idle_report": hit_deadline,
        "database_errors_seen_by_last_workers": database_errors,
        "sends_held_back_at_a_window_edge_by_last_workers": window_closed,
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
    failed = row["sent_in_quiet_hours"] or row["lost"] or row["double_recorded"] or unclean
    return 1 if failed else 0

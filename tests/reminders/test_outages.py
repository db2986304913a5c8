"""Outages during dispatch: the database restarted under running workers, a channel down for a while."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from bankcore.models import Reminder, ReminderAttempt
from bankcore.reminders import store
from channels.scheduler.senders import CountingSender, SendResult
from channels.scheduler.worker import Dispatcher
from tests.pg_server import PostgresServer, find_bin_dir
from tests.reminders import store_support
from tests.reminders.store_support import NOW, planned

reminder_sqlite_template = store_support.reminder_sqlite_template
reminder_pg = store_support.reminder_pg
reminder_db = store_support.reminder_db
factory = store_support.factory

Factory = sessionmaker[Session]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    """A server of this test's own: restarting the shared one would pull it from under other tests' fixtures."""
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL binaries not installed (Debian: apt-get install postgresql)")
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


def delivered_attempts_per_reminder(factory: Factory) -> dict[int, int]:
    with unit_of_work(factory) as session:
        rows = session.execute(
            select(ReminderAttempt.reminder_id, func.count())
            .where(ReminderAttempt.result == "delivered")
            .group_by(ReminderAttempt.reminder_id)
        )
        return {int(reminder_id): int(count) for reminder_id, count in rows}


@pytest.mark.pg
def test_a_database_restart_mid_run_loses_and_duplicates_nothing(own_pg: PostgresServer, tmp_path: Path) -> None:
    url = own_pg.create_database("outage")
    migrate(url)
    store_support._add_customers(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    total = 1500
    now = dt.datetime.now(dt.UTC)  # the worker processes run on the wall clock
    reminders = planned(total, send_after=now - dt.timedelta(minutes=1))
    with unit_of_work(factory) as session:
        assert store.add_planned(session, reminders, now) == total
    keys = {reminder.key for reminder in reminders}

    counts = tmp_path / "sent.tsv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # A short lease, so the claims held when the server went down are taken over within the test's time;
    # a slow channel (20 ms a send, 8 at once), so the restart lands while the workers are busy.
    options = ["--lease", "3", "--send-delay", "0.02", "--deadline", "120"]
    # stderr to files: an outage makes the workers log, and an unread pipe would block them.
    logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.reminders.race_worker", url, str(counts), f"worker-{n}", *options],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
        )
        for n, log in enumerate(logs)
    ]
    try:
        deadline = time.monotonic() + 30
        while len(CountingSender.read_counts(counts)) < 200:
            assert time.monotonic() < deadline, "the workers never got going"
            assert all(process.poll() is None for process in processes)
            time.sleep(0.02)
        own_pg.restart(mode="fast", down_for=1.0)
        received_at_restart = len(CountingSender.read_counts(counts))
        results = []
        for process, log in zip(processes, logs, strict=True):
            out, _ = process.communicate(timeout=150)
            assert process.returncode == 0, log.read_text()[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()

    assert received_at_restart < total, "the run was over before the restart: it proved nothing"
    assert sum(int(result.get("database_errors", 0)) for result in results) > 0, "no worker noticed the outage"
    for log in logs:
        # The workers said the database was down, without the address or the user of the server.
        text = log.read_text()
        assert "database" in text and "postgres@" not in text and f":{own_pg.port}" not in text, text[-2000:]
    received = CountingSender.read_counts(counts)
    assert set(received) == keys, "a reminder never reached the channel"
    # Re-sends happen only for claims whose outcome was not recorded when the server went down; the channel
    # drops them by key, and the database records exactly one delivery per reminder.
    with unit_of_work(factory) as session:
        assert store.counts_by_status(session) == {"delivered": total}
        ids = list(session.scalars(select(Reminder.id)))
    assert delivered_attempts_per_reminder(factory) == dict.fromkeys(ids, 1)
    engine.dispose()
    resent = sum(received.values()) - len(received)
    print(f"restart after {received_at_restart} sends: {resent} deduplicated re-sends, workers {results}")


class FakeClock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


class ChannelDownUntil:
    """The platform answers with a retryable error until `back_at` on the (fake) clock, then delivers."""

    def __init__(self, clock: FakeClock, back_at: dt.datetime) -> None:
        self.clock, self.back_at = clock, back_at
        self.inner = CountingSender()
        self.refused = 0

    async def send(self, reminder: store.ClaimedReminder, channel: str, idempotency_key: str) -> SendResult:
        if self.clock() < self.back_at:
            self.refused += 1
            return SendResult(ok=False, retryable=True, detail="platform_error: 503")
        return await self.inner.send(reminder, channel, idempotency_key)


async def test_the_channel_down_for_a_while_is_retried_until_it_is_back(factory: Factory) -> None:
    count = 30
    with unit_of_work(factory) as session:
        store.add_planned(session, planned(count), NOW)
    clock = FakeClock(NOW)
    # Down for 25 minutes; retries at +5, +15, +35 minutes (base 5 min doubling): the fourth and last allowed
    # attempt finds the channel back.
    sender = ChannelDownUntil(clock, NOW + dt.timedelta(minutes=25))
    dispatcher = Dispatcher(
        factory,
        sender,
        worker_id="w",
        clock=clock,
        retry_base=dt.timedelta(minutes=5),
        max_attempts=4,
    )
    for _minute in range(60):
        while await dispatcher.run_once():
            pass
        clock.now += dt.timedelta(minutes=1)

    assert sender.inner.delivered == count and sender.inner.duplicates == 0
    assert sender.refused == 3 * count
    assert dispatcher.stats["failed"] == 0 and dispatcher.stats["retry"] == 3 * count
    with unit_of_work(factory) as session:
        assert store.counts_by_status(session) == {"delivered": count}
        results = session.execute(select(ReminderAttempt.result, func.count()).group_by(ReminderAttempt.result)).all()
    assert dict(results) == {"retry": 3 * count, "delivered": count}

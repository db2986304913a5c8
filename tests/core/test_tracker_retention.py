"""Tracker retention on a tracker store created and filled by Rasa 3.6 itself, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import itertools
import json
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from bankbot.layout import ProjectLayout, subprocess_env
from bankcore import tracker_retention
from bankcore.settings import Settings
from bankcore.tracker_retention import TRACKER_EVENTS, exclusive_run, retain, tracker_engine
from tests.pg_server import PostgresServer

LAYOUT = ProjectLayout()
RASA_STORE = Path(__file__).with_name("rasa_tracker_store.py")
NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
DAY = 86400.0
_numbers = itertools.count(1)


@dataclass
class TrackerStore:
    """A tracker store database: our URL for it, and the SQLTrackerStore arguments Rasa's code gets."""

    url: str
    rasa: dict[str, Any]
    engine: Engine

    def rasa_call(self, command: str, **request: Any) -> Any:
        result = subprocess.run(
            [str(LAYOUT.rasa_python), str(RASA_STORE)],
            input=json.dumps({"store": self.rasa, "command": command, **request}),
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.splitlines()[-1])

    def fill(self, *conversations: tuple[str, float, int]) -> None:
        """(sender_id, start as days before NOW, turns) each; saved by Rasa in this order."""
        self.rasa_call(
            "fill",
            conversations=[
                {"sender_id": sender, "start": NOW.timestamp() - days * DAY, "turns": turns}
                for sender, days, turns in conversations
            ],
        )

    def counts(self, *senders: str) -> dict[str, int]:
        """Events per conversation as Rasa reads them back (its full tracker; 0: no conversation)."""
        return dict(self.rasa_call("count", senders=list(senders)))

    def rows(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            events = TRACKER_EVENTS.c
            result = connection.execute(select(events.sender_id, func.count()).group_by(events.sender_id))
            return {str(sender): int(count) for sender, count in result}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TrackerStore]:
    if not LAYOUT.rasa_python.exists():
        pytest.skip("no .venv-rasa: the tracker store is made by Rasa's own code")
    if request.param == "sqlite":
        path = tmp_path / "tracker.db"
        url = f"sqlite:///{path}"
        rasa: dict[str, Any] = {"dialect": "sqlite", "db": str(path)}
        engine = tracker_engine(url)
        yield TrackerStore(url, rasa, engine)
        engine.dispose()
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    name = f"trackers_{next(_numbers)}"
    url = server.create_database(name)
    rasa = {"dialect": "postgresql", "host": "127.0.0.1", "port": server.port, "db": name, "username": "postgres"}
    engine = tracker_engine(url)
    try:
        yield TrackerStore(url, rasa, engine)
    finally:
        engine.dispose()
        server.drop_database(name)


def read_archive(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as archive:
        return [json.loads(line) for line in archive]


def test_quiet_conversations_are_archived_then_deleted_and_the_others_kept_whole(
    store: TrackerStore, tmp_path: Path
) -> None:
    store.fill(
        ("webchat:C001", 400, 3),
        ("wecom:C002", 200, 1),
        ("ivr:C003", 181, 2),
        ("webchat:C004", 179, 1),  # inside the period: kept
        ("miniprogram:C001", 1, 4),  # recent: kept
    )
    # An old conversation that came back later: its newest event is recent, so all of it stays.
    store.fill(("wecom:C004", 300, 2))
    store.rasa_call("append", sender_id="wecom:C004", start=NOW.timestamp() - 2 * DAY, turns=1)
    before = store.rows()

    report = retain(store.engine, older_than=dt.timedelta(days=180), now=NOW, archive_dir=tmp_path / "archive")

    gone = ["webchat:C001", "wecom:C002", "ivr:C003"]
    kept = ["webchat:C004", "miniprogram:C001", "wecom:C004"]
    assert (report.conversations, report.deleted_conversations, report.kept_conversations) == (3, 3, 0)
    assert report.events == report.deleted_events == sum(before[sender] for sender in gone)
    assert store.rows() == {sender: before[sender] for sender in kept}
    assert store.counts(*gone, *kept) == {
        **dict.fromkeys(gone, 0),
        **{sender: before[sender] for sender in kept},
    }

    assert report.archive is not None and report.archive.name.endswith(".jsonl.gz")
    assert stat.S_IMODE(report.archive.stat().st_mode) == 0o600
    assert not list(report.archive.parent.glob("*.part"))
    archived = read_archive(report.archive)
    assert sorted(line["sender_id"] for line in archived) == sorted(gone)
    for line in archived:
        assert len(line["events"]) == before[line["sender_id"]]
        assert line["events"][0]["event"] == "action"  # Rasa's own event dicts, in id order
        assert max(event["timestamp"] for event in line["events"]) < report.cutoff.timestamp()

    # What was archived goes back into Rasa as it was.
    store.rasa_call("restore", archive=str(report.archive))
    assert store.counts(*gone) == {sender: before[sender] for sender in gone}


def test_a_dry_run_counts_and_changes_nothing(store: TrackerStore, tmp_path: Path) -> None:
    store.fill(("webchat:C001", 400, 2), ("webchat:C002", 1, 1))
    before = store.rows()
    report = retain(
        store.engine, older_than=dt.timedelta(days=180), now=NOW, archive_dir=tmp_path / "archive", dry_run=True
    )
    assert (report.conversations, report.events) == (1, before["webchat:C001"])
    assert (report.deleted_conversations, report.deleted_events, report.archive) == (0, 0, None)
    assert store.rows() == before
    assert not (tmp_path / "archive").exists() or not list((tmp_path / "archive").iterdir())


def test_conversations_go_in_batches_into_one_archive(store: TrackerStore, tmp_path: Path) -> None:
    senders = [f"webchat:C{n:03d}" for n in range(7)]
    store.fill(*[(sender, 365, 1) for sender in senders], ("webchat:Z999", 1, 1))
    report = retain(
        store.engine, older_than=dt.timedelta(days=30), now=NOW, archive_dir=tmp_path / "archive", batch_size=2
    )
    assert report.deleted_conversations == 7
    assert list(store.rows()) == ["webchat:Z999"]
    assert [path.name for path in (tmp_path / "archive").iterdir()] == [report.archive.name if report.archive else ""]
    assert sorted(line["sender_id"] for line in read_archive(report.archive or Path())) == senders


def test_a_conversation_that_gets_a_new_event_during_the_run_is_kept_whole(
    store: TrackerStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between archiving a page and deleting it, Rasa writes to one of its conversations: the DELETE re-checks."""
    store.fill(("webchat:C001", 400, 2), ("webchat:C002", 400, 2), ("webchat:C003", 1, 1))
    before = store.rows()
    write_page = tracker_retention._Archive.write_page

    def archive_then_customer_returns(self: Any, conversations: Any) -> None:
        write_page(self, conversations)
        with store.engine.begin() as connection:
            connection.execute(
                insert(TRACKER_EVENTS),
                {
                    "sender_id": "webchat:C002",
                    "type_name": "action",
                    "timestamp": NOW.timestamp(),
                    "action_name": "action_session_start",
                    "data": json.dumps(
                        {"event": "action", "timestamp": NOW.timestamp(), "name": "action_session_start"}
                    ),
                },
            )

    monkeypatch.setattr(tracker_retention._Archive, "write_page", archive_then_customer_returns)
    report = retain(store.engine, older_than=dt.timedelta(days=180), now=NOW, archive_dir=tmp_path / "archive")
    assert (report.conversations, report.deleted_conversations, report.kept_conversations) == (2, 1, 1)
    assert store.rows() == {
        "webchat:C002": before["webchat:C002"] + 1,
        "webchat:C003": before["webchat:C003"],
    }


def test_sqlite_never_deletes_the_conversation_holding_the_highest_id(tmp_path: Path) -> None:
    """Deleting the top rows would let SQLite hand out ids again below what the ops inbox has copied."""
    if not LAYOUT.rasa_python.exists():
        pytest.skip("no .venv-rasa")
    path = tmp_path / "tracker.db"
    engine = tracker_engine(f"sqlite:///{path}")
    store = TrackerStore(f"sqlite:///{path}", {"dialect": "sqlite", "db": str(path)}, engine)
    try:
        store.fill(("webchat:C001", 400, 1), ("webchat:C002", 300, 1))
        report = retain(engine, older_than=dt.timedelta(days=180), now=NOW)
        assert report.deleted_conversations == 1
        assert list(store.rows()) == ["webchat:C002"]
    finally:
        engine.dispose()


def test_without_a_tracker_store_there_is_nothing_to_do(tmp_path: Path) -> None:
    engine = tracker_engine(f"sqlite:///{tmp_path / 'tracker.db'}")
    try:
        report = retain(engine, older_than=dt.timedelta(days=1), now=NOW)
    finally:
        engine.dispose()
    assert report.skipped_reason == "no tracker store yet"
    assert report.deleted_conversations == 0


def test_two_runs_never_overlap(store: TrackerStore) -> None:
    store.fill(("webchat:C001", 1, 1))
    other = tracker_engine(store.url)
    try:
        with exclusive_run(store.engine) as first, exclusive_run(other) as second:
            assert (first, second) == (True, False)
        with exclusive_run(other) as again:
            assert again
    finally:
        other.dispose()


@pytest.mark.parametrize("bad", [dt.timedelta(0), dt.timedelta(days=-1)])
def test_the_period_must_be_positive(bad: dt.timedelta, tmp_path: Path) -> None:
    engine = tracker_engine(f"sqlite:///{tmp_path / 'tracker.db'}")
    try:
        with pytest.raises(ValueError):
            retain(engine, older_than=bad)
    finally:
        engine.dispose()


# -- the command and the scheduled run ---------------------------------------------------------------------------


@pytest.fixture
def var_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrackerStore]:
    """The laptop layout: the tracker store is var/tracker.db, and the settings come from the environment."""
    if not LAYOUT.rasa_python.exists():
        pytest.skip("no .venv-rasa")
    var = tmp_path / "var"
    var.mkdir()
    monkeypatch.setenv("BANKBOT_VAR_DIR", str(var))
    monkeypatch.setenv("BANKBOT_SECRET_KEY", "retention-test")
    monkeypatch.delenv("BANKBOT_DATABASE_URL", raising=False)
    monkeypatch.delenv("BANKBOT_TRACKER_ARCHIVE_DIR", raising=False)
    path = var / "tracker.db"
    assert Settings.from_env().tracker_store_url == f"sqlite:///{path}"
    engine = tracker_engine(f"sqlite:///{path}")
    yield TrackerStore(f"sqlite:///{path}", {"dialect": "sqlite", "db": str(path)}, engine)
    engine.dispose()


def test_the_command_reports_deletes_and_archives(
    var_store: TrackerStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bankbot.cli import main

    now = dt.datetime.now(dt.UTC).timestamp()
    var_store.rasa_call(
        "fill",
        conversations=[
            {"sender_id": "webchat:C001", "start": now - 100 * DAY, "turns": 1},
            {"sender_id": "webchat:C002", "start": now - 5 * DAY, "turns": 1},
        ],
    )
    assert main(["trackers", "retain", "--older-than-days", "30", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert (dry["dry_run"], dry["conversations"], dry["deleted_conversations"]) == (True, 1, 0)
    assert len(var_store.rows()) == 2

    archive = tmp_path / "archive"
    assert (
        main(["trackers", "retain", "--older-than-days", "30", "--archive-dir", str(archive), "--batch-size", "10"])
        == 0
    )
    out = capsys.readouterr().out
    assert "deleted 1" in out and str(archive) in out
    assert list(var_store.rows()) == ["webchat:C002"]
    assert [line["sender_id"] for line in read_archive(next(archive.glob("trackers-*.jsonl.gz")))] == ["webchat:C001"]


def test_the_command_refuses_a_period_of_zero(var_store: TrackerStore) -> None:
    from bankbot.cli import main

    assert main(["trackers", "retain", "--older-than-days", "0"]) == 2


async def test_the_reminder_worker_runs_the_job_and_stops_when_told(
    var_store: TrackerStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from channels.scheduler.tracker_retention import run_daily

    now = dt.datetime.now(dt.UTC).timestamp()
    var_store.rasa_call(
        "fill",
        conversations=[
            {"sender_id": "webchat:C001", "start": now - 400 * DAY, "turns": 1},
            {"sender_id": "webchat:C002", "start": now - DAY, "turns": 1},
        ],
    )
    monkeypatch.setenv("BANKBOT_TRACKER_ARCHIVE_DIR", str(tmp_path / "archive"))
    settings = Settings.from_env()
    assert settings.tracker_retention_days == 180
    stop = asyncio.Event()
    task = asyncio.create_task(run_daily(settings, stop, first_delay=dt.timedelta(0)))
    deadline = asyncio.get_running_loop().time() + 30
    while len(var_store.rows()) > 1 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    assert list(var_store.rows()) == ["webchat:C002"]
    assert len(list((tmp_path / "archive").glob("trackers-*.jsonl.gz"))) == 1
    stop.set()
    await asyncio.wait_for(task, 5)

    off = Settings.from_env({**settings.extra, "BANKBOT_TRACKER_RETENTION_DAYS": "0"})
    await asyncio.wait_for(run_daily(off, asyncio.Event(), first_delay=dt.timedelta(0)), 1)

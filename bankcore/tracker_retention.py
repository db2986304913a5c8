"""Tracker retention: archive, then delete, the conversations in Rasa's SQL tracker store that have gone quiet.

Rasa's SQLTrackerStore keeps every event of every conversation in one `events` table (id, sender_id, type_name,
timestamp as a float epoch, intent_name, action_name, data as JSON text; rasa/core/tracker_store.py, SQLEvent).
Nothing ever removes them. A conversation (one `sender_id`: `<channel>:<customer_id>`) whose newest event is older
than the cutoff is archived and deleted whole; any conversation with a newer event is left alone entirely.

Safe while Rasa serves:
- Conversations are found a page at a time (keyset on sender_id, short statements): no long transaction holds
  SQLite's lock or PostgreSQL's snapshot while Rasa writes.
- A page is archived first: one JSON line per conversation (`{"sender_id", "events": [Rasa event dicts]}`, what
  Rasa's `PUT /conversations/<id>/tracker/events` takes back) appended to the run's gzip file, flushed and fsynced
  before its DELETE runs, so a deleted row is always on disk. One file per run, `trackers-<UTC time>.jsonl.gz`,
  named `.part` until the run ends (a run cut short leaves a readable, truncated `.part`).
- The DELETE re-checks its condition: only the archived rows (id at most the page's highest archived id) of
  conversations that still have no event at or after the cutoff. A conversation that got a new event during the
  run is kept whole and counted as kept. With session expiry (bot/domain/core.yml, 60 minutes) far shorter than
  any retention period, a new event there opens a new session, so the conversation Rasa serves never needs the
  deleted ones. (On PostgreSQL a new event committed while the DELETE statement itself runs is not seen by it:
  then the old sessions go and the new one stays, which Rasa serves the same way.)
- On SQLite the conversation holding the table's highest id is never deleted: SQLite hands out max(id) + 1, and
  deleting the top rows would let ids go backwards under the ops inbox, which copies new rows by id.
- `exclusive_run` keeps two runs (two scheduler workers, a worker and the CLI) from overlapping: a PostgreSQL
  advisory lock, or a lock file beside the SQLite database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import gzip
import json
import logging
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    exists,
    func,
    select,
)
from sqlalchemy import inspect as inspect_database
from sqlalchemy.engine import make_url

UTC = dt.UTC
log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500
# pg_try_advisory_lock key: "bankbot tracker retention", any fixed 64-bit number no other job uses.
_ADVISORY_LOCK_KEY = 0x62616E6B_74726B72
SQLITE_BUSY_TIMEOUT_S = 30.0

# Rasa 3.6's SQLTrackerStore table, as far as this job reads and deletes it (no DDL is ever issued from here).
_METADATA = MetaData()
TRACKER_EVENTS = Table(
    "events",
    _METADATA,
    Column("id", Integer, primary_key=True),
    Column("sender_id", String(255), nullable=False, index=True),
    Column("type_name", String(255), nullable=False),
    Column("timestamp", Float),
    Column("intent_name", String(255)),
    Column("action_name", String(255)),
    Column("data", Text),
)


@dataclass
class RetentionReport:
    cutoff: dt.datetime
    dry_run: bool
    # Conversations found older than the cutoff, and their events (archived, or counted in a dry run).
    conversations: int = 0
    events: int = 0
    deleted_conversations: int = 0
    deleted_events: int = 0
    # Found old, then got a new event before their DELETE: left whole.
    kept_conversations: int = 0
    archive: Path | None = None
    skipped_reason: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "dry_run": self.dry_run,
            "conversations": self.conversations,
            "events": self.events,
            "deleted_conversations": self.deleted_conversations,
            "deleted_events": self.deleted_events,
            "kept_conversations": self.kept_conversations,
            "archive": str(self.archive) if self.archive else None,
            "skipped": self.skipped_reason,
        }


def tracker_engine(url: str) -> Engine:
    """An engine on Rasa's tracker store that leaves its SQLite file as Rasa made it (no WAL switch, unlike
    bankcore.database.make_engine) and waits on Rasa's write lock instead of failing at once."""
    if make_url(url).get_backend_name() == "sqlite":
        return create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    return create_engine(url, pool_pre_ping=True)


@contextlib.contextmanager
def exclusive_run(engine: Engine) -> Iterator[bool]:
    """Yields whether this process may run the job now (False: another run holds the lock)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            acquired = bool(connection.scalar(select(func.pg_try_advisory_lock(_ADVISORY_LOCK_KEY))))
            connection.commit()
            try:
                yield acquired
            finally:
                if acquired:
                    connection.scalar(select(func.pg_advisory_unlock(_ADVISORY_LOCK_KEY)))
                    connection.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield True
        return
    lock_path = Path(database).with_name(Path(database).name + ".retention.lock")
    with open(lock_path, "a+b") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


class _Archive:
    """The run's archive: gzip JSON Lines, appended page by page, each page durable before its rows are deleted."""

    def __init__(self, directory: Path, started: dt.datetime) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = started.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.final_path = directory / f"trackers-{stamp}.jsonl.gz"
        self.path = self.final_path.with_name(self.final_path.name + ".part")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._raw: IO[bytes] = os.fdopen(fd, "wb")
        self._gzip = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0)
        self.lines = 0

    def write_page(self, conversations: Sequence[dict[str, Any]]) -> None:
        for conversation in conversations:
            line = json.dumps(conversation, ensure_ascii=False, separators=(",", ":")) + "\n"
            self._gzip.write(line.encode("utf-8"))
            self.lines += 1
        # A sync flush ends the page on a byte boundary a reader can decompress up to; fsync makes it durable.
        self._gzip.flush(zlib.Z_SYNC_FLUSH)
        self._raw.flush()
        os.fsync(self._raw.fileno())

    def close(self) -> Path:
        self._gzip.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self.path, self.final_path)
        directory = os.open(self.final_path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return self.final_path

    def abandon(self) -> None:
        """A failed run: keep the `.part` file as it is (it may hold rows already deleted)."""
        with contextlib.suppress(Exception):
            self._gzip.close()
        with contextlib.suppress(Exception):
            self._raw.close()


def _event_dict(data: str | None) -> dict[str, Any]:
    try:
        value = json.loads(data or "null")
    except ValueError:
        return {"unparsed": data}
    return value if isinstance(value, dict) else {"unparsed": data}


@dataclass
class _Conversation:
    sender_id: str
    rows: list[Any] = field(default_factory=list)


def _old_senders(engine: Engine, cutoff: float, after: str | None, limit: int) -> list[str]:
    """The next `limit` conversations (by sender_id after `after`) whose newest event is older than `cutoff`."""
    events = TRACKER_EVENTS.c
    query = select(events.sender_id).group_by(events.sender_id).having(func.max(events.timestamp) < cutoff)
    if after is not None:
        query = query.where(events.sender_id > after)
    query = query.order_by(events.sender_id).limit(limit)
    with engine.connect() as connection:
        return [str(sender) for sender in connection.scalars(query)]


def _read(engine: Engine, senders: Sequence[str]) -> list[_Conversation]:
    events = TRACKER_EVENTS.c
    query = (
        select(events.id, events.sender_id, events.timestamp, events.data)
        .where(events.sender_id.in_(senders))
        .order_by(events.sender_id, events.id)
    )
    conversations: dict[str, _Conversation] = {}
    with engine.connect() as connection:
        for row in connection.execute(query):
            conversations.setdefault(row.sender_id, _Conversation(row.sender_id)).rows.append(row)
    return list(conversations.values())


def _delete(engine: Engine, senders: Sequence[str], max_id: int, cutoff: float) -> tuple[int, set[str]]:
    """Delete the archived rows of those conversations that still have nothing at or after the cutoff; returns
    (rows deleted, conversations deleted from)."""
    events = TRACKER_EVENTS
    newer = TRACKER_EVENTS.alias("newer")
    statement = events.delete().where(
        events.c.sender_id.in_(senders),
        events.c.id <= max_id,
        ~exists().where(newer.c.sender_id == events.c.sender_id, newer.c.timestamp >= cutoff),
    )
    with engine.begin() as connection:
        if engine.dialect.delete_returning:
            deleted = [str(sender) for sender in connection.scalars(statement.returning(events.c.sender_id))]
            return len(deleted), set(deleted)
        result = connection.execute(statement)
        remaining = set(
            connection.scalars(select(events.c.sender_id).where(events.c.sender_id.in_(senders)).distinct())
        )
        return int(result.rowcount or 0), set(senders) - {str(sender) for sender in remaining}


def _protected_sender(engine: Engine) -> str | None:
    """On SQLite, the conversation holding the highest id (see the module docstring); None elsewhere."""
    if engine.dialect.name != "sqlite":
        return None
    events = TRACKER_EVENTS.c
    with engine.connect() as connection:
        top = connection.scalar(select(events.sender_id).order_by(events.id.desc()).limit(1))
    return str(top) if top is not None else None


def retain(
    engine: Engine,
    *,
    older_than: dt.timedelta,
    now: dt.datetime | None = None,
    archive_dir: Path | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    should_stop: Callable[[], bool] | None = None,
) -> RetentionReport:
    """Archive (when `archive_dir` is given) and delete conversations whose newest event is before
    `now - older_than`, `batch_size` conversations per transaction. A dry run only counts. `should_stop` is asked
    between pages: a worker told to stop ends the run there, with every page done whole (archived and deleted)."""
    if older_than <= dt.timedelta(0):
        raise ValueError("the retention period must be positive")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    started = now or dt.datetime.now(UTC)
    cutoff_time = started - older_than
    cutoff = cutoff_time.timestamp()
    report = RetentionReport(cutoff=cutoff_time, dry_run=dry_run)
    if not inspect_database(engine).has_table(TRACKER_EVENTS.name):
        report.skipped_reason = "no tracker store yet"
        return report
    protected = _protected_sender(engine)
    archive = _Archive(archive_dir, started) if archive_dir is not None and not dry_run else None
    after: str | None = None
    try:
        while not (should_stop is not None and should_stop()):
            senders = _old_senders(engine, cutoff, after, batch_size)
            if not senders:
                break
            after = senders[-1]
            senders = [sender for sender in senders if sender != protected]
            conversations = _read(engine, senders)
            # Re-checked on what was read: a conversation that got a new event since the page query is left alone.
            old = [
                conversation
                for conversation in conversations
                if max((row.timestamp or 0.0) for row in conversation.rows) < cutoff
            ]
            report.kept_conversations += len(conversations) - len(old)
            report.conversations += len(old)
            report.events += sum(len(conversation.rows) for conversation in old)
            if dry_run or not old:
                continue
            if archive is not None:
                archive.write_page(
                    [
                        {
                            "sender_id": conversation.sender_id,
                            "events": [_event_dict(row.data) for row in conversation.rows],
                        }
                        for conversation in old
                    ]
                )
            max_id = max(row.id for conversation in old for row in conversation.rows)
            deleted_rows, deleted_senders = _delete(engine, [c.sender_id for c in old], max_id, cutoff)
            report.deleted_events += deleted_rows
            report.deleted_conversations += len(deleted_senders)
            report.kept_conversations += len(old) - len(deleted_senders)
    except BaseException:
        if archive is not None:
            archive.abandon()
        raise
    if archive is not None:
        if archive.lines:
            report.archive = archive.close()
        else:
            archive.abandon()
            archive.path.unlink(missing_ok=True)
    log.info("tracker retention: %s", report.summary())
    return report

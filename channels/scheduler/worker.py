"""The dispatching worker: claim due reminders with a lease, ask the policy, send, record; retries and rate limits.

Several workers (processes, machines) may run against one database: the store's leased claims keep them off
each other's reminders, and the reminder key as idempotency key makes a re-send after a crash harmless.
Database calls run in threads (`asyncio.to_thread`) so sends of one batch overlap while the store works.
A database outage (restart, failover, SQLite lock timeout) does not end the worker: `run` backs off and tries
again; what it had claimed stays leased and is re-claimed once the lease ends, and the re-send is deduplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import unit_of_work
from bankcore.reminders import store
from bankcore.reminders.decisions import Cancel, Decision, Send, Suppress, Wait
from bankcore.reminders.store import ClaimedReminder
from channels.scheduler.senders import ReminderSender, SendError, SendResult

log = logging.getLogger(__name__)

DecideFn = Callable[[Session, ClaimedReminder, dt.datetime], Decision]
Clock = Callable[[], dt.datetime]


# Errors that say "the database is unreachable or busy right now", not "our statement is wrong": connection
# refused, server closed the connection, admin shutdown, SQLite "database is locked" after its busy timeout, the
# pool out of connections. IntegrityError and ProgrammingError are bugs and keep their full traceback.
TRANSIENT_DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
)


def is_transient_database_error(error: BaseException) -> bool:
    if isinstance(error, TRANSIENT_DATABASE_ERRORS):
        return True
    # Any DBAPI error the dialect recognised as a lost connection (SQLAlchemy has invalidated it already).
    return isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated


def describe_database_error(error: BaseException) -> str:
    """Class names only: the driver's message can hold the host, the user or bound parameters."""
    original = getattr(error, "orig", None)
    return f"{type(error).__name__}({type(original).__name__})" if original is not None else type(error).__name__


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def backoff(attempt: int, *, base: dt.timedelta, cap: dt.timedelta) -> dt.timedelta:
    """Delay after failed attempt `attempt` (1-based): base * 2^(attempt-1), at most `cap`."""
    # Float seconds and a bounded exponent, so attempt 500 saturates at the cap instead of overflowing.
    seconds = base.total_seconds() * 2.0 ** min(max(attempt - 1, 0), 64)
    return dt.timedelta(seconds=min(seconds, cap.total_seconds()))


def first_channel(_session: Session, reminder: ClaimedReminder, _now: dt.datetime) -> Decision:
    """The decision when no policy is plugged in: send on the first preferred channel."""
    return _first_channel(reminder)


def _first_channel(reminder: ClaimedReminder) -> Decision:
    if not reminder.channels:
        return Suppress("no_channel")
    return Send(reminder.channels[0])


def policy_decider(config: Any = None) -> DecideFn:
    """The policy layer (quiet hours, consent, caps, fallback, settlement) as a `decide` for the Dispatcher."""
    from bankcore.reminders.context import gather_context
    from bankcore.reminders.policy import PolicyConfig, decide

    policy_config: PolicyConfig = config if config is not None else PolicyConfig()

    def decide_with_context(session: Session, reminder: ClaimedReminder, now: dt.datetime) -> Decision:
        context = gather_context(session, reminder, now, cap_window=policy_config.cap_window)
        return decide(reminder, context, policy_config, now)

    return decide_with_context


class TokenBucket:
    """At most `rate` acquisitions per second on average, `burst` at once (default 1: evenly paced sends).

    Per worker process: with N workers a campaign-wide limit of R/s means giving each worker R/N.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        # Waiters queue in turn; without the lock they would all wake up at once and overdraw the bucket.
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                # The epsilon absorbs float rounding of the refill: without it a bucket a hair short of one
                # token would ask for a sleep shorter than the clock's resolution, forever.
                if self._tokens >= 1.0 - 1e-9:
                    self._tokens = max(self._tokens - 1.0, 0.0)
                    return
                await self._sleep((1.0 - self._tokens) / self.rate)


class Dispatcher:
    """Claims batches of due reminders for `worker_id` and carries each through decide → send → record."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        sender: ReminderSender,
        *,
        worker_id: str,
        lease: dt.timedelta = dt.timedelta(seconds=60),
        batch: int = 100,
        decide: DecideFn | None = None,
        clock: Clock = utc_now,
        rate_limits: Mapping[str, float] | None = None,
        retry_base: dt.timedelta = dt.timedelta(seconds=300),
        retry_cap: dt.timedelta = dt.timedelta(seconds=3600),
        max_attempts: int = 4,
        concurrency: int = 32,
        rate_clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        outage_backoff: float = 0.5,
        outage_backoff_cap: float = 5.0,
    ) -> None:
        self.session_factory = session_factory
        self.sender = sender
        self.worker_id = worker_id
        self.lease = lease
        self.batch = batch
        self.decide = decide
        self.clock = clock
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.max_attempts = max_attempts
        self.outage_backoff = outage_backoff
        self.outage_backoff_cap = outage_backoff_cap
        self.concurrency = max(concurrency, 1)
        # Sends in flight at once (policy decisions are bounded by the thread pool that runs them).
        self._slots = asyncio.Semaphore(self.concurrency)
        self._delivered: list[tuple[ClaimedReminder, str, str]] = []
        self.buckets = {
            channel: TokenBucket(rate, clock=rate_clock, sleep=sleep) for channel, rate in (rate_limits or {}).items()
        }
        # delivered, retry, failed, waiting, suppressed, cancelled, lease_lost, lease_lapsed, window_closed (a
        # send held up until the customer's quiet hours began), claimed, errors, database_errors (store calls
        # that failed because the database was unreachable or locked)
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------------ store calls (in a thread each)

    def _claim(self) -> list[ClaimedReminder]:
        return store.claim_due(
            self.session_factory, worker=self.worker_id, now=self.clock(), lease=self.lease, limit=self.batch
        )

    def _decide_in_session(self, reminder: ClaimedReminder, now: dt.datetime) -> Decision:
        assert self.decide is not None
        with unit_of_work(self.session_factory) as session:
            return self.decide(session, reminder, now)

    def _record(self, result: str, mark: Callable[..., bool], reminder: ClaimedReminder, **values: Any) -> None:
        with unit_of_work(self.session_factory) as session:
            kept = mark(session, reminder, now=self.clock(), **values)
        if kept:
            self.stats[result] += 1
        else:
            # Another worker took the reminder over (our lease expired): it owns the outcome now.
            self.stats["lease_lost"] += 1
            log.warning("reminder %s: lease lost before recording %s", reminder.key, result)

    def _record_delivered(self, delivered: list[tuple[ClaimedReminder, str, str]]) -> None:
        now = self.clock()
        with unit_of_work(self.session_factory) as session:
            kept = [
                store.mark_delivered(session, reminder, channel=channel, now=now, detail=detail)
                for reminder, channel, detail in delivered
            ]
        self.stats["delivered"] += sum(kept)
        if not all(kept):
            self.stats["lease_lost"] += len(kept) - sum(kept)
            log.warning("%d delivered reminders had lost their lease before being recorded", len(kept) - sum(kept))

    async def _in_thread(
        self, result: str, mark: Callable[..., bool], reminder: ClaimedReminder, **values: Any
    ) -> None:
        await asyncio.to_thread(self._record, result, mark, reminder, **values)

    # ------------------------------------------------------------------ one reminder

    async def _decision(self, reminder: ClaimedReminder, now: dt.datetime) -> Decision:
        if self.decide is None:
            return _first_channel(reminder)  # no session needed: keeps the default path off the database
        return await asyncio.to_thread(self._decide_in_session, reminder, now)

    async def _send(self, reminder: ClaimedReminder, channel: str) -> SendResult:
        try:
            return await self.sender.send(reminder, channel, reminder.key)
        except SendError as error:
            return error.as_result()
        except Exception as error:  # a sender bug or a dropped connection: retry rather than lose it
            log.exception("reminder %s: sender raised", reminder.key)
            return SendResult(ok=False, retryable=True, detail=f"{type(error).__name__}: {error}")

    async def _failed(self, reminder: ClaimedReminder, detail: str, channel: str | None, retryable: bool) -> None:
        if retryable and reminder.attempt_no < self.max_attempts:
            at = self.clock() + backoff(reminder.attempt_no, base=self.retry_base, cap=self.retry_cap)
            await self._in_thread("retry", store.mark_retry, reminder, at=at, error=detail, channel=channel)
        else:
            await self._in_thread("failed", store.mark_failed, reminder, error=detail, channel=channel)

    async def _dispatch(self, reminder: ClaimedReminder) -> None:
        try:
            decision = await self._decision(reminder, self.clock())
        except Exception as error:
            log.exception("reminder %s: decision failed", reminder.key)
            await self._failed(reminder, f"decide: {type(error).__name__}: {error}", None, retryable=True)
            return
        if isinstance(decision, Wait):
            await self._in_thread("waiting", store.mark_waiting, reminder, until=decision.until, reason=decision.reason)
        elif isinstance(decision, Suppress):
            await self._in_thread("suppressed", store.mark_suppressed, reminder, reason=decision.reason)
        elif isinstance(decision, Cancel):
            await self._in_thread("cancelled", store.mark_cancelled, reminder, reason=decision.reason)
        else:
            await self._send_and_record(reminder, decision.channel, decision.not_after)

    async def _send_and_record(
        self, reminder: ClaimedReminder, channel: str, not_after: dt.datetime | None = None
    ) -> None:
        bucket = self.buckets.get(channel)
        if bucket is not None:
            await bucket.acquire()
        if self.clock() >= reminder.lease_until:
            # Our lease lapsed while we waited (rate limit, slow policy): another worker may hold the
            # reminder now. Leave it; whoever claims it next sends it.
            self.stats["lease_lapsed"] += 1
            log.warning("reminder %s: lease lapsed before sending; left for the next claim", reminder.key)
            return
        # Only the send and its record take a slot: a reminder queued on a throttled channel must not hold
        # one, or it would stall the unthrottled channels of the same batch behind it.
        async with self._slots:
            # Checked last, with nothing awaited between it and the hand-off: the customer's quiet hours may
            # have begun while this send queued for its channel's rate limit or for a slot.
            window_closed = not_after is not None and self.clock() >= not_after
            if not window_closed:
                result = await self._send(reminder, channel)
                if result.ok:
                    # Recorded with the rest of the batch in one transaction (see run_once): one commit per
                    # batch instead of per reminder. A crash before that commit only means re-sends the channel
                    # dedupes.
                    self._delivered.append((reminder, channel, result.detail))
                else:
                    await self._failed(reminder, result.detail or "send failed", channel, result.retryable)
        if window_closed:
            # Due again at once: the next claim asks the policy, which parks it until the window reopens.
            self.stats["window_closed"] += 1
            await self._in_thread("waiting", store.mark_waiting, reminder, until=self.clock(), reason="quiet_hours")

    # ------------------------------------------------------------------ loops

    async def run_once(self) -> int:
        """Claim one batch and carry it through; returns how many reminders were claimed."""
        claimed = await asyncio.to_thread(self._claim)
        if not claimed:
            return 0
        self.stats["claimed"] += len(claimed)

        async def one(reminder: ClaimedReminder) -> None:
            try:
                await self._dispatch(reminder)
            except Exception as error:
                # The database went away mid-record, say: the reminder stays leased to us, the lease expires and
                # the next claim (ours or another worker's) retries it; the channel dedupes a re-send by key.
                if is_transient_database_error(error):
                    database_errors.append(error)
                else:
                    log.exception("reminder %s: dispatch failed; the lease will expire", reminder.key)
                self.stats["errors"] += 1

        database_errors: list[BaseException] = []
        self._delivered = []
        try:
            await asyncio.gather(*(one(reminder) for reminder in claimed))
        finally:
            if self._delivered:
                await asyncio.to_thread(self._record_delivered, self._delivered)
        if database_errors:
            # One line per batch, not per reminder: an outage would otherwise flood the log. Raised so that
            # `run` backs off instead of claiming again at once from a database that just failed us.
            self.stats["database_errors"] += len(database_errors)
            raise DatabaseUnavailable(len(database_errors), database_errors[0])
        return len(claimed)

    async def run(self, stop: asyncio.Event, idle_sleep: float = 1.0) -> None:
        """Dispatch until `stop` is set; sleeps `idle_sleep` when nothing is due, backs off while the database is down.

        Nothing here may end the loop but `stop`: a worker that dies on a database restart would leave its
        reminders to the other workers at best, and to nobody when it is the only one.
        """
        failures = 0
        while not stop.is_set():
            pause = idle_sleep
            try:
                count = await self.run_once()
                failures = 0
            except DatabaseUnavailable as outage:
                failures += 1
                self._discard_pooled_connections()
                pause = self._outage_pause(failures)
                log.warning(
                    "%d store calls of the batch failed (%s); the database may be down, trying again in %.1f s",
                    outage.count,
                    describe_database_error(outage.first),
                    pause,
                )
                count = 0
            except Exception as error:
                if is_transient_database_error(error):
                    self.stats["database_errors"] += 1
                    failures += 1
                    self._discard_pooled_connections()
                    pause = self._outage_pause(failures)
                    log.warning(
                        "the database is unavailable (%s); trying again in %.1f s",
                        describe_database_error(error),
                        pause,
                    )
                else:
                    log.exception("claiming reminders failed; trying again in %.1f s", idle_sleep)
                count = 0
            if count == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)

    def _discard_pooled_connections(self) -> None:
        """After an outage every pooled connection may be dead: drop them all rather than fail on each in turn.

        pool_pre_ping (bankcore.database.make_engine) catches most dead connections, but psycopg's "terminating
        connection due to administrator command" is not always taken for a disconnect, and then each pooled
        connection costs one failed batch. Connections checked out right now are left alone and closed when
        returned. Not on SQLite: its connections survive a lock timeout, and an in-memory database lives in them.
        """
        bind = self.session_factory.kw.get("bind")
        if isinstance(bind, Engine) and bind.dialect.name != "sqlite":
            bind.dispose()

    def _outage_pause(self, failures: int) -> float:
        return min(self.outage_backoff * 2.0 ** min(failures - 1, 16), self.outage_backoff_cap)


class DatabaseUnavailable(Exception):
    """Some store calls of a batch failed because the database was unreachable; their claims stay leased."""

    def __init__(self, count: int, first: BaseException) -> None:
        super().__init__(f"{count} store calls failed: {describe_database_error(first)}")
        self.count = count
        self.first = first

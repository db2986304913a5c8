"""The dispatching worker with a fake clock: decisions, retries with backoff, giving up, rate limits, leases."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import unit_of_work
from bankcore.models import Reminder, ReminderAttempt
from bankcore.reminders import store
from bankcore.reminders.decisions import Cancel, Decision, Send, Suppress, Wait
from channels.scheduler.senders import CountingSender, SendError, SendResult
from channels.scheduler.worker import Dispatcher, TokenBucket, backoff, policy_decider
from tests.reminders import store_support
from tests.reminders.store_support import NOW, planned

reminder_sqlite_template = store_support.reminder_sqlite_template
reminder_pg = store_support.reminder_pg
reminder_db = store_support.reminder_db
factory = store_support.factory

Factory = sessionmaker[Session]
BASE = dt.timedelta(seconds=300)


class FakeClock:
    def __init__(self, start: dt.datetime = NOW) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


class FlakySender:
    """Fails the first `failures` sends of each reminder with `error`, then delivers."""

    def __init__(self, failures: int, error: SendError | SendResult) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[tuple[str, str, int]] = []

    async def send(self, reminder: store.ClaimedReminder, channel: str, idempotency_key: str) -> SendResult:
        self.calls.append((idempotency_key, channel, reminder.attempt_no))
        if sum(1 for key, _, _ in self.calls if key == idempotency_key) <= self.failures:
            if isinstance(self.error, SendError):
                raise self.error
            return self.error
        return SendResult(ok=True, detail="sent")


def add(factory: Factory, count: int, **kwargs: object) -> None:
    with unit_of_work(factory) as session:
        store.add_planned(session, planned(count, **kwargs), NOW)  # type: ignore[arg-type]


def reminders(factory: Factory) -> list[Reminder]:
    with unit_of_work(factory) as session:
        return list(session.scalars(select(Reminder).order_by(Reminder.id)))


def history(factory: Factory) -> list[tuple[int, str, str | None]]:
    with unit_of_work(factory) as session:
        rows = session.execute(
            select(ReminderAttempt.attempt_no, ReminderAttempt.result, ReminderAttempt.channel).order_by(
                ReminderAttempt.id
            )
        )
        return [(no, result, channel) for no, result, channel in rows]


def test_backoff_doubles_up_to_the_cap() -> None:
    cap = dt.timedelta(seconds=3600)
    assert [backoff(n, base=BASE, cap=cap).total_seconds() for n in (1, 2, 3, 4, 5, 500)] == [
        300,
        600,
        1200,
        2400,
        3600,
        3600,
    ]


async def test_by_default_each_reminder_goes_out_once_on_its_first_channel_keyed_by_its_key(factory: Factory) -> None:
    add(factory, 5)
    sender = CountingSender()
    dispatcher = Dispatcher(factory, sender, worker_id="w1", clock=FakeClock(), batch=3)
    assert await dispatcher.run_once() == 3
    assert await dispatcher.run_once() == 2
    assert await dispatcher.run_once() == 0
    assert sender.received == {p.key: 1 for p in planned(5)}
    assert set(sender.channels.values()) == {"wecom"}
    assert {(r.status, r.channel, r.attempts) for r in reminders(factory)} == {("delivered", "wecom", 1)}
    assert dispatcher.stats["delivered"] == 5


@pytest.mark.parametrize("error", [SendError("busy"), SendResult(ok=False, retryable=True, detail="platform_error")])
async def test_failed_sends_are_retried_with_backoff_until_delivered(factory: Factory, error: object) -> None:
    add(factory, 1)
    clock = FakeClock()
    sender = FlakySender(2, error)  # type: ignore[arg-type]
    dispatcher = Dispatcher(factory, sender, worker_id="w1", clock=clock, retry_base=BASE)
    assert await dispatcher.run_once() == 1
    (row,) = reminders(factory)
    assert (row.status, row.next_attempt_at, row.attempts) == ("due", NOW + BASE, 1)
    clock.advance(BASE - dt.timedelta(seconds=1))
    assert await dispatcher.run_once() == 0  # not before the backoff ends
    clock.advance(dt.timedelta(seconds=1))
    assert await dispatcher.run_once() == 1
    assert reminders(factory)[0].next_attempt_at == clock.now + 2 * BASE  # doubled
    clock.advance(2 * BASE)
    assert await dispatcher.run_once() == 1
    assert reminders(factory)[0].status == "delivered"
    assert [call[2] for call in sender.calls] == [1, 2, 3]
    assert [result for _, result, _ in history(factory)] == ["retry", "retry", "delivered"]


async def test_retries_give_up_after_max_attempts(factory: Factory) -> None:
    add(factory, 1)
    clock = FakeClock()
    sender = FlakySender(99, SendError("no_answer"))
    dispatcher = Dispatcher(factory, sender, worker_id="w1", clock=clock, retry_base=BASE, max_attempts=3)
    for _ in range(3):
        assert await dispatcher.run_once() == 1
        clock.advance(dt.timedelta(days=1))
    assert await dispatcher.run_once() == 0
    (row,) = reminders(factory)
    assert (row.status, row.attempts) == ("failed", 3)
    assert "no_answer" in (row.last_error or "")
    assert [result for _, result, _ in history(factory)] == ["retry", "retry", "failed"]


async def test_a_failure_that_is_not_retryable_fails_at_once(factory: Factory) -> None:
    add(factory, 1)
    sender = FlakySender(1, SendResult(ok=False, retryable=False, detail="invalid recipient"))
    dispatcher = Dispatcher(factory, sender, worker_id="w1", clock=FakeClock())
    await dispatcher.run_once()
    assert reminders(factory)[0].status == "failed"


async def test_a_sender_that_raises_is_retried_not_lost(factory: Factory) -> None:
    add(factory, 1)

    class Broken:
        async def send(self, reminder: store.ClaimedReminder, channel: str, idempotency_key: str) -> SendResult:
            raise ConnectionResetError("peer went away")

    dispatcher = Dispatcher(factory, Broken(), worker_id="w1", clock=FakeClock())
    await dispatcher.run_once()
    (row,) = reminders(factory)
    assert row.status == "due" and "ConnectionResetError" in (row.last_error or "")


async def test_the_decisions_wait_suppress_cancel_and_fallback_channel(factory: Factory) -> None:
    add(factory, 4)
    keys = [p.key for p in planned(4)]
    later = NOW + dt.timedelta(hours=8)
    by_key: dict[str, Decision] = {
        keys[0]: Wait(later, "quiet_hours"),
        keys[1]: Suppress("opted_out"),
        keys[2]: Cancel("settled"),
        keys[3]: Send("phone"),
    }
    seen_sessions: list[bool] = []

    def decide(session: Session, reminder: store.ClaimedReminder, now: dt.datetime) -> Decision:
        seen_sessions.append(isinstance(session, Session) and now == NOW)
        return by_key[reminder.key]

    sender = CountingSender()
    dispatcher = Dispatcher(factory, sender, worker_id="w1", clock=FakeClock(), decide=decide)
    assert await dispatcher.run_once() == 4
    assert all(seen_sessions) and len(seen_sessions) == 4
    rows = {r.key: r for r in reminders(factory)}
    assert (rows[keys[0]].status, rows[keys[0]].attempts, rows[keys[0]].next_attempt_at) == ("due", 0, later)
    assert rows[keys[1]].status == "suppressed" and rows[keys[2]].status == "cancelled"
    assert (rows[keys[3]].status, rows[keys[3]].channel) == ("delivered", "phone")
    assert list(sender.received) == [keys[3]]


async def test_the_policy_layer_plugs_in(factory: Factory) -> None:
    # The test customers have no phone and no bound WeChat identity: only web chat reaches them.
    # A service notice: the bank's data never settles it, so the decision is about reach alone.
    add(factory, 1, channels=("wecom", "phone"), kind="service_notice")
    add(factory, 1, channels=("phone", "webchat"), kind="service_notice", start=1)
    sender = CountingSender()
    dispatcher = Dispatcher(factory, sender, worker_id="w1", clock=FakeClock(), decide=policy_decider())
    assert await dispatcher.run_once() == 2
    statuses = {(r.status, r.channel) for r in reminders(factory)}
    assert statuses == {("suppressed", None), ("delivered", "webchat")}


async def test_a_lease_that_lapsed_before_sending_is_left_for_the_next_claim(factory: Factory) -> None:
    add(factory, 1)
    clock = FakeClock()

    def slow_decision(session: Session, reminder: store.ClaimedReminder, now: dt.datetime) -> Decision:
        clock.advance(dt.timedelta(seconds=61))  # the policy took longer than the lease
        return Send("wecom")

    sender = CountingSender()
    dispatcher = Dispatcher(factory, sender, worker_id="w1", clock=clock, decide=slow_decision)
    await dispatcher.run_once()
    assert sender.received == {} and dispatcher.stats["lease_lapsed"] == 1
    assert reminders(factory)[0].status == "dispatching"  # its lease has expired: any worker may take it


async def test_the_channel_rate_limit_is_never_exceeded(factory: Factory) -> None:
    add(factory, 30, channels=("phone",))
    add(factory, 10, channels=("wecom",), start=30)
    ticks = [0.0]
    sent_at: list[tuple[str, float]] = []

    async def fake_sleep(seconds: float) -> None:
        ticks[0] += seconds
        await asyncio.sleep(0)

    class Recording:
        async def send(self, reminder: store.ClaimedReminder, channel: str, idempotency_key: str) -> SendResult:
            sent_at.append((channel, ticks[0]))
            return SendResult(ok=True)

    dispatcher = Dispatcher(
        factory,
        Recording(),
        worker_id="w1",
        clock=FakeClock(),
        rate_limits={"phone": 10.0},
        rate_clock=lambda: ticks[0],
        sleep=fake_sleep,
    )
    assert await dispatcher.run_once() == 40
    phone = sorted(at for channel, at in sent_at if channel == "phone")
    assert len(phone) == 30
    for start in phone:
        assert sum(1 for at in phone if start <= at < start + 1.0 - 1e-6) <= 10  # less float noise
    assert phone[-1] - phone[0] >= 2.8  # 30 calls at 10/s
    wecom = [at for channel, at in sent_at if channel == "wecom"]
    assert len(wecom) == 10 and max(wecom) < 0.5  # not paced, nor queued behind the throttled calls


async def test_the_token_bucket_paces_evenly() -> None:
    ticks = [0.0]

    async def fake_sleep(seconds: float) -> None:
        ticks[0] += seconds

    bucket = TokenBucket(4.0, clock=lambda: ticks[0], sleep=fake_sleep)
    times = []
    for _ in range(5):
        await bucket.acquire()
        times.append(round(ticks[0], 6))
    assert times == [0.0, 0.25, 0.5, 0.75, 1.0]


async def test_run_stops_when_told(factory: Factory) -> None:
    add(factory, 3)
    sender = CountingSender()
    stop = asyncio.Event()
    dispatcher = Dispatcher(factory, sender, worker_id="w1", clock=FakeClock())
    task = asyncio.create_task(dispatcher.run(stop, idle_sleep=0.05))
    for _ in range(200):
        if sender.delivered == 3:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert sender.delivered == 3


def test_the_file_backed_counting_sender_counts_across_instances(tmp_path: Path, factory: Factory) -> None:
    path = tmp_path / "sent.tsv"
    add(factory, 1)
    (claimed,) = store.claim_due(factory, worker="w", now=NOW, lease=dt.timedelta(seconds=5), limit=1)
    first, second = CountingSender(path), CountingSender(path)
    results = [asyncio.run(sender.send(claimed, "wecom", claimed.key)) for sender in (first, second, second)]
    assert [r.detail for r in results] == ["delivered", "delivered", "duplicate"]
    first.close()
    second.close()
    assert CountingSender.read_counts(path) == {claimed.key: 3}

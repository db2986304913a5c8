"""The reminder store on SQLite and PostgreSQL: idempotent planning, leased claims, guarded completions, ops."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import unit_of_work
from bankcore.models import Reminder, ReminderAttempt
from bankcore.reminders import store
from tests.reminders import store_support
from tests.reminders.store_support import NOW, planned

reminder_sqlite_template = store_support.reminder_sqlite_template
reminder_pg = store_support.reminder_pg
reminder_db = store_support.reminder_db
factory = store_support.factory

LEASE = dt.timedelta(seconds=60)
Factory = sessionmaker[Session]


def seconds(n: float) -> dt.timedelta:
    return dt.timedelta(seconds=n)


def add(factory: Factory, reminders: list[store.PlannedReminder]) -> int:
    with unit_of_work(factory) as session:
        return store.add_planned(session, reminders, NOW)


def claim(
    factory: Factory, worker: str = "w1", now: dt.datetime = NOW, limit: int = 100
) -> list[store.ClaimedReminder]:
    return store.claim_due(factory, worker=worker, now=now, lease=LEASE, limit=limit)


def row(factory: Factory, reminder_id: int) -> Reminder:
    with unit_of_work(factory) as session:
        found = session.get(Reminder, reminder_id)
        assert found is not None
        return found


def attempts_of(factory: Factory, reminder_id: int) -> list[tuple[int, str, str]]:
    with unit_of_work(factory) as session:
        rows = session.execute(
            select(ReminderAttempt.attempt_no, ReminderAttempt.result, ReminderAttempt.worker)
            .where(ReminderAttempt.reminder_id == reminder_id)
            .order_by(ReminderAttempt.id)
        )
        return [(no, result, worker) for no, result, worker in rows]


def test_planning_twice_creates_nothing_twice(factory: Factory) -> None:
    assert add(factory, planned(3)) == 3
    assert add(factory, planned(4)) == 1  # three known keys, one new
    with unit_of_work(factory) as session:
        assert store.add_planned(session, planned(1)[0], NOW) == 0  # a single reminder is accepted too
        assert store.counts_by_status(session) == {"planned": 4}
        first = session.scalars(select(Reminder).order_by(Reminder.id)).first()
    assert first is not None
    assert first.next_attempt_at == first.send_after == NOW
    assert first.channels == ["wecom", "phone"] and first.attempts == 0 and first.paused is False


def test_large_batches_are_inserted_in_chunks(factory: Factory) -> None:
    assert add(factory, planned(2500)) == 2500
    assert add(factory, planned(2600)) == 100


def test_claim_takes_only_due_unpaused_reminders_and_leases_them(factory: Factory) -> None:
    add(
        factory,
        planned(2) + planned(1, send_after=NOW + seconds(60), start=10) + planned(1, rule_id="paused", start=20),
    )
    with unit_of_work(factory) as session:
        assert store.pause(session, "paused") == 1
    claimed = claim(factory)
    assert len(claimed) == 2
    assert all(c.attempt_no == 1 and c.worker == "w1" and c.lease_until == NOW + LEASE for c in claimed)
    stored = row(factory, claimed[0].id)
    assert (stored.status, stored.lease_owner, stored.lease_until, stored.attempts) == (
        "dispatching",
        "w1",
        NOW + LEASE,
        1,
    )
    assert claim(factory, "w2") == []  # held by w1, and the rest is not due or paused
    later = claim(factory, "w2", now=NOW + seconds(61), limit=1)  # the limit is honoured
    assert len(later) == 1 and later[0].worker == "w2"


def test_an_expired_lease_is_taken_over_and_the_old_owner_can_no_longer_complete(factory: Factory) -> None:
    add(factory, planned(1))
    (first,) = claim(factory, "w1")
    assert claim(factory, "w2", now=NOW + LEASE - seconds(1)) == []  # lease still running
    (second,) = claim(factory, "w2", now=NOW + LEASE + seconds(1))
    assert (second.id, second.attempt_no, second.worker) == (first.id, 2, "w2")
    with unit_of_work(factory) as session:
        assert store.mark_delivered(session, first, channel="wecom", now=NOW + seconds(62)) is False
        assert store.mark_retry(session, first, at=NOW, error="x", now=NOW + seconds(62)) is False
        assert store.mark_delivered(session, second, channel="wecom", now=NOW + seconds(63)) is True
    assert attempts_of(factory, first.id) == [(2, "delivered", "w2")]
    stored = row(factory, first.id)
    assert (stored.status, stored.channel, stored.lease_owner, stored.next_attempt_at) == (
        "delivered",
        "wecom",
        None,
        None,
    )


def test_the_same_worker_reclaiming_fences_off_its_older_claim(factory: Factory) -> None:
    add(factory, planned(1))
    (old,) = claim(factory, "w1")
    (new,) = claim(factory, "w1", now=NOW + LEASE + seconds(1))
    with unit_of_work(factory) as session:
        assert store.mark_failed(session, old, error="late", now=NOW + LEASE + seconds(2)) is False
        assert store.mark_delivered(session, new, channel="phone", now=NOW + LEASE + seconds(2)) is True


def test_retry_makes_it_due_again_at_the_given_time_with_the_attempt_counted(factory: Factory) -> None:
    add(factory, planned(1))
    (first,) = claim(factory)
    with unit_of_work(factory) as session:
        assert store.mark_retry(session, first, at=NOW + seconds(300), error="busy", now=NOW, channel="phone")
    stored = row(factory, first.id)
    assert (stored.status, stored.attempts, stored.last_error, stored.lease_owner) == ("due", 1, "busy", None)
    assert claim(factory, now=NOW + seconds(299)) == []
    (second,) = claim(factory, now=NOW + seconds(300))
    assert second.attempt_no == 2
    assert attempts_of(factory, first.id) == [(1, "retry", "w1")]


def test_waiting_does_not_count_as_an_attempt(factory: Factory) -> None:
    add(factory, planned(1))
    (first,) = claim(factory)
    with unit_of_work(factory) as session:
        assert store.mark_waiting(session, first, until=NOW + seconds(3600), reason="quiet_hours", now=NOW)
    assert (row(factory, first.id).status, row(factory, first.id).attempts) == ("due", 0)
    (again,) = claim(factory, now=NOW + seconds(3600))
    assert again.attempt_no == 1
    assert attempts_of(factory, first.id) == [(1, "waiting", "w1")]


@pytest.mark.parametrize(
    ("mark", "status"),
    [
        (lambda s, c: store.mark_failed(s, c, error="gave up", now=NOW), "failed"),
        (lambda s, c: store.mark_cancelled(s, c, reason="settled", now=NOW), "cancelled"),
        (lambda s, c: store.mark_suppressed(s, c, reason="opted_out", now=NOW), "suppressed"),
        (lambda s, c: store.mark_delivered(s, c, channel="wecom", now=NOW, detail="ok"), "delivered"),
    ],
)
def test_final_states_are_never_claimed_again(
    factory: Factory, mark: Callable[[Session, store.ClaimedReminder], bool], status: str
) -> None:
    add(factory, planned(1))
    (claimed,) = claim(factory)
    with unit_of_work(factory) as session:
        assert mark(session, claimed) is True
        assert mark(session, claimed) is False  # not dispatching any more
    assert row(factory, claimed.id).status == status
    assert claim(factory, now=NOW + dt.timedelta(days=30)) == []
    assert [result for _, result, _ in attempts_of(factory, claimed.id)] == [status]


def test_cancel_where_stops_waiting_reminders_but_not_one_being_sent(factory: Factory) -> None:
    add(factory, planned(3))
    keys = [p.key for p in planned(3)]
    (held,) = claim(factory, limit=1)
    with unit_of_work(factory) as session:
        with pytest.raises(ValueError):
            store.cancel_where(session, reason="oops", now=NOW)
        assert store.cancel_where(session, rule_id="loan_t3", reason="rule withdrawn", now=NOW) == 2
        assert store.cancel_where(session, item_id="nothing", reason="x", now=NOW) == 0
        statuses = store.statuses_of(session, keys)
    assert statuses[held.key] == "dispatching"
    assert sorted(statuses.values()) == ["cancelled", "cancelled", "dispatching"]


def test_pause_and_resume_by_rule(factory: Factory) -> None:
    add(factory, planned(2) + planned(2, rule_id="card_t7", start=10))
    with unit_of_work(factory) as session:
        assert store.pause(session, "card_t7") == 2
        assert store.pause(session, "card_t7") == 0
    assert {c.rule_id for c in claim(factory)} == {"loan_t3"}
    with unit_of_work(factory) as session:
        assert store.resume(session, None) == 2
    assert {c.rule_id for c in claim(factory, "w2")} == {"card_t7"}


def test_ops_reads_deliveries_and_outcomes(factory: Factory) -> None:
    add(factory, planned(3))
    claimed = claim(factory)
    with unit_of_work(factory) as session:
        store.mark_delivered(session, claimed[0], channel="wecom", now=NOW + seconds(1))
        store.mark_delivered(session, claimed[1], channel="phone", now=NOW + seconds(2))
        store.mark_failed(session, claimed[2], error="no", now=NOW + seconds(3), channel="phone")
    with unit_of_work(factory) as session:
        assert store.counts_by_status(session) == {"delivered": 2, "failed": 1}
        assert store.record_outcome(session, claimed[0].id, "acted", NOW) is True
        assert store.record_outcome(session, 999_999, "acted", NOW) is False
        with pytest.raises(ValueError):
            store.record_outcome(session, claimed[0].id, "happy", NOW)
        customer = claimed[0].customer_id
        deliveries = store.recent_deliveries(session, customer, NOW)
        assert deliveries == [("wecom", NOW + seconds(1))]
        assert store.recent_deliveries(session, customer, NOW + seconds(2)) == []
        listed = store.list_reminders(session, status="delivered")
        assert {r.id for r in listed} == {claimed[0].id, claimed[1].id}
        assert [r.outcome for r in store.list_reminders(session, customer_id=customer)] == ["acted"]

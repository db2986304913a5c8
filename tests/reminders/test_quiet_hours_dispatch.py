"""Dispatch through the real policy for customers across zones: nothing is sent in their quiet hours, and what
waited goes out when their window opens (a fake clock in process; the wall clock with worker processes)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bankbot.reminders_bench import StoredReminder, quiet_hours_outcome, stored_reminders
from bankcore.database import unit_of_work
from bankcore.models import Reminder
from bankcore.reminders import store
from bankcore.reminders.decisions import Decision
from bankcore.reminders.policy import in_quiet_hours
from bankcore.reminders.rules import DEFAULT_RULES_PATH, load_rules
from channels.scheduler.senders import CountingSender, Receipt
from channels.scheduler.worker import Dispatcher, policy_decider
from tests.reminders import store_support
from tests.reminders.store_support import ZONES, add_zoned_customers, zone_of_customer, zoned_planned

reminder_sqlite_template = store_support.reminder_sqlite_template
reminder_pg = store_support.reminder_pg
reminder_db = store_support.reminder_db
factory = store_support.factory

Factory = sessionmaker[Session]
UTC = dt.UTC
ROOT = Path(__file__).resolve().parents[2]
POLICY = load_rules(DEFAULT_RULES_PATH).policy()  # the rules file ops edit: quiet hours 21:00-08:00
# 2026-12-06 12:00 UTC: 20:00 in Shanghai, 18:00 Urumqi, 17:45 Kathmandu, 12:00 London (all outside quiet
# hours); 07:00 in New York and 01:00 (Dec 7) in Auckland (inside).
START = dt.datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
OPENS = {"America/New_York": dt.datetime(2026, 12, 6, 13, 0, tzinfo=UTC), "Pacific/Auckland": START.replace(hour=19)}
PER_ZONE = 3


class FakeClock:
    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


def plan_zoned(url: str, factory: Factory, count: int, send_after: dt.datetime) -> dict[str, str]:
    """`count` zoned customers with one reminder each; key → the customer's zone."""
    add_zoned_customers(url, count)
    reminders = zoned_planned(count, send_after=send_after)
    with unit_of_work(factory) as session:
        assert store.add_planned(session, reminders, send_after) == count
    return {reminder.key: zone_of_customer(number) for number, reminder in enumerate(reminders)}


async def drain(dispatcher: Dispatcher) -> None:
    while await dispatcher.run_once():
        pass


def parked(factory: Factory) -> dict[str, tuple[str, dt.datetime | None]]:
    with unit_of_work(factory) as session:
        rows = session.execute(select(Reminder.key, Reminder.status, Reminder.next_attempt_at))
        return {key: (status, next_attempt_at) for key, status, next_attempt_at in rows}


async def test_across_zones_nothing_is_sent_in_quiet_hours_and_the_waiting_go_out_when_their_window_opens(
    reminder_db: str, factory: Factory
) -> None:
    zones = plan_zoned(reminder_db, factory, PER_ZONE * len(ZONES), START)
    clock = FakeClock(START)
    sender = CountingSender(clock=clock)
    dispatcher = Dispatcher(factory, sender, worker_id="w1", clock=clock, decide=policy_decider(POLICY), batch=7)

    await drain(dispatcher)
    outside = {key for key, zone in zones.items() if zone not in OPENS}
    assert set(sender.received) == outside
    state = parked(factory)
    for key, zone in zones.items():
        if zone in OPENS:
            # Waiting, not lost: due again exactly when 08:00 comes in the customer's zone.
            assert state[key] == ("due", OPENS[zone])
            assert OPENS[zone].astimezone(ZoneInfo(zone)).time() == dt.time(8, 0)
    # The bench's accounting agrees: 6 waiting for their window, none lost, none sent in quiet hours.
    outcome = quiet_hours_outcome(stored_reminders(reminder_db), sender.receipts, POLICY.quiet, START, START)
    assert outcome["deferred_to_window"] == 2 * PER_ZONE
    assert outcome["delivered"] == len(outside)
    assert (outcome["lost"], outcome["sent_in_quiet_hours"], outcome["double_recorded"]) == (0, 0, 0)

    # A day on the fake clock in 15-minute steps (Kathmandu's windows open at :15 UTC): every window opens once.
    for _ in range(24 * 4):
        clock.advance(dt.timedelta(minutes=15))
        await drain(dispatcher)
    assert sender.received == dict.fromkeys(zones, 1)
    for receipt in sender.receipts:
        assert not in_quiet_hours(receipt.sent_at, ZoneInfo(zones[receipt.key]), POLICY.quiet), receipt
        assert receipt.sent_at == OPENS.get(zones[receipt.key], START), receipt
    assert {status for status, _ in parked(factory).values()} == {"delivered"}
    assert dispatcher.stats["waiting"] == 2 * PER_ZONE


async def test_a_send_held_up_until_quiet_hours_began_waits_for_the_window(reminder_db: str, factory: Factory) -> None:
    # 20:59:59 in Shanghai: the policy says send, but the send is held up (a rate-limited channel's queue)
    # past 21:00. The worker must not hand it over; it goes out at 08:00.
    shanghai = ZoneInfo("Asia/Shanghai")
    almost_nine = dt.datetime(2026, 12, 6, 20, 59, 59, tzinfo=shanghai).astimezone(UTC)
    (key,) = plan_zoned(reminder_db, factory, 1, almost_nine)  # customer 0 is in Shanghai
    clock = FakeClock(almost_nine)
    real = policy_decider(POLICY)

    decisions: list[Decision] = []

    def held_up(session: Session, reminder: store.ClaimedReminder, now: dt.datetime) -> Decision:
        decisions.append(real(session, reminder, now))
        if len(decisions) == 1:
            clock.advance(dt.timedelta(seconds=2))  # only the first send is held up
        return decisions[-1]

    sender = CountingSender(clock=clock)
    dispatcher = Dispatcher(factory, sender, worker_id="w1", clock=clock, decide=held_up)
    await drain(dispatcher)
    assert sender.receipts == [] and dispatcher.stats["window_closed"] == 1
    eight = dt.datetime(2026, 12, 7, 8, 0, tzinfo=shanghai).astimezone(UTC)
    assert parked(factory)[key] == ("due", eight)
    clock.now = eight
    await drain(dispatcher)
    assert [(r.key, r.sent_at) for r in sender.receipts] == [(key, eight)]


def test_worker_processes_with_the_quiet_hours_policy_send_nothing_in_quiet_hours_on_the_wall_clock(
    reminder_db: str, factory: Factory, tmp_path: Path
) -> None:
    # The chaos bench's workers and accounting, small and undisturbed. Whatever the hour, some of these zones
    # are inside quiet hours and some outside (store_support.ZONES).
    now = dt.datetime.now(UTC)
    zones = plan_zoned(reminder_db, factory, 20 * len(ZONES), now)
    counts = tmp_path / "sent.tsv"
    counts.touch()
    run_start = dt.datetime.now(UTC)
    options = ("--policy", "quiet-hours", "--send-delay", "0.01", "--delay-after-receipt", "--deadline", "60")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.reminders.race_worker", reminder_db, str(counts), f"w{n}", *options],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    idle: list[dt.datetime] = []
    for process in processes:
        out, err = process.communicate(timeout=90)
        assert process.returncode == 0, err[-3000:]
        report = json.loads(out.strip().splitlines()[-1])
        assert report["idle_at"], report  # stopped because nothing was due, not by the deadline
        idle.append(dt.datetime.fromisoformat(report["idle_at"]))
    receipts = CountingSender.read_receipts(counts)
    assert {receipt.customer_id for receipt in receipts} <= {key.split(":")[0] for key in zones}
    outcome = quiet_hours_outcome(stored_reminders(reminder_db), receipts, POLICY.quiet, run_start, max(idle))
    assert outcome["sent_in_quiet_hours"] == 0, outcome
    assert outcome["lost"] == 0 and outcome["double_recorded"] == 0, outcome
    assert outcome["delivered"] + outcome["deferred_to_window"] == len(zones), outcome
    assert outcome["delivered"] > 0, outcome
    # A zone whose window edge fell inside this short run may have had all its reminders sent: otherwise some wait.
    assert outcome["deferred_to_window"] > 0 or outcome["reminders_crossing_a_window_edge"] > 0, outcome


def test_the_outcome_counts_sends_in_quiet_hours_and_reminders_neither_delivered_nor_parked_as_lost() -> None:
    new_york = OPENS["America/New_York"]
    reminders = {
        "sent": StoredReminder("delivered", None, "Asia/Shanghai", 1),
        "parked": StoredReminder("due", new_york, "America/New_York", 0),
        "parked-wrong": StoredReminder("due", new_york + dt.timedelta(hours=1), "America/New_York", 0),
        "left-due": StoredReminder("due", START, "Europe/London", 0),
        "unrecorded": StoredReminder("dispatching", START, "Europe/London", 0),
        "night": StoredReminder("delivered", None, "America/New_York", 2),
    }
    receipts = [
        Receipt("sent", "phone", "ZC000000", START),
        Receipt("unrecorded", "phone", "ZC000004", START),
        Receipt("night", "phone", "ZC000003", START),  # 07:00 in New York
        Receipt("night", "phone", "ZC000003", START),
    ]
    outcome = quiet_hours_outcome(reminders, receipts, POLICY.quiet, START, START + dt.timedelta(minutes=1))
    assert outcome["sent_in_quiet_hours"] == 2
    assert (outcome["delivered"], outcome["deferred_to_window"]) == (2, 1)
    assert (outcome["lost"], outcome["lost_outside_quiet_hours"]) == (3, 2)
    assert (outcome["duplicate_sends"], outcome["double_recorded"]) == (1, 1)
    assert outcome["reminders_inside_quiet_hours_all_run"] == 3

"""A reminder worker process for the race tests: dispatches to a shared counting file until nothing is left.

`python -m tests.reminders.race_worker URL COUNTS_FILE WORKER_ID [--block-after N --ready FILE]`; with --block-
after the sender hangs (after recording the receipt) once N reminders were sent, so the test can SIGKILL it mid-
dispatch with claims in hand. With --barrier DIR the worker, once ready to dispatch, touches DIR/WORKER_ID.ready
and waits for DIR/go, so racing workers start together however slowly each one started up (a loaded machine would
otherwise let the first one finish alone). --send-delay slows each send (the outage test and the chaos bench need
a run that lasts); with --delay-after-receipt the channel has the message first and answers after the delay, so
the receipt's time is the hand-off's. The worker runs `Dispatcher.run`, so it rides out database restarts like the
real one.

--policy quiet-hours decides with the real policy layer (`policy_decider` with the rules file's policy:
quiet hours in each customer's zone, consent, caps, settlement, fallback), as `python -m channels.scheduler`
does; its campaign rate limits are left out (a throttle on throughput, not a rule on when to send). The worker
then stops once nothing is due now and nothing is held, since reminders parked until their customer's quiet
hours end are not due for hours; it reports `idle_at`, the wall time of the check that found nothing due.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from bankcore.database import make_engine, make_session_factory, unit_of_work
from bankcore.models import Reminder
from bankcore.reminders import store
from bankcore.reminders.rules import DEFAULT_RULES_PATH, load_rules
from bankcore.reminders.store import ClaimedReminder
from channels.scheduler.senders import CountingSender, ReminderSender, SendResult
from channels.scheduler.worker import Dispatcher, is_transient_database_error, policy_decider


class HangingAfter:
    """Counts through `inner`, then from send number `after` on records the receipt and never returns."""

    def __init__(self, inner: CountingSender, after: int, ready: Path) -> None:
        self.inner, self.after, self.ready, self.sent = inner, after, ready, 0

    async def send(self, reminder: ClaimedReminder, channel: str, idempotency_key: str) -> SendResult:
        self.sent += 1
        result = await self.inner.send(reminder, channel, idempotency_key)
        if self.sent > self.after:
            self.ready.touch()
            await asyncio.Event().wait()  # the platform got it; the worker dies before recording it
        return result


class Delayed:
    """A slow channel, so a run lasts long enough to disturb: waits `delay` seconds, then sends through `inner`;
    with `after_receipt`, sends through `inner` first and answers `delay` seconds later."""

    def __init__(self, inner: ReminderSender, delay: float, *, after_receipt: bool = False) -> None:
        self.inner, self.delay, self.after_receipt = inner, delay, after_receipt

    async def send(self, reminder: ClaimedReminder, channel: str, idempotency_key: str) -> SendResult:
        if self.after_receipt:
            result = await self.inner.send(reminder, channel, idempotency_key)
            await asyncio.sleep(self.delay)
            return result
        await asyncio.sleep(self.delay)
        return await self.inner.send(reminder, channel, idempotency_key)


def nothing_due_or_held(session: Session, now: dt.datetime) -> bool:
    """No reminder is due at `now` and none is being dispatched (by a live worker, or a dead one's lease)."""
    pending = session.scalar(
        select(func.count())
        .select_from(Reminder)
        .where(
            Reminder.paused.is_(False),
            or_(
                and_(Reminder.status.in_(store.WAITING_STATUSES), Reminder.next_attempt_at <= now),
                Reminder.status == "dispatching",
            ),
        )
    )
    return not pending


async def wait_at_barrier(barrier: Path, worker_id: str, timeout_s: float = 120.0) -> None:
    """Say this worker is ready, then wait for the test's go."""
    (barrier / f"{worker_id}.ready").touch()
    waited_until = time.monotonic() + timeout_s
    while not (barrier / "go").exists():
        if time.monotonic() > waited_until:
            raise TimeoutError(f"no go in {barrier} after {timeout_s:g} s")
        await asyncio.sleep(0.01)


async def main(args: argparse.Namespace) -> dict[str, object]:
    engine = make_engine(args.url)
    factory = make_session_factory(engine)
    counting = CountingSender(Path(args.counts))
    sender: ReminderSender = counting
    if args.send_delay > 0:
        sender = Delayed(sender, args.send_delay, after_receipt=args.delay_after_receipt)
    if args.block_after is not None:
        sender = HangingAfter(counting, args.block_after, Path(args.ready))
    policy: dict[str, Any] = {}
    if args.policy == "quiet-hours":
        config = load_rules(args.rules).policy()
        policy = {
            "decide": policy_decider(config),
            "retry_base": config.retry_base,
            "retry_cap": config.retry_cap,
            "max_attempts": config.max_attempts,
        }
    dispatcher = Dispatcher(
        factory,
        sender,
        worker_id=args.worker_id,
        lease=dt.timedelta(seconds=args.lease),
        batch=args.batch,
        concurrency=8,
        **policy,
    )
    if args.barrier:
        await wait_at_barrier(Path(args.barrier), args.worker_id)
    deadline = time.monotonic() + args.deadline
    started = time.monotonic()
    stop = asyncio.Event()
    idle_at: list[dt.datetime] = []

    def nothing_left() -> bool:
        checked_at = dt.datetime.now(dt.UTC)
        with unit_of_work(factory) as session:
            if policy:
                done = nothing_due_or_held(session, checked_at)
            else:
                counts = store.counts_by_status(session)
                done = not any(counts.get(status, 0) for status in store.ACTIVE_STATUSES)
        if done:
            idle_at.append(checked_at)
        return done

    async def watch() -> None:
        # Stops the dispatcher once no reminder is active (someone else's lease may have to expire first).
        # run() only looks at `stop` between batches, so this never cuts a batch short.
        while not stop.is_set():
            await asyncio.sleep(0.1)
            try:
                done = await asyncio.to_thread(nothing_left)
            except Exception as error:
                if not is_transient_database_error(error):
                    raise
                done = False  # the database is down: the dispatcher backs off, and so do we
            if done or time.monotonic() >= deadline:
                stop.set()

    await asyncio.gather(dispatcher.run(stop, idle_sleep=0.1), watch())
    elapsed = time.monotonic() - started
    engine.dispose()
    report: dict[str, object] = {"worker": args.worker_id, "elapsed": elapsed, **dict(dispatcher.stats)}
    report["idle_at"] = idle_at[0].isoformat() if idle_at else None  # None: stopped by the deadline
    return report


if __name__ == "__main__":
    # Timestamps, so a test's or bench's worker log lines up with what it did to the database and when.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("counts")
    parser.add_argument("worker_id")
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--block-after", type=int)
    parser.add_argument("--ready", default="")
    parser.add_argument("--barrier", default="")
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--send-delay", type=float, default=0.0)
    parser.add_argument("--delay-after-receipt", action="store_true")
    parser.add_argument("--policy", choices=("none", "quiet-hours"), default="none")
    parser.add_argument("--rules", default=str(DEFAULT_RULES_PATH))
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
    sys.stdout.flush()

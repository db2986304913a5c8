"""A reminder worker process for the race tests: dispatches to a shared counting file until nothing is left.

`python -m tests.reminders.race_worker URL COUNTS_FILE WORKER_ID [--block-after N --ready FILE]`; with
--block-after the sender hangs (after recording the receipt) once N reminders were sent, so the test can
SIGKILL it mid-dispatch with claims in hand. --send-delay slows each send (the outage test and the chaos bench
need a run that lasts). The worker runs `Dispatcher.run`, so it rides out database restarts like the real one.
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

from bankcore.database import make_engine, make_session_factory, unit_of_work
from bankcore.reminders import store
from bankcore.reminders.store import ClaimedReminder
from channels.scheduler.senders import CountingSender, ReminderSender, SendResult
from channels.scheduler.worker import Dispatcher, is_transient_database_error


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
    """Waits `delay` seconds, then sends through `inner`: a slow channel, so a run lasts long enough to disturb."""

    def __init__(self, inner: ReminderSender, delay: float) -> None:
        self.inner, self.delay = inner, delay

    async def send(self, reminder: ClaimedReminder, channel: str, idempotency_key: str) -> SendResult:
        await asyncio.sleep(self.delay)
        return await self.inner.send(reminder, channel, idempotency_key)


async def main(args: argparse.Namespace) -> dict[str, object]:
    engine = make_engine(args.url)
    factory = make_session_factory(engine)
    counting = CountingSender(Path(args.counts))
    sender: ReminderSender = counting
    if args.send_delay > 0:
        sender = Delayed(sender, args.send_delay)
    if args.block_after is not None:
        sender = HangingAfter(counting, args.block_after, Path(args.ready))
    dispatcher = Dispatcher(
        factory,
        sender,
        worker_id=args.worker_id,
        lease=dt.timedelta(seconds=args.lease),
        batch=args.batch,
        concurrency=8,
    )
    deadline = time.monotonic() + args.deadline
    started = time.monotonic()
    stop = asyncio.Event()

    def nothing_left() -> bool:
        with unit_of_work(factory) as session:
            counts = store.counts_by_status(session)
        return not any(counts.get(status, 0) for status in store.ACTIVE_STATUSES)

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
    return {"worker": args.worker_id, "elapsed": elapsed, **dict(dispatcher.stats)}


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
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--send-delay", type=float, default=0.0)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
    sys.stdout.flush()

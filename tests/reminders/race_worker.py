"""A reminder worker process for the race tests: dispatches to a shared counting file until nothing is left.

`python -m tests.reminders.race_worker URL COUNTS_FILE WORKER_ID [--block-after N --ready FILE]`; with
--block-after the sender hangs (after recording the receipt) once N reminders were sent, so the test can
SIGKILL it mid-dispatch with claims in hand.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from pathlib import Path

from bankcore.database import make_engine, make_session_factory, unit_of_work
from bankcore.reminders import store
from bankcore.reminders.store import ClaimedReminder
from channels.scheduler.senders import CountingSender, SendResult
from channels.scheduler.worker import Dispatcher


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


async def main(args: argparse.Namespace) -> dict[str, object]:
    engine = make_engine(args.url)
    factory = make_session_factory(engine)
    counting = CountingSender(Path(args.counts))
    sender = HangingAfter(counting, args.block_after, Path(args.ready)) if args.block_after is not None else counting
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
    while time.monotonic() < deadline:
        if await dispatcher.run_once():
            continue
        with unit_of_work(factory) as session:
            counts = store.counts_by_status(session)
        if not any(counts.get(status, 0) for status in store.ACTIVE_STATUSES):
            break
        await asyncio.sleep(0.1)  # someone else's lease has to expire first
    elapsed = time.monotonic() - started
    engine.dispose()
    return {"worker": args.worker_id, "elapsed": elapsed, **dict(dispatcher.stats)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("counts")
    parser.add_argument("worker_id")
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--block-after", type=int)
    parser.add_argument("--ready", default="")
    parser.add_argument("--deadline", type=float, default=60.0)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
    sys.stdout.flush()

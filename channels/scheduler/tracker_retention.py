"""The daily tracker retention run inside the reminder worker (the job itself is bankcore.tracker_retention).

Every worker runs it about once a day (a minute after start, then every 24 hours); the job's own lock makes the
workers of a cluster take turns instead of running it side by side. BANKBOT_TRACKER_RETENTION_DAYS=0 turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable

from bankcore.settings import Settings
from bankcore.tracker_retention import RetentionReport, exclusive_run, retain, tracker_engine

log = logging.getLogger(__name__)

FIRST_RUN_DELAY = dt.timedelta(minutes=1)
INTERVAL = dt.timedelta(days=1)
# After a failed run (the database down): try again sooner than tomorrow.
RETRY_AFTER = dt.timedelta(hours=1)


def run_once(
    settings: Settings, now: dt.datetime | None = None, should_stop: Callable[[], bool] | None = None
) -> RetentionReport | None:
    """One retention run on the settings' tracker store; None when another run holds the lock."""
    engine = tracker_engine(settings.tracker_store_url)
    try:
        with exclusive_run(engine) as acquired:
            if not acquired:
                log.info("tracker retention: another run holds the lock; skipped")
                return None
            return retain(
                engine,
                older_than=dt.timedelta(days=settings.tracker_retention_days),
                now=now,
                archive_dir=settings.tracker_archive_dir,
                should_stop=should_stop,
            )
    finally:
        engine.dispose()


async def run_daily(
    settings: Settings,
    stop: asyncio.Event,
    *,
    first_delay: dt.timedelta = FIRST_RUN_DELAY,
    interval: dt.timedelta = INTERVAL,
) -> None:
    """Run the job until `stop` is set. A failure is logged and retried later; it never ends the worker."""
    if settings.tracker_retention_days <= 0:
        log.info("tracker retention is off (BANKBOT_TRACKER_RETENTION_DAYS=0)")
        return
    pause = first_delay
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=pause.total_seconds())
        if stop.is_set():
            return
        try:
            # The run checks `stop` between pages, so SIGTERM ends it within one page.
            await asyncio.to_thread(run_once, settings, None, stop.is_set)
            pause = interval
        except Exception:
            log.exception("tracker retention failed; trying again in %s", RETRY_AFTER)
            pause = RETRY_AFTER

"""`python -m channels.scheduler`: one reminder-dispatching worker on the settings' database until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from bankcore.database import make_engine, make_session_factory
from bankcore.logging_setup import configure_logging
from bankcore.settings import Settings
from channels.scheduler.senders import LogSender
from channels.scheduler.worker import Dispatcher, policy_decider

log = logging.getLogger("channels.scheduler")


async def serve(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    dispatcher = Dispatcher(
        make_session_factory(engine),
        LogSender(),
        worker_id=worker_id,
        decide=policy_decider(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Finish the batch in hand, then leave: nothing is half-recorded, and unclaimed work stays due.
        loop.add_signal_handler(signum, stop.set)
    log.info("reminder worker %s started", worker_id)
    try:
        await dispatcher.run(stop)
    finally:
        engine.dispose()
        log.info("reminder worker %s stopped: %s", worker_id, dict(dispatcher.stats))


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings, "scheduler")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()

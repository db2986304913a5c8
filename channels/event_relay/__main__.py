"""`python -m channels.event_relay`: relay Rasa's events from BANKBOT_AMQP_URL into the shared database until
SIGTERM/SIGINT; Prometheus metrics on 127.0.0.1:BANKBOT_RELAY_METRICS_PORT when that is set."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from bankcore.database import make_engine, make_session_factory
from bankcore.logging_setup import configure_logging
from bankcore.settings import Settings
from channels.event_relay.metrics import RelayMetrics
from channels.event_relay.relay import EventRelay, RelayConfig

log = logging.getLogger("channels.event_relay")


def relay_config(settings: Settings) -> RelayConfig:
    assert settings.amqp_url, "BANKBOT_AMQP_URL is not set"
    return RelayConfig(
        amqp_url=settings.amqp_url,
        queue=settings.amqp_queue,
        exchange=settings.amqp_exchange,
        batch_size=settings.relay_batch_size,
    )


async def serve(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    metrics = RelayMetrics.create()
    if settings.relay_metrics_port:
        from prometheus_client import start_http_server

        # Loopback only, like Rasa and the action server: a scraper on the host, or a proxy, reads it.
        start_http_server(settings.relay_metrics_port, addr="127.0.0.1", registry=metrics.registry)
    relay = EventRelay(relay_config(settings), make_session_factory(engine), metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Finish the batch in hand (stored and acknowledged), then leave; the rest stays in the queue.
        loop.add_signal_handler(signum, stop.set)
    try:
        await relay.run(stop)
    finally:
        engine.dispose()


def main() -> int:
    settings = Settings.from_env()
    configure_logging(settings, "event-relay")
    if not settings.amqp_url:
        log.error("BANKBOT_AMQP_URL is not set: there is no event broker to relay from")
        return 2
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m channels`: run the channel gateway on settings.gateway_host:gateway_port."""

from __future__ import annotations

import logging

from aiohttp import web

from bankcore.logging_setup import configure_logging
from bankcore.settings import Settings
from channels.app import create_app


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings, "gateway")
    logger = logging.getLogger("channels")
    logger.info("gateway starting on %s:%s", settings.gateway_host, settings.gateway_port)
    web.run_app(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        # The access log would repeat every URL; our own turn log carries what matters, redacted.
        access_log=None,
        print=None,
        shutdown_timeout=5.0,
    )


if __name__ == "__main__":
    main()

"""`python -m channels.scheduler`: one reminder-dispatching worker on the settings' database until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import socket

import aiohttp
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import make_engine, make_session_factory
from bankcore.logging_setup import configure_logging
from bankcore.settings import Settings
from channels.redis_state import RedisState
from channels.scheduler.conversation_sender import Deliver
from channels.scheduler.tracker_retention import run_daily
from channels.scheduler.worker import Dispatcher, policy_decider

log = logging.getLogger("channels.scheduler")


async def serve(settings: Settings) -> None:
    """Plan what the rules call for now, then dispatch until stopped; replies go through Rasa conversations."""
    from bankcore.database import unit_of_work
    from bankcore.reminders.planner import plan_and_store
    from bankcore.reminders.rules import DEFAULT_RULES_PATH, load_rules
    from channels.rasa_client import RasaClient
    from channels.scheduler.conversation_sender import ConversationSender

    rules = load_rules(settings.extra.get("BANKBOT_REMINDER_RULES", str(DEFAULT_RULES_PATH)))
    policy = rules.policy()
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        planned, created = plan_and_store(session, rules, dt.datetime.now(dt.UTC))
    log.info("planned %d reminders (%d new)", planned, created)
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    http = aiohttp.ClientSession()
    # With a Redis, the platform access token is the one the gateways share (fetching another retires theirs).
    redis = RedisState(settings.redis_url) if settings.redis_url else None
    if redis is not None:
        redis.open()
    rasa = RasaClient(http, settings.rasa_urls, settings.rasa_token)
    dispatcher = Dispatcher(
        factory,
        ConversationSender(rasa, platform_deliverers(settings, factory, http, redis)),
        worker_id=worker_id,
        decide=policy_decider(policy),
        rate_limits=policy.rate_limits,
        retry_base=policy.retry_base,
        retry_cap=policy.retry_cap,
        max_attempts=policy.max_attempts,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Finish the batch in hand, then leave: nothing is half-recorded, and unclaimed work stays due.
        loop.add_signal_handler(signum, stop.set)
    log.info("reminder worker %s started", worker_id)
    # Tracker hygiene rides along: Rasa's conversations quiet for longer than the retention period, once a day.
    retention = asyncio.create_task(run_daily(settings, stop))
    try:
        await dispatcher.run(stop)
    finally:
        stop.set()
        await retention
        await http.close()
        if redis is not None:
            await redis.close()
        engine.dispose()
        log.info("reminder worker %s stopped: %s", worker_id, dict(dispatcher.stats))


def platform_deliverers(
    settings: Settings,
    factory: sessionmaker[Session],
    http: aiohttp.ClientSession,
    redis: RedisState | None = None,
) -> dict[str, Deliver]:
    """The outbound channels configured here: WeCom through the gateway's outbox, the mini-program directly, and
    phone calls through the gateway's SIP agent."""
    from channels.miniprogram.api import WeChatApi
    from channels.scheduler.platform_deliverers import miniprogram_deliverer, wecom_deliverer

    deliverers: dict[str, Deliver] = {}
    if settings.wecom_configured:
        deliverers["wecom"] = wecom_deliverer(factory, settings.wecom_agent_id)
    if settings.miniprogram_configured and settings.miniprogram_reminder_template_id:
        api = WeChatApi(
            http, settings.wechat_api_base, settings.miniprogram_app_id, settings.miniprogram_app_secret, redis=redis
        )
        deliverers["miniprogram"] = miniprogram_deliverer(factory, api, settings.miniprogram_reminder_template_id)
    if settings.sip_port and settings.sip_outbound_proxy and settings.events_token:
        from channels.scheduler.phone_deliverer import phone_deliverer

        gateway = f"http://{settings.gateway_host}:{settings.gateway_port}"
        deliverers["phone"] = phone_deliverer(http, gateway, settings.events_token)
    return deliverers


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings, "scheduler")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()

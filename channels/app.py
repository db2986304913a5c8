"""Builds the gateway's one aiohttp application: shared resources, adapters, health and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bankcore.database import make_engine, make_session_factory
from bankcore.settings import Settings
from channels import events_api, health, reminders_api
from channels.http_errors import error_middleware_for
from channels.ivr import line as phone_line
from channels.metrics import GatewayMetrics, ReminderStatusCollector, RiskDecisionCollector
from channels.miniprogram.inbound import MiniProgramInput
from channels.ops import console as ops_console
from channels.rasa_client import RasaClient
from channels.redis_state import RedisState
from channels.resources import DB_ENGINE, HTTP_SESSION, METRICS, RASA, REDIS, SESSION_FACTORY, SETTINGS, TURNS
from channels.turns import TurnContext
from channels.webchat import WebChatInput
from channels.wecom.inbound import WeComInput


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = make_engine(app[SETTINGS].database_url)
    app[DB_ENGINE] = engine
    app[SESSION_FACTORY] = make_session_factory(engine)
    collectors = [RiskDecisionCollector(app[SESSION_FACTORY]), ReminderStatusCollector(app[SESSION_FACTORY])]
    for collector in collectors:
        app[METRICS].registry.register(collector)
    yield
    for collector in collectors:
        app[METRICS].registry.unregister(collector)
    engine.dispose()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    # Opening makes no connection: a Redis that is down at startup is a fallback, not a failed start.
    redis = app[REDIS]
    redis.open()
    yield
    await redis.close()


async def _rasa(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    metrics = app[METRICS]
    # One session for the whole process: connection pooling to Rasa is what keeps the gateway's
    # added latency within the 10 ms budget. Rasa and the platforms' APIs all go through it.
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, limit_per_host=50, keepalive_timeout=30),
        raise_for_status=False,
    )
    app[HTTP_SESSION] = http
    rasa = RasaClient(http, settings.rasa_urls, settings.rasa_token, on_latency=metrics.observe_rasa)
    app[RASA] = rasa
    app[TURNS] = TurnContext(settings=settings, rasa=rasa, session_factory=app[SESSION_FACTORY], metrics=metrics)
    yield
    await http.close()


def create_app(settings: Settings, *, webchat_rate_limit_per_minute: int | None = None) -> web.Application:
    """The gateway application; resources open on startup (cleanup_ctx) and close on shutdown."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[error_middleware_for(settings.max_body_bytes)],
    )
    app[SETTINGS] = settings
    app[METRICS] = GatewayMetrics.create()
    # Order matters: the turn context built in _rasa needs the session factory from _database.
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_rasa)
    if settings.redis_url:
        # Before the adapters register: their rate limits and platform runtimes use it.
        app[REDIS] = RedisState(settings.redis_url, on_fallback=app[METRICS].count_redis_fallback)
        app.cleanup_ctx.append(_redis)
    WebChatInput(settings, rate_limit_per_minute=webchat_rate_limit_per_minute).register(app)
    # Each registers its routes; with credentials configured, also its runtime (after _rasa: it needs the
    # shared HTTP session and the turn context).
    WeComInput(settings).register(app)
    MiniProgramInput(settings).register(app)
    health.register(app)
    events_api.register(app)
    reminders_api.register(app)
    # After _rasa: calls need the turn context.
    phone_line.register(app)
    ops_console.register(app)
    return app

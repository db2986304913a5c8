"""Typed application keys for the resources one gateway application shares across adapters."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bankcore.settings import Settings
from channels.metrics import GatewayMetrics
from channels.rasa_client import RasaClient
from channels.redis_state import RedisState
from channels.turns import TurnContext

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", GatewayMetrics)
DB_ENGINE = web.AppKey("db_engine", Engine)
SESSION_FACTORY = web.AppKey("session_factory", sessionmaker[Session])
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
RASA = web.AppKey("rasa", RasaClient)
TURNS = web.AppKey("turns", TurnContext)
# Only when BANKBOT_REDIS_URL is set: the state several gateway processes share (channels.redis_state).
REDIS = web.AppKey("redis", RedisState)

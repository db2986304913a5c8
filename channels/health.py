"""Operational endpoints: `GET /healthz` (liveness), `GET /readyz` (readiness) and `GET /metrics` (Prometheus).

Liveness says only that the process and its event loop answer: a supervisor restarts a gateway that fails it,
and restarting cannot cure a database or Rasa that is down, so no dependency is checked there. Readiness checks
what a turn needs (the database, Rasa, and Redis when one is configured): a load balancer or `bankbot run` sends
turns only to a gateway that passes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text

from channels.http_errors import dumps_utf8
from channels.rasa_client import RasaUnavailable
from channels.resources import DB_ENGINE, METRICS, RASA, REDIS

_DATABASE_TIMEOUT_S = 3.0
_NO_STORE = {"Cache-Control": "no-store"}


def _ping_database(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


async def healthz(request: web.Request) -> web.Response:
    """Liveness: 200 whenever this handler runs at all."""
    return web.json_response({"status": "ok"}, headers=_NO_STORE, dumps=dumps_utf8)


async def _check(probe: Awaitable[str]) -> str:
    try:
        return await probe
    except Exception as error:
        # Only the exception type: a driver message can carry the database or Redis URL and its password.
        return f"error: {type(error).__name__}"


async def _database(request: web.Request) -> str:
    engine = request.app[DB_ENGINE]
    await asyncio.wait_for(asyncio.to_thread(_ping_database, engine), timeout=_DATABASE_TIMEOUT_S)
    return "ok"


async def _rasa(request: web.Request) -> str:
    try:
        status = await request.app[RASA].status()
    except RasaUnavailable:
        return "unavailable"
    return "ok" if status.get("model_file") or status.get("model_id") else "no_model"


async def _redis(request: web.Request) -> str:
    await request.app[REDIS].ping()
    return "ok"


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 when the database and Rasa answer, else 503; the body names each check's result.

    Redis is reported but does not decide: without it the gateway still serves (its rate limits and token cache
    fall back to process memory), so a load balancer must not take every gateway out during a Redis outage."""
    probes = {"database": _database(request), "rasa": _rasa(request)}
    if REDIS in request.app:
        probes["redis"] = _redis(request)
    results = await asyncio.gather(*(_check(probe) for probe in probes.values()))
    checks = dict(zip(probes, results, strict=True))
    ready = all(value == "ok" for name, value in checks.items() if name != "redis")
    degraded = ready and checks.get("redis", "ok") != "ok"
    return web.json_response(
        {"status": "degraded" if degraded else "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
        headers=_NO_STORE,
        dumps=dumps_utf8,
    )


async def metrics(request: web.Request) -> web.Response:
    # Some collectors read the database: off the event loop.
    body = await asyncio.to_thread(generate_latest, request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def register(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)

"""Operational endpoints: `GET /healthz` (gateway, database, Rasa) and `GET /metrics` (Prometheus)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text

from channels.http_errors import dumps_utf8
from channels.rasa_client import RasaUnavailable
from channels.resources import DB_ENGINE, METRICS, RASA


def _ping_database(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


async def healthz(request: web.Request) -> web.Response:
    """200 when the database and Rasa both answer, else 503; the body says which check failed."""
    checks: dict[str, Any] = {"gateway": "ok"}
    try:
        await asyncio.wait_for(asyncio.to_thread(_ping_database, request.app[DB_ENGINE]), timeout=3.0)
        checks["database"] = "ok"
    except Exception as error:
        # Only the exception type: a driver message can carry the database URL and its password.
        checks["database"] = f"error: {type(error).__name__}"
    try:
        status = await request.app[RASA].status()
        checks["rasa"] = "ok" if status.get("model_file") or status.get("model_id") else "no_model"
    except RasaUnavailable:
        checks["rasa"] = "unavailable"
    healthy = all(value == "ok" for value in checks.values())
    return web.json_response(
        {"status": "ok" if healthy else "degraded", "checks": checks},
        status=200 if healthy else 503,
        headers={"Cache-Control": "no-store"},
        dumps=dumps_utf8,
    )


async def metrics(request: web.Request) -> web.Response:
    # Some collectors read the database: off the event loop.
    body = await asyncio.to_thread(generate_latest, request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def register(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)

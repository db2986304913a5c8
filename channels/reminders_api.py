"""`GET /reminders/stats`: the outbound-reminder scheduler's state, read-only (counts only, no customer data)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from bankcore.reminders import store
from channels.http_errors import dumps_utf8
from channels.resources import SESSION_FACTORY


def _stats(factory: sessionmaker[Session]) -> dict[str, Any]:
    with factory() as session:
        counts = store.counts_by_status(session)
    return {"by_status": counts, "total": sum(counts.values())}


async def reminder_stats(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(_stats, request.app[SESSION_FACTORY])
    return web.json_response(body, headers={"Cache-Control": "no-store"}, dumps=dumps_utf8)


def register(app: web.Application) -> None:
    app.router.add_get("/reminders/stats", reminder_stats)

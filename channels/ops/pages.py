"""What every ops console page shares: templates, the session and CSRF guard, the bank's database off the loop.

Access: a session cookie (HttpOnly, SameSite=Strict, path /ops/) naming a server-side session that expires; every
POST carries the session's CSRF token (a hidden form field) and, where the browser sends one, an Origin of this
host. Roles are cumulative, viewer < tester < ops (see `bankcore.ops_accounts`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from aiohttp import web
from sqlalchemy import Engine

from bankcore import ops_accounts
from bankcore.database import unit_of_work
from bankcore.ops_accounts import StaffMember
from channels.resources import SESSION_FACTORY

logger = logging.getLogger("channels.ops")

COOKIE = "bankbot_ops"
ROLE_NAMES = {"viewer": "只读", "tester": "测试", "ops": "运营"}

TRACKER = web.AppKey("ops_tracker_engine", Engine)
MEMBER = web.RequestKey("ops_member", StaffMember)
CSRF = web.RequestKey("ops_csrf", str)
TEMPLATES = web.AppKey("ops_templates", jinja2.Environment)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    member: StaffMember | None = request.get(MEMBER)
    body = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            member=member,
            csrf=request.get(CSRF, ""),
            role_names=ROLE_NAMES,
            message=request.query.get("msg", ""),
            error=context.pop("error", ""),
            **context,
        )
    )
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    # The console shows customers' messages: nothing of it is cached or framed elsewhere.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self' 'unsafe-inline'"
    return response


async def in_bank(request: web.Request, work: Callable[[Any], Any]) -> Any:
    def run() -> Any:
        with unit_of_work(request.app[SESSION_FACTORY]) as session:
            return work(session)

    return await asyncio.to_thread(run)


def requires(role: str) -> Callable[[Handler], Handler]:
    """Only signed-in staff with `role` (or higher); a POST must also carry the session's CSRF token."""

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            token = request.cookies.get(COOKIE, "")
            found = await in_bank(request, lambda s: ops_accounts.session_for(s, token, now()))
            if found is None:
                if request.method == "GET":
                    raise web.HTTPSeeOther("/ops/login")
                raise web.HTTPUnauthorized(text="signed out or session expired")
            member, csrf = found
            if request.method == "POST":
                form = await request.post()
                if not ops_accounts.csrf_matches(csrf, str(form.get("csrf", ""))) or not same_origin(request):
                    logger.warning("ops request refused: CSRF check failed", extra={"user": member.username})
                    raise web.HTTPForbidden(text="CSRF check failed")
            if not member.can(role):
                raise web.HTTPForbidden(text=f"this needs the {role} role")
            request[MEMBER], request[CSRF] = member, csrf
            return await handler(request)

        return guarded

    return wrap


def same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if not origin:
        return True  # older browsers and tools: the CSRF token alone decides
    return urlsplit(origin).netloc == request.host

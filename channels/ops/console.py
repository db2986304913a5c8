"""The ops console's pages under /ops/: sign-in, the NLU review inbox, the intents and their examples, the audit log.

Access and roles are `channels.ops.pages`'s. Every change is written to the audit log with its diff.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bankcore import ops_accounts
from bankcore.database import make_engine
from bankcore.ops_accounts import StaffMember
from channels.ops import dashboard, data_browser, inbox, models_page, stories
from channels.ops.nlu_files import NluData, NluEditError, annotate, file_hash
from channels.ops.pages import COOKIE, MEMBER, TEMPLATES, TRACKER, environment, in_bank, now, render, requires
from channels.resources import SETTINGS

logger = logging.getLogger(__name__)

STATUSES = (("new", "待审"), ("confirmed", "已确认"), ("corrected", "已更正"), ("dismissed", "已忽略"))
_SPAN = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*:\s*([a-z][a-z0-9_]*)\s*$")


async def login_page(request: web.Request) -> web.StreamResponse:
    return render(request, "login.html")


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    username, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
    ttl = dt.timedelta(minutes=request.app[SETTINGS].ops_session_minutes)
    signed = await in_bank(request, lambda s: ops_accounts.sign_in(s, username, password, now(), ttl=ttl))
    if signed is None:
        logger.info("ops sign-in refused", extra={"user": username[:64]})
        return render(request, "login.html", status=401, error="用户名或密码不正确。")
    response = web.HTTPSeeOther("/ops/inbox")
    response.set_cookie(
        COOKIE,
        signed.token,
        path="/ops/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        max_age=int(ttl.total_seconds()),
    )
    logger.info("ops sign-in", extra={"user": signed.member.username})
    raise response


@requires("viewer")
async def logout(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(COOKIE, "")
    await in_bank(request, lambda s: ops_accounts.sign_out(s, token))
    response = web.HTTPSeeOther("/ops/login")
    response.del_cookie(COOKIE, path="/ops/")
    raise response


def _filter(request: web.Request) -> inbox.InboxFilter:
    def day(name: str) -> dt.date | None:
        try:
            return dt.date.fromisoformat(request.query.get(name, ""))
        except ValueError:
            return None

    status = request.query.get("status", "new")
    return inbox.InboxFilter(
        channel=request.query.get("channel") or None,
        since=day("since"),
        until=day("until"),
        status=status if status in dict(STATUSES) else "new",
    )


@requires("viewer")
async def inbox_page(request: web.Request) -> web.StreamResponse:
    where = _filter(request)
    try:
        offset = max(0, int(request.query.get("offset", "0")))
    except ValueError:
        offset = 0
    tracker = request.app[TRACKER]

    def load(session: Any) -> tuple[list[Any], int, list[str]]:
        inbox.sync(session, tracker)
        items, total = inbox.page(session, where, offset=offset)
        return items, total, inbox.channels(session)

    items, total, channels = await in_bank(request, load)
    data = NluData(request.app[SETTINGS].nlu_data_dir)
    examples = await asyncio.to_thread(data.intents)
    intents = sorted(examples)
    # The file of each intent's first example is `data.file_of(intent)`, without parsing every file per intent.
    hashes = {intent: file_hash(data.directory / examples[intent][0].file) for intent in intents}
    query = urlencode(
        {k: v for k, v in {"channel": where.channel, "since": where.since, "until": where.until}.items() if v}
        | {"status": where.status}
    )
    return render(
        request,
        "inbox.html",
        items=items,
        total=total,
        channels=channels,
        where=where,
        statuses=STATUSES,
        intents=intents,
        hashes=hashes,
        offset=offset,
        size=inbox.PAGE_SIZE,
        query=query,
        can_edit=request[MEMBER].can("ops"),
        entities=data_browser.domain_entities(request.app),
    )


def _spans(text: str) -> list[tuple[int, int, str]]:
    spans = []
    for part in re.split(r"[,，;；]", text):
        if not part.strip():
            continue
        match = _SPAN.match(part)
        if match is None:
            raise NluEditError("invalid", f"实体标注应写作 起-止:实体，如 4-6:account_type，而不是 {part.strip()}")
        spans.append((int(match.group(1)), int(match.group(2)), match.group(3)))
    return spans


@requires("ops")
async def review_item(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    member: StaffMember = request[MEMBER]
    try:
        item_id = int(request.match_info["item_id"])
    except ValueError as error:
        raise web.HTTPNotFound() from error
    item = await in_bank(request, lambda s: s.get(inbox.OpsInboxItem, item_id))
    if item is None or item.status != "new":
        raise web.HTTPNotFound(text="no such message waiting for review")
    action = str(form.get("action", ""))
    if action == "dismiss":
        await in_bank(request, lambda s: _review(s, item_id, "dismissed", member, "dismiss", f"inbox {item_id}", ""))
        raise web.HTTPSeeOther("/ops/inbox?" + urlencode({"msg": "已忽略这条消息。"}))
    intent = str(form.get("intent", "")).strip()
    data = NluData(request.app[SETTINGS].nlu_data_dir)
    try:
        example = annotate(item.text, _spans(str(form.get("entities", ""))))
        edit = await asyncio.to_thread(
            data.add_example, intent, example, expected_hash=str(form.get("file_hash", "")) or None
        )
    except NluEditError as error:
        return render(
            request, "message.html", status=409 if error.kind != "invalid" else 400, error=str(error), back="/ops/inbox"
        )
    status = "confirmed" if intent == item.intent else "corrected"
    await in_bank(
        request, lambda s: _review(s, item_id, status, member, f"inbox_{status}", f"{edit.file} {intent}", edit.diff)
    )
    message = f"已写入 {edit.file}（意图 {intent}）。"
    raise web.HTTPSeeOther("/ops/inbox?" + urlencode({"msg": message}))


def _review(session: Any, item_id: int, status: str, member: StaffMember, action: str, target: str, diff: str) -> None:
    inbox.review(session, item_id, status, member.username, now())
    ops_accounts.audit(session, member, action, target, diff, now())


@requires("ops")
async def audit_page(request: web.Request) -> web.StreamResponse:
    entries = await in_bank(request, ops_accounts.recent_audit)
    return render(request, "audit.html", entries=entries)


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/ops/inbox")


async def _tracker(app: web.Application) -> Any:
    engine = make_engine(app[SETTINGS].tracker_store_url)
    app[TRACKER] = engine
    yield
    engine.dispose()


def register(app: web.Application) -> None:
    app[TEMPLATES] = environment()
    app.cleanup_ctx.append(_tracker)
    app.router.add_get("/ops/", home)
    app.router.add_get("/ops/login", login_page)
    app.router.add_post("/ops/login", login)
    app.router.add_post("/ops/logout", logout)
    app.router.add_get("/ops/inbox", inbox_page)
    app.router.add_post("/ops/inbox/{item_id}/review", review_item)
    data_browser.register(app)  # /ops/intents, /ops/vocabulary, /ops/static/
    app.router.add_get("/ops/audit", audit_page)
    stories.register(app)
    dashboard.register(app)
    models_page.register(app)

"""The testers' pages under /ops/stories: run the test stories, read failed ones as a diff, save a conversation.

Tester role and up. A run is `rasa test core` against the model Rasa serves (its /status names the file in the
models folder; when Rasa does not answer, the newest model there), in the background, one at a time
(`story_runs`). A conversation from the tracker store becomes a test story in a `test_*.yml` file of the
test-stories folder (`story_files`); saving is in the audit log with the file's diff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import func, select

from bankcore import ops_accounts
from bankcore.models import OpsInboxItem
from bankcore.settings import PROJECT_ROOT
from channels.ops import inbox, story_files
from channels.ops.pages import MEMBER, TRACKER, in_bank, now, render, requires
from channels.ops.story_runs import MODES, RunBusy, StoryRunner
from channels.rasa_client import RasaUnavailable
from channels.resources import RASA, SETTINGS

logger = logging.getLogger(__name__)

RUNNER = web.AppKey("ops_story_runner", StoryRunner)
MODE_NAMES = {"core": "对话（按故事中的意图）", "e2e": "端到端（含 NLU 识别）"}
STATE_NAMES = {"running": "运行中", "passed": "全部通过", "failed": "有失败", "error": "出错", "interrupted": "已中断"}
KIND_NAMES = {
    "user": "客户",
    "entity": "实体",
    "action": "动作",
    "bot": "回复",
    "slot": "槽位",
    "loop": "表单",
    "other": "其他",
}
CONVERSATIONS_PAGE = 50
DOMAIN = PROJECT_ROOT / "bot" / "domain"


async def serving_model(request: web.Request) -> tuple[Path | None, str]:
    """The model file Rasa serves (promoted ones are linked into var/models/, trained ones are in models/); when
    Rasa does not say, the newest in models/. And how it was chosen, for the page."""
    settings = request.app[SETTINGS]
    models = settings.models_dir
    try:
        status = await request.app[RASA].status()
        name = Path(str(status.get("model_file") or "")).name
        for folder in (settings.var_dir / "models", models):
            if name and (folder / name).is_file():
                return folder / name, "Rasa 正在使用的模型"
        note = f"Rasa 使用的模型 {name or '（未知）'} 不在 {models} 中"
    except RasaUnavailable:
        note = "Rasa 未响应"
    candidates = sorted(models.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not candidates:
        return None, f"{note}，且 {models} 中没有模型"
    return candidates[0], f"{note}：改用最新的模型"


@requires("tester")
async def stories_page(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    runner = request.app[RUNNER]
    stories = await asyncio.to_thread(story_files.list_stories, settings.test_stories_dir)
    runs = runner.runs()
    model, model_note = await serving_model(request)
    return render(
        request,
        "stories.html",
        stories=stories,
        runs=runs[:20],
        busy=runner.busy,
        model=model.name if model else "",
        model_note=model_note,
        modes=MODE_NAMES,
        states=STATE_NAMES,
        directory=settings.test_stories_dir,
    )


@requires("tester")
async def start_run(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    member = request[MEMBER]
    mode = str(form.get("mode", "core"))
    if mode not in MODES:
        raise web.HTTPBadRequest(text="unknown mode")
    model, model_note = await serving_model(request)
    if model is None:
        error = f"没有可测试的模型：{model_note}。"
        return render(request, "message.html", status=409, error=error, back="/ops/stories")
    try:
        run = await request.app[RUNNER].start(request.app[SETTINGS].test_stories_dir, model, mode, member.username)
    except RunBusy:
        error = "已有一次测试在运行，请等它结束。"
        return render(request, "message.html", status=409, error=error, back="/ops/stories")
    await in_bank(
        request, lambda s: ops_accounts.audit(s, member, "run_stories", f"{run.id} {mode} {model.name}", "", now())
    )
    raise web.HTTPSeeOther(f"/ops/stories/runs/{run.id}")


@requires("tester")
async def run_page(request: web.Request) -> web.StreamResponse:
    runner = request.app[RUNNER]
    run = runner.get(request.match_info["run_id"])
    if run is None:
        raise web.HTTPNotFound(text="no such run")
    failed = await asyncio.to_thread(runner.failed, run.id) if run.finished else []
    passed = await asyncio.to_thread(runner.passed, run.id) if run.finished else []
    return render(
        request,
        "story_run.html",
        run=run,
        phase=runner.phase(run.id) if not run.finished else "",
        log=runner.log_tail(run.id) if run.state in ("running", "error", "interrupted") else "",
        failed=failed,
        passed=passed,
        states=STATE_NAMES,
        modes=MODE_NAMES,
        kinds=KIND_NAMES,
    )


@requires("tester")
async def conversations_page(request: web.Request) -> web.StreamResponse:
    channel = request.query.get("channel") or None
    try:
        offset = max(0, int(request.query.get("offset", "0")))
    except ValueError:
        offset = 0
    tracker = request.app[TRACKER]

    def load(session: Any) -> tuple[list[Any], list[str]]:
        inbox.sync(session, tracker)
        last = func.max(OpsInboxItem.ts)
        query = select(OpsInboxItem.conversation, OpsInboxItem.channel, func.count(), last).group_by(
            OpsInboxItem.conversation, OpsInboxItem.channel
        )
        if channel:
            query = query.where(OpsInboxItem.channel == channel)
        rows = session.execute(query.order_by(last.desc()).offset(offset).limit(CONVERSATIONS_PAGE + 1)).all()
        return [tuple(row) for row in rows], inbox.channels(session)

    rows, channels = await in_bank(request, load)
    return render(
        request,
        "story_conversations.html",
        rows=rows[:CONVERSATIONS_PAGE],
        more=len(rows) > CONVERSATIONS_PAGE,
        channel=channel or "",
        channels=channels,
        offset=offset,
        size=CONVERSATIONS_PAGE,
        query=urlencode({"channel": channel} if channel else {}),
    )


async def _sessions(request: web.Request, sender: str) -> list[story_files.Session]:
    rows = await asyncio.to_thread(story_files.read_conversation, request.app[TRACKER], sender)
    slots = await asyncio.to_thread(story_files.featurized_slots, DOMAIN)
    return story_files.sessions(rows, slots)


@requires("tester")
async def conversation_page(request: web.Request) -> web.StreamResponse:
    sender = request.query.get("sender", "").strip()
    if not sender:
        raise web.HTTPSeeOther("/ops/stories/conversations")
    found = await _sessions(request, sender)
    directory = request.app[SETTINGS].test_stories_dir
    files = [p.name for p in story_files.test_files(directory) if p.name.startswith("test_")]
    previews = {s.first_event_id: story_files.story_yaml("（故事名）", s.steps) for s in found}
    return render(
        request,
        "story_conversation.html",
        sender=sender,
        sessions=list(reversed(found))[:20],
        previews=previews,
        files=files,
        default_file=story_files.DEFAULT_FILE,
        kinds=KIND_NAMES,
    )


@requires("tester")
async def save_conversation(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    member = request[MEMBER]
    sender = str(form.get("sender", "")).strip()
    back = "/ops/stories/conversations/view?" + urlencode({"sender": sender})
    try:
        first_event = int(str(form.get("session", "")))
    except ValueError:
        raise web.HTTPBadRequest(text="which session?") from None
    session = next((s for s in await _sessions(request, sender) if s.first_event_id == first_event), None)
    if session is None:
        raise web.HTTPNotFound(text="no such conversation session in the tracker store")
    directory = request.app[SETTINGS].test_stories_dir
    chosen = str(form.get("file", "")).strip()
    file_name = str(form.get("new_file", "")).strip() if chosen == "__new__" else chosen
    try:
        saved = await asyncio.to_thread(
            story_files.save_story, directory, file_name, str(form.get("name", "")), session.steps
        )
    except story_files.StoryEditError as error:
        status = 409 if error.kind == "duplicate" else 400
        return render(request, "message.html", status=status, error=str(error), back=back)
    name = story_files.check_name(str(form.get("name", "")))
    await in_bank(
        request,
        lambda s: ops_accounts.audit(
            s, member, "save_story", f"{saved.file} {name} (from {sender}#{first_event})", saved.diff, now()
        ),
    )
    raise web.HTTPSeeOther("/ops/stories?" + urlencode({"msg": f"已保存为测试故事“{name}”（{saved.file}）。"}))


async def _runner(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    runner = StoryRunner(settings.var_dir / "story-runs", PROJECT_ROOT / ".venv-rasa" / "bin" / "python", PROJECT_ROOT)
    await asyncio.to_thread(runner.recover)
    app[RUNNER] = runner
    yield
    await runner.close()


def register(app: web.Application) -> None:
    app.cleanup_ctx.append(_runner)
    app.router.add_get("/ops/stories", stories_page)
    app.router.add_post("/ops/stories/run", start_run)
    app.router.add_get("/ops/stories/runs/{run_id}", run_page)
    app.router.add_get("/ops/stories/conversations", conversations_page)
    app.router.add_get("/ops/stories/conversations/view", conversation_page)
    app.router.add_post("/ops/stories/conversations/save", save_conversation)

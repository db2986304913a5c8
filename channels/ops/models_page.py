"""The console's models page (/ops/models): train a candidate, see the gate, promote it, roll back.

The work runs in a separate process (`python -m bankbot rasa-model job ID`: the gateway does not import the
tooling layer), which reports its phase, percentage and log tail in the job's row; this page shows it and
reloads itself while a job runs. Viewers see the page; only ops start jobs. One job at a time
(`bankcore.model_registry`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bankcore import model_registry
from bankcore.model_registry import JobBusy
from bankcore.settings import PROJECT_ROOT
from channels.ops.pages import MEMBER, in_bank, now, render, requires
from channels.rasa_client import RasaUnavailable
from channels.resources import RASA, SETTINGS

logger = logging.getLogger(__name__)

# The job process, in this interpreter's environment (the project's .venv).
JOB_COMMAND = ("-m", "bankbot", "rasa-model", "job")
WATCHERS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("ops_model_job_watchers")
# While a job runs the page reloads itself this often (an HTTP Refresh header: no script needed).
REFRESH_SECONDS = 2

PHASES = {
    "queued": "排队中",
    "preparing": "准备",
    "training": "训练",
    "evaluating_candidate": "评估候选模型",
    "evaluating_serving": "评估在线模型",
    "gate": "门槛判定",
    "loading": "加载到 Rasa",
    "recording": "记录",
    "done": "完成",
}
KINDS = {"train": "训练并评估", "promote": "上线", "rollback": "回滚"}
STATES = {"queued": "排队中", "running": "运行中", "succeeded": "成功", "failed": "失败"}
MODEL_STATUSES = {"candidate": "候选（通过门槛）", "refused": "未通过门槛", "serving": "在线", "retired": "已下线"}
CHECKS = {"intent_accuracy": "意图准确率", "intent_macro_f1": "意图宏平均 F1", "stories": "测试故事"}


def _error_text(error: str) -> str:
    if error == "stale":
        return "作业进程已停止报告进度（崩溃或被终止），作业记为失败。"
    return error


@requires("viewer")
async def models_page(request: web.Request) -> web.StreamResponse:
    def load(session: Any) -> tuple[list[Any], list[Any], set[int]]:
        model_registry.fail_stale_jobs(session, now())
        targets = {m.id for m in model_registry.rollback_targets(session)}
        return model_registry.models(session), model_registry.recent_jobs(session), targets

    models, jobs, rollback_ids = await in_bank(request, load)
    try:
        status: dict[str, Any] = await request.app[RASA].status()
        rasa_error = ""
    except RasaUnavailable as error:
        status, rasa_error = {}, str(error)
    active = next((job for job in jobs if job.active), None)
    response = render(
        request,
        "models.html",
        models=models,
        jobs=jobs,
        active=active,
        rollback_ids=rollback_ids,
        rasa_status=status,
        rasa_error=rasa_error,
        can_run=request[MEMBER].can("ops"),
        phases=PHASES,
        kinds=KINDS,
        states=STATES,
        model_statuses=MODEL_STATUSES,
        checks=CHECKS,
        error_text=_error_text,
    )
    if active is not None:
        response.headers["Refresh"] = str(REFRESH_SECONDS)
    return response


@requires("viewer")
async def job_json(request: web.Request) -> web.StreamResponse:
    try:
        job_id = int(request.match_info["job_id"])
    except ValueError as error:
        raise web.HTTPNotFound() from error

    def load(session: Any) -> Any:
        model_registry.fail_stale_jobs(session, now())
        return model_registry.job(session, job_id)

    job = await in_bank(request, load)
    if job is None:
        raise web.HTTPNotFound()
    body = {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "phase": job.phase,
        "progress": job.progress,
        "log_tail": job.log_tail,
        "error": job.error,
        "model_id": job.model_id,
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def _start(request: web.Request, kind: str, model_id: int | None) -> web.StreamResponse:
    member = request[MEMBER]
    try:
        job_id = await in_bank(request, lambda s: model_registry.start_job(s, kind, member.username, now(), model_id))
    except JobBusy:
        return render(request, "message.html", status=409, error="已有模型作业在运行，请等它结束。", back="/ops/models")
    await _spawn(request.app, job_id)
    logger.info("model job started", extra={"user": member.username, "job": job_id, "kind": kind})
    raise web.HTTPSeeOther("/ops/models?" + urlencode({"msg": f"已开始{KINDS[kind]}（作业 {job_id}）。"}))


async def _spawn(app: web.Application, job_id: int) -> None:
    settings = app[SETTINGS]
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    # The job gets this gateway's settings (database, Rasa, NLU directory...), whatever their source.
    env = {**os.environ, **settings.extra}
    try:
        with open(settings.log_dir / f"model-job-{job_id}.log", "ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *JOB_COMMAND,
                str(job_id),
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a training outlives a gateway restart and is not hit by the gateway's signals.
                start_new_session=True,
            )
    except OSError as error:
        await _fail(app, job_id, f"the job process could not start: {error}")
        return
    task = asyncio.create_task(_watch(app, job_id, process))
    app[WATCHERS].add(task)
    task.add_done_callback(app[WATCHERS].discard)


async def _watch(app: web.Application, job_id: int, process: asyncio.subprocess.Process) -> None:
    """A job process that dies without finishing its job (killed, crashed) fails the job at once."""
    code = await process.wait()
    if code != 0:
        await _fail(app, job_id, f"the job process exited with {code}")


async def _fail(app: web.Application, job_id: int, error: str) -> None:
    from bankcore.database import unit_of_work
    from channels.resources import SESSION_FACTORY

    def run() -> None:
        with unit_of_work(app[SESSION_FACTORY]) as session:
            model_registry.finish_job(session, job_id, now(), error=error)

    await asyncio.to_thread(run)


@requires("ops")
async def train(request: web.Request) -> web.StreamResponse:
    return await _start(request, "train", None)


def _model_id(request: web.Request) -> int:
    try:
        return int(request.match_info["model_id"])
    except ValueError as error:
        raise web.HTTPNotFound() from error


@requires("ops")
async def promote(request: web.Request) -> web.StreamResponse:
    model_id = _model_id(request)
    entry = await in_bank(request, lambda s: model_registry.model(s, model_id))
    if entry is None:
        raise web.HTTPNotFound()
    if entry.status != "candidate" or not entry.gate.get("passed"):
        return render(request, "message.html", status=409, error="只有通过门槛的候选模型可以上线。", back="/ops/models")
    return await _start(request, "promote", model_id)


@requires("ops")
async def rollback(request: web.Request) -> web.StreamResponse:
    model_id = _model_id(request)
    targets = await in_bank(request, lambda s: {m.id for m in model_registry.rollback_targets(s)})
    if model_id not in targets:
        return render(
            request,
            "message.html",
            status=409,
            error=f"只能回滚到最近 {model_registry.KEEP_FOR_ROLLBACK} 个上线过的模型。",
            back="/ops/models",
        )
    return await _start(request, "rollback", model_id)


async def _watchers(app: web.Application) -> Any:
    app[WATCHERS] = set()
    yield
    # The jobs themselves go on (they report to the database); only the watching stops.
    watchers: set[asyncio.Task[None]] = app[WATCHERS]
    for task in list(watchers):
        task.cancel()


def register(app: web.Application) -> None:
    app.cleanup_ctx.append(_watchers)
    app.router.add_get("/ops/models", models_page)
    app.router.add_get("/ops/models/jobs/{job_id}", job_json)
    app.router.add_post("/ops/models/train", train)
    app.router.add_post("/ops/models/{model_id}/promote", promote)
    app.router.add_post("/ops/models/{model_id}/rollback", rollback)

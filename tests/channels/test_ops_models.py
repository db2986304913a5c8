"""The console's models page: roles per endpoint, one job at a time, a crashed job shown failed, the gate's rule,
the candidate's input hash, and the held-out file the gate scores on."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from bankbot.layout import ProjectLayout
from bankbot.models_cli import candidate_hash, heldout_file, intent_scores
from bankbot.training import inputs_hash
from bankcore import model_registry, ops_accounts
from bankcore.database import unit_of_work
from bankcore.model_registry import EvaluationFigures, JobBusy, gate
from bankcore.models import OpsModelJob
from bankcore.nlu_lint import fold_text, load_nlu
from tests.channels.test_ops_console import PASSWORD, console, nlu_dir, sign_in  # noqa: F401 (fixtures)

NOW = dt.datetime.now(dt.UTC)


def figures(accuracy: float, f1: float, failed: list[str], total: int = 10) -> EvaluationFigures:
    return EvaluationFigures(accuracy, f1, 168, total - len(failed), total, failed)


# --- the gate -----------------------------------------------------------------------------------------------


def test_the_gate_passes_a_candidate_no_worse_within_one_point() -> None:
    serving = figures(0.90, 0.89, ["transfer happy path"])
    assert gate(figures(0.90, 0.89, ["transfer happy path"]), serving).passed
    assert gate(figures(0.895, 0.882, []), serving).passed  # one held-out sentence flipped: noise
    assert gate(figures(0.95, 0.95, []), serving).passed


def test_the_gate_refuses_lower_accuracy_lower_f1_or_a_story_that_passed_before() -> None:
    serving = figures(0.90, 0.89, ["a"])
    worse = gate(figures(0.85, 0.89, ["a"]), serving)
    assert not worse.passed and worse.failed_checks == ["intent_accuracy"]
    assert gate(figures(0.90, 0.87, ["a"]), serving).failed_checks == ["intent_macro_f1"]
    # As many stories pass as before, but a different one fails: a story that worked breaks.
    swapped = gate(figures(0.90, 0.89, ["b"]), serving)
    assert not swapped.passed and swapped.failed_checks == ["stories"] and swapped.newly_failing_stories == ["b"]


def test_intent_scores_count_a_fallback_as_a_miss() -> None:
    accuracy, macro_f1 = intent_scores(["a", "a", "b", "b"], ["a", "nlu_fallback", "b", "b"])
    assert accuracy == 0.75
    # a: P=1 R=.5 F1=.667; b: P=1 R=1 F1=1
    assert abs(macro_f1 - (2 / 3 + 1) / 2) < 1e-9


# --- inputs and held-out data --------------------------------------------------------------------------------


def test_a_candidate_of_unchanged_data_has_the_serving_models_hash(tmp_path: Path) -> None:
    layout = ProjectLayout()
    assert candidate_hash(layout, layout.nlu_data) == inputs_hash(layout)
    copy = tmp_path / "nlu_data"
    copy.mkdir()
    for path in layout.nlu_data.glob("*.yml"):
        shutil.copy(path, copy / path.name)
    assert candidate_hash(layout, copy) == inputs_hash(layout)  # the jieba dictionaries come from the project
    with (copy / "accounts.yml").open("a", encoding="utf-8") as handle:
        handle.write("    - 帮我看一下卡里余额剩多少\n")
    assert candidate_hash(layout, copy) != inputs_hash(layout)


def test_the_held_out_sentences_cover_every_intent_and_none_is_a_training_example() -> None:
    layout = ProjectLayout()
    heldout = load_nlu(heldout_file(layout).parent)
    training = load_nlu(layout.nlu_data)
    assert not heldout.issues
    seen: dict[str, str] = {fold_text(e.text): e.intent for e in training.examples}
    copies = [(e.intent, e.text, seen[fold_text(e.text)]) for e in heldout.examples if fold_text(e.text) in seen]
    assert copies == []
    per_intent: dict[str, int] = {}
    for example in heldout.examples:
        per_intent[example.intent] = per_intent.get(example.intent, 0) + 1
    # Every intent customers type (those with training examples; not the gateway's own triggers).
    assert set(per_intent) == {e.intent for e in training.examples}
    assert min(per_intent.values()) >= 5
    assert len({fold_text(e.text) for e in heldout.examples}) == len(heldout.examples)


def test_training_never_reads_the_held_out_file() -> None:
    layout = ProjectLayout()
    from bankbot.training import training_inputs

    assert heldout_file(layout) not in training_inputs(layout)
    assert not heldout_file(layout).is_relative_to(layout.test_stories)  # `rasa test core` reads bot/tests


# --- jobs ---------------------------------------------------------------------------------------------------


def test_only_one_job_at_a_time_and_a_silent_job_is_failed(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        first = model_registry.start_job(session, "train", "olivia", NOW)
    with unit_of_work(session_factory) as session, pytest.raises(JobBusy):
        model_registry.start_job(session, "train", "olivia", NOW + dt.timedelta(seconds=30))
    later = NOW + model_registry.STALE_AFTER + dt.timedelta(seconds=1)
    with unit_of_work(session_factory) as session:
        second = model_registry.start_job(session, "train", "olivia", later)
        old = model_registry.job(session, first)
        assert old is not None and old.state == "failed" and old.error == "stale"
        assert second != first


def test_promoting_retires_the_serving_model_and_keeps_five_for_rollback(
    session_factory: sessionmaker[Session],
) -> None:
    ids = []
    with unit_of_work(session_factory) as session:
        for i in range(8):
            ids.append(
                model_registry.record_model(
                    session,
                    file_name=f"bankbot-{i:016x}.tar.gz",
                    data_hash=f"{i:016x}",
                    fingerprint=str(i),
                    trained_by="olivia",
                    trained_at=NOW,
                    status="candidate",
                )
            )
        dropped: list[str] = []
        for i, model_id in enumerate(ids):
            dropped += model_registry.mark_serving(session, model_id, "olivia", NOW + dt.timedelta(minutes=i))
        serving = model_registry.serving(session)
        assert serving is not None and serving.id == ids[-1]
        targets = model_registry.rollback_targets(session)
        assert [m.id for m in targets] == ids[-2:-7:-1]
        # Seven served before the last; the five newest stay rollback targets, the two oldest files may go.
        assert set(dropped) == {"bankbot-0000000000000000.tar.gz", "bankbot-0000000000000001.tar.gz"}


# --- the page, per role -------------------------------------------------------------------------------------


async def test_viewers_and_testers_see_the_page_but_cannot_start_jobs(console: TestClient[Any, Any]) -> None:  # noqa: F811
    for username in ("vera", "tess"):
        csrf = await sign_in(console, username)
        page = await console.get("/ops/models")
        text = await page.text()
        assert page.status == 200 and "模型登记" in text
        assert "/ops/models/train" not in text  # no buttons for them
        assert "models/test.tar.gz" in text  # what Rasa says it serves
        for path in ("/ops/models/train", "/ops/models/1/promote", "/ops/models/1/rollback"):
            refused = await console.post(path, data={"csrf": csrf})
            assert refused.status == 403, (username, path)
        await console.post("/ops/logout", data={"csrf": csrf})


async def test_signed_out_and_forged_requests_are_refused(console: TestClient[Any, Any]) -> None:  # noqa: F811
    page = await console.get("/ops/models", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/ops/login"
    assert (await console.get("/ops/models/jobs/1", allow_redirects=False)).status == 303
    for path in ("/ops/models/train", "/ops/models/1/promote", "/ops/models/1/rollback"):
        assert (await console.post(path, data={})).status == 401
    await sign_in(console, "olivia")
    for path in ("/ops/models/train", "/ops/models/1/promote", "/ops/models/1/rollback"):
        assert (await console.post(path, data={"csrf": "forged"})).status == 403


async def test_ops_cannot_promote_a_refused_model_nor_roll_back_to_one_that_never_served(
    console: TestClient[Any, Any],  # noqa: F811
    session_factory: sessionmaker[Session],
) -> None:
    with unit_of_work(session_factory) as session:
        refused = model_registry.record_model(
            session,
            file_name="bankbot-00000000000000aa.tar.gz",
            data_hash="00000000000000aa",
            fingerprint="",
            trained_by="olivia",
            trained_at=NOW,
            status="refused",
            gate_record={"passed": False, "failed_checks": ["intent_accuracy"]},
        )
    csrf = await sign_in(console, "olivia")
    response = await console.post(f"/ops/models/{refused}/promote", data={"csrf": csrf})
    assert response.status == 409 and "只有通过门槛的候选模型可以上线" in await response.text()
    response = await console.post(f"/ops/models/{refused}/rollback", data={"csrf": csrf})
    assert response.status == 409
    assert (await console.post("/ops/models/999/promote", data={"csrf": csrf})).status == 404
    with unit_of_work(session_factory) as session:
        assert session.query(OpsModelJob).count() == 0


async def _job_when_done(client: TestClient[Any, Any], job_id: int, timeout: float = 60.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body: dict[str, Any] = await (await client.get(f"/ops/models/jobs/{job_id}")).json()
        if body["state"] in ("succeeded", "failed") or asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.2)


async def test_a_training_job_runs_in_its_own_process_and_reports_why_it_failed(
    console: TestClient[Any, Any],  # noqa: F811
) -> None:
    """The fake Rasa serves a model file that exists nowhere: the job process fails and says so; one at a time."""
    csrf = await sign_in(console, "olivia")
    response = await console.post("/ops/models/train", data={"csrf": csrf}, allow_redirects=False)
    assert response.status == 303
    busy = await console.post("/ops/models/train", data={"csrf": csrf})
    page = await (await console.get("/ops/models")).text()
    match = re.search(r'data-job="(\d+)"', page)
    assert match
    job_id = int(match.group(1))
    body = await _job_when_done(console, job_id)
    assert body["state"] == "failed", body
    assert "test.tar.gz" in body["error"] and "not in var/models" in body["error"]
    assert busy.status in (409, 303)  # refused while the first was queued or running (or it had already failed)
    page = await (await console.get("/ops/models")).text()
    assert "失败" in page and "/ops/models/train" in page  # the slot is free again


@pytest.fixture
async def hung_rasa() -> AsyncIterator[str]:
    """A Rasa that accepts connections and never answers /status (hung, overloaded)."""
    release = asyncio.Event()

    async def status(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/status", status)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    release.set()
    await server.close()


async def test_a_job_process_that_dies_is_shown_failed_and_frees_the_slot(
    start_gateway: Callable[..., Any],
    hung_rasa: str,
    nlu_dir: Path,  # noqa: F811
    session_factory: sessionmaker[Session],
) -> None:
    with unit_of_work(session_factory) as session:
        ops_accounts.add_user(session, "olivia", PASSWORD, "ops", NOW)
    client: TestClient[Any, Any] = await start_gateway(hung_rasa, BANKBOT_NLU_DATA_DIR=str(nlu_dir))
    csrf = await sign_in(client, "olivia")
    assert (await client.post("/ops/models/train", data={"csrf": csrf}, allow_redirects=False)).status == 303
    pid = None
    for _ in range(300):  # the job process claims its job and asks Rasa which model serves (no answer)
        with unit_of_work(session_factory) as session:
            job = session.query(OpsModelJob).one()
            pid, job_id = job.pid, job.id
        if pid:
            break
        await asyncio.sleep(0.1)
    assert pid, "the job process never claimed its job"
    os.kill(pid, signal.SIGKILL)
    body = await _job_when_done(client, job_id, timeout=20)
    assert body["state"] == "failed" and "exited with -9" in body["error"], body
    # A job whose process vanished without the gateway seeing it (gateway restarted) fails by its silence.
    with unit_of_work(session_factory) as session:
        second = model_registry.start_job(session, "train", "olivia", NOW)
        session.execute(
            update(OpsModelJob)
            .where(OpsModelJob.id == second)
            .values(heartbeat_at=NOW - model_registry.STALE_AFTER - dt.timedelta(seconds=5))
        )
    page = await (await client.get("/ops/models")).text()
    assert "作业进程已停止报告进度" in page

"""Models in headless Chromium against a real Rasa server: after an ops edit, train a candidate and see it pass
the gate; a candidate of damaged data is refused with its numbers; promote (PUT /model, checked with GET
/status), then roll back with one click; both in the audit log.

Candidates are cached by the hash of their inputs and evaluations by (model, data), so after the first run on
a machine the jobs take seconds; the first run trains two NLU variants (see docs/ops-console.md).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy.orm import Session, sessionmaker

from bankbot.layout import ProjectLayout
from bankbot.models_cli import model_fingerprint
from bankbot.stack import Stack, free_port
from bankbot.training import ensure_trained
from bankcore import ops_accounts
from bankcore.database import unit_of_work
from tests.browser.test_webchat_browser import CHROMIUM, CHROMIUM_ARGS
from tests.channels.support import RASA_TOKEN, SECRET_KEY
from tests.channels.test_ops_console import NOW, PASSWORD, nlu_dir  # noqa: F401 (fixture)

# A first run on a new machine trains two candidates; later runs take a few minutes (the Rasa start, two loads).
pytestmark = [pytest.mark.browser, pytest.mark.rasa, pytest.mark.timeout(2400)]

# The ops edit: one new way to ask for the balance (in neither the training data nor the held-out file).
NEW_EXAMPLE = "帮我看一下卡里余额剩多少"
# A first training on a new machine (NLU only: Rasa's cache keeps the dialogue policies) takes minutes.
JOB_TIMEOUT_S = 20 * 60


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        await chromium.close()


@pytest.fixture
def serving_model() -> Path:
    return ensure_trained(ProjectLayout(), log=False)


@pytest.fixture
def rasa_server(tmp_path: Path, database_url: str, serving_model: Path) -> Iterator[str]:
    """The real Rasa server alone (no action server: the console only loads models and reads /status)."""
    env = {
        "BANKBOT_VAR_DIR": str(tmp_path / "var"),  # the gateway's var directory too (make_settings)
        "BANKBOT_DATABASE_URL": database_url,
        "BANKBOT_RASA_URL": f"http://127.0.0.1:{free_port()}",
        "BANKBOT_RASA_TOKEN": RASA_TOKEN,
        "BANKBOT_SECRET_KEY": SECRET_KEY,
        "BANKBOT_ACTION_URL": f"http://127.0.0.1:{free_port()}/webhook",
        "BANKBOT_SCHEDULER": "0",
    }
    stack = Stack(ProjectLayout(), env, serving_model, only=frozenset({"rasa"}))
    stack.start()
    try:
        yield env["BANKBOT_RASA_URL"]
    finally:
        stack.stop()


def rasa_status(rasa_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{rasa_url}/status?token={RASA_TOKEN}", timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


async def run_job(page: Page, base: str, button: str) -> dict[str, Any]:
    """Click a job's button, see its progress on the page, wait for the end; returns the job as JSON."""
    await page.click(button)
    await page.wait_for_url("**/ops/models?msg=*")
    assert "已开始" in await page.inner_text("[role=status]")
    active = page.locator("#active-job")
    job_id = await active.get_attribute("data-job")  # queued or running: the job process starts in its own time
    assert job_id is not None
    assert await active.locator("progress").count() == 1
    deadline = asyncio.get_running_loop().time() + JOB_TIMEOUT_S
    while True:
        job: dict[str, Any] = await (await page.request.get(f"{base}/ops/models/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed"):
            break
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(1)
    await page.goto(f"{base}/ops/models")
    return job


async def test_train_refuse_promote_and_roll_back_in_the_browser(
    browser: Browser,
    start_gateway: Callable[..., Any],
    rasa_server: str,
    serving_model: Path,
    nlu_dir: Path,  # noqa: F811
    session_factory: sessionmaker[Session],
) -> None:
    with unit_of_work(session_factory) as session:
        ops_accounts.add_user(session, "olivia", PASSWORD, "ops", NOW)
    client = await start_gateway(rasa_server, BANKBOT_NLU_DATA_DIR=str(nlu_dir))
    base = str(client.make_url("")).rstrip("/")
    page = await browser.new_page(locale="zh-CN")
    page.set_default_timeout(30_000)
    await page.goto(f"{base}/ops/login")
    await page.fill("input[name=username]", "olivia")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/ops/inbox")

    await page.goto(f"{base}/ops/models")
    assert await page.inner_text("#serving-file") == serving_model.name

    # An ops edit through the console: one more example of check_balance.
    csrf = await page.get_attribute("input[name=csrf]", "value")
    added = await page.request.post(
        f"{base}/ops/intents/check_balance/examples", form={"csrf": csrf or "", "text": NEW_EXAMPLE}
    )
    assert added.ok
    accounts = nlu_dir / "accounts.yml"
    edited = accounts.read_text(encoding="utf-8")
    assert f"- {NEW_EXAMPLE}" in edited

    # Train: the candidate is scored beside the serving model and passes.
    job = await run_job(page, base, "button[value=train]")
    assert job["state"] == "succeeded", job
    candidate = page.locator(f"article#model-{job['model_id']}")
    candidate_file = await candidate.get_attribute("data-file")
    assert candidate_file and candidate_file != serving_model.name
    assert "候选（通过门槛）" in await candidate.locator(".status").inner_text()
    assert "门槛结论：通过" in await candidate.locator(".decision").inner_text()
    gate_text = await candidate.locator("table.gate").inner_text()
    assert "意图准确率" in gate_text and "测试故事通过" in gate_text and serving_model.name in gate_text
    assert rasa_status(rasa_server)["model_file"] == serving_model.name  # nothing goes live by training

    # Damaged data (check_balance's examples relabelled as transaction_history): refused, with its numbers.
    accounts.write_text(
        edited.replace("- intent: check_balance\n", "- intent: transaction_history\n"), encoding="utf-8"
    )
    job = await run_job(page, base, "button[value=train]")
    assert job["state"] == "succeeded", job
    refused = page.locator(f"article#model-{job['model_id']}")
    assert "未通过门槛" in await refused.locator(".status").inner_text()
    assert "门槛结论：不通过" in await refused.locator(".decision").inner_text()
    serving_accuracy = float((await refused.locator(".serving-accuracy").inner_text()).rstrip("%"))
    refused_accuracy = float((await refused.locator(".candidate-accuracy").inner_text()).rstrip("%"))
    assert refused_accuracy < serving_accuracy - 1.0, (refused_accuracy, serving_accuracy)
    assert await refused.locator("button[value=promote]").count() == 0
    accounts.write_text(edited, encoding="utf-8")

    # Promote the good candidate: Rasa loads it (PUT /model) and says so on GET /status.
    job = await run_job(page, base, f"article[data-file='{candidate_file}'] button[value=promote]")
    assert job["state"] == "succeeded", job
    status = rasa_status(rasa_server)
    layout = ProjectLayout()
    assert status["model_file"] == candidate_file
    assert status["model_id"] == model_fingerprint(layout.cache / "models" / candidate_file)
    assert await page.inner_text("#serving-file") == candidate_file
    assert "在线" in await page.locator(f"article[data-file='{candidate_file}'] .status").inner_text()

    # One click back to the model that served before.
    job = await run_job(page, base, f"article[data-file='{serving_model.name}'] button[value=rollback]")
    assert job["state"] == "succeeded", job
    assert rasa_status(rasa_server)["model_file"] == serving_model.name
    assert await page.inner_text("#serving-file") == serving_model.name
    assert "已下线" in await page.locator(f"article[data-file='{candidate_file}'] .status").inner_text()

    await page.goto(f"{base}/ops/audit")
    audit = await page.inner_text("main")
    assert "model_gate_passed" in audit and "model_gate_refused" in audit
    assert "model_promoted" in audit and "model_rolled_back" in audit
    assert f"+serving {candidate_file}" in audit and f"+serving {serving_model.name}" in audit

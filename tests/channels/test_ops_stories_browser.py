"""A tester in headless Chromium: saves a real conversation as a test story, then reads a failed story of a run as
a diff of expected and actual turns.

The run shown is a finished one whose results are Rasa's own files from a real run (tests/data/ops_stories,
regenerate.sh): `test_ops_stories.py` starts a real `rasa test core` through the console already, and one model
load (about a minute on 2 cores) is what CI can afford."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, async_playwright

from channels.ops import story_files
from channels.ops.story_runs import StoryRun
from tests.browser.test_webchat_browser import CHROMIUM, CHROMIUM_ARGS
from tests.channels.test_ops_console import PASSWORD
from tests.channels.test_ops_stories import DATA, console, models_dir, stories_dir  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


def _plant_finished_run(folder: Path) -> None:
    (folder / "results").mkdir(parents=True)
    (folder / "stories").mkdir()
    shutil.copy(DATA / "test_deliberately_failing.yml", folder / "stories")
    for name in ("failed_test_stories", "successful_test_stories"):
        shutil.copy(DATA / f"{name}_core.yml", folder / "results" / f"{name}.yml")
    run = StoryRun(
        folder.name,
        "failed",
        "core",
        "tess",
        "test.tar.gz",
        "2026-12-01T08:00:00+00:00",
        finished_at="2026-12-01T08:01:10+00:00",
        returncode=0,
        total=25,
        failed=2,
        stories="bot/tests",
    )
    (folder / "run.json").write_text(json.dumps(asdict(run)), encoding="utf-8")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        await chromium.close()


async def test_a_tester_saves_a_conversation_and_reads_a_failed_story_as_a_diff(
    browser: Browser,
    console: TestClient[Any, Any],  # noqa: F811
    stories_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    _plant_finished_run(tmp_path / "var" / "story-runs" / "20261201T080000-abcdef")
    base = str(console.make_url("")).rstrip("/")
    page = await browser.new_page(locale="zh-CN")
    page.set_default_timeout(15_000)
    await page.goto(f"{base}/ops/login")
    await page.fill("input[name=username]", "tess")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/ops/inbox")

    await page.click("text=测试故事")
    await page.wait_for_url("**/ops/stories")
    await page.click("text=从真实会话新建测试故事")
    await page.click("text=webchat:C002")
    assert "北京朝阳区" in await page.inner_text("table.turns")
    form = page.locator("form.save-story").first
    await form.locator("input[name=name]").fill("网点查询（来自真实会话）")
    await form.locator("button[type=submit]").click()
    await page.wait_for_url("**/ops/stories?*")
    assert "已保存为测试故事" in await page.inner_text("[role=status]")
    assert "网点查询（来自真实会话）" in (stories_dir / story_files.DEFAULT_FILE).read_text(encoding="utf-8")

    await page.click("table.runs a")
    await page.wait_for_url("**/ops/stories/runs/*")
    assert await page.get_attribute("#run-state", "data-state") == "failed"
    failed = page.locator("section.failed-story", has_text="deliberately failing greeting")
    rows = failed.locator("tbody tr")
    assert await rows.nth(0).locator("td.words").inner_text() == "你好"
    wrong = failed.locator("tr.wrong")
    assert await wrong.count() == 2
    assert await wrong.nth(0).locator("td.expected").inner_text() == "utter_goodbye"
    assert await wrong.nth(0).locator("td.actual").inner_text() == "action_greet"
    assert "balance" in await page.inner_text("ul.passed")

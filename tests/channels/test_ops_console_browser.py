"""The ops console in headless Chromium: sign in, correct an inbox item, see the YAML line in the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, async_playwright

from tests.browser.test_webchat_browser import CHROMIUM, CHROMIUM_ARGS
from tests.channels.test_ops_console import PASSWORD, console, nlu_dir  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        await chromium.close()


async def test_ops_correct_an_inbox_item_in_the_browser(
    browser: Browser, console: TestClient[Any, Any], nlu_dir: Path  # noqa: F811
) -> None:
    base = str(console.make_url("")).rstrip("/")
    page = await browser.new_page(locale="zh-CN")
    page.set_default_timeout(15_000)
    await page.goto(f"{base}/ops/")
    assert page.url.endswith("/ops/login")
    await page.fill("input[name=username]", "olivia")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/ops/inbox")

    row = page.locator("tr", has_text="帮我看看活期里还有几块钱")
    await row.locator("select[name=intent]").select_option("check_balance")
    await row.locator("input[name=entities]").fill("4-6:account_type")
    await row.locator("button[value=save]").click()
    await page.wait_for_selector("[role=status]")
    assert "已写入 accounts.yml" in await page.inner_text("[role=status]")
    assert "    - 帮我看看[活期](account_type)里还有几块钱" in (nlu_dir / "accounts.yml").read_text()

    await page.click("text=操作日志")
    await page.wait_for_url("**/ops/audit")
    assert "+    - 帮我看看[活期](account_type)里还有几块钱" in await page.inner_text("pre.diff")
    await page.click("text=退出")
    await page.wait_for_url("**/ops/login")

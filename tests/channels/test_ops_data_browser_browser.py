"""Entity marking in headless Chromium: select words of an inbox message with the mouse, pick the entity, save, and
find the annotated example in the YAML; the same by keyboard selection in the add-example form."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page, async_playwright

from tests.browser.test_webchat_browser import CHROMIUM, CHROMIUM_ARGS
from tests.channels.test_ops_console import PASSWORD, console, nlu_dir  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser

MESSAGE = "帮我看看活期里还有几块钱"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        await chromium.close()


async def drag_over_characters(page: Page, selector: str, start: int, end: int) -> None:
    """Press the mouse on character `start` of the element's text and release it on character `end - 1`."""
    box = await page.locator(selector).evaluate(
        """(cell, [start, end]) => {
            const node = cell.firstChild;
            const at = (i) => { const r = document.createRange(); r.setStart(node, i); r.setEnd(node, i + 1);
                                return r.getBoundingClientRect(); };
            const first = at(start), last = at(end - 1);
            return [first.left + 1, first.top + first.height / 2, last.right - 1, last.top + last.height / 2];
        }""",
        [start, end],
    )
    await page.mouse.move(box[0], box[1])
    await page.mouse.down()
    await page.mouse.move(box[2], box[3], steps=8)
    await page.mouse.up()


async def test_mark_an_entity_by_selecting_text_in_the_inbox_and_in_an_example(
    browser: Browser,
    console: TestClient[Any, Any],  # noqa: F811
    nlu_dir: Path,  # noqa: F811
) -> None:
    base = str(console.make_url("")).rstrip("/")
    page = await browser.new_page(locale="zh-CN")
    page.set_default_timeout(15_000)
    errors: list[str] = []  # script errors and failed loads (the browser's own favicon request aside)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "response",
        lambda response: (
            errors.append(f"{response.status} {response.url}")
            if response.status >= 400 and not response.url.endswith("/favicon.ico")
            else None
        ),
    )
    await page.goto(f"{base}/ops/login")
    await page.fill("input[name=username]", "olivia")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/ops/inbox")

    row = page.locator("tr", has_text=MESSAGE)
    await drag_over_characters(page, f'tr:has-text("{MESSAGE}") td.text', 4, 6)  # 活期
    picker = page.locator(".entity-picker")
    await picker.wait_for(state="visible")
    assert "“活期”" in await picker.locator(".entity-picker-text").inner_text()
    await picker.locator("select").select_option("account_type")
    await picker.locator("button.entity-mark").click()
    assert await row.locator("input[name=entities]").input_value() == "4-6:account_type"
    assert await row.locator("mark.entity").inner_text() == "活期"
    assert await picker.is_hidden()

    await row.locator("select[name=intent]").select_option("check_balance")
    await row.locator("button[value=save]").click()
    await page.wait_for_selector("[role=status]")
    assert "已写入 accounts.yml" in await page.inner_text("[role=status]")
    assert "    - 帮我看看[活期](account_type)里还有几块钱\n" in (nlu_dir / "accounts.yml").read_text(encoding="utf-8")

    # The add-example form: select with the keyboard (Shift+arrows) inside the text field.
    await page.goto(f"{base}/ops/intents#intent-check_balance")
    section = page.locator("#intent-check_balance")
    assert await section.get_by_text("帮我看看[活期](account_type)里还有几块钱").count() == 1
    field = section.locator("input[name=text]")
    await field.fill("麻烦查一下我工资卡里的钱")
    await field.press("Home")
    for _ in range(6):
        await field.press("ArrowRight")
    for _ in range(3):
        await field.press("Shift+ArrowRight")
    await picker.wait_for(state="visible")
    await picker.locator("select").select_option("account_type")
    await picker.locator("button.entity-mark").click()
    assert await field.input_value() == "麻烦查一下我[工资卡](account_type)里的钱"
    await section.locator("button[type=submit]").click()
    await page.wait_for_selector("[role=status]")
    assert "    - 麻烦查一下我[工资卡](account_type)里的钱\n" in (nlu_dir / "accounts.yml").read_text(encoding="utf-8")
    assert errors == []

"""The H5 web chat page in headless Chromium: a balance check and a complete transfer with a masked code."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Locator, Page, async_playwright
from sqlalchemy.orm import Session, sessionmaker

from bankcore import accounts, verification
from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from bankcore.money import format_amount
from bankcore.settings import Settings
from channels.app import create_app
from tests.channels.support import FakeRasa, latest_code, make_settings, seed_demo

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
# Debian's chromium, never Playwright's own download (it cannot be fetched here).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
REPORTS = Path(__file__).resolve().parents[2] / "reports"
OTP_MASK = "●●●●●●"
TURN_TIMEOUT_MS = 60_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        await chromium.close()


async def open_phone_page(browser: Browser, gateway_url: str) -> Page:
    context = await browser.new_context(
        viewport={"width": 390, "height": 844}, locale="zh-CN", is_mobile=True, has_touch=True
    )
    page = await context.new_page()
    page.set_default_timeout(TURN_TIMEOUT_MS)
    await page.goto(f"{gateway_url}/webchat/")
    return page


@dataclass
class Turn:
    """What the bot showed after one customer action: its bubbles' text and the quick replies offered."""

    texts: list[str]
    buttons: list[Locator]

    @property
    def text(self) -> str:
        return "\n".join(self.texts)

    async def button(self, predicate: Callable[[str, str], bool]) -> Locator | None:
        for button in self.buttons:
            title = await button.inner_text()
            payload = await button.get_attribute("data-payload") or ""
            if predicate(title, payload):
                return button
        return None


async def take_turn(page: Page, action: Callable[[], Any]) -> Turn:
    """Perform a customer action and wait until the bot's answer has been rendered."""
    log = page.locator("#log > li")
    before = await log.count()
    await action()
    # The page adds the customer's bubble and a typing bubble at once, and removes the latter on reply.
    await page.wait_for_function(
        "n => document.querySelectorAll('#log > li').length > n + 1 && !document.querySelector('#log .typing')",
        arg=before,
    )
    items = log
    texts: list[str] = []
    buttons: list[Locator] = []
    for index in range(before, await items.count()):
        item = items.nth(index)
        classes = await item.get_attribute("class") or ""
        if "bubble bot" in classes or "bubble system" in classes:
            texts.append(await item.inner_text())
        elif "quick-replies" in classes:
            buttons.extend(await item.locator("button").all())
    return Turn(texts, buttons)


async def type_message(page: Page, text: str) -> Turn:
    async def send() -> None:
        await page.fill("#message-input", text)
        await page.press("#message-input", "Enter")

    return await take_turn(page, send)


async def log_in(page: Page, customer_id: str) -> None:
    await page.fill("#customer-id", customer_id)
    await page.click("#login-button")
    await page.wait_for_selector("#message-input", state="visible")
    # The assistant speaks first: wait for its opening (the page is busy until then).
    await page.wait_for_function(
        "() => document.querySelector('#log .bubble.bot') && !document.querySelector('#log .typing')"
    )


def is_cancel(title: str, payload: str) -> bool:
    return payload.startswith(("/deny", "/cancel", "/stop")) or "取消" in title


def is_confirm(title: str, payload: str) -> bool:
    return payload.startswith("/affirm") or "确认" in title


async def check_balance_and_transfer(
    page: Page, *, balance_text: str, read_code: Callable[[], str], screenshot: Path
) -> str:
    """Drive the page through the two journeys of the acceptance test; returns the code it typed."""
    await log_in(page, "C001")

    turn = await type_message(page, "我的余额是多少")
    assert balance_text in turn.text, turn.text

    turn = await type_message(page, "给李四转两千五")
    # The form asks for what it is missing; the source account comes as quick replies when it asks.
    for _ in range(4):
        if "李四" in turn.text and "2,500.00" in turn.text:
            break
        choice = await turn.button(lambda title, payload: not is_cancel(title, payload))
        assert choice is not None, f"the transfer form stalled: {turn.text}"
        turn = await take_turn(page, choice.click)
    assert "李四" in turn.text and "2,500.00" in turn.text, turn.text

    confirm = await turn.button(is_confirm)
    assert confirm is not None, f"no confirm button under the read-back: {turn.text}"
    turn = await take_turn(page, confirm.click)

    code_input = page.locator("#message-input")
    await page.wait_for_selector("#message-input[type=password]")
    assert await code_input.get_attribute("inputmode") == "numeric"
    assert await code_input.get_attribute("autocomplete") == "one-time-code"

    code = read_code()
    turn = await type_message(page, code)
    assert await page.locator("#log .bubble.user").last.inner_text() == OTP_MASK
    assert "成功" in turn.text, turn.text
    assert await code_input.get_attribute("type") == "text"
    assert code not in await page.locator("#log").inner_text()

    screenshot.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(screenshot), full_page=True)
    return code


# --- the fake stack: gateway + a scripted fake Rasa acting as the bank's assistant ----------------


class ScriptedAssistant:
    """Answers like the real assistant would, verifying codes against the real core on the test database."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self.factory = factory
        self.settings = settings

    def __call__(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        text, metadata = body["message"], body["metadata"]
        if text == "我的余额是多少":
            return [{"text": "您的借记卡账户（尾号3821）可用余额为 52,380.50 元。"}]
        if "李四" in text:
            return [
                {
                    "text": "请选择付款账户：",
                    "buttons": [
                        {"title": "借记卡账户（尾号3821）", "payload": '/inform{"account_type": "debit"}'},
                        {"title": "取消", "payload": "/deny"},
                    ],
                }
            ]
        if text.startswith("/inform"):
            return [
                {
                    "text": "请核对：向李四转账 2,500.00 元，付款账户尾号3821。确认转账吗？",
                    "buttons": [
                        {"title": "确认转账", "payload": "/affirm"},
                        {"title": "取消", "payload": "/deny"},
                    ],
                }
            ]
        now = datetime.now(UTC)
        if text == "/affirm":
            with unit_of_work(self.factory) as session:
                verification.issue(session, self.settings, metadata["customer_id"], "transfer", "T-page", now)
            return [{"text": "验证码已发送到您尾号2345的手机，请输入6位验证码。", "custom": {"input": "otp"}}]
        if text == "/submit_otp":
            with unit_of_work(self.factory) as session:
                result = verification.check(
                    session, self.settings, metadata["customer_id"], "T-page", metadata.get("otp_digest"), now
                )
            return [{"text": "转账成功！" if result.ok else "验证码不正确，请重新输入。"}]
        return [{"text": "抱歉，我没有听懂。"}]


@dataclass
class FakeStack:
    gateway_url: str
    db_session_factory: sessionmaker[Session]
    rasa: FakeRasa


@pytest.fixture
async def fake_stack(tmp_path: Path) -> AsyncIterator[FakeStack]:
    database_url = f"sqlite:///{tmp_path / 'bank.db'}"
    migrate(database_url)
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        seed_demo(session)
    rasa = FakeRasa()
    rasa_server = TestServer(rasa.app(), host="127.0.0.1")
    await rasa_server.start_server()
    rasa.url = str(rasa_server.make_url("")).rstrip("/")
    settings = make_settings(tmp_path, rasa_url=rasa.url, database_url=database_url)
    rasa.responder = ScriptedAssistant(factory, settings)
    gateway = TestServer(create_app(settings, webchat_rate_limit_per_minute=0), host="127.0.0.1")
    await gateway.start_server()
    try:
        yield FakeStack(str(gateway.make_url("")).rstrip("/"), factory, rasa)
    finally:
        await gateway.close()
        await rasa_server.close()
        engine.dispose()


async def test_webchat_page_renders_and_masks_code(fake_stack: FakeStack, browser: Browser, tmp_path: Path) -> None:
    page = await open_phone_page(browser, fake_stack.gateway_url)
    code = await check_balance_and_transfer(
        page,
        balance_text="52,380.50",
        read_code=lambda: latest_code(fake_stack.db_session_factory),
        screenshot=tmp_path / "webchat-fake.png",
    )
    sent = [body["message"] for body in fake_stack.rasa.received]
    assert sent[-1] == "/submit_otp"
    assert code not in repr(fake_stack.rasa.received)
    assert fake_stack.rasa.received[-1]["metadata"]["otp_digest"] == verification.digest_code(
        "test-secret-key-" * 4, code
    )


async def test_webchat_page_refuses_an_unknown_customer(fake_stack: FakeStack, browser: Browser) -> None:
    page = await open_phone_page(browser, fake_stack.gateway_url)
    await page.fill("#customer-id", "C999")
    await page.click("#login-button")
    error = page.locator("#login-error")
    await error.wait_for(state="visible")
    assert "客户" in await error.inner_text()
    assert await page.locator("#composer").is_hidden()


# --- the real stack: Rasa, the action server and the gateway on loopback ------------------------


def _debit_balances(factory: sessionmaker[Session]) -> dict[str, Decimal]:
    with unit_of_work(factory) as session:
        return {account.id: account.balance for account in accounts.list_accounts(session, "C001", kind="debit")}


def _restart_conversation(stack: Any) -> None:
    """A fresh tracker for webchat:C001, so this test never inherits another test's open form."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{stack.rasa_url}/conversations/webchat:C001/tracker/events?token={stack.rasa_token}",
        data=json.dumps({"event": "restart"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=30).close()


@pytest.mark.rasa
async def test_webchat_balance_and_transfer_on_the_real_stack(live_stack: Any, browser: Browser) -> None:
    factory = live_stack.db_session_factory
    before = _debit_balances(factory)
    _restart_conversation(live_stack)
    # The demo seeds C001's debit account with 52,380.50; read it from the ledger in case an earlier test
    # in the session already moved money.
    balance_text = format_amount(before["A1001"])

    page = await open_phone_page(browser, live_stack.gateway_url)
    await check_balance_and_transfer(
        page,
        balance_text=balance_text,
        read_code=lambda: latest_code(factory),
        screenshot=REPORTS / "webchat.png",
    )

    after = _debit_balances(factory)
    assert sum(before.values()) - sum(after.values()) == Decimal("2500.00")
    changed = {account for account in before if before[account] != after[account]}
    assert len(changed) == 1, (before, after)

"""Test wiring for the WeCom and mini-program adapters: credentials, the platform simulators, waiting for replies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channels.platform_simulators.wechat import WeChatSimulator
from channels.platform_simulators.wecom import WeComSimulator
from channels.platform_simulators.wecom_callbacks import WeComCallbacks

# Tencent's published sample credentials (used here only as well-formed test values).
TOKEN = "QDG6eK"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
CORP_ID = "wx5823bf96d3bd56c7"
SECRET = "test-corp-secret-0123456789"
AGENT_ID = "1000002"


def wecom_env(api_base: str, **extra: str) -> dict[str, str]:
    return {
        "BANKBOT_WECOM_CORP_ID": CORP_ID,
        "BANKBOT_WECOM_TOKEN": TOKEN,
        "BANKBOT_WECOM_ENCODING_AES_KEY": AES_KEY,
        "BANKBOT_WECOM_SECRET": SECRET,
        "BANKBOT_WECOM_AGENT_ID": AGENT_ID,
        "BANKBOT_WECOM_API_BASE": api_base,
        **extra,
    }


APP_ID = "wx0123456789abcdef"
APP_SECRET = "test-app-secret-0123456789"
TEMPLATE_ID = "tmpl-repayment-reminder"


def miniprogram_env(api_base: str, **extra: str) -> dict[str, str]:
    return {
        "BANKBOT_MINIPROGRAM_APP_ID": APP_ID,
        "BANKBOT_MINIPROGRAM_APP_SECRET": APP_SECRET,
        "BANKBOT_WECHAT_API_BASE": api_base,
        "BANKBOT_MINIPROGRAM_REMINDER_TEMPLATE_ID": TEMPLATE_ID,
        **extra,
    }


@dataclass
class WeChatPlatform:
    simulator: WeChatSimulator
    url: str


@dataclass
class WeComPlatform:
    simulator: WeComSimulator
    url: str


def callbacks() -> WeComCallbacks:
    return WeComCallbacks(TOKEN, AES_KEY, CORP_ID, agent_id=AGENT_ID)


def sent_to(simulator: WeComSimulator, user: str) -> list[dict[str, Any]]:
    return [entry["body"] for entry in simulator.sent if user.lower() in entry["delivered_to"]]


def texts_to(simulator: WeComSimulator, user: str) -> list[str]:
    return [body["text"]["content"] for body in sent_to(simulator, user) if body.get("msgtype") == "text"]


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)

"""Test doubles and helpers for the gateway: a fake Rasa REST server, settings, login and one-time codes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.orm import Session, sessionmaker

from bankcore import sandbox, verification
from bankcore.database import unit_of_work
from bankcore.settings import Settings

SECRET_KEY = "test-secret-key-" * 4
RASA_TOKEN = "test-rasa-token"

Responder = Callable[[dict[str, Any]], list[dict[str, Any]]]


def echo(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"recipient_id": body.get("sender"), "text": f"收到：{body.get('message')}"}]


@dataclass
class FakeRasa:
    """Plays Rasa's REST channel, /status and trigger_intent on loopback, recording every request."""

    responder: Responder = echo
    fail_with_status: int | None = None
    delay_s: float = 0.0  # each turn takes this long (a busy Rasa)
    received: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""
    # Conversation id → tracker events, like Rasa's tracker store; share one dict between fakes to play
    # several Rasa servers on one tracker store.
    trackers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # After recording the turn in the tracker: drop the connection without answering (a server killed
    # mid-reply), or answer this status.
    drop_after_turn: bool = False
    fail_after_turn_with: int | None = None
    # False: answer without recording the turn, like Rasa's REST channel when the turn failed (it answers
    # 200 with what it collected, often nothing).
    record_turns: bool = True

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/webhooks/rest/webhook", self._webhook)
        app.router.add_get("/conversations/{conversation_id}/tracker", self._tracker)
        app.router.add_get("/status", self._status)
        app.router.add_post("/conversations/{conversation_id}/trigger_intent", self._trigger_intent)
        return app

    async def _webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(body)
        self.requests.append(("POST", request.raw_path, dict(request.query)))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with_status is not None:
            return web.Response(status=self.fail_with_status, text="boom")
        replies = self.responder(body)
        if not self.record_turns:
            return web.json_response(replies)
        events = self.trackers.setdefault(str(body.get("sender")), [])
        events.append({"event": "user", "text": body.get("message"), "metadata": body.get("metadata") or {}})
        for reply in (item for item in replies if isinstance(item, dict)):
            data = {key: value for key, value in reply.items() if key not in ("text", "recipient_id")}
            events.append({"event": "bot", "text": reply.get("text"), "data": data})
        if self.drop_after_turn:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if self.fail_after_turn_with is not None:
            return web.Response(status=self.fail_after_turn_with, text="boom")
        return web.json_response(replies)

    async def _tracker(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.raw_path, dict(request.query)))
        if request.query.get("token") != RASA_TOKEN:
            return web.json_response({"status": "failure"}, status=401)
        conversation_id = request.match_info["conversation_id"]
        return web.json_response({"sender_id": conversation_id, "events": self.trackers.get(conversation_id, [])})

    async def _status(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.raw_path, dict(request.query)))
        if request.query.get("token") != RASA_TOKEN:
            return web.json_response({"status": "failure"}, status=401)
        return web.json_response({"model_file": "models/test.tar.gz", "model_id": "x", "num_active_training_jobs": 0})

    async def _trigger_intent(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("POST", request.raw_path, dict(request.query)))
        self.received.append({"trigger_intent": body, "conversation_id": request.match_info["conversation_id"]})
        return web.json_response({"tracker": {}, "messages": [{"recipient_id": "x", "text": "您的信用卡还款日快到了"}]})

    def texts_sent(self) -> list[str]:
        return [str(body.get("message")) for body in self.received if "message" in body]


def seed_demo(session: Session) -> None:
    sandbox.seed_demo_if_empty(session)


def make_settings(tmp_path: Path, *, rasa_url: str, database_url: str, **overrides: str) -> Settings:
    env = {
        "BANKBOT_VAR_DIR": str(tmp_path / "var"),
        "BANKBOT_SECRET_KEY": SECRET_KEY,
        "BANKBOT_RASA_URL": rasa_url,
        "BANKBOT_RASA_TOKEN": RASA_TOKEN,
        "BANKBOT_DATABASE_URL": database_url,
        "BANKBOT_DEV_LOGIN": "1",
    }
    env.update(overrides)
    return Settings.from_env(env)


async def login(client: TestClient[web.Request, web.Application], customer_id: str = "C001") -> dict[str, str]:
    response = await client.post("/webchat/session", json={"customer_id": customer_id})
    assert response.status == 200, await response.text()
    token = (await response.json())["token"]
    return {"Authorization": f"Bearer {token}"}


def issue_code(factory: sessionmaker[Session], customer_id: str = "C001", *, now: datetime | None = None) -> str:
    """Opens a pending challenge the way the action server does and returns the code from the SMS."""
    settings = Settings.from_env({"BANKBOT_SECRET_KEY": SECRET_KEY, "BANKBOT_VAR_DIR": "/nonexistent"})
    with unit_of_work(factory) as session:
        verification.issue(session, settings, customer_id, "transfer", "T-test", now or datetime.now(UTC))
    return latest_code(factory, customer_id)


def latest_code(factory: sessionmaker[Session], customer_id: str = "C001") -> str:
    """The six-digit code in the customer's newest SMS of the sandbox outbox (their phone)."""
    with unit_of_work(factory) as session:
        newest = sandbox.outbox(session, customer_id, limit=1)
    assert newest, f"no SMS for {customer_id}"
    match = re.search(r"(?<!\d)\d{6}(?!\d)", newest[0].text)
    assert match is not None, newest[0].text
    return match.group(0)

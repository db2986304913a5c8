"""Fixtures shared by every suite: the real stack (Rasa, action server, gateway) on loopback."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bankbot.layout import ProjectLayout
from bankbot.stack import Stack, free_port
from bankbot.training import ensure_trained
from bankcore.settings import Settings

if TYPE_CHECKING:
    from bankbot.engines.rabbitmq_server import RabbitMQServer
    from tests.platform_threads import PlatformSimulators


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `after_all` (the secrets scan) run last, over what every other test left behind."""
    items.sort(key=lambda item: item.get_closest_marker("after_all") is not None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "after_all: runs after every other test")


@dataclass
class LiveStack:
    gateway_url: str
    rasa_url: str
    rasa_token: str
    settings: Settings
    db_session_factory: sessionmaker[Session]
    # The WeCom and WeChat API simulators the gateway's platform adapters talk to.
    platforms: PlatformSimulators | None = None

    @property
    def log_dir(self) -> Path:
        return self.settings.log_dir


@pytest.fixture(scope="session")
def platform_simulators() -> Iterator[PlatformSimulators]:
    """The WeCom and WeChat API simulators in a background thread of this process, for the live gateway."""
    from tests.platform_threads import serve_platform_simulators

    with serve_platform_simulators() as platforms:
        yield platforms


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQServer]:
    """A throwaway RabbitMQ node (Debian's rabbitmq-server) on loopback for the session; tests that stall, stop
    or kill it must leave it running. Each test uses queues and exchanges of its own."""
    from bankbot.engines.rabbitmq_server import RabbitMQServer, find_epmd, find_scripts_dir

    if find_scripts_dir() is None or find_epmd() is None:
        pytest.skip("rabbitmq-server not installed (Debian: apt-get install rabbitmq-server)")
    server = RabbitMQServer().start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_stack(
    tmp_path_factory: pytest.TempPathFactory,
    extra_env: dict[str, str],
    platforms: PlatformSimulators | None = None,
) -> Iterator[LiveStack]:
    """Rasa, the action server and the gateway on loopback over a freshly seeded sandbox bank."""
    from bankbot.foresight_demo import ensure_demo_model
    from bankcore.core_facts import record_core_facts
    from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
    from bankcore.sandbox import seed_demo_if_empty

    layout = ProjectLayout()
    model = ensure_trained(layout, log=False)
    foresight_model = ensure_demo_model(layout, log=False)
    var_dir = tmp_path_factory.mktemp("stack-var")
    env = {
        "BANKBOT_VAR_DIR": str(var_dir),
        "BANKBOT_DATABASE_URL": f"sqlite:///{var_dir / 'bank.db'}",
        "BANKBOT_RASA_URL": f"http://127.0.0.1:{free_port()}",
        "BANKBOT_ACTION_URL": f"http://127.0.0.1:{free_port()}/webhook",
        "BANKBOT_GATEWAY_HOST": "127.0.0.1",
        "BANKBOT_GATEWAY_PORT": str(free_port()),
        "BANKBOT_SECRET_KEY": secrets.token_hex(32),
        "BANKBOT_DEV_LOGIN": "1",
        "BANKBOT_WEBCHAT_RATE_LIMIT_PER_MINUTE": "0",
        "BANKBOT_FORESIGHT_MODEL_DIR": str(foresight_model),
        # Reminders would open conversations of their own at whatever the time of day is: tests that need the
        # scheduler run it themselves.
        "BANKBOT_SCHEDULER": "0",
        **extra_env,
    }
    settings = Settings.from_env(env)
    migrate(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    with unit_of_work(factory) as session:
        seed_demo_if_empty(session, pin_key=settings.secret_key)
    with unit_of_work(factory) as session:
        record_core_facts(session, dt.datetime.now(dt.UTC))
    stack = Stack(layout, env, model)
    stack.start()
    try:
        yield LiveStack(
            gateway_url=f"http://127.0.0.1:{settings.gateway_port}",
            rasa_url=settings.rasa_url,
            rasa_token=settings.rasa_token,
            settings=settings,
            db_session_factory=factory,
            platforms=platforms,
        )
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def live_stack(
    tmp_path_factory: pytest.TempPathFactory, platform_simulators: PlatformSimulators
) -> Iterator[LiveStack]:
    # WeCom and the mini-program against the simulators (Tencent's sample corp credentials), unthrottled.
    with running_stack(tmp_path_factory, platform_simulators.gateway_env(), platform_simulators) as stack:
        yield stack


def restart_conversation(stack: LiveStack, sender_id: str) -> None:
    """Rasa's restart event in one conversation (`webchat:C001`, `wecom:C004`…)."""
    url = f"{stack.rasa_url}/conversations/{sender_id}/tracker/events?token={stack.rasa_token}"
    request = urllib.request.Request(
        url,
        data=json.dumps({"event": "restart"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=30).close()


def latest_sms_code(stack: LiveStack, customer_id: str) -> str:
    """The six-digit code in the customer's newest SMS (the sandbox outbox stands in for their phone)."""
    import re

    from bankcore.database import unit_of_work
    from bankcore.sandbox import outbox

    with unit_of_work(stack.db_session_factory) as session:
        messages = outbox(session, customer_id)
    match = re.search(r"\d{6}", messages[0].text)
    assert match, messages[0].text
    return match.group(0)


class ChatClient:
    """A customer on the web chat: the gateway's public API, as the H5 page uses it."""

    def __init__(self, stack: LiveStack, customer_id: str) -> None:
        self.stack = stack
        self.customer_id = customer_id
        self.token = str(self._post("/webchat/session", {"customer_id": customer_id})[1]["token"])
        self.restart()

    def _post(self, path: str, body: dict[str, Any], token: str | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            self.stack.gateway_url + path, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def restart(self) -> None:
        """A fresh conversation (Rasa's restart event), so tests don't inherit each other's forms."""
        restart_conversation(self.stack, f"webchat:{self.customer_id}")

    def open(self) -> list[dict[str, Any]]:
        """The page has opened: what the assistant says before the customer speaks."""
        status, body = self._post("/webchat/open", {}, self.token)
        assert status == 200, (status, body)
        return list(body["messages"])

    def send(self, text: str) -> list[dict[str, Any]]:
        status, body = self._post("/webchat/messages", {"text": text}, self.token)
        assert status == 200, (status, body)
        return list(body["messages"])

    def say(self, text: str) -> str:
        """Send and return all reply texts joined, for assertions on what the customer reads."""
        return "\n".join(str(m.get("text") or "") for m in self.send(text))

    def latest_code(self) -> str:
        return latest_sms_code(self.stack, self.customer_id)


@pytest.fixture
def chat(live_stack: LiveStack) -> Callable[[str], ChatClient]:
    def open_chat(customer_id: str) -> ChatClient:
        return ChatClient(live_stack, customer_id)

    return open_chat

"""Fixtures for gateway tests: a fake Rasa on loopback, a migrated SQLite sandbox and the gateway itself."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from channels.app import create_app
from channels.platform_simulators.wechat import WeChatSimulator
from channels.platform_simulators.wecom import WeComSimulator
from tests.channels.support import FakeRasa, make_settings, seed_demo
from tests.channels.wecom_support import APP_ID, APP_SECRET, CORP_ID, SECRET, WeChatPlatform, WeComPlatform


@pytest.fixture
async def fake_rasa() -> AsyncIterator[FakeRasa]:
    fake = FakeRasa()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


@pytest.fixture(scope="session")
def template_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrated and seeded once per session; each test gets its own copy (migrations take about a second)."""
    path = tmp_path_factory.mktemp("template") / "bank.db"
    url = f"sqlite:///{path}"
    migrate(url)
    engine = make_engine(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            seed_demo(session)
    finally:
        engine.dispose()
    return path


@pytest.fixture
def database_url(template_database: Path, tmp_path: Path) -> str:
    path = tmp_path / "bank.db"
    shutil.copyfile(template_database, path)
    return f"sqlite:///{path}"


@pytest.fixture
def session_factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
async def start_gateway(tmp_path: Path, database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Starts gateways on loopback (several per test if needed) and closes them all afterwards."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(
        rasa_url: str, *, rate_limit: int | None = 0, **overrides: str
    ) -> TestClient[web.Request, web.Application]:
        settings = make_settings(tmp_path, rasa_url=rasa_url, database_url=database_url, **overrides)
        app = create_app(settings, webchat_rate_limit_per_minute=rate_limit)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def gateway(start_gateway: Callable[..., Any], fake_rasa: FakeRasa) -> TestClient[web.Request, web.Application]:
    client: TestClient[web.Request, web.Application] = await start_gateway(fake_rasa.url)
    return client


@pytest.fixture
async def wecom_platform() -> AsyncIterator[WeComPlatform]:
    """The WeCom server API simulator on loopback (gettoken, message/send, media/get)."""
    simulator = WeComSimulator(CORP_ID, SECRET)
    server = TestServer(simulator.app(), host="127.0.0.1")
    await server.start_server()
    yield WeComPlatform(simulator, str(server.make_url("")).rstrip("/"))
    await server.close()


@pytest.fixture
async def wechat_platform() -> AsyncIterator[WeChatPlatform]:
    """The WeChat (mini-program) server API simulator on loopback (code2Session, token, subscribe/send)."""
    simulator = WeChatSimulator(APP_ID, APP_SECRET)
    server = TestServer(simulator.app(), host="127.0.0.1")
    await server.start_server()
    yield WeChatPlatform(simulator, str(server.make_url("")).rstrip("/"))
    await server.close()

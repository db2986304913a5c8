"""Fixtures for the shared-core tests: one migrated database per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bankcore import sandbox
from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from bankcore.settings import Settings
from tests.core.support import NOW
from tests.pg_server import PostgresServer, find_bin_dir

_database_numbers = itertools.count(1)


def _load_demo(url: str) -> None:
    engine = make_engine(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            sandbox.load_sandbox(session, sandbox.demo_document(), now=NOW)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def sqlite_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Migrate (and load the demo bank) once; each test gets a copy of a file."""
    folder = tmp_path_factory.mktemp("sqlite-templates")
    empty, demo = folder / "empty.db", folder / "demo.db"
    migrate(f"sqlite:///{empty}")
    shutil.copyfile(empty, demo)
    _load_demo(f"sqlite:///{demo}")
    return {"empty": empty, "demo": demo}


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL binaries not installed (Debian: apt-get install postgresql)")
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_templates(pg_server: PostgresServer) -> dict[str, str]:
    migrate(pg_server.create_database("template_empty"))
    _load_demo(pg_server.create_database("template_demo", template="template_empty"))
    return {"empty": "template_empty", "demo": "template_demo"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh migrated database; it already holds the demo bank when the test uses `bank`."""
    kind = "demo" if "bank" in request.fixturenames else "empty"
    if request.param == "sqlite":
        path = tmp_path / "bank.db"
        shutil.copyfile(request.getfixturevalue("sqlite_templates")[kind], path)
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    template = request.getfixturevalue("pg_templates")[kind]
    name = f"test_{next(_database_numbers)}"
    url = server.create_database(name, template=template)
    try:
        yield url
    finally:
        server.drop_database(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    # Room for the 20-thread concurrency tests without waiting on the pool.
    engine = make_engine(database_url, pool_size=25, max_overflow=5)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "BANKBOT_VAR_DIR": str(tmp_path / "var"),
            "BANKBOT_SECRET_KEY": "test-secret-key-for-the-core-suite",
            "BANKBOT_OTP_MAX_ATTEMPTS": "3",
            "BANKBOT_OTP_TTL_SECONDS": "300",
        }
    )


@pytest.fixture
def now() -> dt.datetime:
    return NOW


@pytest.fixture
def bank(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """The demo bank as loaded at NOW (copied from a template database)."""
    return session_factory


@pytest.fixture
def sms_code(session_factory: sessionmaker[Session]) -> Callable[[str], str]:
    """Read the newest one-time code from a customer's SMS outbox, as the customer would."""

    def read(customer_id: str) -> str:
        with unit_of_work(session_factory) as session:
            messages = sandbox.outbox(session, customer_id, limit=1)
        assert messages, f"no SMS for {customer_id}"
        match = re.search(r"验证码(\d{6})", messages[0].text)
        assert match, messages[0].text
        return match.group(1)

    return read

"""Shared fixtures and builders for the reminder store, worker and race tests (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from bankcore.models import Customer
from bankcore.reminders.store import PlannedReminder
from tests.pg_server import PostgresServer, find_bin_dir

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: outside quiet hours
CUSTOMERS = [f"RC{number:04d}" for number in range(1, 51)]
_numbers = itertools.count(1)


def _add_customers(url: str) -> None:
    engine = make_engine(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            for customer_id in CUSTOMERS:
                session.add(Customer(id=customer_id, name="测试客户", surname="测", title="先生"))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def reminder_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reminder-template") / "reminders.db"
    migrate(f"sqlite:///{path}")
    _add_customers(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def reminder_pg() -> Iterator[PostgresServer]:
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL binaries not installed (Debian: apt-get install postgresql)")
    server = PostgresServer().start()
    try:
        url = server.create_database("reminder_template")
        migrate(url)
        _add_customers(url)
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def reminder_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database holding the test customers; its URL."""
    if request.param == "sqlite":
        path = tmp_path / "reminders.db"
        shutil.copyfile(request.getfixturevalue("reminder_sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("reminder_pg")
    name = f"reminders_{next(_numbers)}"
    url = server.create_database(name, template="reminder_template")
    try:
        yield url
    finally:
        server.drop_database(name)


@pytest.fixture
def factory(reminder_db: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(reminder_db)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def planned(
    count: int,
    *,
    send_after: dt.datetime = NOW,
    rule_id: str = "loan_t3",
    kind: str = "loan_instalment_due",
    channels: tuple[str, ...] = ("wecom", "phone"),
    start: int = 0,
) -> list[PlannedReminder]:
    """`count` distinct reminders spread over the test customers."""
    return [
        PlannedReminder(
            key=f"{CUSTOMERS[number % len(CUSTOMERS)]}:{rule_id}:L{number}:T-3",
            customer_id=CUSTOMERS[number % len(CUSTOMERS)],
            rule_id=rule_id,
            kind=kind,
            topic="loan",
            item_id=f"L{number}:1",
            due_date=(send_after + dt.timedelta(days=3)).date(),
            send_after=send_after,
            channels=channels,
            payload={"amount": "1234.56"},
        )
        for number in range(start, start + count)
    ]

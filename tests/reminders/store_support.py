"""Shared fixtures and builders for the reminder store, worker and race tests (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from bankcore.models import Customer
from bankcore.reminders.store import PlannedReminder
from tests.pg_server import PostgresServer, find_bin_dir

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: outside quiet hours
CUSTOMERS = [f"RC{number:04d}" for number in range(1, 51)]
_numbers = itertools.count(1)

# Customers' zones for the quiet-hours runs. Around the clock their UTC offsets (+13 NZDT, +8, +6, +5:45,
# 0 GMT, -5 EST in December; at most 8 h apart in the northern summer) leave no gap as long as quiet hours
# 21:00-08:00 (11 h) or the window between them (13 h): at every instant some of these customers are inside
# quiet hours and some outside. Kathmandu's :45 offset puts a window edge off the hour; Auckland's, London's
# and New York's DST move theirs during the year.
ZONES = (
    "Asia/Shanghai",
    "Asia/Urumqi",
    "Asia/Kathmandu",
    "America/New_York",
    "Europe/London",
    "Pacific/Auckland",
)


def _add_customers(url: str) -> None:
    engine = make_engine(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            for customer_id in CUSTOMERS:
                session.add(Customer(id=customer_id, name="测试客户", surname="测", title="先生"))
    finally:
        engine.dispose()


def zoned_customer_id(number: int) -> str:
    return f"ZC{number:06d}"


def zone_of_customer(number: int) -> str:
    return ZONES[number % len(ZONES)]


def add_zoned_customers(url: str, count: int) -> None:
    """`count` customers spread round-robin over ZONES, each with a phone number (so phone and sms reach them)."""
    engine = make_engine(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            for start in range(0, count, 5000):
                rows = [
                    {
                        "id": zoned_customer_id(number),
                        "name": "测试客户",
                        "surname": "测",
                        "title": "女士",
                        "phone": f"139{number:08d}",
                        "timezone": zone_of_customer(number),
                        "created_at": NOW,
                    }
                    for number in range(start, min(start + 5000, count))
                ]
                session.execute(insert(Customer), rows)
    finally:
        engine.dispose()


def zoned_planned(count: int, *, send_after: dt.datetime = NOW, start: int = 0) -> list[PlannedReminder]:
    """One service notice for each of the zoned customers `start` .. `start + count - 1`, all due at `send_after`.

    A service notice because the bank's data never settles one (context.py): the policy's decision is about
    quiet hours alone. Phone only (the customers have no bound WeChat identity) at one reminder a customer, so
    the phone's frequency cap (1 in 24 h) never holds one back.
    """
    return [
        PlannedReminder(
            key=f"{zoned_customer_id(number)}:service_notice:N{number}:T-0",
            customer_id=zoned_customer_id(number),
            rule_id="service_notice",
            kind="service_notice",
            topic="service",
            item_id=f"N{number}",
            due_date=(send_after + dt.timedelta(days=3)).date(),
            send_after=send_after,
            channels=("wecom", "phone"),
            payload={"notice": "系统维护通知"},
        )
        for number in range(start, start + count)
    ]


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

"""`bankbot bench risk-latency`: one risk decision end to end (signals read from the database, features,
rules, the learned score when given, the audit row written) on a bank with realistic history."""

from __future__ import annotations

import datetime as dt
import random
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bankcore import sandbox, transfers
from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from bankcore.event_store import store_events
from bankcore.events import Event
from bankcore.ledger import new_id
from bankcore.models import Transfer
from bankcore.risk.gather import SessionContext
from bankcore.risk.service import RiskService
from bankcore.settings import Settings

_EVENT_TYPES = ("login", "app_open", "view_balance", "statement_viewed", "new_device", "password_reset", "contact")


def _history(settings: Settings, factory: object, now: dt.datetime, transfers_per_customer: int, events: int) -> None:
    """Give each demo customer months of completed transfers and a week of busy cross-channel events."""
    rng = random.Random(7)
    with unit_of_work(factory) as session:  # type: ignore[arg-type]
        for customer_id, source, payees in (
            ("C001", "A1001", ["P1001", "P1002", "P1003"]),
            ("C002", "A2001", ["P2001", "P2002"]),
            ("C003", "A3001", ["P3001"]),
        ):
            for _ in range(transfers_per_customer):
                when = now - dt.timedelta(minutes=rng.randrange(10, 60 * 24 * 120))
                session.add(
                    Transfer(
                        id=new_id("T"),
                        customer_id=customer_id,
                        source_account_id=source,
                        payee_id=rng.choice(payees),
                        amount=Decimal(rng.randrange(50, 5000)),
                        currency="CNY",
                        channel="app",
                        idempotency_key=new_id("K"),
                        status="completed",
                        created_at=when,
                        updated_at=when,
                        executed_at=when,
                    )
                )
            store_events(
                session,
                [
                    Event(
                        customer_id,
                        now - dt.timedelta(minutes=rng.randrange(1, 60 * 24 * 7)),
                        "app",
                        rng.choice(_EVENT_TYPES),
                        {"device_id": f"dev-{rng.randrange(3)}"},
                    )
                    for _ in range(events)
                ],
            )


def bench_risk_latency(
    *,
    decisions: int,
    rules_path: Path,
    model_dir: Path | None,
    database_url: str | None,
    transfers_per_customer: int,
    events_per_customer: int,
    console: Console,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.from_env(
            {
                "BANKBOT_VAR_DIR": folder,
                "BANKBOT_SECRET_KEY": "bench",
                "BANKBOT_DATABASE_URL": database_url or f"sqlite:///{Path(folder) / 'bench.db'}",
                "BANKBOT_TRANSFER_DAILY_LIMIT": "100000000",
            }
        )
        migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        factory = make_session_factory(engine)
        now = dt.datetime.now(dt.UTC)
        with unit_of_work(factory) as session:
            sandbox.seed_demo_if_empty(session, now=now, pin_key=settings.secret_key)
        _history(settings, factory, now, transfers_per_customer, events_per_customer)
        service = RiskService(rules_path, model_dir)
        service.rules()
        cases = [("C001", "王芳"), ("C001", "李四"), ("C002", "赵敏"), ("C003", "李娜")]
        context = SessionContext("webchat", utterances=("你好", "我要转账", "给他转一笔"))
        timings: list[float] = []
        actions: dict[str, int] = {}
        for index in range(decisions + 20):
            customer_id, payee = cases[index % len(cases)]
            with unit_of_work(factory) as session:
                transfer = transfers.prepare(
                    session, settings, customer_id, payee_name=payee, amount="100", channel="webchat", now=now
                )
            with unit_of_work(factory) as session:
                started = time.perf_counter()
                outcome = transfers.assess_risk(session, service, customer_id, transfer.id, context, now)
                session.flush()
                elapsed = time.perf_counter() - started
            if index >= 20:  # warm-up: connection pool, caches, the model's first call
                timings.append(elapsed * 1000)
                actions[outcome.decision.action] = actions.get(outcome.decision.action, 0) + 1
        engine.dispose()
    timings.sort()
    figures = {
        "decisions": float(len(timings)),
        "p50_ms": statistics.median(timings),
        "p95_ms": timings[int(0.95 * (len(timings) - 1))],
        "p99_ms": timings[int(0.99 * (len(timings) - 1))],
        "max_ms": timings[-1],
    }
    table = Table(title=f"risk decision latency ({'rules + model' if model_dir else 'rules only'})")
    for key in figures:
        table.add_column(key)
    table.add_row(*(f"{value:.2f}" if key.endswith("ms") else f"{value:.0f}" for key, value in figures.items()))
    console.print(table)
    console.print(f"decisions by action: {actions}; database: {settings.database_url.split(':')[0]}")
    return figures

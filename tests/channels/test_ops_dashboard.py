"""The dashboard's figures against a planted tracker store and handoff log: exact rates, per channel, per day/hour."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy.orm import Session, sessionmaker

from bankcore import customer_care, ops_accounts
from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from bankcore.models import OpsInboxItem
from channels.ops import dashboard, svg_charts
from tests.channels.support import FakeRasa
from tests.channels.test_ops_console import NOW, PASSWORD, sign_in
from tests.channels.test_ops_stories import _action, _user, plant
from tests.pg_server import PostgresServer, find_bin_dir

DAY1 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
DAY2 = dt.datetime(2026, 11, 3, 15, 0, tzinfo=dt.UTC)


def _turns(channel: str, *messages: tuple[str, str, float]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for text, intent, confidence in messages:
        events += [{**_user(text, intent, confidence), "metadata": {"channel": channel}}, _action("action_listen")]
    return events


@pytest.fixture
async def console(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa, tmp_path: Path, session_factory: sessionmaker[Session]
) -> TestClient[Any, Any]:
    tracker = tmp_path / "var" / "tracker.db"
    # Day 1, webchat: two conversations, one fallback by intent and one by low confidence, one asks for a person.
    plant(
        tracker,
        "webchat:A",
        _turns("webchat", ("查余额", "check_balance", 0.9), ("那个东西", "nlu_fallback", 0.3)),
        DAY1.timestamp(),
    )
    plant(
        tracker,
        "webchat:B",
        _turns("webchat", ("转人工", "human_handoff", 0.95), ("余额呢", "check_balance", 0.4)),
        DAY1.timestamp(),
    )
    # Day 1, wecom: one conversation that ends with a person.
    plant(
        tracker,
        "wecom:C",
        _turns("wecom", ("你好", "greet", 0.8), ("找人工客服", "human_handoff", 0.9)),
        DAY1.timestamp(),
    )
    # Day 2, webchat: conversation A again, all understood; a button payload is no NLU guess and is not counted.
    plant(
        tracker,
        "webchat:A",
        _turns("webchat", ("转账", "transfer_money", 0.99), ("好的", "affirm", 0.97)),
        DAY2.timestamp(),
    )
    plant(tracker, "ivr:D", _turns("ivr", ("/affirm", "affirm", 1.0)), DAY2.timestamp())
    with unit_of_work(session_factory) as session:
        ops_accounts.add_user(session, "vera", PASSWORD, "viewer", NOW)
        for channel in ("webchat", "wecom"):
            customer_care.request_handoff(
                session, None, reason="asked", channel=channel, now=DAY1 + dt.timedelta(minutes=30)
            )
        # Outside the range asked for: not counted.
        customer_care.request_handoff(session, None, reason="asked", channel="webchat", now=DAY1 - dt.timedelta(days=5))
    client: TestClient[Any, Any] = await start_gateway(fake_rasa.url)
    await sign_in(client, "vera")
    return client


def _cell(page: str, name: str) -> str:
    match = re.search(rf'<td id="{name}">([^<]*)</td>', page)
    assert match, name
    return match.group(1)


def _points(page: str, chart: str, series: str) -> dict[str, float]:
    svg = re.search(rf'<svg class="chart" data-chart="{chart}".*?</svg>', page, re.S)
    assert svg, chart
    found = re.findall(rf'data-series="{re.escape(series)}" data-label="([^"]+)" data-value="([0-9.]+)"', svg.group(0))
    return {label: float(value) for label, value in found}


async def test_daily_rates_over_all_channels_are_exact(console: TestClient[Any, Any]) -> None:
    page = await (await console.get("/ops/dashboard?since=2026-11-01&until=2026-11-03")).text()
    assert "按天" in page
    assert _cell(page, "total-messages") == "8"
    assert _cell(page, "total-fallbacks") == "2" and _cell(page, "total-fallback-rate") == "25.0%"
    # Active conversations: A, B, C on day 1 and A on day 2; two handoffs in the range.
    assert _cell(page, "total-conversations") == "4" and _cell(page, "total-handoffs") == "2"
    assert _cell(page, "total-handoff-rate") == "50.0%" and _cell(page, "total-handoff-requests") == "2"
    assert _cell(page, "total-confidence") == f"{(0.9 + 0.3 + 0.95 + 0.4 + 0.8 + 0.9 + 0.99 + 0.97) / 8:.2f}"
    assert _points(page, "fallback", "兜底率") == {"11-02": pytest.approx(2 / 6), "11-03": 0.0}
    assert _points(page, "handoff", "转人工的会话占比") == {"11-02": pytest.approx(2 / 3), "11-03": 0.0}
    assert _points(page, "handoff", "要求转人工的消息占比") == {"11-02": pytest.approx(2 / 6), "11-03": 0.0}
    assert _points(page, "confidence", "平均置信度") == {
        "11-02": pytest.approx(4.25 / 6, abs=1e-6),
        "11-03": pytest.approx(0.98, abs=1e-6),
    }
    mix = _points(page, "intent-mix", "check_balance")
    assert mix == {"11-02": pytest.approx(2 / 6)}
    assert _points(page, "intent-mix", "transfer_money") == {"11-03": pytest.approx(0.5)}
    # A day without messages is a gap in the lines, not a zero.
    assert "11-01" not in _points(page, "fallback", "兜底率")


async def test_one_channel_and_hourly_buckets(console: TestClient[Any, Any]) -> None:
    page = await (await console.get("/ops/dashboard?channel=webchat&since=2026-11-01&until=2026-11-03")).text()
    assert _cell(page, "total-messages") == "6" and _cell(page, "total-fallback-rate") == "33.3%"
    assert _cell(page, "total-conversations") == "3" and _cell(page, "total-handoffs") == "1"
    assert _cell(page, "total-handoff-rate") == "33.3%"
    wecom = await (await console.get("/ops/dashboard?channel=wecom&since=2026-11-02&until=2026-11-02")).text()
    assert "按小时" in wecom
    assert _points(wecom, "handoff", "转人工的会话占比") == {"09时": 1.0}
    assert _points(wecom, "fallback", "兜底率") == {"09时": 0.0}
    assert _cell(wecom, "total-handoff-rate") == "100.0%"


def test_charts_are_plain_svg_with_gaps_and_escaped_labels() -> None:
    chart = svg_charts.line_chart("t<", ["a", "b", "c"], [svg_charts.Series("s&", [0.5, None, 0.25])], chart="x")
    assert chart.startswith('<svg class="chart" data-chart="x"') and "<script" not in chart
    assert "t&lt;" in chart and "s&amp;" in chart
    assert chart.count("<circle") == 2 and "<polyline" not in chart  # two points with a gap between: no line
    empty = svg_charts.line_chart("none", [], [])
    assert "无数据" in empty


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL binaries not installed (Debian: apt-get install postgresql)")
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def bank_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bank.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database("dashboard")
    migrate(url)
    return url


def test_the_same_figures_in_sqlite_and_postgresql(bank_url: str) -> None:
    """Buckets are computed in SQL, with each dialect's own date functions: both must cut days and hours in UTC."""
    engine = make_engine(bank_url)
    rows = [
        # 23:30 UTC on 2 November is 07:30 on the 3rd in Beijing: it belongs to the 2nd (the dashboard is UTC).
        ("webchat", "A", dt.datetime(2026, 11, 2, 23, 30, tzinfo=dt.UTC), "nlu_fallback", 0.2, True),
        ("webchat", "A", dt.datetime(2026, 11, 2, 23, 45, tzinfo=dt.UTC), "check_balance", 0.9, False),
        ("webchat", "B", dt.datetime(2026, 11, 3, 0, 15, tzinfo=dt.UTC), "human_handoff", 0.7, False),
    ]
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            for number, (channel, conversation, ts, intent, confidence, fallback) in enumerate(rows, start=1):
                session.add(
                    OpsInboxItem(
                        event_id=number,
                        conversation=f"{channel}:{conversation}",
                        channel=channel,
                        ts=ts,
                        text="……",
                        intent=intent,
                        confidence=confidence,
                        entities=[],
                        is_fallback=fallback,
                        status="new",
                    )
                )
            customer_care.request_handoff(
                session, None, reason="asked", channel="webchat", now=dt.datetime(2026, 11, 3, 0, 20, tzinfo=dt.UTC)
            )
        with unit_of_work(make_session_factory(engine)) as session:
            daily = dashboard.figures(session, since=dt.date(2026, 11, 1), until=dt.date(2026, 11, 3))
            hourly = dashboard.figures(session, since=dt.date(2026, 11, 2), until=dt.date(2026, 11, 3))
    finally:
        engine.dispose()
    by_day = {b.label: b for b in daily.buckets}
    assert (by_day["2026-11-02"].messages, by_day["2026-11-02"].fallbacks) == (2, 1)
    assert by_day["2026-11-02"].mean_confidence == pytest.approx(0.55)
    assert (by_day["2026-11-03"].handoffs, by_day["2026-11-03"].conversations) == (1, 1)
    assert by_day["2026-11-03"].handoff_rate == 1.0 and by_day["2026-11-01"].messages == 0
    assert hourly.hourly and len(hourly.buckets) == 48
    busy = {b.label: (b.messages, b.handoffs) for b in hourly.buckets if b.messages or b.handoffs}
    assert busy == {"2026-11-02 23": (2, 0), "2026-11-03 00": (1, 1)}
    assert daily.intents == [("check_balance", 1), ("human_handoff", 1), ("nlu_fallback", 1)]

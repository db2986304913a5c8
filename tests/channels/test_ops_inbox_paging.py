"""The inbox's pages, fallbacks first and then by rising confidence, across the fallback boundary and filters."""

from __future__ import annotations

import datetime as dt
import random

from bankcore.database import make_engine, make_session_factory, unit_of_work
from bankcore.models import OpsInboxItem
from channels.ops import inbox
from tests.channels.test_ops_dashboard import bank_url, pg_server  # noqa: F401 (fixtures)

START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def test_paging_walks_the_fallbacks_then_the_rest_without_gaps_or_repeats(bank_url: str) -> None:  # noqa: F811
    rng = random.Random(7)
    engine = make_engine(bank_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            for number in range(1, 61):
                confidence = round(rng.choice([0.2, 0.3, 0.45, 0.6, 0.8, 0.95]), 2)  # ties: the id decides
                session.add(
                    OpsInboxItem(
                        event_id=number,
                        conversation=f"c{number % 7}",
                        channel=rng.choice(["webchat", "wecom"]),
                        ts=START + dt.timedelta(hours=number),
                        text=f"消息{number}",
                        intent="nlu_fallback" if confidence < 0.5 else "check_balance",
                        confidence=confidence,
                        entities=[],
                        is_fallback=confidence < 0.5,
                        status="new" if number % 10 else "dismissed",
                    )
                )
        with unit_of_work(make_session_factory(engine)) as session:
            everything = session.query(OpsInboxItem).all()
            for where in (
                inbox.InboxFilter(),
                inbox.InboxFilter(channel="wecom"),
                inbox.InboxFilter(since=dt.date(2026, 11, 2), until=dt.date(2026, 11, 2)),
                inbox.InboxFilter(status="dismissed"),
            ):
                expected = sorted(
                    (
                        item
                        for item in everything
                        if item.status == where.status
                        and (where.channel is None or item.channel == where.channel)
                        and (where.since is None or item.ts.date() >= where.since)
                        and (where.until is None or item.ts.date() <= where.until)
                    ),
                    key=lambda item: (not item.is_fallback, item.confidence, item.id),
                )
                pages = []
                for offset in range(0, len(expected) + 7, 7):
                    items, total = inbox.page(session, where, offset=offset, size=7)
                    assert total == len(expected)
                    pages += [item.id for item in items]
                assert pages == [item.id for item in expected], where
                assert inbox.page(session, where, offset=len(expected) + 3, size=7)[0] == []
    finally:
        engine.dispose()

"""The promise action on its own (no Rasa): the day the customer said comes back, the outcome is recorded once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from actions import runtime
from actions.reminders import ActionReminderPromised
from bankcore import sandbox
from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from bankcore.models import CrossChannelEvent
from bankcore.settings import Settings

KEY = "C001:loan-t3:L1001:2026-12-09:T-3"
METADATA = {"customer_id": "C001", "channel": "webchat"}


@pytest.fixture
def bank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sessionmaker[Session]:
    settings = Settings.from_env({"BANKBOT_VAR_DIR": str(tmp_path), "BANKBOT_SECRET_KEY": "k" * 32})
    migrate(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    with unit_of_work(factory) as session:
        sandbox.seed_demo_if_empty(session, pin_key=settings.secret_key)
    monkeypatch.setattr(runtime, "settings", lambda: settings)
    monkeypatch.setattr(runtime, "session_factory", lambda: factory)
    return factory


def said(text: str, *dates: str, reminder_key: str | None = KEY) -> Tracker:
    """The customer's message with the date pieces the model tagged in it."""
    entities: list[dict[str, Any]] = []
    for piece in dates:
        start = text.index(piece)
        entities.append({"entity": "date", "start": start, "end": start + len(piece), "value": piece})
    latest = {"text": text, "intent": {"name": "promise_to_pay"}, "entities": entities, "metadata": METADATA}
    slots = {"reminder_key": reminder_key, "reminder_topic": "loan" if reminder_key else None}
    events = [{"event": "session_started"}, {"event": "user", "text": text, "metadata": METADATA}]
    return Tracker("webchat:C001", slots, latest, events, False, None, {}, "action_listen")


def reply(tracker: Tracker) -> tuple[str | None, str | None]:
    dispatcher = CollectingDispatcher()
    asyncio.run(ActionReminderPromised().run(dispatcher, tracker, {}))
    (message,) = dispatcher.messages
    return message.get("response"), message.get("date")


def promised(factory: sessionmaker[Session]) -> list[dict[str, Any]]:
    with unit_of_work(factory) as session:
        rows = session.scalars(
            select(CrossChannelEvent).where(
                CrossChannelEvent.customer_id == "C001", CrossChannelEvent.type == "reminder_outcome"
            )
        ).all()
        return [dict(row.attrs) for row in rows if row.attrs.get("outcome") == "promised"]


@pytest.mark.parametrize(
    ("text", "dates", "day"),
    [
        ("我明天就还", ("明天",), "明天"),
        ("周五之前还上", ("周五之前",), "周五之前"),
        # The first date names the bill, the last the day promised.
        ("这个月的钱我月底之前会还的", ("这个月", "月底之前"), "月底之前"),
        # Pieces the model tagged one character too far are trimmed to the day.
        ("月底前会把钱还上的", ("月底", "前会"), "月底前"),
        # The model tagged nothing: the day phrase in the text.
        ("过两天发工资了就还", (), "过两天"),
    ],
)
def test_a_promise_in_a_reminder_conversation_repeats_the_day_said(
    bank: sessionmaker[Session], text: str, dates: tuple[str, ...], day: str
) -> None:
    assert reply(said(text, *dates)) == ("utter_reminder_promised_on_date", day)
    assert promised(bank) == [{"outcome": "promised", "topic": "loan"}]


def test_a_promise_without_a_day_is_acknowledged_and_recorded_once_per_reminder(bank: sessionmaker[Session]) -> None:
    assert reply(said("好的我会按时还的")) == ("utter_reminder_promised", None)
    assert reply(said("我会按时还款的")) == ("utter_reminder_promised", None)
    assert len(promised(bank)) == 1
    # Another reminder's promise is its own outcome.
    reply(said("我明天就还", "明天", reminder_key="C001:loan-t1:L1001:2026-12-09:T-1"))
    assert len(promised(bank)) == 2


def test_a_promise_outside_a_reminder_conversation_is_answered_and_not_recorded(bank: sessionmaker[Session]) -> None:
    assert reply(said("我明天就还", "明天", reminder_key=None)) == ("utter_promise_without_reminder", None)
    assert promised(bank) == []

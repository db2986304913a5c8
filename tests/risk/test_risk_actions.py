"""The confirm action against a real database when the risk service is down: no code, no money, a clear reply."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select

from actions import runtime, transfer_risk
from actions.confirmations import ActionConfirmPending
from actions.transfer_risk import session_context
from bankcore import sandbox, transfers
from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from bankcore.models import SmsOutbox
from bankcore.risk.service import RiskService
from bankcore.settings import Settings

DOMAIN: dict[str, Any] = {"responses": {"utter_risk_unavailable": [{"text": "x"}]}}


def _tracker(text: str, transfer_id: str, metadata: dict[str, Any]) -> Tracker:
    events = [
        {"event": "session_started"},
        {"event": "user", "text": "给李四转三百", "metadata": metadata},
        {"event": "slot", "name": "pending_confirmation", "value": "transfer"},
        {"event": "user", "text": text, "metadata": metadata},
    ]
    slots = {"pending_confirmation": "transfer", "pending_subject": transfer_id, "awaiting_code": False}
    latest = {"text": text, "intent": {"name": "affirm"}, "entities": [], "metadata": metadata}
    return Tracker("webchat:C001", slots, latest, events, False, None, {}, "action_listen")


@pytest.fixture
def bank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Settings]:
    settings = Settings.from_env({"BANKBOT_VAR_DIR": str(tmp_path), "BANKBOT_SECRET_KEY": "k" * 32})
    migrate(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    with unit_of_work(factory) as session:
        sandbox.seed_demo_if_empty(session, pin_key=settings.secret_key)
    monkeypatch.setattr(runtime, "settings", lambda: settings)
    monkeypatch.setattr(runtime, "session_factory", lambda: factory)
    return factory, settings


def test_confirming_while_the_risk_service_is_down_sends_no_code_and_cancels(bank, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    factory, settings = bank
    now = dt.datetime.now(dt.UTC)
    with unit_of_work(factory) as session:
        transfer = transfers.prepare(
            session, settings, "C001", payee_name="李四", amount="300", channel="webchat", now=now
        )
    monkeypatch.setattr(transfer_risk, "risk_service", lambda: RiskService(tmp_path / "no-rules.yaml", None))
    dispatcher = CollectingDispatcher()
    metadata = {"customer_id": "C001", "channel": "webchat"}
    events = asyncio.run(ActionConfirmPending().run(dispatcher, _tracker("确认", transfer.id, metadata), DOMAIN))
    assert [m.get("response") for m in dispatcher.messages] == ["utter_risk_unavailable"]
    assert {"event": "slot", "name": "pending_confirmation", "value": None, "timestamp": None} in events
    with unit_of_work(factory) as session:
        view = transfers.get_transfer(session, "C001", transfer.id)
        assert (view.status, view.failure_reason) == ("cancelled", "risk_unavailable")
        assert session.scalars(select(SmsOutbox).where(SmsOutbox.customer_id == "C001")).all() == []


def test_the_phone_line_counts_as_voice_and_commands_are_not_utterances() -> None:
    metadata = {"customer_id": "C001", "channel": "ivr", "caller_id": "+8613900000000"}
    tracker = _tracker("/affirm", "T1", metadata)

    class _Turn:
        channel = "ivr"

    turn = _Turn()
    turn.tracker = tracker  # type: ignore[attr-defined]
    context = session_context(turn)  # type: ignore[arg-type]
    assert (context.input_mode, context.caller_id) == ("voice", "+8613900000000")
    assert context.utterances == ("给李四转三百",)

"""Retraining on real traffic: `bankbot foresight train --from-db` reads what ingestion and live contacts stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bankbot.cli import main
from bankcore import event_store
from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from foresight.simulate import simulate


def test_train_from_the_database_uses_stored_events_profiles_and_labelled_contacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    migrate(url)
    factory = make_session_factory(make_engine(url))
    data = simulate(300, 30, seed=3)
    with unit_of_work(factory) as session:
        event_store.store_events(session, data.events)
        event_store.upsert_profiles(session, data.profiles)
        event_store.add_contacts(session, data.contacts)
        # A live contact still open (no final intent) is not a label.
        event_store.open_live_contact(
            session,
            customer_id=data.contacts[0].customer_id,
            channel="app",
            ts=data.contacts[-1].ts,
            conversation_id="webchat:x",
            predicted_intent="check_balance",
            predicted_p=0.5,
        )
    monkeypatch.setenv("BANKBOT_DATABASE_URL", url)
    monkeypatch.setenv("BANKBOT_VAR_DIR", str(tmp_path))
    out = tmp_path / "model"
    assert main(["foresight", "train", "--from-db", "--out", str(out), "--max-epochs", "1", "--quiet"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta["intents"]) <= {c.intent for c in data.contacts}
    assert (out / "features.json").exists()

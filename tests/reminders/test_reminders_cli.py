"""`bankbot reminders plan|list|stats|pause|resume|cancel|check-rules` on a seeded sandbox bank."""

from __future__ import annotations

from pathlib import Path

import pytest

from bankbot.cli import main
from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from bankcore.reminders import store
from bankcore.sandbox import seed_demo_if_empty


@pytest.fixture
def bank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    monkeypatch.setenv("BANKBOT_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BANKBOT_SECRET_KEY", "test-secret-key-for-the-cli")
    monkeypatch.setenv("BANKBOT_DATABASE_URL", url)
    migrate(url)
    with unit_of_work(make_session_factory(make_engine(url))) as session:
        seed_demo_if_empty(session, pin_key="test-secret-key-for-the-cli")
    return url


def test_plan_is_idempotent_and_ops_can_pause_resume_and_cancel(bank: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reminders", "plan", "--horizon-days", "60"]) == 0
    first = capsys.readouterr().out
    assert main(["reminders", "plan", "--horizon-days", "60"]) == 0
    assert " 0 new" in capsys.readouterr().out, "planning twice creates nothing twice"
    factory = make_session_factory(make_engine(bank))
    with unit_of_work(factory) as session:
        total = sum(store.counts_by_status(session).values())
    assert total > 0 and f"{total} new" in first, first
    assert main(["reminders", "stats"]) == 0
    assert main(["reminders", "list", "--limit", "5"]) == 0
    capsys.readouterr()
    assert main(["reminders", "pause"]) == 0
    assert f"paused {total}" in capsys.readouterr().out
    assert main(["reminders", "resume"]) == 0
    assert main(["reminders", "cancel"]) == 2, "cancelling needs a filter"
    assert main(["reminders", "cancel", "--customer", "C001"]) == 0
    with unit_of_work(factory) as session:
        cancelled = [r for r in store.list_reminders(session, customer_id="C001", limit=1000)]
    assert all(r.status == "cancelled" for r in cancelled)


def test_check_rules_names_the_mistake(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text(
        "version: 1\nrules:\n  - id: x\n    kind: card_expiring\n    offsets_days: [30]\n    send_at: '25:00'\n"
        "    channels: [sms]\n",
        encoding="utf-8",
    )
    assert main(["reminders", "check-rules", str(bad)]) == 1
    assert "send_at" in capsys.readouterr().err
    assert main(["reminders", "check-rules"]) == 0

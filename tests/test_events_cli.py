"""`bankbot events import`: good files import idempotently; a bad line names file:line:field, nothing stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bankbot import events_cli
from bankbot.cli import main
from bankcore import event_store
from bankcore.database import make_engine, make_session_factory, unit_of_work
from bankcore.models import ContactRecord, CrossChannelEvent, CustomerProfile


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    monkeypatch.setenv("BANKBOT_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BANKBOT_SECRET_KEY", "test-secret-key-for-the-cli")
    monkeypatch.setenv("BANKBOT_DATABASE_URL", url)
    return url


def write_lines(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def an_event(n: int, **changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "customer_id": f"C{n % 3}",
        "ts": f"2026-11-{1 + n % 28:02d}T08:00:00Z",
        "channel": "app",
        "type": "login",
        "event_id": f"file-{n}",
    }
    record.update(changes)
    return record


def count(url: str, model: type) -> int:
    engine = make_engine(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        engine.dispose()


def test_a_good_file_is_imported_in_chunks_and_a_second_import_only_finds_duplicates(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_cli, "CHUNK_RECORDS", 7)
    chunk_sizes: list[int] = []
    store_events = event_store.store_events

    def spy(session: Any, events: Any) -> event_store.StoreReport:
        chunk_sizes.append(len(events))
        return store_events(session, events)

    monkeypatch.setattr(event_store, "store_events", spy)
    path = write_lines(tmp_path / "events.jsonl", [an_event(n) for n in range(25)])
    assert main(["events", "import", str(path)]) == 0
    assert "events: 25 records, 25 stored, 0 duplicates" in capsys.readouterr().out
    assert chunk_sizes == [7, 7, 7, 4]
    assert main(["events", "import", str(path), "--kind", "events"]) == 0
    assert "25 records, 0 stored, 25 duplicates" in capsys.readouterr().out
    assert count(database_url, CrossChannelEvent) == 25


def test_the_kind_is_inferred_from_the_first_record(database_url: str, tmp_path: Path) -> None:
    contacts = write_lines(
        tmp_path / "contacts.jsonl",
        [
            {"customer_id": "C1", "ts": "2026-11-20T02:00:00Z", "channel": "ivr", "intent": "check_balance"},
            {"customer_id": "C2", "ts": "2026-11-20T02:00:00Z", "channel": "app"},
        ],
    )
    profiles = write_lines(tmp_path / "profiles.jsonl", [{"customer_id": "C1", "attrs": {"age_band": "30-39"}}])
    assert main(["events", "import", str(contacts)]) == 0
    assert main(["events", "import", str(profiles)]) == 0
    assert count(database_url, ContactRecord) == 2
    assert count(database_url, CustomerProfile) == 1
    assert count(database_url, CrossChannelEvent) == 0


def test_a_bad_line_names_file_line_and_field_and_nothing_is_imported(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records: list[object] = [an_event(n) for n in range(10)]
    records[7] = an_event(7, ts="2026-11-31T08:00:00Z")
    path = write_lines(tmp_path / "bad.jsonl", records)
    assert main(["events", "import", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:8: ts:" in err.replace("\n", "")
    assert count(database_url, CrossChannelEvent) == 0

    path.write_text(json.dumps(an_event(1)) + "\n{oops\n", encoding="utf-8")
    assert main(["events", "import", str(path)]) == 2
    assert f"{path}:2: not JSON" in capsys.readouterr().err.replace("\n", "")
    assert count(database_url, CrossChannelEvent) == 0


def test_a_missing_file_is_exit_code_2(database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "import", str(tmp_path / "absent.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err

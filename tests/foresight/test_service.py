"""ForesightService: predictions from the stored history, unknown customers, thresholds, no peeking at the future."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from bankcore.event_store import store_events, upsert_profiles
from bankcore.events import Event, Profile
from foresight.latency_bench import bench_latency
from foresight.service import DEFAULT_THRESHOLD, ForesightService
from tests.foresight.planted import planted_model, planted_world

AT = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    predictor, _ = planted_model()
    path = tmp_path_factory.mktemp("foresight") / "model"
    predictor.save(path)
    return path


@pytest.fixture()
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    migrate(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def _store(factory: sessionmaker[Session], events: list[Event], profiles: list[Profile]) -> None:
    with unit_of_work(factory) as session:
        store_events(session, events)
        upsert_profiles(session, profiles)


def test_predicts_from_the_stored_history(model_dir: Path, factory: sessionmaker[Session]) -> None:
    service = ForesightService.load(model_dir)
    assert service is not None
    _store(
        factory,
        [Event("C1", AT - dt.timedelta(minutes=25), "core", "transfer_failed", {"amount": 1200})],
        [Profile("C1", {"segment": "mass", "age": 40}), Profile("C2", {"segment": "affluent", "age": 30})],
    )
    with unit_of_work(factory) as session:
        ranked = service.predict_for(session, "C1", "webchat", AT)  # a gateway channel name is accepted
        profile_only = service.predict_for(session, "C2", "ivr", AT, k=2)
        unknown = service.predict_for(session, "NOBODY", "app", AT)
    assert ranked is not None and len(ranked) == 3
    assert ranked[0].intent == "failed_transfer_inquiry"
    assert [r.p for r in ranked] == sorted((r.p for r in ranked), reverse=True)
    assert profile_only is not None and len(profile_only) == 2
    assert unknown is None


def test_events_at_or_after_the_moment_are_ignored(model_dir: Path, factory: sessionmaker[Session]) -> None:
    service = ForesightService.load(model_dir)
    assert service is not None
    events, profiles, _ = planted_world(5, 2, seed=9)
    events = [e for e in events if e.ts < AT]
    _store(factory, events, profiles)
    customers = sorted({p.customer_id for p in profiles})
    with unit_of_work(factory) as session:
        before = [service.predict_for(session, c, "app", AT, k=4) for c in customers]
    _store(
        factory,
        [
            Event(c, AT + delay, "core", kind, {"amount": 5000})
            for c in customers
            for delay, kind in ((dt.timedelta(0), "transfer_failed"), (dt.timedelta(hours=1), "card_declined"))
        ],
        [],
    )
    with unit_of_work(factory) as session:
        after = [service.predict_for(session, c, "app", AT, k=4) for c in customers]
        later = service.predict_for(session, customers[0], "app", AT + dt.timedelta(seconds=1), k=4)
    assert before == after
    assert later != before[0]  # the event at AT is history one second later: the check above has teeth


def test_load_without_a_model_is_none_and_thresholds_come_from_the_model(model_dir: Path, tmp_path: Path) -> None:
    assert ForesightService.load(tmp_path / "empty") is None
    service = ForesightService.load(model_dir)
    assert service is not None and service.threshold == DEFAULT_THRESHOLD
    (model_dir / "threshold.json").write_text(json.dumps({"threshold": 0.62}))
    try:
        saved = ForesightService.load(model_dir)
        explicit = ForesightService.load(model_dir, threshold=0.9)
    finally:
        (model_dir / "threshold.json").unlink()
    assert saved is not None and saved.threshold == pytest.approx(0.62)
    assert explicit is not None and explicit.threshold == pytest.approx(0.9)


def test_latency_bench_reports_percentiles(model_dir: Path) -> None:
    events, profiles, contacts = planted_world(20, 2, seed=2)
    report = bench_latency(model_dir, calls=60, data=(events, profiles, contacts))
    assert report.calls == 60 and report.unknown == 0
    assert 0 < report.p50_ms <= report.p95_ms <= report.p99_ms <= report.max_ms
    assert report.load_seconds < 2.0

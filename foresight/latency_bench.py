"""Benchmark: model load time and single-customer `predict_for` latency (DB read included) on a temporary SQLite DB."""

from __future__ import annotations

import datetime as dt
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bankcore.events import Contact, Event, Profile


@dataclass(frozen=True)
class LatencyReport:
    load_seconds: float
    customers: int
    events: int
    calls: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    unknown: int  # calls that found neither events nor a profile

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def _simulated(customers: int, days: int, seed: int) -> tuple[list[Event], list[Profile], list[Contact]]:
    from foresight.simulate import simulate

    data = simulate(customers, days, seed)
    return data.events, data.profiles, data.contacts


def bench_latency(
    model_dir: Path,
    *,
    customers: int = 1000,
    days: int = 60,
    calls: int = 2000,
    seed: int = 0,
    data: tuple[list[Event], list[Profile], list[Contact]] | None = None,
    threads: int | None = 1,
) -> LatencyReport:
    """Loads the model (timed), stores `customers` customers' events and profiles in a temporary SQLite DB
    and times `calls` single-customer predictions, each in its own unit of work as the action server does."""
    from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
    from bankcore.event_store import store_events, upsert_profiles
    from foresight.service import ForesightService

    started = time.perf_counter()
    service = ForesightService.load(Path(model_dir), threads=threads)
    load_seconds = time.perf_counter() - started
    if service is None:
        raise FileNotFoundError(f"no foresight model in {model_dir}")

    events, profiles, contacts = data if data is not None else _simulated(customers, days, seed)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="foresight-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        migrate(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        with unit_of_work(factory) as session:
            for start in range(0, len(events), 20_000):
                store_events(session, events[start : start + 20_000])
            upsert_profiles(session, profiles)
        # Ask at real contact times when there are some (a realistic history length), else after the last event.
        moments: list[tuple[str, dt.datetime, str]] = [(c.customer_id, c.ts, c.channel) for c in contacts]
        if not moments:
            last: dict[str, dt.datetime] = {}
            for event in events:
                last[event.customer_id] = max(event.ts, last.get(event.customer_id, event.ts))
            moments = [(customer, ts + dt.timedelta(hours=1), "app") for customer, ts in last.items()]
        if not moments:
            raise ValueError("no customers to ask about")
        for customer_id, at, channel in rng.choices(moments, k=min(50, calls)):  # warm-up: caches, allocator
            with unit_of_work(factory) as session:
                service.predict_for(session, customer_id, channel, at)
        timings: list[float] = []
        unknown = 0
        for customer_id, at, channel in rng.choices(moments, k=calls):
            begin = time.perf_counter()
            with unit_of_work(factory) as session:
                ranked = service.predict_for(session, customer_id, channel, at)
            timings.append((time.perf_counter() - begin) * 1000.0)
            unknown += ranked is None
        engine.dispose()
    values = np.asarray(timings)
    return LatencyReport(
        load_seconds=round(load_seconds, 3),
        customers=len({p.customer_id for p in profiles} | {e.customer_id for e in events}),
        events=len(events),
        calls=calls,
        p50_ms=round(float(np.percentile(values, 50)), 2),
        p95_ms=round(float(np.percentile(values, 95)), 2),
        p99_ms=round(float(np.percentile(values, 99)), 2),
        max_ms=round(float(values.max()), 2),
        unknown=unknown,
    )

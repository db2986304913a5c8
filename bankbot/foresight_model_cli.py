"""CLI: train, predict with and explain the foresight Transformer; benchmark its latency (registered by bankbot.cli)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

console = Console(stderr=True)

PRECISION_TARGET = 0.8


def register(commands: Any, bench: Any = None) -> None:
    """Adds this module's subcommands to `commands` (and benchmarks to `bench`)."""
    train = commands.add_parser("train", help="train the foresight Transformer (time-based validation split)")
    train.add_argument("--profiles", type=Path, help="profiles JSON Lines")
    train.add_argument("--events", type=Path, help="events JSON Lines")
    train.add_argument("--contacts", type=Path, help="labelled contacts JSON Lines")
    train.add_argument("--from-db", action="store_true", help="read events, profiles and labelled contacts from the DB")
    train.add_argument("--out", type=Path, required=True, help="model directory to write")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max-epochs", type=int, default=30)
    train.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    train.add_argument("--valid-fraction", type=float, default=0.1, help="the latest contacts kept for validation")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=cmd_train)

    predict = commands.add_parser("predict", help="predict the reasons of (unlabelled) contacts to JSON Lines")
    predict.add_argument("--model", type=Path, required=True)
    predict.add_argument("--profiles", type=Path, required=True)
    predict.add_argument("--events", type=Path, required=True)
    predict.add_argument("--contacts", type=Path, required=True, help="contacts JSON Lines (intent not needed)")
    predict.add_argument("--out", type=Path, required=True)
    predict.add_argument("--k", type=int, default=3, help="intents per contact")
    predict.set_defaults(handler=cmd_predict)

    explain = commands.add_parser("explain", help="why the model expects a customer's contact (events by effect)")
    explain.add_argument("customer_id")
    explain.add_argument("--model", type=Path, help="model directory (default: the settings' foresight_model_dir)")
    explain.add_argument("--at", help="contact time, ISO-8601 (default: now)")
    explain.add_argument("--channel", default="app")
    explain.add_argument("--k", type=int, default=3)
    explain.add_argument("--events", type=int, default=15, help="events to list")
    explain.set_defaults(handler=cmd_explain)

    if bench is not None:
        latency = bench.add_parser("foresight-latency", help="foresight model load time and predict_for p50/p95/p99")
        latency.add_argument("--model", type=Path, required=True)
        latency.add_argument("--customers", type=int, default=1000, help="simulated customers in the temporary DB")
        latency.add_argument("--days", type=int, default=60)
        latency.add_argument("--calls", type=int, default=2000)
        latency.add_argument("--seed", type=int, default=0)
        latency.add_argument("--out", type=Path, help="write the figures as JSON here")
        latency.set_defaults(handler=cmd_latency_bench)


@contextmanager
def _database_session() -> Iterator[Session]:
    from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
    from bankcore.settings import Settings

    url = Settings.from_env().database_url
    migrate(url)
    engine = make_engine(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _read_files(profiles: Path, events: Path, contacts: Path) -> tuple[list[Any], list[Any], list[Any]]:
    from bankcore.events import parse_contact, parse_event, parse_profile, read_jsonl

    return (
        list(read_jsonl(profiles, parse_profile)),
        list(read_jsonl(events, parse_event)),
        list(read_jsonl(contacts, parse_contact)),
    )


def cmd_train(args: argparse.Namespace) -> int:
    from foresight.dataset import build_examples, time_split
    from foresight.transformer import TrainConfig, train_transformer

    started = time.perf_counter()
    if args.from_db:
        from bankcore.event_store import iter_events, iter_labelled_contacts, iter_profiles

        with _database_session() as session:
            profiles = list(iter_profiles(session))
            events = list(iter_events(session))
            contacts = list(iter_labelled_contacts(session))
    elif args.profiles and args.events and args.contacts:
        profiles, events, contacts = _read_files(args.profiles, args.events, args.contacts)
    else:
        console.print("[red]give --profiles, --events and --contacts, or --from-db[/]")
        return 2
    labelled = [c for c in contacts if c.intent is not None]
    if not labelled:
        console.print("[red]no labelled contacts to learn from[/]")
        return 2
    examples = build_examples(labelled, events, profiles)
    split = time_split(examples, valid_fraction=args.valid_fraction, test_fraction=0.0)
    console.print(
        f"{len(events)} events, {len(profiles)} profiles, {len(labelled)} labelled contacts: "
        f"{len(split.train)} train / {len(split.valid)} valid (by time); read in {time.perf_counter() - started:.1f}s"
    )
    config = TrainConfig(seed=args.seed, max_epochs=args.max_epochs, threads=args.threads)
    predictor = train_transformer(split.train, split.valid, config, progress=not args.quiet)
    predictor.save(args.out)
    metrics = predictor.meta.get("metrics", {})
    console.print(
        f"saved {args.out}: best epoch {metrics.get('best_epoch')}, valid top-1 {metrics.get('valid_top1')}, "
        f"valid log loss {metrics.get('valid_log_loss_calibrated')} (temperature {predictor.temperature:.3f}), "
        f"{metrics.get('train_seconds')}s"
    )
    _write_threshold(predictor, split.valid, args.out)
    return 0


def _write_threshold(predictor: Any, valid: list[Any], model_dir: Path) -> None:
    """threshold.json from the calibrated validation predictions (foresight.evaluate's rule)."""
    from foresight.evaluate import save_naming_threshold

    choice = save_naming_threshold(predictor, valid, model_dir, PRECISION_TARGET)
    if choice.achieved:
        console.print(f"threshold {choice.threshold:.3f} (top-1 precision ≥ {PRECISION_TARGET} on validation)")
    else:
        console.print(f"no confidence reaches top-1 precision {PRECISION_TARGET} on validation: never name the need")


def cmd_predict(args: argparse.Namespace) -> int:
    from foresight.dataset import build_examples
    from foresight.predictor import top_k
    from foresight.transformer import TransformerPredictor

    predictor = TransformerPredictor.load(args.model)
    profiles, events, contacts = _read_files(args.profiles, args.events, args.contacts)
    examples = build_examples(contacts, events, profiles, max_events=predictor.max_events)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from bankcore.events import format_ts

    with args.out.open("w", encoding="utf-8") as handle:
        for start in range(0, len(examples), 4096):
            chunk = examples[start : start + 4096]
            probabilities = predictor.predict_proba(chunk)
            for example, row in zip(chunk, probabilities, strict=True):
                record = {
                    "customer_id": example.contact.customer_id,
                    "ts": format_ts(example.contact.ts),
                    "top": [{"intent": r.intent, "p": round(r.p, 6)} for r in top_k(predictor.intents, row, args.k)],
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    console.print(f"{len(examples)} predictions written to {args.out}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from bankcore.event_store import events_before, profile_of
    from bankcore.events import Contact, RecordError, format_ts, parse_ts, public_channel
    from bankcore.settings import Settings
    from foresight.dataset import Example
    from foresight.explain import explain
    from foresight.transformer import META_FILE, TransformerPredictor

    model_dir = args.model or Settings.from_env().foresight_model_dir
    if not (Path(model_dir) / META_FILE).exists():
        console.print(f"[red]no foresight model in {model_dir}[/]")
        return 2
    try:
        at = parse_ts(args.at, "--at") if args.at else dt.datetime.now(dt.UTC)
    except RecordError as error:
        console.print(f"[red]{error}[/]")
        return 2
    predictor = TransformerPredictor.load(model_dir)
    with _database_session() as session:
        events = events_before(session, args.customer_id, at, max_events=predictor.max_events)
        profile = profile_of(session, args.customer_id)
    if not events and profile is None:
        console.print(f"[yellow]{args.customer_id}: no events and no profile; nothing to predict from[/]")
        return 1
    example = Example(Contact(args.customer_id, at, public_channel(args.channel)), tuple(events), profile)
    explanation = explain(predictor, example, k=args.k)
    out = Console()
    intents = Table(
        "intent", "probability", title=f"{args.customer_id} at {format_ts(at)} on {example.contact.channel}"
    )
    for ranked in explanation.top:
        intents.add_row(ranked.intent, f"{ranked.p:.3f}")
    out.print(intents)
    top = explanation.top[0].intent
    table = Table("time (UTC)", "before contact", "channel", "type", "attributes", f"effect on {top}")
    for item in explanation.contributions[: args.events]:
        event = item.event
        colour = "green" if item.contribution > 0.005 else "red" if item.contribution < -0.005 else "dim"
        table.add_row(
            format_ts(event.ts),
            _ago(at - event.ts),
            event.channel,
            event.type,
            json.dumps(dict(event.attrs), ensure_ascii=False)[:60],
            f"[{colour}]{item.contribution:+.3f}[/]",
        )
    out.print(table)
    if profile is not None:
        out.print(f"profile: {json.dumps(dict(profile.attrs), ensure_ascii=False)[:200]}")
    return 0


def _ago(delta: dt.timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def cmd_latency_bench(args: argparse.Namespace) -> int:
    from foresight.latency_bench import bench_latency

    report = bench_latency(args.model, customers=args.customers, days=args.days, calls=args.calls, seed=args.seed)
    table = Table("figure", "value", title=f"foresight latency ({args.model})")
    for key, value in report.to_json().items():
        table.add_row(key, str(value))
    Console().print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report.to_json(), indent=1), encoding="utf-8")
    return 0

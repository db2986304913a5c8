"""CLI: `bankbot risk simulate|train|evaluate|check-rules|features` (registered by bankbot.cli)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def register(commands: Any, bench: Any = None) -> None:
    """Adds the `risk` group to the top-level subcommands; no benchmarks (make bench-risk-quality runs these)."""
    del bench
    from bankcore.risk.simulate import VOCABULARIES

    rules_help = "rules file (default: bankcore/risk/rules.yaml, the one the services use)"

    risk = commands.add_parser("risk", help="transfer risk control: rules, learned score, labelled sets")
    group = risk.add_subparsers(dest="risk_command", required=True)

    simulate = group.add_parser("simulate", help="write a simulated labelled set (legitimate customers and scams)")
    simulate.add_argument("--out", type=Path, required=True, help="directory for transfers.jsonl and events.jsonl")
    simulate.add_argument("--customers", type=int, default=2000)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--days", type=int, default=90)
    simulate.add_argument("--warmup-days", type=int, default=45, help="first days written unlabelled (history)")
    simulate.add_argument(
        "--vocabulary", choices=VOCABULARIES, default="default", help="alt: event types the rules file does not know"
    )
    simulate.set_defaults(handler=cmd_simulate)

    train = group.add_parser("train", help="train the learned score on a labelled set and save it")
    train.add_argument("--data", type=Path, required=True, help="labelled set directory")
    train.add_argument("--out", type=Path, required=True, help="model directory to write")
    train.add_argument("--rules", type=Path, default=None, help=rules_help)
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(handler=cmd_train)

    evaluate = group.add_parser(
        "evaluate", help="detection at fixed false-alarm rates: rules, model, combined; the policy's operating point"
    )
    evaluate.add_argument("--data", type=Path, required=True, help="labelled set directory")
    evaluate.add_argument("--rules", type=Path, default=None, help=rules_help)
    evaluate.add_argument(
        "--model", type=Path, default=None, help="a saved model: score every labelled record with it (no training)"
    )
    evaluate.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    evaluate.add_argument("--seed", type=int, default=0, help="the customer split and the model's seed")
    evaluate.add_argument("--train-fraction", type=float, default=0.5, help="share of customers trained on")
    evaluate.add_argument(
        "--folds",
        type=int,
        default=1,
        help="k >= 2: every customer measured once, by a model trained on the other folds",
    )
    evaluate.set_defaults(handler=cmd_evaluate)

    check = group.add_parser("check-rules", help="validate a rules file (exit 1 when it cannot be used)")
    check.add_argument("path", nargs="?", type=Path, default=None, help=rules_help)
    check.set_defaults(handler=cmd_check_rules)

    features = group.add_parser("features", help="the feature names rules and the learned score can use")
    features.add_argument("--rules", type=Path, default=None, help=rules_help)
    features.set_defaults(handler=cmd_features)


def _rules_path(path: Path | None) -> Path:
    from bankcore.risk.config import DEFAULT_RULES_PATH

    return DEFAULT_RULES_PATH if path is None else path


def _load_rules(path: Path | None) -> Any:
    from bankcore.risk.config import RulesFileError, load_rules

    try:
        return load_rules(_rules_path(path))
    except RulesFileError as error:
        errors.print(f"[red]{escape(str(error))}[/]", highlight=False)
        return None


def _read_set(path: Path) -> Any:
    from bankcore.events import FileRecordError
    from bankcore.risk.dataset import LabelledSetError, read_labelled_set

    started = time.perf_counter()
    try:
        examples = read_labelled_set(path, labelled_only=True)
    except (LabelledSetError, FileRecordError) as error:
        errors.print(f"[red]{escape(str(error))}[/]", highlight=False)
        return None
    except (OSError, UnicodeDecodeError) as error:
        errors.print(f"[red]cannot read {escape(str(path))}: {escape(str(error))}[/]")
        return None
    console.print(
        f"read {len(examples):,} labelled records from {path} in {time.perf_counter() - started:.1f}s",
        highlight=False,
    )
    return examples


def cmd_simulate(args: argparse.Namespace) -> int:
    from bankcore.risk.simulate import simulate

    started = time.perf_counter()
    try:
        counts = simulate(
            args.out,
            customers=args.customers,
            seed=args.seed,
            days=args.days,
            vocabulary=args.vocabulary,
            warmup_days=args.warmup_days,
        )
    except ValueError as error:
        errors.print(f"[red]{escape(str(error))}[/]")
        return 2
    share = counts["scam"] / counts["labelled"] if counts["labelled"] else 0.0
    patterns = ", ".join(f"{k.removeprefix('scam_')} {v:,}" for k, v in counts.items() if k.startswith("scam_"))
    console.print(
        f"{counts['customers']:,} customers: {counts['transfers']:,} transfers ({counts['labelled']:,} labelled, "
        f"{counts['scam']:,} scam = {share:.2%}: {patterns}), {counts['events']:,} events -> {args.out} "
        f"({args.vocabulary} vocabulary, {time.perf_counter() - started:.1f}s)",
        highlight=False,
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from bankcore.risk.model import train_model

    config = _load_rules(args.rules)
    if config is None:
        return 2
    examples = _read_set(args.data)
    if examples is None:
        return 2
    started = time.perf_counter()
    try:
        model = train_model(examples, config, seed=args.seed)
    except ValueError as error:
        errors.print(f"[red]{escape(str(error))}[/]")
        return 2
    model.save(args.out)
    thresholds = ", ".join(f"{band} {value:.4g}" for band, value in model.thresholds.items())
    console.print(
        f"model {model.version} -> {args.out} in {time.perf_counter() - started:.1f}s; thresholds {thresholds}; "
        f"counts {json.dumps(model.counts, ensure_ascii=False)}",
        highlight=False,
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from bankcore.risk.evaluate import evaluate
    from bankcore.risk.model import ModelLoadError, load_model

    config = _load_rules(args.rules)
    if config is None:
        return 2
    model = None
    if args.model is not None:
        try:
            model = load_model(args.model, config)
        except ModelLoadError as error:
            errors.print(f"[red]{escape(str(error))}[/]", highlight=False)
            return 2
    examples = _read_set(args.data)
    if examples is None:
        return 2
    started = time.perf_counter()
    try:
        report = evaluate(
            examples, config, seed=args.seed, train_fraction=args.train_fraction, model=model, folds=args.folds
        )
    except ValueError as error:
        errors.print(f"[red]{escape(str(error))}[/]")
        return 2
    data = report.to_json()
    data["evaluate_seconds"] = round(time.perf_counter() - started, 1)
    render(data)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        console.print(f"report: {args.json}", highlight=False)
    return 0


def _pct(value: float) -> str:
    return f"{value:.1%}" if value >= 0.001 or value == 0 else f"{value:.2%}"


def render(data: dict[str, Any]) -> None:
    """The evaluation report as Rich tables."""
    counts = data["counts"]
    by_pattern = ", ".join(f"{k} {v:,}" for k, v in counts["test_scam_by_pattern"].items())
    console.print(
        f"rules {data['rules_version']} · model {data['model_version']} ({data['model_source']}) · test: "
        f"{counts['test_legit']:,} legit, {counts['test_scam']:,} scam ({by_pattern}) of "
        f"{counts['test_customers']:,} customers · evaluated in {data.get('evaluate_seconds', '?')}s",
        highlight=False,
    )
    rates = data["false_alarm_rates"]
    table = Table(title="Detection of scam transfers at fixed false-alarm rates (share of legit transfers alerted)")
    table.add_column("score")
    table.add_column("pattern")
    for rate in rates:
        table.add_column(f"@{rate}", justify="right")
    for system in ("rules", "model", "combined"):
        curve = data["detection"][system]
        table.add_row(system, "all", *(_pct(curve["overall"][r]) for r in rates))
        for pattern, values in curve["by_pattern"].items():
            table.add_row("", pattern, *(_pct(values[r]) for r in rates))
        table.add_row("", "[dim]false alarms reached[/]", *(f"[dim]{_pct(curve['false_alarm'][r])}[/]" for r in rates))
    console.print(table)
    patterns = list(counts["test_scam_by_pattern"])
    policy = Table(title="The policy's operating point: share interrupted (warn, hold or block)")
    policy.add_column("decide()")
    policy.add_column("legit", justify="right")
    policy.add_column("legit transfers", justify="right")
    policy.add_column("all scams", justify="right")
    for pattern in patterns:
        policy.add_column(pattern, justify="right")
    for name, label in (("rules_only", "rules only"), ("rules_and_model", "rules + model")):
        summary = data["policy"][name]
        policy.add_row(
            label,
            _pct(summary["legit_interrupted"]),
            _pct(summary["legit_transfers_interrupted"]),
            _pct(summary["scam_interrupted"]),
            *(_pct(summary["by_pattern"].get(p, 0.0)) for p in patterns),
        )
    console.print(policy)
    actions = data["policy"]["rules_and_model"]["actions"]
    console.print(
        "rules + model, actions: "
        + " · ".join(f"{side}: " + ", ".join(f"{a} {n:,}" for a, n in actions[side].items()) for side in actions),
        highlight=False,
    )


def cmd_check_rules(args: argparse.Namespace) -> int:
    from bankcore.risk.config import RulesFileError, load_rules

    path = _rules_path(args.path)
    try:
        config = load_rules(path)
    except RulesFileError as error:
        errors.print(f"[red]{escape(str(error))}[/]", highlight=False)
        return 1
    console.print(
        f"OK {path}: version {config.version} ({len(config.rules)} tunable rules, "
        f"{len(config.fraud_phrases)} fraud phrases, {len(config.event_signals)} event signals)",
        highlight=False,
    )
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from bankcore.risk.features import feature_names

    config = _load_rules(args.rules)
    if config is None:
        return 2
    for name in feature_names(tuple(config.event_signals)):
        console.print(name, highlight=False)
    return 0

"""CLI: `bankbot foresight simulate|evaluate` and `bankbot bench foresight` (registered by bankbot.cli)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def register(commands: Any, bench: Any = None) -> None:
    """Adds this module's subcommands to `commands` (and benchmarks to `bench`)."""
    simulate = commands.add_parser(
        "simulate", help="simulated profiles, events and contacts with each contact's exact intent posterior"
    )
    simulate.add_argument("--customers", type=int, default=10_000)
    simulate.add_argument("--days", type=int, default=60)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument(
        "--event-vocab-shift",
        type=int,
        default=None,
        metavar="SEED",
        help="rename the non-core event types and their attribute keys (open-vocabulary checks)",
    )
    simulate.add_argument("--out", required=True, help="directory for profiles/events/contacts/posteriors.jsonl")
    simulate.set_defaults(handler=cmd_simulate)

    evaluate = commands.add_parser("evaluate", help="baselines and the Transformer on a time split; reports written")
    evaluate.add_argument("--profiles", required=True)
    evaluate.add_argument("--events", required=True)
    evaluate.add_argument("--contacts", required=True)
    evaluate.add_argument("--posteriors", default=None, help="the simulator's posteriors: adds the Bayes-optimal row")
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help="a saved Transformer model directory to evaluate")
    source.add_argument("--train", action="store_true", help="train the Transformer on the train/valid split")
    evaluate.add_argument("--save-model", default=None, help="with --train: save the model (and threshold.json) here")
    evaluate.add_argument("--epochs", type=int, default=None, help="with --train: at most this many epochs")
    evaluate.add_argument("--gbt-max-iter", type=int, default=200)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--out", default="reports/foresight")
    evaluate.set_defaults(handler=cmd_evaluate)

    if bench is not None:
        foresight = bench.add_parser("foresight", help="simulate, train, evaluate against Bayes-optimal; bench.json")
        foresight.add_argument("--customers", type=int, default=100_000)
        foresight.add_argument("--days", type=int, default=60)
        foresight.add_argument("--seed", type=int, default=1)
        foresight.add_argument("--epochs", type=int, default=None, help="at most this many Transformer epochs")
        foresight.add_argument("--gbt-max-iter", type=int, default=200)
        foresight.add_argument("--model-dir", default=None, help="where to save the Transformer (default OUT/model)")
        foresight.add_argument("--out", default="reports/foresight")
        foresight.set_defaults(handler=cmd_bench_foresight)


def cmd_simulate(args: argparse.Namespace) -> int:
    from foresight.simulate import expected_top1, simulate

    started = time.perf_counter()
    data = simulate(args.customers, args.days, args.seed, vocab_seed=args.event_vocab_shift)
    simulated = time.perf_counter() - started
    counts = data.write(args.out)
    console.print(
        f"{counts['profiles']} profiles, {counts['events']} events, {counts['contacts']} contacts -> {args.out} "
        f"(simulated in {simulated:.1f}s, written in {time.perf_counter() - started - simulated:.1f}s); "
        f"Bayes-optimal top-1 {expected_top1(data.posteriors):.3f}"
    )
    return 0


def _train_config(seed: int, epochs: int | None) -> Any:
    from foresight.transformer import TrainConfig

    config = TrainConfig(seed=seed)
    if epochs is not None:
        config.max_epochs = epochs
    return config


def cmd_evaluate(args: argparse.Namespace) -> int:
    from foresight.evaluate import copy_threshold, evaluate, load_examples, render_table, write_report

    if args.save_model and not args.train:
        console.print("[red]--save-model needs --train[/]")
        return 2
    console.print("reading the data...")
    examples = load_examples(args.profiles, args.events, args.contacts)
    bayes = None
    if args.posteriors:
        from foresight.simulate import PosteriorPredictor

        bayes = PosteriorPredictor.from_jsonl(args.posteriors)
    transformer = None
    train_with = None
    if args.model:
        from foresight.transformer import TransformerPredictor

        transformer = TransformerPredictor.load(Path(args.model))
    elif args.train:
        from foresight.transformer import train_transformer

        config = _train_config(args.seed, args.epochs)

        def train_with(train: Any, valid: Any) -> Any:
            return train_transformer(train, valid, config, progress=True)

    report, trained = evaluate(
        examples,
        transformer=transformer,
        train_transformer_with=train_with,
        bayes=bayes,
        seed=args.seed,
        gbt_max_iter=args.gbt_max_iter,
        log=console.print,
    )
    console.print(render_table(report))
    paths = write_report(report, args.out)
    if args.save_model and trained is not None:
        trained.save(Path(args.save_model))  # type: ignore[attr-defined]
        copy_threshold(args.out, args.save_model)
        console.print(f"model saved to {args.save_model} (with threshold.json)")
    _print_threshold(report.to_json()["threshold"])
    for note in report.notes:
        console.print(f"[yellow]{note}[/]")
    console.print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _print_threshold(threshold: dict[str, Any] | None) -> None:
    if threshold is None:
        return
    if threshold["achieved"]:
        console.print(
            f"naming threshold ({threshold['model']}, validation): {threshold['threshold']:.3f} gives precision "
            f"{threshold['precision']:.3f} on {threshold['coverage']:.1%} of contacts"
        )
    else:
        console.print(f"no threshold reaches precision {threshold['target_precision']} on validation: never name")


def cmd_bench_foresight(args: argparse.Namespace) -> int:
    from foresight.evaluate import bench, render_table

    figures, report = bench(
        args.customers,
        args.days,
        args.seed,
        args.out,
        model_dir=args.model_dir,
        train_config=_train_config(args.seed, args.epochs),
        gbt_max_iter=args.gbt_max_iter,
        log=console.print,
    )
    console.print(render_table(report, title=f"foresight bench: {args.customers} customers x {args.days} days"))
    table = Table("figure", "value", title="foresight bench")
    table.add_row("simulate (s)", f"{figures['simulate_seconds']:.1f}")
    training = figures["transformer_training_seconds"]
    table.add_row("Transformer training (s)", "-" if training is None else f"{training:.1f}")
    gbt = figures["models"].get("gradient_boosted", {})
    table.add_row("GBT training (s)", f"{gbt.get('fit_seconds') or 0:.1f}")
    gap = figures["gap_to_bayes"]
    if gap.get("passed") is not None:
        table.add_row("Bayes-optimal top-1", f"{gap['bayes_top1']:.3f}")
        table.add_row("Transformer top-1", f"{gap['model_top1']:.3f}")
        table.add_row("gap to Bayes-optimal", f"{gap['gap']:.3f} (bar {gap['bar']})")
        table.add_row("ahead of GBT", str(gap["ahead_of_gbt"]))
        table.add_row("bar", "[green]passed[/]" if gap["passed"] else "[red]missed[/]")
    latency = figures.get("latency")
    if latency:
        table.add_row("latency", json.dumps(latency))
    console.print(table)
    _print_threshold(figures["threshold"])
    console.print(f"written: {Path(args.out) / 'bench.json'}")
    return 0

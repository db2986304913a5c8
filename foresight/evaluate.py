"""Evaluation of foresight models on a time split: baselines, the Transformer, the simulator's Bayes-optimal posterior.

The split is by contact time (foresight.dataset.time_split). Baselines are fitted on the training part only,
as the Transformer's weights are (it uses the validation part for early stopping and temperature); the
validation part then calibrates the naming threshold, and everything is scored on the test part.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from bankcore.events import parse_contact, parse_event, parse_profile, read_jsonl
from foresight.baselines import GlobalPriorBaseline, GradientBoostedBaseline, LastEventTypeBaseline
from foresight.dataset import Example, TimeSplit, build_examples, time_split
from foresight.metrics import (
    IntentScore,
    Reliability,
    Summary,
    ThresholdChoice,
    align,
    confidence_and_correct,
    label_indices,
    per_intent,
    reliability,
    summarise,
    threshold_choice,
)
from foresight.predictor import Predictor

DEFAULT_OUT = Path("reports/foresight")
TARGET_PRECISION = 0.8
BAYES_GAP_BAR = 0.03


@dataclass
class ModelResult:
    name: str
    summary: Summary
    per_intent: list[IntentScore]
    reliability: Reliability
    fit_seconds: float | None = None
    predict_seconds: float = 0.0


@dataclass
class EvaluationReport:
    intents: tuple[str, ...]
    n_train: int
    n_valid: int
    n_test: int
    results: list[ModelResult]
    threshold: ThresholdChoice | None = None
    threshold_model: str | None = None
    notes: list[str] = field(default_factory=list)

    def result(self, name: str) -> ModelResult | None:
        return next((r for r in self.results if r.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "split": {"train": self.n_train, "valid": self.n_valid, "test": self.n_test},
            "intents": list(self.intents),
            "models": {
                r.name: {**r.summary.to_json(), "fit_seconds": r.fit_seconds, "predict_seconds": r.predict_seconds}
                for r in self.results
            },
            "reliability": {r.name: r.reliability.to_json() for r in self.results},
            "threshold": None
            if self.threshold is None
            else {**self.threshold.to_json(), "model": self.threshold_model, "split": "valid"},
            "notes": self.notes,
        }


def load_examples(profiles: str | Path, events: str | Path, contacts: str | Path) -> list[Example]:
    """Labelled examples from the three public JSON Lines files (unlabelled contacts are left out)."""
    labelled = [c for c in read_jsonl(contacts, parse_contact) if c.intent is not None]
    return build_examples(labelled, read_jsonl(events, parse_event), read_jsonl(profiles, parse_profile))


def evaluation_intents(split: TimeSplit, *models: Predictor) -> tuple[str, ...]:
    """Every intent labelled anywhere in the split or known to a model, sorted: the common column order."""
    labels = {e.contact.intent for part in (split.train, split.valid, split.test) for e in part}
    known = {intent for model in models for intent in model.intents}
    return tuple(sorted({label for label in labels if label is not None} | known))


def predict_aligned(model: Predictor, examples: Sequence[Example], intents: Sequence[str]) -> np.ndarray:
    probabilities = align(np.asarray(model.predict_proba(examples), dtype=np.float64), model.intents, intents)
    totals = probabilities.sum(axis=1, keepdims=True)
    return probabilities / np.where(totals > 0, totals, 1.0)


def score(model: Predictor, examples: Sequence[Example], intents: Sequence[str]) -> ModelResult:
    started = time.perf_counter()
    probabilities = predict_aligned(model, examples, intents)
    elapsed = time.perf_counter() - started
    labels = label_indices([e.contact.intent for e in examples], intents)
    return ModelResult(
        name=model.name,
        summary=summarise(probabilities, labels),
        per_intent=per_intent(probabilities, labels, intents),
        reliability=reliability(probabilities, labels),
        predict_seconds=elapsed,
    )


def naming_threshold(
    model: Predictor, valid: Sequence[Example], intents: Sequence[str], target_precision: float = TARGET_PRECISION
) -> ThresholdChoice:
    """The threshold on top-1 confidence chosen from `model`'s calibration on the validation examples."""
    probabilities = predict_aligned(model, valid, intents)
    labels = label_indices([e.contact.intent for e in valid], intents)
    confidence, correct = confidence_and_correct(probabilities, labels)
    return threshold_choice(confidence, correct, target_precision)


def fit_baselines(
    train: Sequence[Example], intents: Sequence[str], *, seed: int = 0, gbt_max_iter: int = 200
) -> list[tuple[Predictor, float]]:
    """The three baselines fitted on `train`, each with its fit time in seconds."""
    fitted: list[tuple[Predictor, float]] = []
    makers: list[Callable[[], Predictor]] = [
        lambda: GlobalPriorBaseline.fit(train, intents),
        lambda: LastEventTypeBaseline.fit(train, intents),
        lambda: GradientBoostedBaseline.fit(train, intents, seed=seed, max_iter=gbt_max_iter),
    ]
    for make in makers:
        started = time.perf_counter()
        model = make()
        fitted.append((model, time.perf_counter() - started))
    return fitted


def evaluate(
    examples: Sequence[Example],
    *,
    transformer: Predictor | None = None,
    transformer_fit_seconds: float | None = None,
    train_transformer_with: Callable[[Sequence[Example], Sequence[Example]], Predictor] | None = None,
    bayes: Predictor | None = None,
    seed: int = 0,
    gbt_max_iter: int = 200,
    target_precision: float = TARGET_PRECISION,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[EvaluationReport, Predictor | None]:
    """Splits by time, fits the baselines (and the Transformer through `train_transformer_with`), scores all on
    the test part and chooses the naming threshold on the validation part. Returns the report and the
    Transformer used (loaded or trained), if any."""
    split = time_split(examples)
    if not split.train or not split.test:
        raise ValueError(f"too few labelled examples to split by time ({len(examples)})")
    notes: list[str] = []
    if train_transformer_with is not None and transformer is None:
        log(f"training the Transformer on {len(split.train)} examples (validation {len(split.valid)})")
        started = time.perf_counter()
        transformer = train_transformer_with(split.train, split.valid)
        transformer_fit_seconds = time.perf_counter() - started
    intents = evaluation_intents(split, *([transformer] if transformer is not None else []))
    log(f"fitting the baselines on {len(split.train)} examples")
    fitted = fit_baselines(split.train, intents, seed=seed, gbt_max_iter=gbt_max_iter)
    models: list[tuple[Predictor, float | None]] = [(model, seconds) for model, seconds in fitted]
    if transformer is not None:
        models.append((transformer, transformer_fit_seconds))
    results = []
    for model, seconds in models:
        log(f"scoring {model.name} on {len(split.test)} test examples")
        result = score(model, split.test, intents)
        result.fit_seconds = seconds
        results.append(result)
    if bayes is not None:
        try:
            results.append(score(bayes, split.test, intents))
        except KeyError as error:
            notes.append(f"bayes_optimal left out: {error}")
    # The threshold is the Transformer's when there is one; otherwise the best baseline's, so the report is whole.
    chooser: Predictor | None = transformer if transformer is not None else fitted[-1][0]
    threshold = None
    if chooser is not None and split.valid:
        threshold = naming_threshold(chooser, split.valid, intents, target_precision)
    report = EvaluationReport(
        intents=intents,
        n_train=len(split.train),
        n_valid=len(split.valid),
        n_test=len(split.test),
        results=results,
        threshold=threshold,
        threshold_model=chooser.name if threshold is not None and chooser is not None else None,
        notes=notes,
    )
    return report, transformer


def render_table(report: EvaluationReport, title: str = "foresight: test split") -> Table:
    table = Table("model", "top-1", "top-3", "log loss", "ECE", "fit s", title=title)
    for r in report.results:
        s = r.summary
        fit = "" if r.fit_seconds is None else f"{r.fit_seconds:.1f}"
        table.add_row(r.name, f"{s.top1:.3f}", f"{s.top3:.3f}", f"{s.log_loss:.3f}", f"{s.ece:.3f}", fit)
    return table


def per_intent_markdown(report: EvaluationReport) -> str:
    lines = [
        "# Foresight: per-intent scores on the test split",
        "",
        f"Top-1 prediction per contact; {report.n_test} test contacts (train {report.n_train}, "
        f"valid {report.n_valid}).",
    ]
    for r in report.results:
        lines += ["", f"## {r.name}", "", "| intent | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {s.intent} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {s.support} |" for s in r.per_intent
        ]
    return "\n".join(lines) + "\n"


def plot_reliability(report: EvaluationReport, path: Path) -> None:
    # The object-oriented API with the Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for r in report.results:
        points = [
            (c, a)
            for c, a, n in zip(r.reliability.confidence, r.reliability.accuracy, r.reliability.count, strict=True)
            if n > 0
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            axes.plot(xs, ys, marker="o", label=f"{r.name} (ECE {r.summary.ece:.3f})")
    if report.threshold is not None and report.threshold.achieved:
        axes.axvline(report.threshold.threshold, color="black", linewidth=0.8, label="naming threshold")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("top-1 confidence")
    axes.set_ylabel("top-1 accuracy")
    axes.set_title("Foresight reliability (test split)")
    axes.legend(loc="upper left", fontsize="small")
    figure.savefig(path, dpi=120, bbox_inches="tight")


def threshold_record(choice: ThresholdChoice, model: str | None) -> dict[str, Any]:
    """What threshold.json holds; the service reads its "threshold"."""
    data = choice.to_json()
    if data["threshold"] is None:
        # JSON has no infinity; a threshold above any probability means "never name the need".
        data["threshold"] = 1.01
    return {**data, "model": model, "split": "valid"}


def threshold_json(report: EvaluationReport) -> dict[str, Any] | None:
    if report.threshold is None:
        return None
    return threshold_record(report.threshold, report.threshold_model)


def save_naming_threshold(
    model: Predictor, valid: Sequence[Example], model_dir: str | Path, target_precision: float = TARGET_PRECISION
) -> ThresholdChoice:
    """Choose `model`'s naming threshold on the validation examples and save it as model_dir/threshold.json."""
    choice = naming_threshold(model, valid, model.intents, target_precision)
    path = Path(model_dir) / "threshold.json"
    path.write_text(json.dumps(threshold_record(choice, model.name), indent=2) + "\n")
    return choice


def write_report(report: EvaluationReport, out_dir: str | Path) -> dict[str, Path]:
    """metrics.json, per_intent.md, reliability.png and threshold.json under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.json",
        "per_intent": out / "per_intent.md",
        "reliability": out / "reliability.png",
    }
    paths["metrics"].write_text(json.dumps(json_safe(report.to_json()), indent=2, allow_nan=False) + "\n")
    paths["per_intent"].write_text(per_intent_markdown(report), encoding="utf-8")
    plot_reliability(report, paths["reliability"])
    threshold = threshold_json(report)
    if threshold is not None:
        paths["threshold"] = out / "threshold.json"
        paths["threshold"].write_text(json.dumps(threshold, indent=2) + "\n")
    return paths


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def copy_threshold(out_dir: str | Path, model_dir: str | Path) -> Path | None:
    source = Path(out_dir) / "threshold.json"
    if not source.exists():
        return None
    target = Path(model_dir) / "threshold.json"
    shutil.copyfile(source, target)
    return target


def bayes_gap(report: EvaluationReport, model: str = "transformer") -> dict[str, Any]:
    """The gap between a model's test top-1 and the Bayes-optimal top-1, and whether it clears the bar."""
    bayes = report.result("bayes_optimal")
    candidate = report.result(model)
    gbt = report.result("gradient_boosted")
    out: dict[str, Any] = {"model": model, "bar": BAYES_GAP_BAR}
    if bayes is None or candidate is None:
        out["passed"] = None
        return out
    gap = bayes.summary.top1 - candidate.summary.top1
    out.update(
        bayes_top1=bayes.summary.top1,
        model_top1=candidate.summary.top1,
        gap=gap,
        gbt_top1=None if gbt is None else gbt.summary.top1,
        ahead_of_gbt=None if gbt is None else candidate.summary.top1 > gbt.summary.top1,
        passed=bool(gap <= BAYES_GAP_BAR and (gbt is None or candidate.summary.top1 > gbt.summary.top1)),
    )
    return out


def latency_hook(model_dir: Path, **kwargs: Any) -> dict[str, Any] | None:
    """Runs foresight.latency_bench when that module exists (it measures load time and prediction latency)."""
    if importlib.util.find_spec("foresight.latency_bench") is None:
        return None
    module = importlib.import_module("foresight.latency_bench")
    measure = getattr(module, "bench_latency", None) or getattr(module, "measure", None)
    if measure is None:
        return None
    result = measure(model_dir, **kwargs)
    return result.to_json() if hasattr(result, "to_json") else dict(result)


def bench(
    customers: int,
    days: int,
    seed: int,
    out_dir: str | Path = DEFAULT_OUT,
    *,
    model_dir: str | Path | None = None,
    train_config: Any = None,
    gbt_max_iter: int = 200,
    latency_customers: int = 1000,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[dict[str, Any], EvaluationReport]:
    """Simulates, trains the baselines and the Transformer, scores them against the Bayes-optimal posterior and
    writes the report plus bench.json under `out_dir`. Returns the bench figures and the report."""
    from foresight.simulate import PosteriorPredictor, simulate
    from foresight.transformer import TrainConfig, train_transformer

    out = Path(out_dir)
    started = time.perf_counter()
    data = simulate(customers, days, seed)
    simulate_seconds = time.perf_counter() - started
    log(
        f"simulated {customers} customers x {days} days in {simulate_seconds:.1f}s: {len(data.events)} events, "
        f"{len(data.contacts)} contacts"
    )
    started = time.perf_counter()
    examples = build_examples(data.contacts, data.events, data.profiles)
    examples_seconds = time.perf_counter() - started
    config = train_config if train_config is not None else TrainConfig(seed=seed)

    def train(train_part: Sequence[Example], valid_part: Sequence[Example]) -> Predictor:
        return train_transformer(train_part, valid_part, config, progress=progress)

    report, transformer = evaluate(
        examples,
        train_transformer_with=train,
        bayes=PosteriorPredictor(data.posteriors),
        seed=seed,
        gbt_max_iter=gbt_max_iter,
        log=log,
    )
    paths = write_report(report, out)
    saved = Path(model_dir) if model_dir is not None else out / "model"
    latency: dict[str, Any] | None = None
    if transformer is not None and hasattr(transformer, "save"):
        saved.mkdir(parents=True, exist_ok=True)
        transformer.save(saved)
        copy_threshold(out, saved)
        wanted = {p.customer_id for p in data.profiles[:latency_customers]}
        subset = (
            [e for e in data.events if e.customer_id in wanted],
            [p for p in data.profiles if p.customer_id in wanted],
            [c for c in data.contacts if c.customer_id in wanted],
        )
        try:
            latency = latency_hook(saved, customers=len(wanted), days=days, seed=seed, data=subset)
        except Exception as error:  # the latency bench is another component's; report, don't fail the bench
            latency = {"error": f"{type(error).__name__}: {error}"}
    transformer_result = report.result("transformer")
    figures: dict[str, Any] = {
        "customers": customers,
        "days": days,
        "seed": seed,
        "events": len(data.events),
        "contacts": len(data.contacts),
        "simulate_seconds": simulate_seconds,
        "examples_seconds": examples_seconds,
        "bayes_optimal_expected_top1": float(np.mean([max(p.probabilities.values()) for p in data.posteriors])),
        "models": report.to_json()["models"],
        "split": report.to_json()["split"],
        "transformer_training_seconds": None if transformer_result is None else transformer_result.fit_seconds,
        "gap_to_bayes": bayes_gap(report),
        "threshold": threshold_json(report),
        "latency": latency,
        "model_dir": str(saved) if transformer is not None else None,
        "reports": {name: str(path) for name, path in paths.items()},
    }
    (out / "bench.json").write_text(json.dumps(json_safe(figures), indent=2, allow_nan=False) + "\n")
    return figures, report

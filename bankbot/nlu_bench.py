"""NLU benchmark: stratified held-out splits over seeds, train with Rasa, score intents and entities, report."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bankbot.layout import subprocess_env
from bankbot.nlu_lint import parse_example

__all__ = ["BenchResult", "SeedResult", "bench_nlu", "main", "split_nlu"]

FALLBACK_INTENT = "nlu_fallback"
CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Serif CJK SC", "DejaVu Sans"]

# Runs inside the Rasa environment: parse every held-out text with the trained model, write JSON.
_PARSE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, logging, sys
    logging.disable(logging.WARNING)
    from rasa.core.agent import Agent

    async def main(model, texts_file, out_file):
        agent = Agent.load(model)
        texts = json.load(open(texts_file, encoding="utf-8"))
        results = []
        for text in texts:
            parsed = await agent.parse_message(text)
            results.append({
                "text": text,
                "intent": (parsed.get("intent") or {}).get("name"),
                "confidence": (parsed.get("intent") or {}).get("confidence"),
                "ranking": [[r["name"], r["confidence"]] for r in parsed.get("intent_ranking", [])[:5]],
                "entities": [
                    {k: e.get(k) for k in ("entity", "start", "end", "value", "extractor")}
                    for e in parsed.get("entities", [])
                ],
            })
        json.dump(results, open(out_file, "w", encoding="utf-8"), ensure_ascii=False)

    asyncio.run(main(*sys.argv[1:4]))
    """
)


@dataclass
class SeedResult:
    """Scores of one seed's split."""

    seed: int
    n_train: int
    n_test: int
    intent_accuracy: float
    intent_macro_f1: float
    intent_accuracy_after_fallback: float
    intent_macro_f1_after_fallback: float
    fallback_rate: float
    entity_precision: float
    entity_recall: float
    entity_f1: float
    train_seconds: float
    per_intent_f1: dict[str, float] = field(default_factory=dict)
    per_entity_f1: dict[str, float] = field(default_factory=dict)


@dataclass
class BenchResult:
    """All seeds, their mean and minimum, and where the report files are."""

    seeds: list[SeedResult]
    mean: dict[str, float]
    minimum: dict[str, float]
    confusions: list[dict[str, Any]]
    report_json: Path
    confusion_png: Path
    confusions_md: Path


@dataclass
class _Example:
    intent: str
    raw: str


@dataclass
class _Prediction:
    gold_intent: str
    text: str
    gold_entities: set[tuple[str, int, int]]
    top_intent: str
    final_intent: str
    entities: set[tuple[str, int, int]]


def _read_nlu(nlu_dir: Path) -> tuple[list[_Example], list[dict[str, Any]]]:
    """Intent examples (annotations kept) and every other NLU item (synonyms, regexes, lookups)."""
    examples: list[_Example] = []
    others: list[dict[str, Any]] = []
    for path in sorted(p for p in nlu_dir.rglob("*") if p.suffix in (".yml", ".yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for item in document.get("nlu") or []:
            if "intent" in item:
                block = item.get("examples") or ""
                lines = block.splitlines() if isinstance(block, str) else [str(x) for x in block]
                for line in lines:
                    stripped = line.strip()
                    if stripped.startswith("- "):
                        examples.append(_Example(str(item["intent"]), stripped[2:].strip()))
            else:
                others.append(item)
    return examples, others


def split_nlu(examples: Sequence[_Example], seed: int, test_fraction: float) -> tuple[list[_Example], list[_Example]]:
    """Stratified split by intent: each intent with two or more examples gives at least one to the test part."""
    by_intent: dict[str, list[_Example]] = defaultdict(list)
    for example in examples:
        by_intent[example.intent].append(example)
    rng = random.Random(seed)
    train: list[_Example] = []
    test: list[_Example] = []
    for intent in sorted(by_intent):
        items = by_intent[intent][:]
        rng.shuffle(items)
        n_test = max(1, round(len(items) * test_fraction)) if len(items) >= 2 else 0
        test += items[:n_test]
        train += items[n_test:]
    return train, test


def _block(lines: list[str]) -> str:
    return "  examples: |\n" + "".join(f"    - {line}\n" for line in lines)


def _write_training_yaml(path: Path, train: list[_Example], others: list[dict[str, Any]]) -> None:
    """Training part as Rasa YAML: intents with annotations, plus all synonyms, regexes and lookups."""
    out = ['version: "3.1"', "nlu:"]
    by_intent: dict[str, list[str]] = defaultdict(list)
    for example in train:
        by_intent[example.intent].append(example.raw)
    for intent, raws in by_intent.items():
        out.append(f"- intent: {intent}\n" + _block(raws).rstrip("\n"))
    for item in others:
        kind = next((k for k in ("synonym", "regex", "lookup") if k in item), None)
        if kind is None:
            continue
        block = item.get("examples") or ""
        lines = [ln.strip()[2:] for ln in block.splitlines() if ln.strip().startswith("- ")]
        if not isinstance(block, str):
            lines = [str(x) for x in block]
        out.append(f"- {kind}: {item[kind]}\n" + _block(lines).rstrip("\n"))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def _run(command: list[str], cwd: Path, log: Path, env: dict[str, str]) -> None:
    with log.open("w", encoding="utf-8") as handle:
        result = subprocess.run(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(command[:5])} failed with exit code {result.returncode}:\n{tail}")


def _f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _intent_scores(gold: list[str], predicted: list[str]) -> tuple[float, float, dict[str, float]]:
    """Accuracy and macro-F1 over the gold intents (a fallback prediction counts as a miss)."""
    accuracy = sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold) if gold else 0.0
    per_intent: dict[str, float] = {}
    for label in sorted(set(gold)):
        tp = sum(g == label and p == label for g, p in zip(gold, predicted, strict=True))
        fp = sum(g != label and p == label for g, p in zip(gold, predicted, strict=True))
        fn = sum(g == label and p != label for g, p in zip(gold, predicted, strict=True))
        per_intent[label] = _f1(tp, fp, fn)[2]
    macro = statistics.fmean(per_intent.values()) if per_intent else 0.0
    return accuracy, macro, per_intent


def _entity_scores(predictions: list[_Prediction]) -> tuple[float, float, float, dict[str, float]]:
    """Exact-span entity scores (type, start, end), micro-averaged over spans; extractors merged."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for prediction in predictions:
        for span in prediction.entities | prediction.gold_entities:
            entry = counts[span[0]]
            if span in prediction.entities and span in prediction.gold_entities:
                entry[0] += 1
            elif span in prediction.entities:
                entry[1] += 1
            else:
                entry[2] += 1
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    precision, recall, f1 = _f1(tp, fp, fn)
    return precision, recall, f1, {name: _f1(*c)[2] for name, c in sorted(counts.items())}


def _bench_seed(
    project_root: Path,
    rasa_python: Path,
    examples: list[_Example],
    others: list[dict[str, Any]],
    seed: int,
    test_fraction: float,
    work: Path,
    config: Path,
) -> tuple[SeedResult, list[_Prediction]]:
    train, test = split_nlu(examples, seed, test_fraction)
    seed_dir = work / f"seed{seed}"
    (seed_dir / "data").mkdir(parents=True)
    _write_training_yaml(seed_dir / "data" / "nlu.yml", train, others)
    env = subprocess_env()
    # Keep Rasa's fingerprint cache out of the project (a stale .rasa/cache breaks `rasa test` on 3.6.21).
    env["RASA_CACHE_DIRECTORY"] = str(work / "cache")
    started = time.monotonic()
    _run(
        [
            str(rasa_python),
            "-m",
            "rasa",
            "train",
            "nlu",
            "--config",
            str(config),
            "--nlu",
            str(seed_dir / "data"),
            "--out",
            str(seed_dir / "models"),
            "--fixed-model-name",
            f"nlu-seed{seed}",
        ],
        project_root,
        seed_dir / "train.log",
        env,
    )
    train_seconds = time.monotonic() - started
    parsed_texts = [parse_example(example.raw) for example in test]
    (seed_dir / "texts.json").write_text(
        json.dumps([text for text, _ in parsed_texts], ensure_ascii=False), encoding="utf-8"
    )
    (seed_dir / "parse.py").write_text(_PARSE_SCRIPT, encoding="utf-8")
    _run(
        [
            str(rasa_python),
            str(seed_dir / "parse.py"),
            str(seed_dir / "models" / f"nlu-seed{seed}.tar.gz"),
            str(seed_dir / "texts.json"),
            str(seed_dir / "parsed.json"),
        ],
        project_root,
        seed_dir / "parse.log",
        env,
    )
    parsed = json.loads((seed_dir / "parsed.json").read_text(encoding="utf-8"))
    predictions = []
    for example, (text, spans), result in zip(test, parsed_texts, parsed, strict=True):
        ranking = [name for name, _ in result["ranking"] if name != FALLBACK_INTENT]
        predictions.append(
            _Prediction(
                gold_intent=example.intent,
                text=text,
                gold_entities={(s.entity, s.start, s.end) for s in spans},
                top_intent=ranking[0] if ranking else (result["intent"] or ""),
                final_intent=result["intent"] or "",
                entities={(e["entity"], e["start"], e["end"]) for e in result["entities"]},
            )
        )
    gold = [p.gold_intent for p in predictions]
    accuracy, macro, per_intent = _intent_scores(gold, [p.top_intent for p in predictions])
    accuracy_fb, macro_fb, _ = _intent_scores(gold, [p.final_intent for p in predictions])
    precision, recall, entity_f1, per_entity = _entity_scores(predictions)
    result = SeedResult(
        seed=seed,
        n_train=len(train),
        n_test=len(test),
        intent_accuracy=accuracy,
        intent_macro_f1=macro,
        intent_accuracy_after_fallback=accuracy_fb,
        intent_macro_f1_after_fallback=macro_fb,
        fallback_rate=sum(p.final_intent == FALLBACK_INTENT for p in predictions) / max(1, len(predictions)),
        entity_precision=precision,
        entity_recall=recall,
        entity_f1=entity_f1,
        train_seconds=round(train_seconds, 1),
        per_intent_f1=per_intent,
        per_entity_f1=per_entity,
    )
    return result, predictions


_SCORES = (
    "intent_accuracy",
    "intent_macro_f1",
    "intent_accuracy_after_fallback",
    "intent_macro_f1_after_fallback",
    "fallback_rate",
    "entity_precision",
    "entity_recall",
    "entity_f1",
    "train_seconds",
)


def _plot_confusion(predictions: list[_Prediction], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["font.sans-serif"] = CJK_FONTS
    plt.rcParams["font.family"] = "sans-serif"
    plt.rcParams["axes.unicode_minus"] = False
    labels = sorted({p.gold_intent for p in predictions} | {p.top_intent for p in predictions})
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for p in predictions:
        matrix[index[p.gold_intent]][index[p.top_intent]] += 1
    normalised = [[cell / max(1, sum(row)) for cell in row] for row in matrix]
    size = max(8.0, 0.42 * len(labels))
    figure, axes = plt.subplots(figsize=(size, size * 0.9))
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.set_xlabel("预测意图 (predicted)")
    axes.set_ylabel("真实意图 (gold)")
    axes.set_title("意图混淆矩阵 (held-out, all seeds)")
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                colour = "white" if normalised[i][j] > 0.5 else "black"
                axes.text(j, i, str(count), ha="center", va="center", fontsize=6, color=colour)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _worst_confusions(predictions: list[_Prediction], top: int = 10) -> list[dict[str, Any]]:
    pairs: Counter[tuple[str, str]] = Counter()
    texts: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in predictions:
        if p.top_intent != p.gold_intent:
            pair = (p.gold_intent, p.top_intent)
            pairs[pair] += 1
            if p.text not in texts[pair]:
                texts[pair].append(p.text)
    return [
        {"gold": gold, "predicted": predicted, "count": count, "examples": texts[(gold, predicted)][:5]}
        for (gold, predicted), count in pairs.most_common(top)
    ]


def _entity_errors(predictions: list[_Prediction], limit: int = 20) -> list[str]:
    lines = []
    for p in predictions:
        missed = p.gold_entities - p.entities
        extra = p.entities - p.gold_entities
        if missed or extra:
            gold = ", ".join(f"{e}={p.text[s:t]}" for e, s, t in sorted(missed))
            got = ", ".join(f"{e}={p.text[s:t]}" for e, s, t in sorted(extra))
            lines.append(f"| {p.text} | {gold or '-'} | {got or '-'} |")
        if len(lines) >= limit:
            break
    return lines


def _write_markdown(
    path: Path, result_rows: list[SeedResult], confusions: list[dict[str, Any]], entity_lines: list[str]
) -> None:
    out = ["# NLU benchmark: worst confusions", ""]
    out.append(f"Seeds: {', '.join(str(r.seed) for r in result_rows)}; intent = classifier's top intent.")
    out.append("")
    if not confusions:
        out.append("No intent confusions on the held-out splits.")
    for rank, item in enumerate(confusions, 1):
        out.append(f"## {rank}. {item['gold']} → {item['predicted']} ({item['count']})")
        out.extend(f"- {text}" for text in item["examples"])
        out.append("")
    out += ["## Entity errors (first 20)", "", "| text | missed (gold) | extra (predicted) |", "| --- | --- | --- |"]
    out += entity_lines or ["| (none) | | |"]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def _print_table(results: list[SeedResult], mean: dict[str, float], minimum: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="NLU held-out benchmark")
    columns = [
        "seed",
        "intent acc",
        "intent macro-F1",
        "macro-F1 w/ fallback",
        "entity P",
        "entity R",
        "entity F1",
        "train s",
    ]
    for column in columns:
        table.add_column(column, justify="right")
    keys = [
        "intent_accuracy",
        "intent_macro_f1",
        "intent_macro_f1_after_fallback",
        "entity_precision",
        "entity_recall",
        "entity_f1",
    ]
    for r in results:
        table.add_row(str(r.seed), *(f"{getattr(r, k):.4f}" for k in keys), f"{r.train_seconds:.0f}")
    table.add_row("mean", *(f"{mean[k]:.4f}" for k in keys), f"{mean['train_seconds']:.0f}", style="bold")
    table.add_row("min", *(f"{minimum[k]:.4f}" for k in keys), f"{minimum['train_seconds']:.0f}")
    Console().print(table)


def bench_nlu(
    project_root: Path,
    rasa_python: Path,
    out_dir: Path,
    seeds: Sequence[int] = (1, 2, 3),
    test_fraction: float = 0.2,
) -> BenchResult:
    """Train on a stratified (1 - test_fraction) split per seed, score the held-out part, write the reports."""
    from rich.console import Console

    console = Console()
    root = Path(project_root).resolve()
    python = Path(rasa_python) if Path(rasa_python).is_absolute() else root / rasa_python
    config = root / "bot" / "config.yml"
    examples, others = _read_nlu(root / "nlu_data")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: list[SeedResult] = []
    all_predictions: list[_Prediction] = []
    with tempfile.TemporaryDirectory(prefix="bankbot-nlu-bench-") as tmp:
        for seed in seeds:
            with console.status(f"seed {seed}: training and scoring on {len(examples)} examples"):
                result, predictions = _bench_seed(
                    root, python, examples, others, seed, test_fraction, Path(tmp), config
                )
            console.print(
                f"seed {seed}: intent macro-F1 {result.intent_macro_f1:.4f}, entity F1 {result.entity_f1:.4f}, "
                f"train {result.train_seconds:.0f}s"
            )
            results.append(result)
            all_predictions += predictions
    mean = {key: statistics.fmean(getattr(r, key) for r in results) for key in _SCORES}
    minimum = {key: min(getattr(r, key) for r in results) for key in _SCORES}
    confusions = _worst_confusions(all_predictions)
    report_json = out / "nlu_bench.json"
    confusion_png = out / "nlu_confusion.png"
    confusions_md = out / "nlu_confusions.md"
    report = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": str(config.relative_to(root)),
        "n_examples": len(examples),
        "test_fraction": test_fraction,
        "seeds": list(seeds),
        "intent_metric": "top intent of the classifier; *_after_fallback counts nlu_fallback as a miss",
        "entity_metric": "exact span match (entity, start, end), micro-averaged over spans, extractors merged",
        "mean": mean,
        "min": minimum,
        "per_seed": [asdict(r) for r in results],
        "worst_confusions": confusions,
    }
    report_json.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    _plot_confusion(all_predictions, confusion_png)
    _write_markdown(confusions_md, results, confusions, _entity_errors(all_predictions))
    _print_table(results, mean, minimum)
    console.print(f"reports: {report_json}, {confusion_png}, {confusions_md}")
    return BenchResult(results, mean, minimum, confusions, report_json, confusion_png, confusions_md)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bankbot.nlu_bench` (the `bankbot bench nlu` command calls bench_nlu the same way)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project-root", type=Path, default=Path("."))
    parser.add_argument("--rasa-python", type=Path, default=Path(".venv-rasa/bin/python"))
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--test-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    bench_nlu(args.project_root, args.rasa_python, args.out, tuple(args.seeds), args.test_fraction)
    return 0


if __name__ == "__main__":
    sys.exit(main())

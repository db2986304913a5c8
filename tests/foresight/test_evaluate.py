"""Evaluation end to end: the CLI on a small simulation writes the report files; the bench figures hold up."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bankbot.cli import main as bankbot_main
from foresight.simulate import simulate

HAS_TRANSFORMER = importlib.util.find_spec("foresight.transformer") is not None


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate(1200, 45, seed=31).write(out)
    return out


def _files(sim_dir: Path) -> list[str]:
    return [
        "--profiles",
        str(sim_dir / "profiles.jsonl"),
        "--events",
        str(sim_dir / "events.jsonl"),
        "--contacts",
        str(sim_dir / "contacts.jsonl"),
    ]


def test_evaluate_cli_writes_the_reports(sim_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["foresight", "evaluate", *_files(sim_dir), "--posteriors", str(sim_dir / "posteriors.jsonl")]
    assert bankbot_main([*args, "--gbt-max-iter", "40", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"metrics.json", "per_intent.md", "reliability.png", "threshold.json"}
    metrics = json.loads((out / "metrics.json").read_text())
    models = metrics["models"]
    assert set(models) == {"global_prior", "last_event_type", "gradient_boosted", "bayes_optimal"}
    for figures in models.values():
        assert 0 <= figures["top1"] <= figures["top3"] <= 1 and figures["log_loss"] > 0 and 0 <= figures["ece"] <= 1
    assert models["bayes_optimal"]["top1"] > models["global_prior"]["top1"]
    assert models["gradient_boosted"]["top1"] > models["global_prior"]["top1"]
    split = metrics["split"]
    assert split["train"] > split["test"] > 0 and split["valid"] > 0
    threshold = json.loads((out / "threshold.json").read_text())
    assert threshold["target_precision"] == 0.8 and threshold["model"] == "gradient_boosted"
    assert 0 < threshold["threshold"] <= 1.01
    table = (out / "per_intent.md").read_text()
    assert "## gradient_boosted" in table and "| check_balance |" in table
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(not HAS_TRANSFORMER, reason="foresight.transformer not present")
def test_evaluate_cli_trains_and_saves_the_transformer_with_its_threshold(sim_dir: Path, tmp_path: Path) -> None:
    out, model = tmp_path / "report", tmp_path / "model"
    args = ["foresight", "evaluate", *_files(sim_dir), "--train", "--epochs", "1", "--save-model", str(model)]
    assert bankbot_main([*args, "--gbt-max-iter", "20", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "transformer" in metrics["models"]
    assert metrics["threshold"]["model"] == "transformer"
    assert json.loads((model / "threshold.json").read_text()) == json.loads((out / "threshold.json").read_text())
    report = tmp_path / "again"
    assert bankbot_main(["foresight", "evaluate", *_files(sim_dir), "--model", str(model), "--out", str(report)]) == 0
    again = json.loads((report / "metrics.json").read_text())["models"]["transformer"]
    assert again["top1"] == pytest.approx(metrics["models"]["transformer"]["top1"])


def test_evaluate_rejects_save_model_without_train(sim_dir: Path, tmp_path: Path) -> None:
    args = ["foresight", "evaluate", *_files(sim_dir), "--save-model", str(tmp_path / "m"), "--out", str(tmp_path)]
    assert bankbot_main(args) == 2

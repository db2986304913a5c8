"""Evaluation: the bar on a simulated bank, the combined score's consistency with the policy, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bankbot.cli import main
from bankcore.risk.config import DEFAULT_RULES_PATH, SEVERITY, RulesConfig, load_rules
from bankcore.risk.dataset import LabelledTransfer, labelled_transfers
from bankcore.risk.engine import model_band
from bankcore.risk.evaluate import EvaluationReport, combined_score, detection_curve, evaluate, model_rank
from bankcore.risk.simulate import SCAM_PATTERNS, simulate_customers

# The bar (>= 0.9 of every scam pattern at <= 1% of legitimate transfers interrupted) is measured by
# `make bench-risk-quality` on 20,000 customers. At the 3,000 customers a test can afford, the learned score
# trains on ~2,000 and detection moves by several points from seed to seed (seeds 1-4 with 3 folds: legit
# 0.78-0.94%, coached 0.87-0.95, mule 0.93-0.98, takeover 0.98-1.0), so this guard keeps the legitimate
# budget exactly and detection a little below the bar, on an arbitrary seed rather than a lucky one.
GUARD_DETECTION = 0.85
BAR_LEGIT_INTERRUPTED = 0.01


def population(customers: int, seed: int, days: int = 90, warmup_days: int = 45) -> list[LabelledTransfer]:
    """The labelled transfers of a simulated bank, replayed in memory (the file round trip is tested apart)."""
    transfers, events = [], []
    for customer_transfers, customer_events in simulate_customers(customers, seed, days=days, warmup_days=warmup_days):
        transfers.extend(customer_transfers)
        events.extend(customer_events)
    return labelled_transfers(transfers, events, labelled_only=True)


@pytest.fixture(scope="module")
def config() -> RulesConfig:
    return load_rules(DEFAULT_RULES_PATH)


@pytest.fixture(scope="module")
def report(config: RulesConfig) -> EvaluationReport:
    """3,000 customers (some 51,000 labelled transfers), 3 folds: every customer is measured once, by a model
    trained on the other two thirds (see GUARD_DETECTION for why this is a guard, not the measurement)."""
    return evaluate(population(3000, seed=1), config, seed=0, folds=3)


def test_the_policy_keeps_the_legit_budget_and_catches_every_pattern(report: EvaluationReport) -> None:
    policy = report.data["policy"]["rules_and_model"]
    counts = report.data["counts"]["test_scam_by_pattern"]
    assert set(counts) == set(SCAM_PATTERNS)
    assert all(count >= 40 for count in counts.values()), counts
    assert policy["legit_interrupted"] <= BAR_LEGIT_INTERRUPTED
    for pattern in SCAM_PATTERNS:
        assert policy["by_pattern"][pattern] >= GUARD_DETECTION, (pattern, policy["by_pattern"])


def test_the_learned_score_adds_to_the_rules(report: EvaluationReport) -> None:
    policy = report.data["policy"]
    assert policy["rules_and_model"]["scam_interrupted"] > policy["rules_only"]["scam_interrupted"]
    detection = report.data["detection"]
    assert detection["combined"]["overall"]["1%"] >= detection["rules"]["overall"]["1%"]


def test_each_curve_keeps_to_its_false_alarm_rate(report: EvaluationReport) -> None:
    data = report.data
    assert report.model.counts["examples"] > 0 and data["counts"]["test_legit"] > 0
    # Three folds: every labelled transfer is measured exactly once.
    assert data["counts"]["test_legit"] + data["counts"]["test_scam"] == data["counts"]["labelled"]
    for system in ("rules", "model", "combined"):
        curve = data["detection"][system]
        for rate, key in zip((0.001, 0.005, 0.01, 0.02), data["false_alarm_rates"], strict=True):
            assert curve["false_alarm"][key] <= rate
        values = [curve["overall"][key] for key in data["false_alarm_rates"]]
        assert values == sorted(values)


def test_detection_curve_counts_ties_against_the_alarm() -> None:
    scores = np.array([5.0, 3.0, 3.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 4.0, 3.0, 0.0])
    is_scam = np.array([False] * 10 + [True] * 3)
    patterns = ["legit"] * 10 + ["a", "b", "b"]
    curve = detection_curve(scores, is_scam, patterns, rates=(0.1, 0.2, 0.3))
    # 10% of 10 legit: one may alarm (the 5.0), so the line sits just above 3.0; 20%: the two tied 3.0s cannot
    # both fit, so the line stays there; 30%: three may alarm (5.0, 3.0, 3.0), the line goes just above 1.0.
    assert curve["false_alarm"] == {"10%": 0.1, "20%": 0.1, "30%": 0.3}
    assert curve["overall"] == {"10%": pytest.approx(1 / 3), "20%": pytest.approx(1 / 3), "30%": pytest.approx(2 / 3)}
    assert curve["by_pattern"] == {"a": {"10%": 1.0, "20%": 1.0, "30%": 1.0}, "b": {"10%": 0.0, "20%": 0.0, "30%": 0.5}}


@given(
    score=st.floats(min_value=0, max_value=1),
    cuts=st.lists(st.floats(min_value=1e-6, max_value=1), min_size=3, max_size=3),
    rules_score=st.sampled_from((0.0, 1.1, 1.2, 2.1, 3.1, 3.2, 4.1)),
)
def test_the_combined_score_crosses_an_action_exactly_when_the_policy_does(
    score: float, cuts: list[float], rules_score: float
) -> None:
    step_up, warn, hold = sorted(cuts)
    thresholds = {"step_up": step_up, "warn": warn, "hold": hold}
    policy = max(int(rules_score), SEVERITY[model_band(score, thresholds)])
    combined = combined_score(rules_score, score, thresholds)
    for action in ("step_up", "warn", "hold"):
        assert (combined >= SEVERITY[action]) == (policy >= SEVERITY[action])
    assert model_rank(score, thresholds) < SEVERITY["block"]
    assert model_rank(min(score + 0.01, 1.0), thresholds) >= model_rank(score, thresholds)


def test_a_given_model_scores_every_labelled_record(report: EvaluationReport, config: RulesConfig) -> None:
    assert report.model is not None
    other = population(200, seed=7, days=60, warmup_days=30)
    scored = evaluate(other, config, model=report.model)
    counts = scored.data["counts"]
    assert scored.data["model_source"] == "given"
    assert scored.data["model_version"] == report.model.version
    assert scored.models == [report.model]
    assert counts["test_legit"] + counts["test_scam"] == len(other)


def test_folds_measure_every_customer_with_a_model_that_never_saw_them(config: RulesConfig) -> None:
    examples = population(500, seed=9, days=60, warmup_days=30)
    report = evaluate(examples, config, folds=2)
    counts = report.data["counts"]
    assert counts["test_legit"] + counts["test_scam"] == counts["labelled"] == len(examples)
    assert len(report.models) == 2 and report.models[0].version != report.models[1].version
    trained = sum(m.counts["examples"] for m in report.models)
    assert trained == len(examples)  # each example trained one model and was measured by the other
    assert report.data["model_version"] == "+".join(m.version for m in report.models)


def test_the_cli_simulates_trains_evaluates_and_checks_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, model_dir, report_path = tmp_path / "set", tmp_path / "model", tmp_path / "report.json"
    assert (
        main(
            [
                "risk",
                "simulate",
                "--out",
                str(data),
                "--customers",
                "400",
                "--seed",
                "5",
                "--days",
                "60",
                "--warmup-days",
                "30",
            ]
        )
        == 0
    )
    assert main(["risk", "train", "--data", str(data), "--out", str(model_dir)]) == 0
    assert (model_dir / "model.joblib").is_file() and (model_dir / "meta.json").is_file()
    assert main(["risk", "evaluate", "--data", str(data), "--model", str(model_dir), "--json", str(report_path)]) == 0
    written = json.loads(report_path.read_text(encoding="utf-8"))
    assert written["model_source"] == "given"
    assert set(written["detection"]) == {"rules", "model", "combined"}
    output = capsys.readouterr().out
    assert "Detection of scam transfers" in output and "rules + model" in output

    assert main(["risk", "check-rules"]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nhard_rules:\n  cross_border: {action: allow}\n", encoding="utf-8")
    assert main(["risk", "check-rules", str(bad)]) == 1
    assert "cross_border" in capsys.readouterr().err

    extended = tmp_path / "extended.yaml"
    extended.write_text("version: 1\nevent_signals:\n  remote_control: [rdp_session_seen]\n", encoding="utf-8")
    assert main(["risk", "features", "--rules", str(extended)]) == 0
    assert "hours_since_remote_control" in capsys.readouterr().out
    assert main(["risk", "evaluate", "--data", str(data), "--rules", str(extended), "--model", str(model_dir)]) == 2
    assert "retrain" in capsys.readouterr().err

    (data / "transfers.jsonl").write_text('{"transfer_id": "T1"}\n', encoding="utf-8")
    assert main(["risk", "evaluate", "--data", str(data)]) == 2
    assert "transfers.jsonl:1: customer_id" in capsys.readouterr().err

"""The learned score: bands from held-out customers, fast single-row scoring, save, load and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bankcore.risk.config import DEFAULT_RULES_PATH, RulesConfig, build_config, load_rules
from bankcore.risk.dataset import LabelledTransfer, labelled_transfers
from bankcore.risk.engine import decide
from bankcore.risk.model import (
    META_FILE,
    MODEL_FILE,
    ModelFeatureMismatchError,
    ModelLoadError,
    TrainedRiskModel,
    band_thresholds,
    feature_matrix,
    labelled,
    load_model,
    train_model,
)
from bankcore.risk.simulate import simulate_customers


@pytest.fixture(scope="module")
def config() -> RulesConfig:
    return load_rules(DEFAULT_RULES_PATH)


@pytest.fixture(scope="module")
def examples() -> list[LabelledTransfer]:
    transfers, events = [], []
    for customer_transfers, customer_events in simulate_customers(customers=500, seed=21, days=70, warmup_days=35):
        transfers.extend(customer_transfers)
        events.extend(customer_events)
    return labelled(labelled_transfers(transfers, events))


@pytest.fixture(scope="module")
def model(examples: list[LabelledTransfer], config: RulesConfig) -> TrainedRiskModel:
    return train_model(examples, config, seed=3)


def test_band_thresholds_let_at_most_the_rate_through_and_no_less() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.8, 0.5, *([0.1] * 95)])
    thresholds = band_thresholds(scores, {"hold": 0.01, "warn": 0.02, "step_up": 0.05})
    # 1 of 100 may reach hold: only 0.9. 2 may reach warn: the three tied 0.8s cannot all pass, so 0.9 only.
    assert (scores >= thresholds["hold"]).sum() == 1
    assert (scores >= thresholds["warn"]).sum() == 1
    assert (scores >= thresholds["step_up"]).sum() == 5
    assert thresholds["step_up"] <= 0.5  # the lowest threshold that keeps to the allowance
    assert band_thresholds(np.array([0.3, 0.2]), {"hold": 0.001})["hold"] > 0.3


def test_the_model_scores_one_transfer_exactly_as_the_batch(
    model: TrainedRiskModel, examples: list[LabelledTransfer], config: RulesConfig
) -> None:
    matrix, names = feature_matrix(examples[:400], config)
    batch = model.score_matrix(matrix)
    single = [model.score(dict(zip(names, row.tolist(), strict=True))) for row in matrix]
    assert np.array_equal(np.array(single), batch)  # bit for bit, not approximately
    assert batch.min() >= 0 and batch.max() <= 1


def test_the_thresholds_hold_the_policy_rates_on_held_out_customers(model: TrainedRiskModel) -> None:
    assert model.thresholds["step_up"] <= model.thresholds["warn"] <= model.thresholds["hold"]
    counts = model.counts
    assert counts["fit_scam"] > 0 and counts["threshold_legit"] > 1000
    assert set(counts["scam_by_pattern"]) == {"coached", "takeover", "mule"}


def test_the_model_separates_scams_from_legitimate_transfers(
    model: TrainedRiskModel, examples: list[LabelledTransfer], config: RulesConfig
) -> None:
    matrix, _ = feature_matrix(examples, config)
    scores = model.score_matrix(matrix)
    is_scam = np.array([e.label == "scam" for e in examples])
    assert np.median(scores[is_scam]) > np.quantile(scores[~is_scam], 0.99)


def test_decide_reads_the_model_band_and_names_the_model(
    model: TrainedRiskModel, examples: list[LabelledTransfer], config: RulesConfig
) -> None:
    matrix, names = feature_matrix(examples, config)
    scores = model.score_matrix(matrix)
    top = int(np.argmax(scores))
    features = dict(zip(names, matrix[top].tolist(), strict=True))
    decision = decide(examples[top].risk.kind, features, config, model)
    assert decision.model_version == model.version
    assert decision.score == pytest.approx(scores[top])
    assert any(r.kind == "model" and r.action == "hold" for r in decision.reasons)


def test_save_and_load_give_the_same_model(model: TrainedRiskModel, config: RulesConfig, tmp_path: Path) -> None:
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / META_FILE).read_text(encoding="utf-8"))
    assert meta["version"] == model.version
    assert meta["rules_version"] == config.version
    assert meta["feature_names"] == list(model.feature_names)
    assert meta["counts"]["examples"] == model.counts["examples"] and meta["trained_at"]
    loaded = load_model(tmp_path / "m", config)
    assert loaded.version == model.version
    assert loaded.thresholds == model.thresholds
    features = dict.fromkeys(model.feature_names, 1.0)
    assert loaded.score(features) == model.score(features)


def test_load_refuses_a_model_for_other_features(model: TrainedRiskModel, tmp_path: Path) -> None:
    model.save(tmp_path / "m")
    more_signals = build_config({"version": 1, "event_signals": {"remote_control": ["rdp_session_seen"]}})
    with pytest.raises(ModelFeatureMismatchError, match="ev_remote_control_24h"):
        load_model(tmp_path / "m", more_signals)


def test_load_refuses_files_that_do_not_belong_together(
    model: TrainedRiskModel, config: RulesConfig, tmp_path: Path
) -> None:
    model.save(tmp_path / "m")
    meta_path = tmp_path / "m" / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["thresholds"]["hold"] = 0.99
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="do not belong together"):
        load_model(tmp_path / "m", config)
    (tmp_path / "m" / MODEL_FILE).write_bytes(b"not a pickle")
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_model(tmp_path / "m", config)
    with pytest.raises(ModelLoadError, match="metadata"):
        load_model(tmp_path / "missing", config)


def test_training_needs_both_labels(examples: list[LabelledTransfer], config: RulesConfig) -> None:
    with pytest.raises(ValueError, match="both legit and scam"):
        train_model([e for e in examples if e.label == "legit"][:300], config)

"""The learned score: gradient-boosted trees over the risk features, with bands fixed on held-out customers.

Training splits the labelled examples by customer: the fit part trains a HistGradientBoostingClassifier,
the held-out part fixes the thresholds of the bands (the score at or above which at most `hold_rate`,
`warn_rate` and `step_up_rate` of its legitimate transfers fall, as the rules file's `model:` policy says).
The model is not refitted on the held-out part afterwards, which would shift the scores the thresholds were
measured on.

Scoring one transfer walks the trees in plain Python (`_Forest`): sklearn's predict_proba validates its
input and starts a thread pool on every call, which costs far more than the trees themselves for one row.
The walk reproduces sklearn's arithmetic exactly (same comparisons, same order of additions, the same
expit), so a single score equals the batch score bit for bit; tests check it.

Saved as a directory: `model.joblib` (the estimator) and `meta.json` (version, feature names, thresholds,
the rules version it was trained with, when, on how many examples). The version is a digest of what decides
the scores (trees, feature order, thresholds), so a decision's audit trail names exactly the model that
scored it, and a model file that does not match its metadata is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from bankcore.risk.config import RulesConfig
from bankcore.risk.dataset import LabelledTransfer
from bankcore.risk.features import compute_for, feature_names

MODEL_FILE = "model.joblib"
META_FILE = "meta.json"
FORMAT_VERSION = 1
BANDS = ("step_up", "warn", "hold")
VALIDATION_FRACTION = 0.3
# Deliberately modest trees and a slow learning rate: the model must carry over to populations it has not
# seen, so it should learn broad interactions (new payee x large amount x recent reset), not memorise.
PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "max_iter": 300,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 30,
    "l2_regularization": 1.0,
    "early_stopping": False,
}


# OpenMP threads for fitting and batch scoring. One: on a small shared machine (2 cores, CI) more threads
# spin-wait against other processes and made a fit 10-30 times slower than one thread; the data here (a few
# hundred thousand rows, under a hundred features) trains in seconds on one.
THREADS = 1


class ModelLoadError(ValueError):
    """A saved model that cannot be used: missing or corrupt files (the message says which)."""


class ModelFeatureMismatchError(ModelLoadError):
    """A saved model trained on other features than the current rules file yields (retrain it)."""


def customer_fraction(customer_id: str, salt: str) -> float:
    """A stable number in [0, 1) per customer and salt: splits by customer that every run reproduces."""
    digest = hashlib.sha256(f"{salt}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def feature_matrix(examples: Sequence[LabelledTransfer], config: RulesConfig) -> tuple[np.ndarray, tuple[str, ...]]:
    """The feature vectors of the examples (rows) in `feature_names` order (columns)."""
    names = feature_names(tuple(config.event_signals))
    matrix = np.empty((len(examples), len(names)), dtype=np.float64)
    for row, example in enumerate(examples):
        features = compute_for(example.risk, config)
        matrix[row] = [features[name] for name in names]
    return matrix, names


def band_thresholds(legit_scores: np.ndarray, rates: Mapping[str, float]) -> dict[str, float]:
    """Per band, the lowest threshold such that at most `rate` of these legitimate scores are >= it."""
    ordered = np.sort(np.asarray(legit_scores, dtype=np.float64))[::-1]
    out: dict[str, float] = {}
    for band, rate in rates.items():
        allowed = math.floor(rate * len(ordered) + 1e-9)
        if allowed >= len(ordered):
            out[band] = 0.0
        else:
            # Strictly above the first score that would exceed the allowance (ties stay below the line).
            out[band] = float(np.nextafter(ordered[allowed], np.inf))
    return out


class _Forest:
    """The fitted trees as flat Python lists, for fast single-row scoring identical to predict_proba."""

    def __init__(self, estimator: HistGradientBoostingClassifier) -> None:
        if getattr(estimator, "n_trees_per_iteration_", 1) != 1:
            raise ModelLoadError("only binary classifiers are supported")
        self.baseline = float(np.asarray(estimator._baseline_prediction).ravel()[0])
        self.roots: list[int] = []
        feature: list[int] = []
        threshold: list[float] = []
        left: list[int] = []
        right: list[int] = []
        leaf: list[bool] = []
        missing_left: list[bool] = []
        value: list[float] = []
        for (predictor,) in estimator._predictors:
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise ModelLoadError("categorical splits are not supported")
            offset = len(feature)
            self.roots.append(offset)
            feature.extend(int(i) for i in nodes["feature_idx"])
            threshold.extend(float(t) for t in nodes["num_threshold"])
            left.extend(int(i) + offset for i in nodes["left"])
            right.extend(int(i) + offset for i in nodes["right"])
            leaf.extend(bool(b) for b in nodes["is_leaf"])
            missing_left.extend(bool(b) for b in nodes["missing_go_to_left"])
            value.extend(float(v) for v in nodes["value"])
        self.feature, self.threshold, self.left, self.right = feature, threshold, left, right
        self.leaf, self.missing_left, self.value = leaf, missing_left, value

    def raw(self, row: Sequence[float]) -> float:
        feature, threshold, left, right = self.feature, self.threshold, self.left, self.right
        leaf, missing_left, value = self.leaf, self.missing_left, self.value
        total = 0.0 + self.baseline  # sklearn starts from zeros and adds the baseline, then each tree in turn
        for node in self.roots:
            while not leaf[node]:
                x = row[feature[node]]
                if x != x:  # NaN
                    node = left[node] if missing_left[node] else right[node]
                elif x <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            total += value[node]
        return total


@dataclass
class TrainedRiskModel:
    """A trained learned score; implements the engine's RiskModel protocol."""

    estimator: HistGradientBoostingClassifier
    feature_names: tuple[str, ...]
    thresholds: dict[str, float]
    rules_version: str
    trained_at: str
    counts: dict[str, Any]
    version: str = ""
    _forest: _Forest = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._forest = _Forest(self.estimator)
        if not self.version:
            self.version = self._digest()

    def _meta_core(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "feature_names": list(self.feature_names),
            "thresholds": self.thresholds,
            "rules_version": self.rules_version,
            "trained_at": self.trained_at,
            "counts": self.counts,
        }

    def _digest(self) -> str:
        """What decides the scores and bands: the trees, the feature order and the thresholds."""
        digest = hashlib.sha256()
        digest.update(np.asarray(self.estimator._baseline_prediction, dtype=np.float64).tobytes())
        for (predictor,) in self.estimator._predictors:
            digest.update(np.ascontiguousarray(predictor.nodes).tobytes())
        digest.update(json.dumps([list(self.feature_names), self.thresholds], sort_keys=True).encode("utf-8"))
        return digest.hexdigest()[:16]

    def vector(self, features: Mapping[str, float]) -> list[float]:
        return [float(features[name]) for name in self.feature_names]

    def score(self, features: Mapping[str, float]) -> float:
        """P(scam) for one transfer's features; equal to `score_matrix` on the same row."""
        return float(expit(self._forest.raw(self.vector(features))))

    def score_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """P(scam) for each row of a feature matrix in `feature_names` order (batch scoring)."""
        if len(matrix) == 0:
            return np.empty(0, dtype=np.float64)
        with threadpool_limits(limits=THREADS, user_api="openmp"):
            return np.asarray(self.estimator.predict_proba(matrix)[:, 1], dtype=np.float64)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.estimator, directory / MODEL_FILE)
        meta = {
            **self._meta_core(),
            "version": self.version,
            "sklearn_version": sklearn.__version__,
            "params": PARAMS,
        }
        (directory / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return directory


def fit_model(
    matrix: np.ndarray,
    labels: Sequence[str],
    customers: Sequence[str],
    names: tuple[str, ...],
    config: RulesConfig,
    seed: int,
    patterns: Sequence[str | None] | None = None,
) -> TrainedRiskModel:
    """Train on precomputed features (rows of labelled examples); the work behind train_model."""
    y = np.array([label == "scam" for label in labels], dtype=np.int8)
    held_out = np.array([customer_fraction(c, f"risk-validation/{seed}") < VALIDATION_FRACTION for c in customers])
    fit_rows, check_rows = ~held_out, held_out
    if y[fit_rows].sum() == 0 or (y[fit_rows] == 0).sum() == 0:
        raise ValueError("training needs both legit and scam examples (labelled records of both kinds)")
    legit_check = check_rows & (y == 0)
    if legit_check.sum() == 0:
        raise ValueError("training needs legit examples of held-out customers to fix the thresholds")
    estimator = HistGradientBoostingClassifier(**PARAMS, random_state=seed)
    with threadpool_limits(limits=THREADS, user_api="openmp"):
        estimator.fit(matrix[fit_rows], y[fit_rows])
        legit_scores = estimator.predict_proba(matrix[legit_check])[:, 1]
    policy = config.model
    thresholds = band_thresholds(
        legit_scores, {"step_up": policy.step_up_rate, "warn": policy.warn_rate, "hold": policy.hold_rate}
    )
    scam_patterns = Counter(
        p or "unknown" for p, label in zip(patterns or [None] * len(labels), labels, strict=True) if label == "scam"
    )
    counts = {
        "examples": len(labels),
        "fit_legit": int((fit_rows & (y == 0)).sum()),
        "fit_scam": int((fit_rows & (y == 1)).sum()),
        "threshold_legit": int(legit_check.sum()),
        "threshold_scam": int((check_rows & (y == 1)).sum()),
        "customers": len(set(customers)),
        "scam_by_pattern": dict(sorted(scam_patterns.items())),
    }
    return TrainedRiskModel(
        estimator=estimator,
        feature_names=names,
        thresholds=thresholds,
        rules_version=config.version,
        trained_at=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        counts=counts,
    )


def labelled(examples: Sequence[LabelledTransfer]) -> list[LabelledTransfer]:
    return [example for example in examples if example.label is not None]


def train_model(examples: Sequence[LabelledTransfer], config: RulesConfig, seed: int = 0) -> TrainedRiskModel:
    """Train the learned score on the labelled examples (unlabelled ones are ignored)."""
    rows = labelled(examples)
    matrix, names = feature_matrix(rows, config)
    return fit_model(
        matrix,
        [str(e.label) for e in rows],
        [e.risk.customer_id for e in rows],
        names,
        config,
        seed,
        [e.pattern for e in rows],
    )


def load_model(directory: str | Path, config: RulesConfig) -> TrainedRiskModel:
    """A saved model, checked against its metadata and the current rules' features.

    Raises ModelFeatureMismatchError when the model was trained on other features than `config` yields,
    ModelLoadError when the files are missing, unreadable or do not match each other.
    """
    directory = Path(directory)
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{directory / META_FILE}: cannot read the model's metadata ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise ModelLoadError(f"{directory / META_FILE}: not a risk model metadata file of format {FORMAT_VERSION}")
    expected = feature_names(tuple(config.event_signals))
    saved = tuple(meta.get("feature_names") or ())
    if saved != expected:
        missing = [name for name in expected if name not in saved]
        extra = [name for name in saved if name not in expected]
        detail = "; ".join(
            part
            for part in (
                f"the rules yield features the model lacks: {', '.join(missing[:8])}" if missing else "",
                f"the model has features the rules no longer yield: {', '.join(extra[:8])}" if extra else "",
                "same features in another order" if not missing and not extra else "",
            )
            if part
        )
        raise ModelFeatureMismatchError(
            f"{directory}: the model was trained on other features than {config.source} yields ({detail}); "
            "retrain it with `bankbot risk train`"
        )
    try:
        estimator = joblib.load(directory / MODEL_FILE)
    except Exception as error:  # joblib/pickle raise many types for a damaged file
        raise ModelLoadError(f"{directory / MODEL_FILE}: cannot load the estimator ({error})") from None
    if not isinstance(estimator, HistGradientBoostingClassifier) or estimator.n_features_in_ != len(expected):
        raise ModelLoadError(f"{directory / MODEL_FILE}: not a classifier over {len(expected)} features")
    thresholds = meta.get("thresholds")
    if not isinstance(thresholds, dict) or set(thresholds) != set(BANDS):
        raise ModelLoadError(f"{directory / META_FILE}: thresholds must name {', '.join(BANDS)}")
    model = TrainedRiskModel(
        estimator=estimator,
        feature_names=expected,
        thresholds={band: float(thresholds[band]) for band in BANDS},
        rules_version=str(meta.get("rules_version", "")),
        trained_at=str(meta.get("trained_at", "")),
        counts=dict(meta.get("counts") or {}),
    )
    if model.version != meta.get("version"):
        raise ModelLoadError(
            f"{directory}: {MODEL_FILE} and {META_FILE} do not belong together "
            f"(version {meta.get('version')!r} in the metadata, {model.version!r} computed)"
        )
    return model

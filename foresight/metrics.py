"""Figures for foresight models: top-k accuracy, log loss, calibration, per-intent scores, the naming threshold.

Every function takes plain arrays: `probabilities` (n, k) with columns in `intents` order and `labels` as
column indices (or intent names, through `label_indices`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LOG_LOSS_EPSILON = 1e-15
ECE_BINS = 15
MIN_THRESHOLD_SUPPORT = 30


def label_indices(labels: Sequence[str | None], intents: Sequence[str]) -> np.ndarray:
    """Column index of each label; -1 for a label outside `intents` (it counts as wrong everywhere)."""
    index = {intent: i for i, intent in enumerate(intents)}
    return np.asarray([index.get(label, -1) if label is not None else -1 for label in labels], dtype=np.int64)


def align(probabilities: np.ndarray, source: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """Reorders columns from `source` intents to `target` intents; a target intent the source lacks gets 0."""
    position = {intent: i for i, intent in enumerate(source)}
    out = np.zeros((probabilities.shape[0], len(target)), dtype=np.float64)
    for j, intent in enumerate(target):
        i = position.get(intent)
        if i is not None:
            out[:, j] = probabilities[:, i]
    return out


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Share of rows whose label is among the k highest probabilities (ties broken by column order)."""
    if len(labels) == 0:
        return float("nan")
    k = min(k, probabilities.shape[1])
    # A stable sort on -p keeps the lower column first among equals, as predictor.top_k does by name order.
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == labels[:, None]).any(axis=1)))


def log_loss(probabilities: np.ndarray, labels: np.ndarray, epsilon: float = LOG_LOSS_EPSILON) -> float:
    """Mean negative log probability of the label, probabilities clipped to [epsilon, 1]."""
    if len(labels) == 0:
        return float("nan")
    rows = np.arange(len(labels))
    picked = np.where(labels >= 0, probabilities[rows, np.maximum(labels, 0)], 0.0)
    return float(-np.mean(np.log(np.clip(picked, epsilon, 1.0))))


@dataclass(frozen=True)
class Reliability:
    """Per-bin calibration data on top-1 confidence (equal-width bins over [0, 1])."""

    edges: list[float]
    confidence: list[float]  # mean confidence per bin (nan where empty)
    accuracy: list[float]  # top-1 accuracy per bin (nan where empty)
    count: list[int]

    def to_json(self) -> dict[str, list[Any]]:
        return {
            k: [None if isinstance(v, float) and math.isnan(v) else v for v in vs] for k, vs in asdict(self).items()
        }


def confidence_and_correct(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 confidence and whether the top-1 is right, per row."""
    predicted = np.argsort(-probabilities, axis=1, kind="stable")[:, 0]
    confidence = probabilities[np.arange(len(labels)), predicted]
    return confidence, predicted == labels


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    confidence, correct = confidence_and_correct(probabilities, labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 goes to the first bin.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    sum_confidence = np.bincount(which, weights=confidence, minlength=bins)
    sum_correct = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.where(count > 0, sum_confidence / count, np.nan)
        accuracy = np.where(count > 0, sum_correct / count, np.nan)
    return Reliability(edges.tolist(), mean_confidence.tolist(), accuracy.tolist(), count.tolist())


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over bins of (bin share) * |accuracy - mean confidence|, on top-1 confidence."""
    if len(labels) == 0:
        return float("nan")
    curve = reliability(probabilities, labels, bins)
    total = sum(curve.count)
    return float(
        sum(
            n / total * abs(a - c)
            for n, a, c in zip(curve.count, curve.accuracy, curve.confidence, strict=True)
            if n > 0
        )
    )


@dataclass(frozen=True)
class IntentScore:
    intent: str
    precision: float
    recall: float
    f1: float
    support: int


def per_intent(probabilities: np.ndarray, labels: np.ndarray, intents: Sequence[str]) -> list[IntentScore]:
    """Precision, recall and F1 of the top-1 prediction for each intent (0 where undefined)."""
    predicted = np.argsort(-probabilities, axis=1, kind="stable")[:, 0]
    scores = []
    for j, intent in enumerate(intents):
        true_positive = int(np.sum((predicted == j) & (labels == j)))
        predicted_count = int(np.sum(predicted == j))
        support = int(np.sum(labels == j))
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append(IntentScore(intent, precision, recall, f1, support))
    return scores


@dataclass(frozen=True)
class Summary:
    n: int
    top1: float
    top3: float
    log_loss: float
    ece: float

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def summarise(probabilities: np.ndarray, labels: np.ndarray) -> Summary:
    return Summary(
        n=len(labels),
        top1=top_k_accuracy(probabilities, labels, 1),
        top3=top_k_accuracy(probabilities, labels, 3),
        log_loss=log_loss(probabilities, labels),
        ece=expected_calibration_error(probabilities, labels),
    )


@dataclass(frozen=True)
class ThresholdChoice:
    """The naming threshold and what it gives on the data it was chosen from."""

    threshold: float  # math.inf when no threshold reaches the target: never name a need
    target_precision: float
    precision: float  # among predictions at or above the threshold (nan when none)
    coverage: float  # share of predictions at or above the threshold
    support: int
    min_support: int

    @property
    def achieved(self) -> bool:
        return math.isfinite(self.threshold)

    def to_json(self) -> dict[str, float | int | bool | None]:
        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {
            "threshold": finite(self.threshold),
            "target_precision": self.target_precision,
            "precision": finite(self.precision),
            "coverage": self.coverage,
            "support": self.support,
            "min_support": self.min_support,
            "achieved": self.achieved,
        }


def threshold_choice(
    confidence: np.ndarray,
    correct: np.ndarray,
    target_precision: float = 0.8,
    min_support: int = MIN_THRESHOLD_SUPPORT,
) -> ThresholdChoice:
    """The smallest threshold t (one of the observed confidences) such that the top-1 precision among rows with
    confidence >= t is at least `target_precision` and at least `min_support` rows are at or above it."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    n = confidence.size
    order = np.argsort(-confidence, kind="stable")
    ranked = confidence[order]
    hits = np.cumsum(correct[order])
    # Only the last row of a run of equal confidences is a valid cut: ">= t" takes the whole run.
    last_of_run = np.r_[ranked[1:] != ranked[:-1], True] if n else np.zeros(0, dtype=bool)
    support = np.arange(1, n + 1)
    precision = hits / np.maximum(support, 1)
    ok = last_of_run & (support >= min_support) & (precision >= target_precision)
    if not ok.any():
        return ThresholdChoice(math.inf, target_precision, float("nan"), 0.0, 0, min_support)
    cut = int(np.nonzero(ok)[0][-1])  # the deepest qualifying cut is the smallest threshold
    return ThresholdChoice(
        threshold=float(ranked[cut]),
        target_precision=target_precision,
        precision=float(precision[cut]),
        coverage=float(support[cut] / n),
        support=int(support[cut]),
        min_support=min_support,
    )


def choose_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    target_precision: float = 0.8,
    min_support: int = MIN_THRESHOLD_SUPPORT,
) -> float:
    """The smallest top-1 confidence at which to name the predicted need (math.inf: never); see threshold_choice."""
    return threshold_choice(confidence, correct, target_precision, min_support).threshold

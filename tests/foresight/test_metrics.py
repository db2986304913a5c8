"""Metrics on cases small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from foresight.metrics import (
    align,
    choose_threshold,
    expected_calibration_error,
    label_indices,
    log_loss,
    per_intent,
    reliability,
    summarise,
    threshold_choice,
    top_k_accuracy,
)

P = np.asarray(
    [
        [0.7, 0.2, 0.1],  # label 0: top-1 right
        [0.5, 0.4, 0.1],  # label 1: top-1 wrong, top-2 right
        [0.2, 0.3, 0.5],  # label 0: only top-3 right
        [0.1, 0.1, 0.8],  # label 2: right
    ]
)
Y = np.asarray([0, 1, 0, 2])


def test_top_k() -> None:
    assert top_k_accuracy(P, Y, 1) == 0.5
    assert top_k_accuracy(P, Y, 2) == 0.75
    assert top_k_accuracy(P, Y, 3) == 1.0
    assert top_k_accuracy(P, Y, 10) == 1.0
    # A tie goes to the first column, as predictor.top_k orders equal probabilities by name.
    assert top_k_accuracy(np.asarray([[0.5, 0.5]]), np.asarray([0]), 1) == 1.0


def test_log_loss_by_hand_and_clipped() -> None:
    expected = -(math.log(0.7) + math.log(0.4) + math.log(0.2) + math.log(0.8)) / 4
    assert log_loss(P, Y) == pytest.approx(expected)
    assert log_loss(np.asarray([[1.0, 0.0]]), np.asarray([1])) == pytest.approx(-math.log(1e-15))
    assert log_loss(np.asarray([[1.0, 0.0]]), np.asarray([-1])) == pytest.approx(-math.log(1e-15))  # unknown label


def test_ece_by_hand() -> None:
    # Confidences 0.7 (right), 0.5 (wrong), 0.5 (wrong), 0.8 (right) in 15 bins of width 1/15:
    # 0.5 -> bin (0.4667, 0.5333], 0.7 -> (0.6667, 0.7333], 0.8 -> (0.7333, 0.8].
    expected = 0.25 * abs(1 - 0.7) + 0.5 * abs(0 - 0.5) + 0.25 * abs(1 - 0.8)
    assert expected_calibration_error(P, Y) == pytest.approx(expected)
    curve = reliability(P, Y)
    assert sum(curve.count) == 4 and len(curve.edges) == 16
    assert curve.to_json()["accuracy"].count(None) == 12
    perfectly = np.asarray([[1.0, 0.0]] * 3)
    assert expected_calibration_error(perfectly, np.asarray([0, 0, 0])) == 0.0


def test_per_intent_scores() -> None:
    scores = {s.intent: s for s in per_intent(P, Y, ("a", "b", "c"))}
    # Predicted: a, a, c, c; true: a, b, a, c.
    assert scores["a"].precision == 0.5 and scores["a"].recall == 0.5 and scores["a"].support == 2
    assert scores["b"].precision == 0.0 and scores["b"].recall == 0.0 and scores["b"].f1 == 0.0
    assert scores["c"].precision == 0.5 and scores["c"].recall == 1.0
    assert scores["c"].f1 == pytest.approx(2 / 3)


def test_summary_and_alignment() -> None:
    summary = summarise(P, Y)
    assert (summary.n, summary.top1, summary.top3) == (4, 0.5, 1.0)
    moved = align(P, ("a", "b", "c"), ("c", "x", "a"))
    assert np.allclose(moved[:, 0], P[:, 2]) and np.all(moved[:, 1] == 0) and np.allclose(moved[:, 2], P[:, 0])
    assert label_indices(["c", None, "a", "zz"], ("a", "b", "c")).tolist() == [2, -1, 0, -1]


def test_threshold_is_the_smallest_that_keeps_the_precision() -> None:
    confidence = np.asarray([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.asarray([1, 1, 1, 0, 1, 1, 0, 0], dtype=bool)
    # Precision at each cut: 1, 1, 1, .75, .8, .833, .714, .625 -> the deepest cut at or above 0.8 is 0.6.
    assert choose_threshold(confidence, correct, 0.8, min_support=1) == 0.6
    choice = threshold_choice(confidence, correct, 0.8, min_support=1)
    assert choice.precision == pytest.approx(5 / 6) and choice.coverage == 0.75 and choice.support == 6
    # The minimum support rules out thin cuts: no cut has 7 rows at precision 0.8.
    assert choose_threshold(confidence, correct, 0.8, min_support=7) == math.inf
    assert threshold_choice(confidence, correct, 0.8, min_support=7).to_json()["threshold"] is None
    # Equal confidences are taken or left together.
    tied = threshold_choice(np.asarray([0.9, 0.5, 0.5]), np.asarray([1, 1, 0], dtype=bool), 0.9, min_support=1)
    assert tied.threshold == 0.9

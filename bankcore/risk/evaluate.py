"""Evaluation: detection of scam transfers at fixed false-alarm rates, for rules, model and both combined.

`evaluate` splits the labelled examples by customer (a stable hash of the customer ID and the seed, so a
customer's transfers are all on one side), trains the learned score on the train part and measures on the
test part. With `folds` = k, each of k customer folds is measured by a model trained on the others, so every
customer is measured once (small sets). With a given model it skips training and measures every example.

Three scores are compared, each as a detection curve: at a false-alarm rate r, the threshold lets at most r
of the legitimate test transfers through to an alarm (ties stay below it), and detection is the share of
scam transfers at or above it, overall and per pattern.

- rules: `Decision.rules_score` of `decide(..., model=None)` (the most severe rule's rank, then how many fired);
- model: the learned score;
- combined: max(rules score, the learned score mapped onto the same action scale). The map is piecewise
  linear and places the model's band thresholds exactly on the ranks of their actions (step_up 1, warn 2,
  hold 3), so "combined >= rank(a)" holds exactly when the policy, which takes the most severe action of the
  rules and of the model's band, reaches a; in particular combined >= 2 is the policy interrupting.

Then the operating point of the real policy, `decide(kind, features, config, model)`: the share of scam
transfers interrupted (warn, hold, block) per pattern and of legitimate ones, next to the rules alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bankcore.risk.config import ACTIONS, SEVERITY, RulesConfig
from bankcore.risk.dataset import LabelledTransfer
from bankcore.risk.engine import decide, model_band
from bankcore.risk.model import TrainedRiskModel, customer_fraction, feature_matrix, fit_model, labelled

FALSE_ALARM_RATES = (0.001, 0.005, 0.01, 0.02)
SYSTEMS = ("rules", "model", "combined")
_BAND_RANKS = {
    "allow": SEVERITY["allow"],
    "step_up": SEVERITY["step_up"],
    "warn": SEVERITY["warn"],
    "hold": SEVERITY["hold"],
}


def rate_key(rate: float) -> str:
    return f"{rate * 100:g}%"


def model_rank(score: float, thresholds: Mapping[str, float]) -> float:
    """The learned score on the action scale: the rank of its band plus how far it is into the band (< 1).

    A score exactly at a band's threshold lands on that action's rank, so comparing the rank with an
    action's rank gives the same answer as the policy's `model_band`. Above the hold threshold the rank
    climbs towards block's without reaching it: the learned score alone never blocks.
    """
    band = model_band(score, thresholds)
    lower = thresholds.get(band, 0.0) if band != "allow" else 0.0
    higher = [t for t in thresholds.values() if t > lower]
    upper = min(higher) if higher and band != "hold" else 1.0
    fraction = (score - lower) / (upper - lower) if upper > lower else 0.0
    return _BAND_RANKS[band] + min(max(fraction, 0.0), 0.999)


def combined_score(rules_score: float, model_score: float | None, thresholds: Mapping[str, float] | None) -> float:
    """max(rules score, model rank): consistent with the policy's most-severe-action combination."""
    if model_score is None or thresholds is None:
        return rules_score
    return max(rules_score, model_rank(model_score, thresholds))


def detection_curve(
    scores: np.ndarray, is_scam: np.ndarray, patterns: Sequence[str], rates: Sequence[float] = FALSE_ALARM_RATES
) -> dict[str, Any]:
    """Detection at each false-alarm rate, overall and per pattern, with the threshold and the rate reached."""
    legit = np.sort(scores[~is_scam])[::-1]
    pattern_names = sorted({p for p, scam in zip(patterns, is_scam, strict=True) if scam})
    pattern_array = np.asarray(patterns, dtype=object)
    out: dict[str, Any] = {
        "overall": {},
        "by_pattern": {p: {} for p in pattern_names},
        "threshold": {},
        "false_alarm": {},
    }
    for rate in rates:
        key = rate_key(rate)
        allowed = int(np.floor(rate * len(legit) + 1e-9))
        threshold = float(np.nextafter(legit[allowed], np.inf)) if allowed < len(legit) else -np.inf
        flagged = scores >= threshold
        out["threshold"][key] = threshold
        out["false_alarm"][key] = float(flagged[~is_scam].mean()) if (~is_scam).any() else 0.0
        out["overall"][key] = float(flagged[is_scam].mean()) if is_scam.any() else 0.0
        for pattern in pattern_names:
            rows = is_scam & (pattern_array == pattern)
            out["by_pattern"][pattern][key] = float(flagged[rows].mean())
    return out


@dataclass
class _FixedScore:
    """A RiskModel whose score was computed beforehand (batch): decide() sees exactly the model's score."""

    version: str
    thresholds: Mapping[str, float]
    value: float = 0.0

    def score(self, features: Mapping[str, float]) -> float:
        return self.value


def _policy_summary(
    actions: Sequence[str], is_scam: np.ndarray, patterns: Sequence[str], kinds: Sequence[str]
) -> dict[str, Any]:
    interrupts = np.array([SEVERITY[a] >= SEVERITY["warn"] for a in actions])
    transfers = np.array([kind == "transfer" for kind in kinds])
    legit = ~is_scam
    by_pattern: dict[str, float] = {}
    for pattern in sorted({p for p, scam in zip(patterns, is_scam, strict=True) if scam}):
        rows = is_scam & (np.asarray(patterns, dtype=object) == pattern)
        by_pattern[pattern] = float(interrupts[rows].mean())
    count = Counter(zip(("scam" if s else "legit" for s in is_scam), actions, strict=True))
    return {
        "legit_interrupted": float(interrupts[legit].mean()) if legit.any() else 0.0,
        "legit_transfers_interrupted": float(interrupts[legit & transfers].mean())
        if (legit & transfers).any()
        else 0.0,
        "scam_interrupted": float(interrupts[is_scam].mean()) if is_scam.any() else 0.0,
        "by_pattern": by_pattern,
        "actions": {side: {a: count[(side, a)] for a in ACTIONS} for side in ("legit", "scam")},
    }


@dataclass
class EvaluationReport:
    """The figures of one evaluation; `data` is the JSON report, `models` the model(s) measured."""

    data: dict[str, Any]
    models: list[TrainedRiskModel]

    @property
    def model(self) -> TrainedRiskModel:
        """The model measured (with folds, the first fold's)."""
        return self.models[0]

    def to_json(self) -> dict[str, Any]:
        return self.data


@dataclass
class _Scored:
    """Per test row: the three scores and the two policies' actions."""

    rows: list[int]
    rules: list[float]
    model: list[float]
    combined: list[float]
    rules_actions: list[str]
    policy_actions: list[str]


def _score(
    rows: np.ndarray,
    examples: Sequence[LabelledTransfer],
    matrix: np.ndarray,
    names: tuple[str, ...],
    config: RulesConfig,
    model: TrainedRiskModel,
    into: _Scored,
) -> None:
    model_scores = model.score_matrix(matrix[rows])
    use_model = config.model.enabled
    fixed = _FixedScore(model.version, model.thresholds)
    for row, model_score in zip(rows.tolist(), model_scores.tolist(), strict=True):
        kind = examples[row].risk.kind
        features = dict(zip(names, matrix[row].tolist(), strict=True))
        rules_only = decide(kind, features, config, None)
        fixed.value = model_score
        into.rows.append(row)
        into.rules.append(rules_only.rules_score)
        into.model.append(model_score)
        into.combined.append(
            combined_score(rules_only.rules_score, model_score if use_model else None, model.thresholds)
        )
        into.rules_actions.append(rules_only.action)
        into.policy_actions.append(decide(kind, features, config, fixed).action)


def _fit(
    rows: np.ndarray,
    examples: Sequence[LabelledTransfer],
    matrix: np.ndarray,
    names: tuple[str, ...],
    config: RulesConfig,
    seed: int,
) -> TrainedRiskModel:
    chosen = [examples[i] for i in rows]
    return fit_model(
        matrix[rows],
        [str(e.label) for e in chosen],
        [e.risk.customer_id for e in chosen],
        names,
        config,
        seed,
        [e.pattern for e in chosen],
    )


def evaluate(
    examples: Sequence[LabelledTransfer],
    config: RulesConfig,
    seed: int = 0,
    train_fraction: float = 0.5,
    model: TrainedRiskModel | None = None,
    folds: int = 1,
) -> EvaluationReport:
    """Measure the rules, the learned score and the policy on labelled examples.

    - `model` given: no training; every labelled example is measured.
    - `folds` = 1: a model is trained on `train_fraction` of the customers and measured on the others.
    - `folds` = k >= 2: customers fall in k folds; each fold is measured by a model trained on the other
      k - 1, so every customer is measured once, by a model that never saw them (small sets).
    """
    rows = labelled(examples)
    if not rows:
        raise ValueError("the set has no labelled records (label legit or scam)")
    if folds < 1:
        raise ValueError("folds must be at least 1")
    matrix, names = feature_matrix(rows, config)
    customers = [e.risk.customer_id for e in rows]
    scored = _Scored([], [], [], [], [], [])
    models: list[TrainedRiskModel] = []
    everything = np.arange(len(rows))
    if model is not None:
        if tuple(model.feature_names) != names:
            raise ValueError("the model was trained on other features than these rules yield")
        models.append(model)
        _score(everything, rows, matrix, names, config, model, scored)
        source = "given"
    elif folds == 1:
        if not 0 < train_fraction < 1:
            raise ValueError("train_fraction must be between 0 and 1")
        in_train = np.array([customer_fraction(c, f"risk-evaluate/{seed}") < train_fraction for c in customers])
        if in_train.all():
            raise ValueError("no customer fell in the test split; use more customers or a smaller train_fraction")
        models.append(_fit(everything[in_train], rows, matrix, names, config, seed))
        _score(everything[~in_train], rows, matrix, names, config, models[0], scored)
        source = f"trained on {train_fraction:.0%} of the customers"
    else:
        fold_of = np.array([int(customer_fraction(c, f"risk-evaluate/{seed}") * folds) for c in customers])
        for fold in range(folds):
            models.append(_fit(everything[fold_of != fold], rows, matrix, names, config, seed))
            _score(everything[fold_of == fold], rows, matrix, names, config, models[-1], scored)
        source = f"{folds} folds by customer, each measured by a model trained on the others"
    test = [rows[i] for i in scored.rows]
    is_scam = np.array([e.label == "scam" for e in test])
    if not is_scam.any() or is_scam.all():
        raise ValueError("the measured examples need both legit and scam ones")
    patterns = [str(e.pattern or "unknown") if e.label == "scam" else "legit" for e in test]
    kinds = [e.risk.kind for e in test]
    data: dict[str, Any] = {
        "rules_version": config.version,
        "rules_source": config.source,
        "model_version": "+".join(m.version for m in models),
        "model_source": source,
        "model_enabled": config.model.enabled,
        "models": [{"version": m.version, "thresholds": dict(m.thresholds), "counts": m.counts} for m in models],
        "seed": seed,
        "train_fraction": train_fraction if model is None and folds == 1 else None,
        "folds": folds if model is None else None,
        "counts": {
            "labelled": len(rows),
            "test_legit": int((~is_scam).sum()),
            "test_legit_transfers": int(
                sum(1 for k, s in zip(kinds, is_scam, strict=True) if k == "transfer" and not s)
            ),
            "test_scam": int(is_scam.sum()),
            "test_scam_by_pattern": dict(sorted(Counter(p for p in patterns if p != "legit").items())),
            "test_customers": len({e.risk.customer_id for e in test}),
        },
        "false_alarm_rates": [rate_key(r) for r in FALSE_ALARM_RATES],
        "detection": {
            "rules": detection_curve(np.array(scored.rules), is_scam, patterns),
            "model": detection_curve(np.array(scored.model), is_scam, patterns),
            "combined": detection_curve(np.array(scored.combined), is_scam, patterns),
        },
        "policy": {
            "rules_only": _policy_summary(scored.rules_actions, is_scam, patterns, kinds),
            "rules_and_model": _policy_summary(scored.policy_actions, is_scam, patterns, kinds),
        },
    }
    return EvaluationReport(data=data, models=models)

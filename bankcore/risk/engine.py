"""Decisions: hard rules, the ops' tunable rules and the learned score's band, combined by severity.

Deterministic: the same features, rules and model give the same decision, reasons in the same order.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from bankcore.risk.config import HARD_RULES, SEVERITY, RulesConfig

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
INTERRUPTING = ("warn", "hold", "block")


class RiskModel(Protocol):
    """A learned score in [0, 1] with the thresholds of its bands, fixed when it was trained."""

    @property
    def version(self) -> str: ...

    @property
    def thresholds(self) -> Mapping[str, float]:  # step_up, warn, hold
        ...

    def score(self, features: Mapping[str, float]) -> float: ...


@dataclass(frozen=True)
class Reason:
    rule: str
    action: str
    description: str
    kind: str  # hard | rule | model

    def to_json(self) -> dict[str, str]:
        return {"rule": self.rule, "action": self.action, "description": self.description, "kind": self.kind}


@dataclass(frozen=True)
class Decision:
    action: str
    reasons: tuple[Reason, ...]
    warning_key: str | None
    warning_text: str | None
    freeze: bool
    score: float | None
    rules_version: str
    model_version: str | None

    @property
    def interrupts(self) -> bool:
        """Whether the customer is stopped (warned, held or blocked) rather than let through."""
        return self.action in INTERRUPTING

    @property
    def executes(self) -> bool:
        """Whether the money may move after the dialogue's checks (hold and block never)."""
        return SEVERITY[self.action] <= SEVERITY["warn"]

    @property
    def needs_step_up(self) -> bool:
        return SEVERITY["step_up"] <= SEVERITY[self.action] <= SEVERITY["warn"]

    @property
    def rules_score(self) -> float:
        """The rules' verdict as a number (severity, then how many rules agreed), for detection curves."""
        rule_reasons = [r for r in self.reasons if r.kind != "model"]
        top = max((SEVERITY[r.action] for r in rule_reasons), default=0)
        return top + min(len(rule_reasons), 9) / 10.0


def _hard_fires(rule_id: str, f: Mapping[str, float], params: Mapping[str, float]) -> bool:
    if rule_id == "fraud_list_payee":
        return f["payee_on_fraud_list"] >= 1
    if rule_id == "coached_new_payee":
        return f["fraud_phrase_hits"] >= 1 and f["payee_new"] >= 1
    if rule_id == "coached_known_payee":
        return f["fraud_phrase_hits"] >= 1 and f["payee_new"] < 1
    if rule_id == "takeover_new_payee":
        reset = f["ev_password_reset_24h"] + f["ev_sim_change_24h"] >= 1
        device = f["ev_new_device_24h"] >= 1 or f["device_unknown"] >= 1
        return reset and device and f["payee_new"] >= 1
    if rule_id == "voice_new_payee":
        return f["input_voice"] >= 1 and f["payee_new"] >= 1
    if rule_id == "failed_verifications":
        return f["failed_verifications_24h"] >= params["threshold"]
    if rule_id == "cross_border":
        return f["cross_border"] >= 1
    raise KeyError(rule_id)


def model_band(score: float, thresholds: Mapping[str, float]) -> str:
    for action in ("hold", "warn", "step_up"):
        if action in thresholds and score >= thresholds[action]:
            return action
    return "allow"


def decide(
    kind: str,
    features: Mapping[str, float],
    config: RulesConfig,
    model: RiskModel | None = None,
    *,
    use_rules: bool = True,
) -> Decision:
    """The decision for one movement. `use_rules=False` (evaluation only) leaves the learned score alone."""
    reasons: list[Reason] = []
    warning_key: str | None = None
    freeze = False
    if use_rules:
        for hard in HARD_RULES:
            if kind in hard.applies_to and _hard_fires(hard.id, features, config.hard_params.get(hard.id, {})):
                reasons.append(Reason(hard.id, config.hard_actions[hard.id], hard.description, "hard"))
                warning_key = warning_key or hard.warning
        for rule in config.rules:
            if kind in rule.applies_to and all(_OPS[c.op](features[c.feature], c.value) for c in rule.when):
                reasons.append(Reason(rule.id, rule.action, rule.description, "rule"))
                warning_key = warning_key or rule.warning
                freeze = freeze or rule.freeze
    score: float | None = None
    if model is not None and config.model.enabled:
        score = float(model.score(features))
        band = model_band(score, model.thresholds)
        if band != "allow":
            reasons.append(Reason("learned_score", band, f"模型风险评分 {score:.3f}", "model"))
    action = max((r.action for r in reasons), key=SEVERITY.__getitem__, default="allow")
    if action == "warn" and warning_key is None:
        # A warn from the learned score alone reads the general new-payee warning.
        warning_key = "new_payee_large"
    if action not in ("warn", "hold"):
        warning_key = None
    freeze = freeze and action == "block"
    return Decision(
        action=action,
        reasons=tuple(sorted(reasons, key=lambda r: (-SEVERITY[r.action], r.kind, r.rule))),
        warning_key=warning_key,
        warning_text=config.warnings.get(warning_key) if warning_key else None,
        freeze=freeze,
        score=score,
        rules_version=config.version,
        model_version=getattr(model, "version", None) if model is not None else None,
    )

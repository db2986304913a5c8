"""The risk rules file that ops edit (YAML), its schema, and the hard rules no file can loosen.

Policy, in order of severity: allow < step_up < warn < hold < block. A decision is the most severe action of
every rule that fires (hard and tunable) and of the learned score's band; nothing can lower what a hard
rule decided. A hard rule's floor is built in: the file may raise its action or tighten its parameters
within the bound written here, and a file that tries to loosen one is rejected as a whole, naming the rule.
The vocabularies the hard rules read (fraud phrases, which event types mean a password reset, ...) have a
built-in core that the file can only extend.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bankcore.rules_files import read_rules_document

ACTIONS = ("allow", "step_up", "warn", "hold", "block")
SEVERITY = {action: rank for rank, action in enumerate(ACTIONS)}
Action = Literal["allow", "step_up", "warn", "hold", "block"]
Op = Literal[">=", ">", "<=", "<", "==", "!="]
KIND_NAMES = ("transfer", "card_repayment", "loan_repayment")
Kind = Literal["transfer", "card_repayment", "loan_repayment"]

# Said or typed by customers whom a scammer is coaching; always checked, the file may add more.
CORE_FRAUD_PHRASES = (
    "安全账户",
    "公检法",
    "刷单",
    "验证码给",
    "资金核查",
    "涉嫌洗钱",
    "屏幕共享",
    "注销校园贷",
)
# Event types the hard rules read, by signal; the file may map more event types onto each signal.
CORE_EVENT_SIGNALS: dict[str, tuple[str, ...]] = {
    "suspicious_login": ("suspicious_login",),
    "password_reset": ("password_reset",),
    "new_device": ("new_device",),
    "sim_change": ("sim_change",),
    "flagged_call": ("suspicious_call",),
}
# Anti-fraud warnings read or shown verbatim; the file may reword them but not remove one.
CORE_WARNINGS: dict[str, str] = {
    "impersonation": (
        "【防诈骗提醒】公检法机关不会通过电话、微信要求您转账到所谓的“安全账户”，也不会要求您提供验证码。"
        "如果有人这样要求您，对方就是骗子，请立即停止转账。"
    ),
    "new_payee_large": (
        "【防诈骗提醒】您正在向首次转账的收款人转出较大金额。请核实对方身份：刷单返利、网络投资、冒充客服退款都是骗局，"
        "转出的钱很难追回。"
    ),
    "takeover": (
        "【安全提醒】您的账户近期更换了设备或重置了密码。如果这些操作不是您本人所为，请立即停止转账并联系我行。"
    ),
}


@dataclass(frozen=True)
class HardParam:
    default: float
    # The loosest value the file may set; `direction` says which way is looser.
    loosest: float
    looser_when: Literal["higher", "lower"]


@dataclass(frozen=True)
class HardRule:
    id: str
    floor: str
    applies_to: tuple[str, ...]
    description: str  # for the agent who reads the audit trail (Chinese: the bank's staff read it)
    warning: str | None = None
    params: Mapping[str, HardParam] | None = None


HARD_RULES: tuple[HardRule, ...] = (
    HardRule("fraud_list_payee", "block", ("transfer",), "收款账户在涉诈名单中"),
    HardRule(
        "coached_new_payee",
        "hold",
        ("transfer",),
        "客户在本次会话中提到诈骗常用话术，且收款人为首次转账",
        warning="impersonation",
    ),
    HardRule("coached_known_payee", "warn", ("transfer",), "客户在本次会话中提到诈骗常用话术", warning="impersonation"),
    HardRule(
        "takeover_new_payee",
        "hold",
        ("transfer",),
        "近24小时内重置密码或更换SIM卡，并使用新设备向新收款人转账",
        warning="takeover",
    ),
    HardRule("voice_new_payee", "step_up", ("transfer",), "语音渠道向首次转账的收款人转账"),
    HardRule(
        "failed_verifications",
        "step_up",
        KIND_NAMES,
        "近24小时内多次验证失败",
        params={"threshold": HardParam(default=3, loosest=3, looser_when="higher")},
    ),
    HardRule("cross_border", "step_up", ("transfer",), "跨境转账"),
)
HARD_RULE_IDS = tuple(rule.id for rule in HARD_RULES)


class RulesFileError(ValueError):
    """A rules file that cannot be used; the message names the file, the place and what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    feature: str = Field(min_length=1)
    op: Op
    value: float


class TunableRule(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")
    description: str = Field(min_length=1)
    applies_to: tuple[Kind, ...] = ("transfer",)
    when: tuple[Condition, ...] = Field(min_length=1)
    action: Literal["step_up", "warn", "hold", "block"]
    warning: str | None = None
    freeze: bool = False

    @model_validator(mode="after")
    def _freeze_needs_block(self) -> TunableRule:
        if self.freeze and self.action != "block":
            raise ValueError("freeze: true is allowed only with action: block")
        if self.action == "warn" and self.warning is None:
            raise ValueError("a warn rule names the warning to read (warning: KEY)")
        return self


class HardRuleOverride(_Strict):
    action: Action | None = None
    params: dict[str, float] = Field(default_factory=dict)


class ModelPolicy(_Strict):
    """The learned score's bands, as shares of legitimate transfers the model alone may flag (set at training)."""

    enabled: bool = True
    step_up_rate: float = Field(default=0.02, gt=0, le=0.2)
    warn_rate: float = Field(default=0.004, gt=0, le=0.2)
    hold_rate: float = Field(default=0.001, gt=0, le=0.2)

    @model_validator(mode="after")
    def _ordered(self) -> ModelPolicy:
        if not self.hold_rate <= self.warn_rate <= self.step_up_rate:
            raise ValueError("rates must satisfy hold_rate <= warn_rate <= step_up_rate")
        return self


class RulesFile(_Strict):
    version: int = Field(ge=1)
    fraud_phrases: tuple[str, ...] = ()
    event_signals: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    warnings: dict[str, str] = Field(default_factory=dict)
    hard_rules: dict[str, HardRuleOverride] = Field(default_factory=dict)
    rules: tuple[TunableRule, ...] = ()
    model: ModelPolicy = ModelPolicy()

    @field_validator("event_signals")
    @classmethod
    def _signal_names(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for name in value:
            if not name.isidentifier() or not name.islower():
                raise ValueError(f"signal name {name!r} must be a lower-case identifier")
        return value


@dataclass(frozen=True)
class RulesConfig:
    """A validated rules file merged with the built-in floors; `version` is a digest of the effective rules."""

    fraud_phrases: tuple[str, ...]
    event_signals: Mapping[str, tuple[str, ...]]
    warnings: Mapping[str, str]
    hard_actions: Mapping[str, str]
    hard_params: Mapping[str, Mapping[str, float]]
    rules: tuple[TunableRule, ...]
    model: ModelPolicy
    version: str
    source: str

    @cached_property
    def signal_of_event_type(self) -> dict[str, str]:
        """Event type (folded) → signal name."""
        out: dict[str, str] = {}
        for signal, types in self.event_signals.items():
            for event_type in types:
                out.setdefault(event_type.strip().casefold(), signal)
        return out


def _merge_unique(core: tuple[str, ...], extra: tuple[str, ...]) -> tuple[str, ...]:
    merged: list[str] = []
    for item in (*core, *extra):
        item = item.strip()
        if item and item not in merged:
            merged.append(item)
    return tuple(merged)


def _hard_overrides(parsed: RulesFile) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    actions: dict[str, str] = {}
    params: dict[str, dict[str, float]] = {}
    by_id = {rule.id: rule for rule in HARD_RULES}
    for rule_id in parsed.hard_rules:
        if rule_id not in by_id:
            raise ValueError(f"hard_rules.{rule_id}: no such hard rule (known: {', '.join(HARD_RULE_IDS)})")
    for rule in HARD_RULES:
        override = parsed.hard_rules.get(rule.id, HardRuleOverride())
        action = override.action or rule.floor
        if SEVERITY[action] < SEVERITY[rule.floor]:
            raise ValueError(
                f"hard_rules.{rule.id}.action: {action!r} is below the rule's floor {rule.floor!r}; "
                "hard rules can only be tightened"
            )
        actions[rule.id] = action
        values: dict[str, float] = {}
        for name, bound in (rule.params or {}).items():
            value = float(override.params.get(name, bound.default))
            looser = value > bound.loosest if bound.looser_when == "higher" else value < bound.loosest
            if looser:
                raise ValueError(
                    f"hard_rules.{rule.id}.params.{name}: {value:g} is looser than the floor {bound.loosest:g}; "
                    "hard rules can only be tightened"
                )
            values[name] = value
        unknown = set(override.params) - set(rule.params or {})
        if unknown:
            raise ValueError(f"hard_rules.{rule.id}.params: unknown parameter(s) {', '.join(sorted(unknown))}")
        params[rule.id] = values
    return actions, params


def build_config(document: Any, source: str = "<rules>") -> RulesConfig:
    """Validate a parsed rules document and merge it with the built-in floors; RulesFileError if unusable."""
    from bankcore.risk.features import feature_names  # the feature list depends on the signal names

    try:
        if not isinstance(document, Mapping):
            raise ValueError("the rules file must be a YAML mapping with at least 'version'")
        parsed = RulesFile.model_validate(document)
        actions, params = _hard_overrides(parsed)
        signals = {name: tuple(types) for name, types in CORE_EVENT_SIGNALS.items()}
        for name, types in parsed.event_signals.items():
            signals[name] = _merge_unique(signals.get(name, ()), tuple(types))
        warnings = {**CORE_WARNINGS, **{k: v.strip() for k, v in parsed.warnings.items()}}
        for key, text in warnings.items():
            if not text:
                raise ValueError(f"warnings.{key}: a warning cannot be empty")
        known = set(feature_names(tuple(signals)))
        for index, rule in enumerate(parsed.rules):
            for condition in rule.when:
                if condition.feature not in known:
                    raise ValueError(
                        f"rules[{index}] ({rule.id}).when: unknown feature {condition.feature!r}; "
                        f"known features: {', '.join(sorted(known))}"
                    )
            if rule.warning is not None and rule.warning not in warnings:
                raise ValueError(f"rules[{index}] ({rule.id}).warning: no warning named {rule.warning!r}")
        ids = [rule.id for rule in parsed.rules]
        duplicated = sorted({i for i in ids if ids.count(i) > 1} | (set(ids) & set(HARD_RULE_IDS)))
        if duplicated:
            raise ValueError(f"rules: duplicate or reserved rule id(s) {', '.join(duplicated)}")
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '(top level)'}: {item['msg']}" for item in error.errors()
        )
        raise RulesFileError(f"{source}: {problems}") from None
    except ValueError as error:
        raise RulesFileError(f"{source}: {error}") from None
    phrases = _merge_unique(CORE_FRAUD_PHRASES, parsed.fraud_phrases)
    effective: dict[str, Any] = {
        "fraud_phrases": phrases,
        "event_signals": signals,
        "warnings": warnings,
        "hard_actions": actions,
        "hard_params": params,
        "rules": [rule.model_dump(mode="json") for rule in parsed.rules],
        "model": parsed.model.model_dump(mode="json"),
    }
    digest = hashlib.sha256(json.dumps(effective, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
    return RulesConfig(
        fraud_phrases=phrases,
        event_signals=signals,
        warnings=warnings,
        hard_actions=actions,
        hard_params=params,
        rules=parsed.rules,
        model=parsed.model,
        version=digest[:16],
        source=source,
    )


def load_rules(path: str | Path) -> RulesConfig:
    """Read and validate a rules file; RulesFileError (never a partial config) when it is unusable."""
    path = Path(path)
    return build_config(read_rules_document(path, RulesFileError), str(path))


DEFAULT_RULES_PATH = Path(__file__).with_name("rules.yaml")

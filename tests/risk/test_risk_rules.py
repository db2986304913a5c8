"""The rules file: schema, clear errors, hard rules that no configuration can loosen, deterministic decisions."""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bankcore.events import Event
from bankcore.risk.config import (
    DEFAULT_RULES_PATH,
    HARD_RULES,
    SEVERITY,
    RulesFileError,
    build_config,
    load_rules,
)
from bankcore.risk.engine import decide
from bankcore.risk.features import compute_for
from bankcore.risk.signals import PastTransfer, RiskInput

NOW = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)


def _shipped() -> dict[str, Any]:
    return dict(yaml.safe_load(DEFAULT_RULES_PATH.read_text(encoding="utf-8")))


def _input(**overrides: Any) -> RiskInput:
    values: dict[str, Any] = {
        "kind": "transfer",
        "customer_id": "C1",
        "ts": NOW,
        "amount": Decimal("800"),
        "payee_key": "bank|1234|known",
        "history": (PastTransfer(NOW - dt.timedelta(days=3), Decimal("600"), "bank|1234|known"),),
    }
    values.update(overrides)
    return RiskInput(**values)


# One input per hard rule that makes exactly that rule's condition true.
HARD_CASES: dict[str, RiskInput] = {
    "fraud_list_payee": _input(payee_on_fraud_list=True),
    "coached_new_payee": _input(payee_key="bank|9999|new", utterances=("对方说要把钱转到安全账户",)),
    "coached_known_payee": _input(utterances=("他让我把验证码给他",)),
    "takeover_new_payee": _input(
        payee_key="bank|9999|new",
        events=(
            Event("C1", NOW - dt.timedelta(hours=2), "app", "password_reset"),
            Event("C1", NOW - dt.timedelta(hours=1), "app", "new_device"),
        ),
    ),
    "voice_new_payee": _input(payee_key="bank|9999|new", input_mode="voice", channel="ivr"),
    "failed_verifications": _input(failed_verifications_24h=3),
    "cross_border": _input(cross_border=True),
}


def test_the_shipped_rules_load_and_every_hard_rule_has_a_case() -> None:
    config = load_rules(DEFAULT_RULES_PATH)
    assert {rule.id for rule in HARD_RULES} == set(HARD_CASES)
    plain = decide("transfer", compute_for(_input(), config), config)
    assert plain.action == "allow" and plain.reasons == ()


@pytest.mark.parametrize("rule", HARD_RULES, ids=lambda r: r.id)
def test_each_hard_rule_fires_at_least_at_its_floor(rule) -> None:  # type: ignore[no-untyped-def]
    config = load_rules(DEFAULT_RULES_PATH)
    decision = decide("transfer", compute_for(HARD_CASES[rule.id], config), config)
    fired = {r.rule: r.action for r in decision.reasons}
    assert rule.id in fired, decision
    assert SEVERITY[decision.action] >= SEVERITY[rule.floor]


# Arbitrary (valid) configurations: any tunable rules, raised hard actions, extra vocabulary, no model.
_feature = st.sampled_from(["amount", "payee_new", "night", "transfers_1h", "amount_vs_usual", "input_voice"])
_condition = st.fixed_dictionaries(
    {"feature": _feature, "op": st.sampled_from([">=", "<", "==", "!="]), "value": st.integers(0, 50000)}
)
_rule = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"[a-z][a-z0-9_]{2,10}", fullmatch=True),
        "description": st.just("ops rule"),
        "when": st.lists(_condition, min_size=1, max_size=3),
        "action": st.sampled_from(["step_up", "hold", "block"]),
    }
)


@st.composite
def configurations(draw: st.DrawFn) -> dict[str, Any]:
    rules = draw(st.lists(_rule, max_size=4, unique_by=lambda r: r["id"]))
    hard: dict[str, Any] = {}
    for rule in HARD_RULES:
        if draw(st.booleans()):
            stricter = [a for a, rank in SEVERITY.items() if rank >= SEVERITY[rule.floor]]
            hard[rule.id] = {"action": draw(st.sampled_from(stricter))}
    return {
        "version": 1,
        "fraud_phrases": draw(st.lists(st.sampled_from(["返利", "做任务", "保证金"]), max_size=3)),
        "event_signals": {"password_reset": draw(st.lists(st.sampled_from(["pwd_reset", "reset_pin"]), max_size=2))},
        "hard_rules": hard,
        "rules": rules,
        "model": {"enabled": draw(st.booleans())},
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=configurations())
def test_every_hard_rule_holds_whatever_the_configuration(document: dict[str, Any]) -> None:
    try:
        config = build_config(document)
    except RulesFileError:
        return  # refused configurations are never in force (tested below)
    for rule in HARD_RULES:
        decision = decide("transfer", compute_for(HARD_CASES[rule.id], config), config)
        assert SEVERITY[decision.action] >= SEVERITY[rule.floor], (rule.id, document)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hard_rules": {"fraud_list_payee": {"action": "warn"}}}, "below the rule's floor 'block'"),
        ({"hard_rules": {"failed_verifications": {"params": {"threshold": 10}}}}, "looser than the floor 3"),
        ({"hard_rules": {"no_such_rule": {}}}, "no such hard rule"),
        (
            {
                "rules": [
                    {
                        "id": "x1",
                        "description": "d",
                        "when": [{"feature": "nope", "op": ">", "value": 1}],
                        "action": "hold",
                    }
                ]
            },
            "unknown feature 'nope'",
        ),
        (
            {
                "rules": [
                    {
                        "id": "x2",
                        "description": "d",
                        "when": [{"feature": "amount", "op": "~", "value": 1}],
                        "action": "hold",
                    }
                ]
            },
            "rules.0.when.0.op",
        ),
        (
            {
                "rules": [
                    {
                        "id": "x3",
                        "description": "d",
                        "when": [{"feature": "amount", "op": ">", "value": 1}],
                        "action": "warn",
                    }
                ]
            },
            "names the warning",
        ),
        (
            {
                "rules": [
                    {
                        "id": "x4",
                        "description": "d",
                        "when": [{"feature": "amount", "op": ">", "value": 1}],
                        "action": "hold",
                        "freeze": True,
                    }
                ]
            },
            "freeze: true is allowed only with action: block",
        ),
        ({"model": {"hold_rate": 0.5}}, "model.hold_rate"),
        ({"surprise": 1}, "surprise"),
        ({"warnings": {"impersonation": "  "}}, "cannot be empty"),
    ],
)
def test_malformed_rules_are_refused_with_a_clear_error(change: dict[str, Any], message: str) -> None:
    document = copy.deepcopy(_shipped())
    document.update(change)
    with pytest.raises(RulesFileError) as caught:
        build_config(document, "ops.yaml")
    assert message in str(caught.value) and str(caught.value).startswith("ops.yaml: ")


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    for text, message in (("version: [", "not valid YAML"), ("- a\n- b\n", "YAML mapping"), ("", "YAML mapping")):
        path = tmp_path / "rules.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(RulesFileError, match=message):
            load_rules(path)
    with pytest.raises(RulesFileError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")


def test_vocabularies_are_extended_never_replaced() -> None:
    document = _shipped()
    document["fraud_phrases"] = ["自定义话术"]
    document["event_signals"] = {"password_reset": ["acct_pwd_reset"]}
    config = build_config(document)
    assert "安全账户" in config.fraud_phrases and "自定义话术" in config.fraud_phrases
    assert config.signal_of_event_type["password_reset"] == "password_reset"
    assert config.signal_of_event_type["acct_pwd_reset"] == "password_reset"
    case = _input(utterances=("按对方说的自定义话术操作",))
    assert decide("transfer", compute_for(case, config), config).action == "warn"


def test_decisions_are_deterministic_and_explained() -> None:
    config = load_rules(DEFAULT_RULES_PATH)
    case = HARD_CASES["coached_new_payee"]
    first = decide("transfer", compute_for(case, config), config)
    second = decide("transfer", compute_for(case, config), config)
    assert first == second
    assert first.action == "hold" and first.warning_text and "安全账户" in first.warning_text
    assert first.reasons[0].rule == "coached_new_payee"
    assert first.rules_version == config.version


def test_an_ops_rule_tightens_and_freeze_needs_block() -> None:
    document = _shipped()
    document["rules"] = [
        {
            "id": "any_night",
            "description": "夜间一律拦截",
            "when": [{"feature": "night", "op": ">=", "value": 1}],
            "action": "block",
            "freeze": True,
        }
    ]
    config = build_config(document)
    night = _input(ts=dt.datetime(2026, 11, 19, 18, 30, tzinfo=dt.UTC))  # 02:30 in Beijing
    decision = decide("transfer", compute_for(night, config), config)
    assert (decision.action, decision.freeze) == ("block", True)
    day = decide("transfer", compute_for(_input(), config), config)
    assert (day.action, day.freeze) == ("allow", False)

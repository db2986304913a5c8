"""The reminder rules file: the shipped file loads, and each kind of mistake is rejected naming its place."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from bankcore.reminders.rules import DEFAULT_RULES_PATH, RulesFileError, build_rules, load_rules

GOOD: dict[str, Any] = {
    "version": 1,
    "policy": {
        "quiet_hours": {"start": "21:00", "end": "08:00"},
        "frequency_caps": {"default": {"max": 2, "per_hours": 24}, "phone": {"max": 1, "per_hours": 12}},
        "retry": {"base_seconds": 300, "cap_seconds": 3600, "max_attempts": 4},
        "rate_limits": {"phone": 5.0, "wecom": 50.0},
    },
    "rules": [
        {
            "id": "loan_instalment",
            "kind": "loan_instalment_due",
            "offsets_days": [1, 3],
            "send_at": "10:00",
            "channels": ["wecom", "miniprogram", "phone"],
            "topic": "loan",
            "min_amount": "100.00",
        },
        {
            "id": "card_expiring",
            "kind": "card_expiring",
            "offsets_days": [30, 7],
            "send_at": "09:30",
            "channels": ["wecom", "sms"],
        },
        {
            "id": "notice",
            "kind": "service_notice",
            "offsets_days": [1],
            "channels": ["wecom"],
            "opt_in_required": True,
            "notice": {"id": "maint-1", "date": "2026-12-05", "text": "系统维护"},
        },
    ],
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one place changed; path like 'rules.1.offsets_days' (value None deletes the key)."""
    document = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    target: Any = document
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    key: Any = int(last) if last.isdigit() else last
    if value is None:
        del target[key]
    else:
        target[key] = value
    return document


def test_the_shipped_rules_file_loads_with_every_kind_it_documents() -> None:
    rules = load_rules(DEFAULT_RULES_PATH)
    kinds = {rule.kind for rule in rules.rules}
    assert kinds == {
        "loan_instalment_due",
        "card_statement_due",
        "card_expiring",
        "deposit_maturing",
        "auto_debit_failed",
        "service_notice",
    }
    config = rules.policy()
    assert (config.quiet.start, config.quiet.end) == (dt.time(21), dt.time(8))
    assert config.max_attempts == 4
    assert rules.source == str(DEFAULT_RULES_PATH)


def test_a_good_document_is_read_into_typed_rules_and_policy() -> None:
    rules = build_rules(GOOD, "good.yaml")
    loan = rules.rules[0]
    assert loan.offsets_days == (3, 1)  # sorted, largest (earliest reminder) first
    assert loan.send_at == dt.time(10, 0)
    assert str(loan.min_amount) == "100.00"
    assert rules.rules[1].opt_out_topic == "card"  # default topic by kind
    config = rules.policy()
    assert config.cap_for("phone").max_sends == 1
    assert config.cap_for("wecom").max_sends == 2
    assert config.cap_window == dt.timedelta(hours=24)
    assert config.rate_limits == {"phone": 5.0, "wecom": 50.0}


def test_the_version_digest_changes_with_the_content_and_only_then() -> None:
    assert build_rules(GOOD).version == build_rules(copy.deepcopy(GOOD)).version
    assert build_rules(GOOD).version != build_rules(_with("rules.0.send_at", "11:00")).version


def test_an_unquoted_yaml_time_is_still_read_as_a_time_of_day(tmp_path: Path) -> None:
    text = yaml.safe_dump(GOOD, allow_unicode=True).replace("send_at: '10:00'", "send_at: 10:00")
    assert "send_at: 10:00" in text
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_rules(path).rules[0].send_at == dt.time(10, 0)


@pytest.mark.parametrize(
    ("path", "value", "place"),
    [
        ("rules.0.kind", "loan_due", "rules[0] (loan_instalment).kind"),
        ("rules.0.offsets_days", [3, -1], "rules[0] (loan_instalment).offsets_days"),
        ("rules.0.offsets_days", [3, 3], "rules[0] (loan_instalment).offsets_days"),
        ("rules.0.offsets_days", [], "rules[0] (loan_instalment).offsets_days"),
        ("rules.1.send_at", "25:00", "rules[1] (card_expiring).send_at"),
        ("rules.1.send_at", "ten", "rules[1] (card_expiring).send_at"),
        ("rules.1.channels", ["wecom", "fax"], "rules[1] (card_expiring).channels[1]"),
        ("rules.1.channels", ["sms", "sms"], "rules[1] (card_expiring).channels"),
        ("rules.0.topic", "loans", "rules[0] (loan_instalment).topic"),
        ("rules.0.min_amount", "-5", "rules[0] (loan_instalment).min_amount"),
        ("rules.0.colour", "red", "rules[0] (loan_instalment).colour"),
        ("rules.0.id", "Bad Id", "rules[0] (Bad Id).id"),
        ("rules.2.notice", None, "rules[2] (notice)"),
        ("rules.2.notice.date", "tomorrow", "rules[2] (notice).notice.date"),
        ("rules.1.min_amount", "10", "rules[1] (card_expiring)"),
        ("policy.quiet_hours.start", "9pm", "policy.quiet_hours.start"),
        ("policy.frequency_caps.phone.max", 0, "policy.frequency_caps.phone.max"),
        ("policy.frequency_caps.fax", {"max": 1}, "policy.frequency_caps.fax"),
        ("policy.retry.cap_seconds", 10, "policy.retry"),
        ("policy.rate_limits.phone", 0, "policy.rate_limits"),
        ("version", 0, "version"),
    ],
)
def test_each_mistake_is_rejected_naming_the_file_and_the_place(path: str, value: Any, place: str) -> None:
    with pytest.raises(RulesFileError) as caught:
        build_rules(_with(path, value), "ops/reminders.yaml")
    message = str(caught.value)
    assert message.startswith("ops/reminders.yaml: "), message
    assert place in message, message


def test_auto_debit_rules_only_take_offset_zero() -> None:
    document = _with("rules.0.kind", "auto_debit_failed")
    with pytest.raises(RulesFileError, match=r"rules\[0\] \(loan_instalment\): auto_debit_failed .*\[0\]"):
        build_rules(document, "r.yaml")
    document["rules"][0]["offsets_days"] = [0]
    assert build_rules(document).rules[0].offsets_days == (0,)


def test_duplicate_rule_ids_are_named() -> None:
    document = _with("rules.1.id", "loan_instalment")
    with pytest.raises(RulesFileError, match=r"duplicate rule id.*loan_instalment"):
        build_rules(document, "r.yaml")


def test_files_that_are_not_rules_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(RulesFileError, match=r"missing.yaml: cannot read"):
        load_rules(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(RulesFileError, match=r"broken.yaml: not valid YAML"):
        load_rules(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(RulesFileError, match=r"list.yaml: the rules file must be a YAML mapping"):
        load_rules(listed)

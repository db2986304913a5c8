"""The Rasa domain, the action server and the core agree: every action exists, every error has a reply."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from rasa_sdk.executor import ActionExecutor

from actions import messages

ROOT = Path(__file__).resolve().parent.parent


def _domain() -> dict:  # type: ignore[type-arg]
    merged: dict = {"intents": [], "actions": [], "responses": {}, "forms": {}}  # type: ignore[type-arg]
    for path in sorted((ROOT / "bot" / "domain").glob("*.yml")):
        part = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        merged["intents"] += part.get("intents", [])
        merged["actions"] += part.get("actions", [])
        merged["responses"].update(part.get("responses", {}))
        merged["forms"].update(part.get("forms", {}))
    return merged


def test_every_custom_action_in_the_domain_is_registered_by_the_action_server() -> None:
    executor = ActionExecutor()
    executor.register_package("actions")
    registered = set(executor.actions)
    declared = {a for a in _domain()["actions"] if not a.startswith("utter_")}
    assert declared - registered == set()


def test_every_error_code_raised_by_the_core_has_a_response() -> None:
    responses = _domain()["responses"]
    codes: set[str] = set()
    for path in (ROOT / "bankcore").glob("*.py"):
        if path.name == "money.py":
            continue  # AmountError reasons are reported by the form as utter_error_invalid_amount
        if path.name == "events.py":
            continue  # RecordError names a field of an ingested record: answered to the API client, never a customer
        codes |= set(re.findall(r"(?:Error|Rejected)\(\s*\"([a-z_]+)\"", path.read_text(encoding="utf-8")))
    # Programming and data-loading errors never reach a customer's turn (they fall back to utter_error_generic).
    internal = {"invalid_priority", "unreachable", "version"}
    missing = sorted(code for code in codes - internal if f"utter_error_{code}" not in responses)
    assert not missing, f"codes without a utter_error_<code> response: {missing}"


def test_fallback_offers_only_intents_that_exist() -> None:
    intents = set(_domain()["intents"])
    assert set(messages.INTENT_LABELS) <= intents


def test_every_response_the_actions_name_exists() -> None:
    responses = _domain()["responses"]
    named: set[str] = set()
    for path in (ROOT / "actions").glob("*.py"):
        named |= set(re.findall(r"response=\"(utter_[a-z_]+)\"", path.read_text(encoding="utf-8")))
    assert named - set(responses) == set()

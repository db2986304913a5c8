"""Entity pieces the model tags separately are read back as what the customer said."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Tracker

from actions.runtime import entity_values


def tracker_for(text: str, entities: list[dict[str, Any]]) -> Tracker:
    return Tracker("s", {}, {"text": text, "entities": entities}, [], False, None, {}, "action_listen")


def span(text: str, piece: str, entity: str, value: str | None = None) -> dict[str, Any]:
    start = text.index(piece)
    return {"entity": entity, "start": start, "end": start + len(piece), "value": value or piece}


def test_adjacent_amount_pieces_are_one_amount() -> None:
    text = "给李四转两千五"
    tracker = tracker_for(text, [span(text, "李四", "payee"), span(text, "两千", "amount"), span(text, "五", "amount")])
    assert entity_values(tracker, "amount") == ["两千五"]
    assert entity_values(tracker, "payee") == ["李四"]


def test_separate_mentions_stay_separate_and_a_lone_value_keeps_its_synonym() -> None:
    text = "从储蓄卡转500给张三和李四"
    entities = [
        span(text, "储蓄卡", "account_type", "debit"),
        span(text, "张三", "payee"),
        span(text, "李四", "payee"),
    ]
    tracker = tracker_for(text, entities)
    assert entity_values(tracker, "payee") == ["张三", "李四"]
    assert entity_values(tracker, "account_type") == ["debit"]
    assert entity_values(tracker, "amount") == []


def test_pieces_follow_the_joined_value_when_asked() -> None:
    text = "给李华转一万二"
    tracker = tracker_for(text, [span(text, "李华", "payee"), span(text, "转", "payee")])
    assert entity_values(tracker, "payee") == ["李华转"]
    assert entity_values(tracker, "payee", with_pieces=True) == ["李华转", "李华", "转"]


def test_overlapping_extractors_give_one_value() -> None:
    text = "转账2500元"
    tracker = tracker_for(text, [span(text, "2500元", "amount"), span(text, "2500", "amount")])
    assert entity_values(tracker, "amount") == ["2500元"]


def test_a_confirmation_counts_only_right_after_the_read_back() -> None:
    from actions.confirmations import read_back_in_last_reply

    user = {"event": "user", "text": "..."}
    readback = {"event": "slot", "name": "pending_confirmation", "value": "loan_repayment"}
    bot = {"event": "bot", "text": "请核对"}
    assert read_back_in_last_reply([user, readback, bot, {"event": "user", "text": "好的"}])
    digression = [user, readback, bot, {"event": "user", "text": "余额"}, bot, {"event": "user", "text": "好的"}]
    assert not read_back_in_last_reply(digression)
    cleared = [user, readback, {"event": "slot", "name": "pending_confirmation", "value": None}, user]
    assert not read_back_in_last_reply(cleared)
    assert not read_back_in_last_reply([{"event": "user", "text": "好的"}])

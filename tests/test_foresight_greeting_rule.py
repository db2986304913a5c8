"""When the greeting names a predicted need: only a known need, only at or above the threshold."""

from __future__ import annotations

from actions.foresight_greeting import first_utterance_prior, offered_need


def test_a_confident_prediction_is_named():
    assert offered_need([{"intent": "loan_repayment", "p": 0.72}], 0.47) == "loan_repayment"


def test_a_mixed_picture_below_the_threshold_is_not_named():
    top = [{"intent": "credit_card_bill", "p": 0.40}, {"intent": "loan_repayment", "p": 0.31}]
    assert offered_need(top, 0.47) is None


def test_no_prediction_or_an_intent_without_wording_is_not_named():
    assert offered_need(None, 0.1) is None
    assert offered_need([], 0.1) is None
    assert offered_need([{"intent": "greet", "p": 0.99}], 0.1) is None
    assert offered_need([{"intent": "loan_repayment", "p": "high"}], 0.1) is None


class _Tracker:
    def __init__(self, events: list[dict], top: object) -> None:  # type: ignore[type-arg]
        self.events = events
        self._top = top

    def get_slot(self, name: str) -> object:
        return self._top


def _user(intent: str) -> dict:  # type: ignore[type-arg]
    return {"event": "user", "parse_data": {"intent": {"name": intent}}}


def test_the_prior_applies_to_the_first_request_of_the_session_only():
    top = [{"intent": "replace_card", "p": 0.7}, {"intent": "report_lost_card", "p": 0.3}]
    opened = [{"event": "session_started"}, _user("contact_opened"), _user("nlu_fallback")]
    assert first_utterance_prior(_Tracker(opened, top)) == {"replace_card": 0.7, "report_lost_card": 0.3}  # type: ignore[arg-type]
    later = [{"event": "session_started"}, _user("check_balance"), _user("nlu_fallback")]
    assert first_utterance_prior(_Tracker(later, top)) == {}  # type: ignore[arg-type]
    assert first_utterance_prior(_Tracker(opened, None)) == {}  # type: ignore[arg-type]

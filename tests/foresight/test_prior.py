"""The first-utterance rule: NLU's ranking re-weighted by the contact-reason prior."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foresight.prior import combine

INTENTS = ["report_lost_card", "replace_card", "activate_card", "credit_card_bill"]


def test_an_ambiguous_utterance_follows_the_prior():
    nlu = [("report_lost_card", 0.34), ("replace_card", 0.33), ("activate_card", 0.33)]
    prior = {"replace_card": 0.7, "report_lost_card": 0.1, "activate_card": 0.1, "credit_card_bill": 0.1}
    result = combine(nlu, prior)
    assert result.ranking[0][0] == "replace_card"
    assert result.accepted == "replace_card"


def test_a_clear_utterance_survives_a_wrong_prior():
    nlu = [("report_lost_card", 0.95), ("replace_card", 0.05)]
    prior = {"replace_card": 0.6, "report_lost_card": 0.2, "activate_card": 0.1, "credit_card_bill": 0.1}
    assert combine(nlu, prior).accepted == "report_lost_card"


def test_a_flat_prior_changes_nothing():
    nlu = [("replace_card", 0.5), ("report_lost_card", 0.3), ("greet", 0.2)]
    prior = dict.fromkeys(INTENTS, 0.25)
    ranking = combine(nlu, prior).ranking
    assert [name for name, _ in ranking] == ["replace_card", "report_lost_card", "greet"]
    assert ranking[0][1] == pytest.approx(0.5)
    assert combine(nlu, prior).accepted == combine(nlu, {}).accepted


def test_intents_outside_the_model_keep_a_neutral_prior():
    nlu = [("greet", 0.5), ("replace_card", 0.5)]
    prior = {"replace_card": 0.25, "report_lost_card": 0.25, "activate_card": 0.25, "credit_card_bill": 0.25}
    scores = dict(combine(nlu, prior).ranking)
    assert scores["greet"] == pytest.approx(scores["replace_card"])


def test_a_message_nlu_is_at_a_loss_with_is_not_decided_by_the_prior():
    nlu = [(name, 0.06) for name in [*INTENTS, "greet", "deny", "thank", "goodbye"]]
    prior = {"replace_card": 0.9, "report_lost_card": 0.05, "activate_card": 0.03, "credit_card_bill": 0.02}
    result = combine(nlu, prior)
    assert result.accepted is None
    assert len(result.ranking) == 3


def test_only_nlu_candidates_take_part():
    nlu = [("check_balance", 0.5), ("transaction_history", 0.3), ("greet", 0.15), ("replace_card", 0.05)]
    prior = {"replace_card": 0.97, "check_balance": 0.01, "transaction_history": 0.01, "credit_card_bill": 0.01}
    assert "replace_card" not in dict(combine(nlu, prior).ranking)


def test_a_close_call_is_not_accepted():
    nlu = [("replace_card", 0.5), ("report_lost_card", 0.5)]
    prior = {"replace_card": 0.3, "report_lost_card": 0.25, "activate_card": 0.25, "credit_card_bill": 0.2}
    assert combine(nlu, prior).accepted is None


def test_weight_zero_is_plain_nlu_and_no_prior_is_plain_nlu():
    nlu = [("report_lost_card", 0.4), ("replace_card", 0.35)]
    prior = {"replace_card": 0.9, "report_lost_card": 0.1}
    assert combine(nlu, prior, weight=0).ranking[0][0] == "report_lost_card"
    assert combine(nlu, {}).ranking[0][0] == "report_lost_card"
    assert combine([], prior).accepted is None


@given(
    st.lists(
        st.tuples(st.sampled_from([*INTENTS, "greet", "deny"]), st.floats(0, 1)), max_size=6, unique_by=lambda r: r[0]
    ),
    st.dictionaries(st.sampled_from(INTENTS), st.floats(0, 1), max_size=4),
)
def test_scores_are_a_distribution(nlu, prior):
    ranking = combine(nlu, prior).ranking
    assert len(ranking) == min(len(nlu), 3)
    if ranking:
        assert sum(score for _, score in ranking) == pytest.approx(1.0)
        assert all(score >= 0 for _, score in ranking)

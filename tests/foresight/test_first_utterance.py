"""The foresight prior on ambiguous first utterances, measured against the real NLU model and demo model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bankbot.first_utterance import evaluate, load_cases, rasa_parser

pytestmark = pytest.mark.rasa

CASES = Path(__file__).resolve().parents[1] / "data" / "first_utterances.yml"


def test_the_case_file_reads_events_strictly_before_the_contact():
    cases = load_cases(CASES)
    assert len(cases) >= 30
    for case in cases:
        assert case.example.events and all(e.ts < case.example.contact.ts for e in case.example.events)


def test_the_prior_settles_ambiguous_first_utterances_nlu_alone_cannot(live_stack):  # type: ignore[no-untyped-def]
    from foresight.transformer import TransformerPredictor

    predictor = TransformerPredictor.load(live_stack.settings.foresight_model_dir)
    report = evaluate(load_cases(CASES), rasa_parser(live_stack.rasa_url, live_stack.rasa_token), predictor)
    print(json.dumps({k: report[k] for k in ("cases", "without_prior", "with_prior")}, ensure_ascii=False))
    without, with_prior = report["without_prior"], report["with_prior"]
    assert with_prior["right"] > without["right"]
    # The prior only settles fallbacks; it must not turn them into more wrong answers than right ones.
    assert with_prior["right"] - without["right"] > with_prior["wrong"] - without["wrong"]

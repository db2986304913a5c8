"""Baselines: valid distributions, better than the prior when events tell, robust to unseen vocabulary."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bankcore.events import Contact, Event
from foresight.baselines import GlobalPriorBaseline, GradientBoostedBaseline, LastEventTypeBaseline
from foresight.dataset import Example, TimeSplit, build_examples, time_split
from foresight.metrics import label_indices, top_k_accuracy
from foresight.predictor import Predictor
from foresight.simulate import simulate


@pytest.fixture(scope="module")
def split() -> TimeSplit:
    data = simulate(2000, 60, seed=21)
    return time_split(build_examples(data.contacts, data.events, data.profiles))


@pytest.fixture(scope="module")
def gbt(split: TimeSplit) -> GradientBoostedBaseline:
    return GradientBoostedBaseline.fit(split.train, seed=0, max_iter=60)


def _top1(model: Predictor, examples: list[Example]) -> float:
    probabilities = model.predict_proba(examples)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    return top_k_accuracy(probabilities, label_indices([e.contact.intent for e in examples], model.intents))


def test_global_prior_is_the_smoothed_training_frequency(split: TimeSplit) -> None:
    model = GlobalPriorBaseline.fit(split.train)
    probabilities = model.predict_proba(split.test[:5])
    assert np.allclose(probabilities, probabilities[0]) and np.isclose(probabilities[0].sum(), 1.0)
    labels = [e.contact.intent for e in split.train]
    top = model.intents[int(np.argmax(probabilities[0]))]
    assert top == max(set(labels), key=labels.count)
    assert np.all(probabilities > 0)


def test_last_type_and_gbt_beat_the_prior(split: TimeSplit, gbt: GradientBoostedBaseline) -> None:
    prior = _top1(GlobalPriorBaseline.fit(split.train), split.test)
    last = _top1(LastEventTypeBaseline.fit(split.train), split.test)
    boosted = _top1(gbt, split.test)
    assert last > prior + 0.1
    assert boosted > last + 0.05


def test_unseen_vocabulary_and_empty_history_do_not_break_prediction(
    split: TimeSplit, gbt: GradientBoostedBaseline
) -> None:
    example = split.test[0]
    contact = example.contact
    strange = Event(
        contact.customer_id,
        contact.ts - (contact.ts - example.events[-1].ts) / 2 if example.events else contact.ts,
        "app",
        "never_seen_type",
        {"amount": "not a number", "reason": "brand_new_reason", "nested": {"x": 1}, "flag": True},
    )
    odd = [
        dataclasses.replace(example, events=(*example.events, strange)),
        dataclasses.replace(example, events=(), profile=None),
        Example(Contact("nobody", contact.ts, "ivr"), (), None),
    ]
    last_type = LastEventTypeBaseline.fit(split.train)
    for model in (GlobalPriorBaseline.fit(split.train), last_type, gbt):
        probabilities = model.predict_proba(odd)
        assert probabilities.shape == (3, len(model.intents))
        assert np.all(np.isfinite(probabilities)) and np.allclose(probabilities.sum(axis=1), 1.0)
    assert np.allclose(last_type.predict_proba(odd[:1])[0], last_type.prior)  # unseen type: the prior
    assert gbt.predict_proba([]).shape == (0, len(gbt.intents))


def test_explicit_intents_fix_the_columns(split: TimeSplit) -> None:
    intents = ("zzz_unseen", *sorted({str(e.contact.intent) for e in split.train}))
    model = LastEventTypeBaseline.fit(split.train, intents)
    assert model.intents == intents
    assert model.predict_proba(split.test[:3]).shape == (3, len(intents))

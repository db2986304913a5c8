"""The simulator: deterministic per seed, exact posteriors the intents are drawn from, realistic volumes."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from bankbot.cli import main as bankbot_main
from bankcore.events import parse_contact, parse_event, parse_profile, read_jsonl
from foresight.dataset import build_examples
from foresight.simulate import (
    CORE_EVENT_TYPES,
    INTENTS,
    PosteriorPredictor,
    SimulatedData,
    expected_top1,
    read_posteriors,
    simulate,
)


@pytest.fixture(scope="module")
def data() -> SimulatedData:
    return simulate(2000, 60, seed=11)


def test_same_seed_same_data_other_seed_other_data() -> None:
    first, second, other = simulate(300, 20, seed=5), simulate(300, 20, seed=5), simulate(300, 20, seed=6)
    assert [e.to_json() for e in first.events] == [e.to_json() for e in second.events]
    assert [c.to_json() for c in first.contacts] == [c.to_json() for c in second.contacts]
    assert [p.to_json() for p in first.posteriors] == [p.to_json() for p in second.posteriors]
    assert [e.to_json() for e in first.events] != [e.to_json() for e in other.events]


def test_volumes_are_realistic(data: SimulatedData) -> None:
    customers = len(data.profiles)
    assert 10 <= len(data.events) / customers <= 40
    assert 1 <= len(data.contacts) / customers <= 3
    assert {e.channel for e in data.events} == {"app", "wecom", "miniprogram", "ivr", "branch", "core"}
    assert {c.intent for c in data.contacts} == set(INTENTS)


def test_core_banking_events_have_the_live_systems_names_and_attributes(data: SimulatedData) -> None:
    keys: dict[str, set[str]] = defaultdict(set)
    for event in data.events:
        keys[event.type] |= set(event.attrs)
    assert keys["transfer_failed"] == {"amount", "reason"}
    assert keys["card_expiring"] == {"days_left", "card_kind"}
    assert keys["credit_card_due"] == {"amount", "minimum", "days_left"}
    assert keys["loan_instalment_due"] == {"amount", "days_left"}
    assert keys["deposit_maturing"] == {"amount", "days_left"}
    assert {e.attrs["reason"] for e in data.events if e.type == "transfer_failed"} >= {
        "insufficient_funds",
        "payee_bank_down",
    }


def test_posteriors_are_distributions_one_per_contact(data: SimulatedData) -> None:
    assert len(data.posteriors) == len(data.contacts)
    assert len({(c.customer_id, c.ts) for c in data.contacts}) == len(data.contacts)
    for contact, posterior in zip(data.contacts, data.posteriors, strict=True):
        assert (posterior.customer_id, posterior.ts) == (contact.customer_id, contact.ts)
        assert tuple(posterior.probabilities) == INTENTS
        assert all(p >= 0 for p in posterior.probabilities.values())
        assert math.isclose(sum(posterior.probabilities.values()), 1.0, abs_tol=1e-4)


def test_intents_are_drawn_from_the_posteriors(data: SimulatedData) -> None:
    probabilities = np.asarray([[p.probabilities[i] for i in INTENTS] for p in data.posteriors])
    labels = np.asarray([INTENTS.index(str(c.intent)) for c in data.contacts])
    n = len(labels)
    # The argmax is right as often as the posteriors say it should be (within 4 standard errors).
    expected = probabilities.max(axis=1)
    hits = probabilities.argmax(axis=1) == labels
    assert abs(hits.mean() - expected.mean()) < 4 * math.sqrt(np.sum(expected * (1 - expected))) / n
    # Label counts per intent match the summed posteriors (a chi-square-like check per intent).
    counts = np.bincount(labels, minlength=len(INTENTS))
    mean = probabilities.sum(axis=0)
    sd = np.sqrt(np.sum(probabilities * (1 - probabilities), axis=0))
    assert np.all(np.abs(counts - mean) < 5 * sd + 1)
    # And a shuffled assignment of labels is clearly less likely than the true one.
    clipped = np.clip(probabilities, 1e-9, 1.0)
    likelihood = np.log(clipped[np.arange(n), labels]).mean()
    shuffled = np.log(clipped[np.arange(n), np.random.default_rng(0).permutation(labels)]).mean()
    assert likelihood > shuffled + 0.3


def test_bayes_optimal_accuracy_is_informative_but_noisy(data: SimulatedData) -> None:
    assert 0.55 <= expected_top1(data.posteriors) <= 0.75


def test_events_exist_both_before_and_after_contacts(data: SimulatedData) -> None:
    by_customer: dict[str, list] = defaultdict(list)
    for event in data.events:
        by_customer[event.customer_id].append(event.ts)
    straddled = sum(
        1
        for c in data.contacts
        if any(ts < c.ts for ts in by_customer[c.customer_id]) and any(ts > c.ts for ts in by_customer[c.customer_id])
    )
    assert straddled > len(data.contacts) / 2


def test_posterior_predictor_answers_for_every_example(data: SimulatedData) -> None:
    examples = build_examples(data.contacts[:500], data.events, data.profiles)
    predictor = PosteriorPredictor(data.posteriors)
    assert predictor.name == "bayes_optimal"
    probabilities = predictor.predict_proba(examples)
    assert probabilities.shape == (500, len(INTENTS))
    assert np.allclose(probabilities.sum(axis=1), 1.0)


def test_vocab_shift_renames_the_non_core_types_and_keys_only() -> None:
    plain, shifted = simulate(300, 30, seed=3), simulate(300, 30, seed=3, vocab_seed=9)
    plain_types = {e.type for e in plain.events}
    shifted_types = {e.type for e in shifted.events}
    assert set(CORE_EVENT_TYPES) <= shifted_types
    assert shifted_types - set(CORE_EVENT_TYPES) and not (shifted_types - set(CORE_EVENT_TYPES)) & plain_types
    assert len(shifted_types) == len(plain_types)
    for before, after in zip(plain.events, shifted.events, strict=True):
        assert before.ts == after.ts and before.customer_id == after.customer_id
        assert after.type == shifted.type_names[before.type]
        if before.type in CORE_EVENT_TYPES:
            assert after.attrs == before.attrs
        else:
            assert list(after.attrs.values()) == list(before.attrs.values())
            assert not set(after.attrs) & set(before.attrs)
    # Only the names change: the contacts and their posteriors are the same.
    assert [c.to_json() for c in plain.contacts] == [c.to_json() for c in shifted.contacts]
    assert Counter(e.type for e in simulate(300, 30, seed=3, vocab_seed=10).events) != Counter(
        e.type for e in shifted.events
    )


def test_cli_writes_the_public_files(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    assert (
        bankbot_main(["foresight", "simulate", "--customers", "200", "--days", "20", "--seed", "4", "--out", str(out)])
        == 0
    )
    expected = simulate(200, 20, seed=4)
    assert [p.to_json() for p in read_jsonl(out / "profiles.jsonl", parse_profile)] == [
        p.to_json() for p in expected.profiles
    ]
    assert [e.to_json() for e in read_jsonl(out / "events.jsonl", parse_event)] == [
        e.to_json() for e in expected.events
    ]
    assert [c.to_json() for c in read_jsonl(out / "contacts.jsonl", parse_contact)] == [
        c.to_json() for c in expected.contacts
    ]
    assert [p.to_json() for p in read_posteriors(out / "posteriors.jsonl")] == [
        p.to_json() for p in expected.posteriors
    ]

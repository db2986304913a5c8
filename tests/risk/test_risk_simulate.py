"""The simulated bank: deterministic, a realistic mix, legitimate look-alikes for every scam signal."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from bankcore.risk.config import DEFAULT_RULES_PATH, RulesConfig, load_rules
from bankcore.risk.dataset import LabelledTransfer, labelled_transfers, read_labelled_set
from bankcore.risk.features import compute_for, phrase_hits
from bankcore.risk.simulate import DEFAULT_START, SCAM_PATTERNS, simulate, simulate_customers


@pytest.fixture(scope="module")
def config() -> RulesConfig:
    return load_rules(DEFAULT_RULES_PATH)


@pytest.fixture(scope="module")
def population() -> list[LabelledTransfer]:
    transfers, events = [], []
    for customer_transfers, customer_events in simulate_customers(customers=700, seed=11):
        transfers.extend(customer_transfers)
        events.extend(customer_events)
    return labelled_transfers(transfers, events)


def test_the_same_seed_writes_the_same_files_and_another_seed_does_not(tmp_path: Path) -> None:
    first = simulate(tmp_path / "a", customers=40, seed=3, days=40, warmup_days=20)
    second = simulate(tmp_path / "b", customers=40, seed=3, days=40, warmup_days=20)
    other = simulate(tmp_path / "c", customers=40, seed=4, days=40, warmup_days=20)
    assert first == second
    for name in ("transfers.jsonl", "events.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    assert other["transfers"] != first["transfers"] or other["events"] != first["events"]


def test_a_customer_does_not_depend_on_how_many_are_simulated() -> None:
    few = list(simulate_customers(customers=5, seed=8, days=30, warmup_days=10))
    many = list(simulate_customers(customers=12, seed=8, days=30, warmup_days=10))
    assert many[:5] == few


def test_the_written_set_reads_back_with_warm_up_unlabelled(tmp_path: Path) -> None:
    counts = simulate(tmp_path / "set", customers=30, seed=5, days=30, warmup_days=10)
    examples = read_labelled_set(tmp_path / "set")
    assert len(examples) == counts["transfers"]
    cut = DEFAULT_START + dt.timedelta(days=10)
    assert all((e.label is None) == (e.risk.ts < cut) for e in examples)
    assert sum(e.label is not None for e in examples) == counts["labelled"]


def test_scams_are_a_few_percent_and_every_pattern_occurs(population: list[LabelledTransfer]) -> None:
    labelled = [e for e in population if e.label is not None]
    patterns = Counter(e.pattern for e in labelled if e.label == "scam")
    share = sum(patterns.values()) / len(labelled)
    assert 0.01 <= share <= 0.03
    assert set(patterns) == set(SCAM_PATTERNS)
    assert all(e.pattern is None for e in labelled if e.label == "legit")


def test_every_scam_signal_also_occurs_among_legitimate_transfers(
    population: list[LabelledTransfer], config: RulesConfig
) -> None:
    legit = [compute_for(e.risk, config) for e in population if e.label == "legit"]
    scam = [compute_for(e.risk, config) for e in population if e.label == "scam"]
    signals = {
        "large to a new payee": lambda f: f["payee_new"] and f["amount_vs_usual"] >= 8 and f["amount"] >= 5000,
        "tagged call within 24h": lambda f: f["ev_flagged_call_24h"] >= 1,
        "tagged call, then a new payee": lambda f: f["ev_flagged_call_24h"] >= 1 and f["payee_new"],
        "password reset within 24h": lambda f: f["ev_password_reset_24h"] >= 1,
        "new device within 24h": lambda f: f["ev_new_device_24h"] >= 1,
        "unknown device": lambda f: f["device_unknown"] >= 1,
        "reset, unknown device, new payee": lambda f: (
            f["ev_password_reset_24h"] >= 1 and f["device_unknown"] and f["payee_new"]
        ),
        "several new payees in a day": lambda f: f["new_payees_24h"] >= 3,
        "two transfers within the hour": lambda f: f["transfers_1h"] >= 2,
        "night": lambda f: f["night"] >= 1,
        "voice": lambda f: f["input_voice"] >= 1,
        "a fraud phrase": lambda f: f["fraud_phrase_hits"] >= 1,
        "failed verifications": lambda f: f["failed_verifications_24h"] >= 1,
        "flagged login": lambda f: f["ev_suspicious_login_24h"] >= 1,
    }
    for name, seen in signals.items():
        assert any(seen(f) for f in scam), f"no scam shows {name}"
        assert any(seen(f) for f in legit), f"only scams show {name}"
    # The session's device is there for both, not a tell of one.
    device = [e.risk.device_id is not None for e in population if e.label is not None]
    assert 0.3 < sum(device) / len(device) < 0.95


def test_legitimate_customers_use_scam_words_in_innocent_sentences(
    population: list[LabelledTransfer], config: RulesConfig
) -> None:
    legit_said = [e.risk.utterances for e in population if e.label == "legit" and e.risk.utterances]
    assert any("冻结" in text or "挂失" in text for said in legit_said for text in said)
    coached = [e for e in population if e.pattern == "coached"]
    with_phrases = sum(bool(phrase_hits(e.risk.utterances, config.fraud_phrases)) for e in coached)
    # Coaching phrases are typed in a minority of coached sessions only.
    assert 0 < with_phrases < 0.5 * len(coached)


def test_the_alt_vocabulary_uses_no_event_type_the_rules_know(config: RulesConfig) -> None:
    known = config.signal_of_event_type
    default_types: Counter[str] = Counter()
    alt_types: Counter[str] = Counter()
    for (_, default_events), (_, alt_events) in zip(
        simulate_customers(customers=300, seed=2),
        simulate_customers(customers=300, seed=2, vocabulary="alt"),
        strict=True,
    ):
        default_types.update(e.type for e in default_events)
        alt_types.update(e.type for e in alt_events)
        assert len(default_events) == len(alt_events)
    assert not set(alt_types) & set(known)
    assert not set(alt_types) & set(default_types)
    # The default vocabulary exercises every signal the rules map, in more than one spelling.
    signals = Counter(known[t] for t in default_types if t in known)
    assert set(signals) == set(config.event_signals)
    assert all(count >= 2 for count in signals.values())


def test_simulate_refuses_a_bad_vocabulary_or_period(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocabulary"):
        simulate(tmp_path, customers=1, vocabulary="klingon")
    with pytest.raises(ValueError, match="warmup_days"):
        simulate(tmp_path, customers=1, days=10, warmup_days=10)

"""The foresight Transformer: learns a planted signal, never sees the future, is deterministic, saves and loads."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from bankbot.cli import main as bankbot_main
from bankcore.events import Contact, Event, write_jsonl
from foresight.dataset import Example, build_examples, time_split
from foresight.explain import explain
from foresight.transformer import TrainConfig, TransformerPredictor, train_transformer
from tests.foresight.planted import INTENTS, planted_model, planted_world


def _top1(predictor: TransformerPredictor, examples: list[Example]) -> float:
    probabilities = predictor.predict_proba(examples)
    predicted = [predictor.intents[i] for i in probabilities.argmax(axis=1)]
    return float(np.mean([p == e.contact.intent for p, e in zip(predicted, examples, strict=True)]))


def test_learns_the_planted_signal_well_above_chance() -> None:
    predictor, split = planted_model()
    probabilities = predictor.predict_proba(split.test)
    assert probabilities.shape == (len(split.test), len(predictor.intents))
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert set(predictor.intents) == set(INTENTS)
    majority = max(float(np.mean([e.contact.intent == intent for e in split.test])) for intent in INTENTS)
    assert _top1(predictor, split.test) > max(0.75, majority + 0.3)
    # The time before the contact matters: a failed transfer 30 minutes ago means an inquiry, ten days ago not.
    at = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    recent = Event("Q", at - dt.timedelta(minutes=30), "core", "transfer_failed", {"amount": 800})
    old = Event("Q", at - dt.timedelta(days=10), "core", "transfer_failed", {"amount": 800})
    p_recent, p_old = predictor.predict_proba(
        [Example(Contact("Q", at, "app"), (recent,), None), Example(Contact("Q", at, "app"), (old,), None)]
    )
    column = predictor.intents.index("failed_transfer_inquiry")
    assert p_recent[column] > 0.6 > p_old[column]


def test_events_at_or_after_the_contact_never_change_the_prediction() -> None:
    """The leakage test: examples are built from raw event lists with events at exactly the contact time and
    later added; the probabilities must be identical. The second half shows the test has teeth: the same
    events, forced into the example, do move the prediction."""
    predictor, _ = planted_model()
    events, profiles, contacts = planted_world(40, 2, seed=11)
    last = {c.customer_id: c for c in contacts}  # one contact per customer: a leak must not precede another
    contacts = list(last.values())[:30]
    leaks = []
    for contact in contacts:
        for delay, kind in ((dt.timedelta(0), "transfer_failed"), (dt.timedelta(minutes=1), "card_declined")):
            leaks.append(Event(contact.customer_id, contact.ts + delay, "core", kind, {"amount": 4000}))
    clean = build_examples(contacts, events, profiles)
    leaked = build_examples(contacts, events + leaks, profiles)
    for a, b in zip(clean, leaked, strict=True):
        assert a.events == b.events
        assert all(e.ts < a.contact.ts for e in b.events)
    assert np.array_equal(predictor.predict_proba(clean), predictor.predict_proba(leaked))

    forced = [
        dataclasses.replace(e, events=e.events + tuple(x for x in leaks if x.customer_id == e.contact.customer_id))
        for e in clean
    ]
    moved = np.abs(predictor.predict_proba(forced) - predictor.predict_proba(clean)).max()
    assert moved > 0.05


def test_same_seed_same_probabilities() -> None:
    events, profiles, contacts = planted_world(80, 2, seed=3)
    split = time_split(build_examples(contacts, events, profiles), valid_fraction=0.2, test_fraction=0.2)
    config = TrainConfig(seed=7, max_epochs=2, batch_size=32, threads=1)
    first = train_transformer(split.train, split.valid, config, progress=False)
    second = train_transformer(split.train, split.valid, config, progress=False)
    assert np.array_equal(first.predict_proba(split.test), second.predict_proba(split.test))
    other = train_transformer(split.train, split.valid, dataclasses.replace(config, seed=8), progress=False)
    assert not np.array_equal(first.predict_proba(split.test), other.predict_proba(split.test))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    predictor, split = planted_model()
    predictor.save(tmp_path / "model")
    names = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"config.json", "model.safetensors", "features.json", "meta.json"} <= names
    meta = json.loads((tmp_path / "model" / "meta.json").read_text())
    assert meta["intents"] == list(predictor.intents) and meta["seed"] == 0 and "metrics" in meta
    started = time.perf_counter()
    loaded = TransformerPredictor.load(tmp_path / "model")
    assert time.perf_counter() - started < 2.0
    assert loaded.intents == predictor.intents
    assert np.allclose(loaded.predict_proba(split.test), predictor.predict_proba(split.test), atol=1e-6)


def test_explain_ranks_the_telling_event_first() -> None:
    predictor, _ = planted_model()
    at = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    history = (
        Event("Q", at - dt.timedelta(hours=30), "app", "login", {"ok": True}),
        Event("Q", at - dt.timedelta(minutes=40), "core", "transfer_failed", {"amount": 900}),
        Event("Q", at - dt.timedelta(minutes=20), "app", "login", {"ok": True}),
    )
    explanation = explain(predictor, Example(Contact("Q", at, "app"), history, None))
    assert explanation.top[0].intent == "failed_transfer_inquiry"
    assert len(explanation.contributions) == 3
    assert explanation.contributions[0].event.type == "transfer_failed"
    values = [c.contribution for c in explanation.contributions]
    assert values == sorted(values, reverse=True)


def test_train_and_predict_cli_end_to_end(tmp_path: Path) -> None:
    events, profiles, contacts = planted_world(60, 2, seed=4)
    write_jsonl(tmp_path / "events.jsonl", events)
    write_jsonl(tmp_path / "profiles.jsonl", profiles)
    write_jsonl(tmp_path / "contacts.jsonl", contacts)
    model = tmp_path / "model"
    files = ["--profiles", str(tmp_path / "profiles.jsonl"), "--events", str(tmp_path / "events.jsonl")]
    options = ["--out", str(model), "--max-epochs", "2", "--threads", "1", "--quiet"]
    code = bankbot_main(["foresight", "train", *files, "--contacts", str(tmp_path / "contacts.jsonl"), *options])
    assert code == 0 and (model / "meta.json").exists()
    unlabelled = [Contact(c.customer_id, c.ts, c.channel) for c in contacts[:25]]
    unlabelled.append(Contact("NEVER-SEEN", contacts[0].ts, "ivr"))  # no history at all: still one line
    write_jsonl(tmp_path / "new.jsonl", unlabelled)
    out = tmp_path / "pred.jsonl"
    new = ["--contacts", str(tmp_path / "new.jsonl"), "--out", str(out)]
    code = bankbot_main(["foresight", "predict", "--model", str(model), *files, *new])
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(unlabelled)
    assert [line["customer_id"] for line in lines] == [c.customer_id for c in unlabelled]
    for line in lines:
        assert set(line) == {"customer_id", "ts", "top"}
        ps = [item["p"] for item in line["top"]]
        assert len(ps) == 3 and ps == sorted(ps, reverse=True)
        assert all(item["intent"] in INTENTS for item in line["top"])

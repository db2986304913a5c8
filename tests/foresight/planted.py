"""A tiny synthetic world with planted signals, for the foresight model tests (no simulator needed)."""

from __future__ import annotations

import datetime as dt
import random

from bankcore.events import Contact, Event, Profile
from foresight.dataset import TimeSplit
from foresight.transformer import TransformerPredictor

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
INTENTS = ("failed_transfer_inquiry", "card_declined_help", "bill_question", "balance_inquiry")


def planted_world(
    customers: int = 300, contacts_per_customer: int = 3, seed: int = 0
) -> tuple[list[Event], list[Profile], list[Contact]]:
    """Events, profiles and labelled contacts where the reason follows the most recent telling event.

    - transfer_failed within 2 hours of the contact -> failed_transfer_inquiry
    - card_declined within a day (no failed transfer) -> card_declined_help
    - bill_issued with a large amount within 3 days -> bill_question
    - otherwise balance_inquiry (noise: 10% of labels are random)
    Old telling events (a transfer_failed ten days before) must not count: time matters, not only type.
    """
    rng = random.Random(seed)
    events: list[Event] = []
    profiles: list[Profile] = []
    contacts: list[Contact] = []
    for c in range(customers):
        customer_id = f"P{c:05d}"
        profiles.append(Profile(customer_id, {"segment": rng.choice(["mass", "affluent"]), "age": rng.randint(20, 70)}))
        at = START + dt.timedelta(hours=rng.uniform(0, 48))
        for _ in range(contacts_per_customer):
            at += dt.timedelta(days=rng.uniform(2, 12))
            for _ in range(rng.randint(1, 5)):  # background noise
                ts = at - dt.timedelta(hours=rng.uniform(0.1, 200))
                events.append(Event(customer_id, ts, rng.choice(["app", "wecom"]), "login", {"ok": rng.random() < 0.9}))
            if rng.random() < 0.5:  # an old failed transfer: a decoy
                ts = at - dt.timedelta(days=rng.uniform(5, 15))
                events.append(Event(customer_id, ts, "core", "transfer_failed", {"amount": rng.randint(100, 5000)}))
            roll = rng.random()
            if roll < 0.3:
                ts = at - dt.timedelta(minutes=rng.uniform(5, 110))
                events.append(Event(customer_id, ts, "core", "transfer_failed", {"amount": rng.randint(100, 5000)}))
                intent = INTENTS[0]
            elif roll < 0.55:
                ts = at - dt.timedelta(hours=rng.uniform(0.2, 20))
                events.append(
                    Event(customer_id, ts, "core", "card_declined", {"merchant": rng.choice(["shop", "web"])})
                )
                intent = INTENTS[1]
            elif roll < 0.8:
                big = rng.random() < 0.6
                ts = at - dt.timedelta(hours=rng.uniform(1, 70))
                amount = rng.randint(3000, 9000) if big else rng.randint(10, 500)
                events.append(Event(customer_id, ts, "core", "bill_issued", {"amount": amount}))
                intent = INTENTS[2] if big else INTENTS[3]
            else:
                intent = INTENTS[3]
            if rng.random() < 0.1:
                intent = rng.choice(INTENTS)
            contacts.append(Contact(customer_id, at, rng.choice(["app", "ivr", "wecom"]), intent))
    events.sort(key=lambda e: (e.customer_id, e.ts))
    return events, profiles, contacts


_MODELS: dict[int, tuple[TransformerPredictor, TimeSplit]] = {}


def planted_model(seed: int = 0) -> tuple[TransformerPredictor, TimeSplit]:
    """One small model trained on the planted world, shared by the test modules of one pytest run."""
    from foresight.dataset import build_examples, time_split
    from foresight.transformer import TrainConfig, train_transformer

    if seed not in _MODELS:
        events, profiles, contacts = planted_world(300, 3, seed=seed)
        split = time_split(build_examples(contacts, events, profiles), valid_fraction=0.15, test_fraction=0.2)
        config = TrainConfig(seed=seed, batch_size=64, lr=3e-3, max_epochs=25, patience=3, threads=1)
        _MODELS[seed] = (train_transformer(split.train, split.valid, config, progress=False), split)
    return _MODELS[seed]

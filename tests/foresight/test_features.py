"""Featurisation: vocabularies fitted on training data, UNK for anything new, JSON round trip."""

from __future__ import annotations

import datetime as dt

import numpy as np

from bankcore.events import Contact, Event, Profile
from foresight.dataset import Example, build_examples
from foresight.features import PAD, UNK, FeatureSpace, time_bucket
from tests.foresight.planted import planted_world

AT = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)


def _space() -> FeatureSpace:
    events, profiles, contacts = planted_world(60, 2)
    return FeatureSpace.fit(build_examples(contacts, events, profiles), min_count=3)


def test_unseen_types_keys_and_values_map_to_unk_without_crashing() -> None:
    space = _space()
    strange = Event(
        "X1",
        AT - dt.timedelta(hours=1),
        "branch",
        "never_seen_type",
        {"never_seen_key": 3, "amount": "not a number", "nested": {"a": [1, 2]}, "merchant": "moon", "n": None},
    )
    type_id, channel_id, keys, values, numbers = space.encode_event(strange)
    assert type_id == UNK
    assert channel_id == UNK  # no 'branch' event in the planted training data
    assert space.attr_keys.id("never_seen_key") == UNK
    assert space.max_attrs == 1  # the widest planted event has one attribute
    assert keys == [space.attr_keys.id("amount")]  # known keys take the slots first
    assert all(0 <= v < len(space.attr_values) for v in values)
    assert all(np.isfinite(numbers))
    only_unknown = Event("X1", AT, "app", "login", {"never_seen_key": "x"})
    assert space.encode_event(only_unknown)[2:4] == ([UNK], [UNK])
    example = Example(Contact("X1", AT, "miniprogram"), (strange,), Profile("X1", {"segment": "royal", "age": "old"}))
    encoded = space.encode([example, Example(Contact("X2", AT, "app"), (), None)])
    assert encoded.lengths.tolist() == [1, 0]
    assert encoded.contact_channel[0] == UNK
    assert np.isfinite(encoded.profile_numeric).all()


def test_known_values_get_their_own_ids_and_numbers_their_bins() -> None:
    space = _space()
    small = Event("X", AT, "core", "bill_issued", {"amount": 20})
    big = Event("X", AT, "core", "bill_issued", {"amount": 8000})
    _, _, keys_small, values_small, numbers_small = space.encode_event(small)
    _, _, keys_big, values_big, numbers_big = space.encode_event(big)
    assert keys_small == keys_big and keys_small[0] not in (PAD, UNK)
    assert values_small[0] != values_big[0]
    assert numbers_small[0] < numbers_big[0]
    shop = space.encode_event(Event("X", AT, "core", "card_declined", {"merchant": "shop"}))[3][0]
    web = space.encode_event(Event("X", AT, "core", "card_declined", {"merchant": "web"}))[3][0]
    assert shop != web and UNK not in (shop, web)


def test_time_buckets_are_log_spaced_and_monotone() -> None:
    seconds = np.array([0, 30, 300, 3600, 86400, 7 * 86400, 90 * 86400, 10**9], dtype=np.float64)
    buckets = time_bucket(seconds)
    assert buckets[0] == 0
    assert (np.diff(buckets) > 0).all()
    assert buckets.max() < 40


def test_json_round_trip_encodes_identically() -> None:
    space = _space()
    events, profiles, contacts = planted_world(10, 2, seed=5)
    examples = build_examples(contacts, events, profiles)
    restored = FeatureSpace.from_json(space.to_json())
    first, second = space.encode(examples), restored.encode(examples)
    for name in ("event_type", "event_attr_key", "event_attr_value", "rows", "profile_categorical", "contact_calendar"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert np.allclose(first.event_attr_number, second.event_attr_number)
    assert np.allclose(first.profile_numeric, second.profile_numeric)


def test_encoding_keeps_the_newest_events_first_and_respects_max_events() -> None:
    space = _space()
    history = tuple(
        Event("X", AT - dt.timedelta(hours=h), "core", "transfer_failed", {"amount": 100 * h}) for h in (5, 3, 1)
    )
    encoded = space.encode([Example(Contact("X", AT, "app"), history, None)], max_events=2)
    rows = encoded.rows[encoded.ptr[0] : encoded.ptr[1]]
    assert len(rows) == 2
    assert encoded.event_ts[rows[0]] > encoded.event_ts[rows[1]]  # newest first
    assert encoded.event_ts[rows[0]] == history[-1].ts.timestamp()

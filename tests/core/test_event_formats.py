"""The public event, profile and contact formats: parsers fail only with RecordError, naming the field."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bankcore.events import (
    CHANNELS,
    MAX_ATTRS_BYTES,
    Event,
    RecordError,
    format_ts,
    parse_contact,
    parse_event,
    parse_profile,
    public_channel,
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
timestamps = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.text(max_size=30),
    st.sampled_from(["", "Z", "2026-13-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]),
    json_values,
)
# Records shaped like events, contacts and profiles whose every field may be wrong.
recordish = st.fixed_dictionaries(
    {},
    optional={
        "customer_id": st.one_of(st.text(max_size=70), json_values),
        "ts": timestamps,
        "channel": st.one_of(st.sampled_from(CHANNELS), st.text(max_size=10), json_values),
        "type": st.one_of(st.text(max_size=70), json_values),
        "intent": st.one_of(st.text(max_size=70), json_values),
        "event_id": st.one_of(st.text(max_size=70), json_values),
        "attrs": json_values,
    },
)
anything = st.one_of(json_values, recordish)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(anything)
def test_parsers_raise_nothing_but_record_errors(record: Any) -> None:
    for parse in (parse_event, parse_profile, parse_contact):
        try:
            parse(record)
        except RecordError as error:
            assert error.field in {"record", "customer_id", "ts", "channel", "type", "intent", "event_id", "attrs"}


@settings(max_examples=200)
@given(
    customer_id=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x9FFF), min_size=1, max_size=64),
    ts=st.datetimes(min_value=dt.datetime(2000, 1, 2), max_value=dt.datetime(2099, 12, 30), timezones=st.just(dt.UTC)),
    channel=st.sampled_from(CHANNELS),
    attrs=st.dictionaries(st.text(min_size=1, max_size=8), st.integers() | st.text(max_size=10), max_size=5),
)
def test_a_well_formed_event_survives_a_json_round_trip(
    customer_id: str, ts: dt.datetime, channel: str, attrs: dict[str, Any]
) -> None:
    original = Event(customer_id=customer_id.strip() or "x", ts=ts, channel=channel, type="t", attrs=attrs)
    if original.customer_id != customer_id:
        return
    assert parse_event(json.loads(json.dumps(original.to_json()))) == original


def good_event(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "customer_id": "C001",
        "ts": "2026-11-20T02:00:00Z",
        "channel": "app",
        "type": "login",
        "attrs": {"device": "ios"},
    }
    record.update(changes)
    return {key: value for key, value in record.items() if value is not ...}


def field_of_error(record: Any) -> str:
    with pytest.raises(RecordError) as caught:
        parse_event(record)
    return caught.value.field


@pytest.mark.parametrize(
    "ts",
    [
        "yesterday",
        "2026-02-30T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "",
        1_700_000_000,
        None,
        ...,
    ],
)
def test_bad_timestamps_name_the_ts_field(ts: Any) -> None:
    assert field_of_error(good_event(ts=ts)) == "ts"


def test_a_naive_timestamp_is_utc_and_an_offset_is_converted() -> None:
    assert parse_event(good_event(ts="2026-11-20T10:00:00")).ts == dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)
    assert parse_event(good_event(ts="2026-11-20T10:00:00+08:00")).ts == dt.datetime(2026, 11, 20, 2, tzinfo=dt.UTC)
    assert format_ts(dt.datetime(2026, 11, 20, 2, tzinfo=dt.UTC)) == "2026-11-20T02:00:00Z"


@pytest.mark.parametrize(
    "channel", ["webchat", "APP", "", None, 3, ["app"], pytest.param(10**5000, id="int-beyond-str-limit")]
)
def test_an_unknown_channel_names_the_channel_field(channel: Any) -> None:
    assert field_of_error(good_event(channel=channel)) == "channel"


def test_oversize_attrs_name_the_attrs_field() -> None:
    assert field_of_error(good_event(attrs={"blob": "x" * MAX_ATTRS_BYTES})) == "attrs"
    # Counted in UTF-8 bytes: 1,400 Chinese characters are 4,200 bytes.
    assert field_of_error(good_event(attrs={"备注": "中" * 1400})) == "attrs"
    parse_event(good_event(attrs={"blob": "x" * (MAX_ATTRS_BYTES - 20)}))


def test_deep_attrs_name_the_attrs_field_even_when_absurdly_deep() -> None:
    parse_event(good_event(attrs={"a": {"b": {"c": 1}}}))
    assert field_of_error(good_event(attrs={"a": {"b": {"c": {"d": 1}}}})) == "attrs"
    assert field_of_error(good_event(attrs={"a": [[[1]]]})) == "attrs"
    abyss: dict[str, Any] = {}
    cursor = abyss
    for _ in range(100_000):
        cursor["k"] = {}
        cursor = cursor["k"]
    assert field_of_error(good_event(attrs=abyss)) == "attrs"


@pytest.mark.parametrize(
    "attrs", [["a"], "text", {"": 1}, {"x": float("nan")}, {"x": float("inf")}, {"x": {1, 2}}, {"x": "\ud800"}]
)
def test_attrs_that_are_not_a_json_object_name_the_attrs_field(attrs: Any) -> None:
    assert field_of_error(good_event(attrs=attrs)) == "attrs"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": "x" * 65}, "customer_id"),
        ({"customer_id": "C\n001"}, "customer_id"),
        ({"customer_id": "C\ud800"}, "customer_id"),
        ({"customer_id": 1}, "customer_id"),
        ({"type": ...}, "type"),
        ({"type": "t" * 65}, "type"),
        ({"event_id": ""}, "event_id"),
        ({"event_id": 7}, "event_id"),
    ],
)
def test_bad_identifiers_name_their_field(changes: dict[str, Any], field: str) -> None:
    assert field_of_error(good_event(**changes)) == field


def test_a_record_that_is_not_an_object_names_the_record() -> None:
    records: list[Any] = [[], "event", None, 3]
    for record in records:
        assert field_of_error(record) == "record"


def test_contacts_may_be_unlabelled_unless_a_label_is_required() -> None:
    record = {"customer_id": "C001", "ts": "2026-11-20T02:00:00Z", "channel": "ivr"}
    assert parse_contact(record).intent is None
    with pytest.raises(RecordError) as caught:
        parse_contact(record, require_intent=True)
    assert caught.value.field == "intent"
    assert parse_contact({**record, "intent": "check_balance"}).intent == "check_balance"


def test_gateway_channels_map_to_the_public_vocabulary() -> None:
    assert public_channel("webchat") == "app"
    assert public_channel("wecom") == "wecom"
    assert public_channel("phone") == "ivr"
    assert public_channel("something-new") == "app"

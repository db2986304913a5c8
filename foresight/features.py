"""Featurisation for the foresight Transformer: vocabularies and value bins fitted on training data, saved as JSON.

Each event becomes a token: event type + channel + time-before-contact bucket + up to `max_attrs` attributes, each
an attribute key id and a value id (numeric values: quantile bins learned per (type, key); categorical values:
a vocabulary per key; booleans: true/false). The profile becomes a fixed row of categorical ids and standardised
numbers; the contact adds its channel and calendar position. Anything not seen in training maps to UNK, so
prediction never fails on new event types, keys or values.

Only `Example.events` are read: the dataset (foresight.dataset) guarantees they are strictly before the contact,
and the featuriser adds nothing from elsewhere, so the model cannot see the future.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bankcore.events import Event, Profile
from foresight.dataset import Example

PAD = 0
UNK = 1
FORMAT_VERSION = 1
# Time before the contact in half-octaves of minutes: 0 is under a minute, 34 is about 90 days.
TIME_BUCKETS = 40
MISSING = "<missing>"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Vocabulary:
    """Tokens to ids; 0 is padding, 1 is UNK (anything unseen or too rare)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.tokens: list[str] = ["<pad>", "<unk>", *tokens]
        self.index: dict[str, int] = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def fit(cls, counts: Mapping[str, int], min_count: int) -> Vocabulary:
        # Most frequent first, ties by name: the same data always gives the same ids.
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls(kept)

    def id(self, token: str) -> int:
        return self.index.get(token, UNK)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.index


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _kind_of(counts: Counter[str]) -> str:
    """numeric, bool or categorical: what most of a key's observed values are."""
    total = sum(counts.values())
    if counts["numeric"] * 2 >= total:
        return "numeric"
    if counts["bool"] * 2 > total:
        return "bool"
    return "categorical"


def _category(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)[:64]
    return "<complex>"  # lists and nested objects: only their presence is a signal


def _as_number(value: Any) -> float | None:
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _quantile_edges(values: list[float], bins: int) -> list[float]:
    array = np.asarray(values, dtype=np.float64)
    edges = np.quantile(array, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return [float(x) for x in np.unique(edges)]


def time_bucket(seconds_before: np.ndarray) -> np.ndarray:
    """Log-spaced bucket of the time between an event and the contact (half-octaves of minutes)."""
    return np.minimum(np.floor(2.0 * time_scale(seconds_before)), TIME_BUCKETS - 1).astype(np.int64)


def time_scale(seconds_before: np.ndarray) -> np.ndarray:
    """log2(1 + minutes before the contact): the continuous companion of the bucket (about 17 at 90 days)."""
    return np.log2(1.0 + np.maximum(seconds_before, 0.0) / 60.0)


def signed_log(value: float) -> float:
    return math.copysign(math.log1p(abs(value)), value)


def _log_stats(values: list[float]) -> tuple[float, float]:
    logs = np.sign(values) * np.log1p(np.abs(values))
    return float(logs.mean()), float(logs.std()) or 1.0


def epoch_seconds(ts: dt.datetime) -> float:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return (ts - _EPOCH).total_seconds()


@dataclass
class _Attribute:
    """An attribute key as encoded on one event type: ids, and bins and scale for numbers."""

    key: str
    key_id: int
    missing_id: int
    kind: str  # numeric | bool | categorical | unknown
    edges: list[float] | None = None
    bin_ids: list[int] | None = None
    mean: float = 0.0
    std: float = 1.0


@dataclass
class EncodedExamples:
    """Examples as arrays: a table of distinct events (row 0 is padding) and, per example, its event rows.

    Events of example i are `rows[ptr[i]:ptr[i + 1]]`, newest first, so position 1 is always the latest event.
    The time bucket is computed per batch from `contact_ts - event_ts`.
    """

    event_type: np.ndarray  # int64 [E]
    event_channel: np.ndarray  # int64 [E]
    event_ts: np.ndarray  # float64 [E], seconds since the epoch
    event_attr_key: np.ndarray  # int64 [E, K]
    event_attr_value: np.ndarray  # int64 [E, K]
    event_attr_number: np.ndarray  # float32 [E, K]: standardised signed log of numeric values, else 0
    ptr: np.ndarray  # int64 [n + 1]
    rows: np.ndarray  # int64 [sum of lengths]
    contact_ts: np.ndarray  # float64 [n]
    contact_channel: np.ndarray  # int64 [n]
    contact_calendar: np.ndarray  # int64 [n, 3]: hour, weekday, day of month - 1 (UTC)
    profile_categorical: np.ndarray  # int64 [n, P]
    profile_numeric: np.ndarray  # float32 [n, Q]
    # Ages beyond this (seconds) are read as this age: the model never extrapolates to ages training rarely saw.
    time_horizon: float = math.inf

    def __len__(self) -> int:
        return len(self.contact_ts)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.ptr)


class FeatureSpace:
    """The fitted featurisation; `fit` on training examples, `encode` anything, `to_json`/`from_json` to persist."""

    def __init__(
        self,
        *,
        event_types: Vocabulary,
        channels: Vocabulary,
        attr_keys: Vocabulary,
        attr_values: Vocabulary,
        attr_kinds: dict[str, str],
        type_key_edges: dict[str, list[float]],
        key_edges: dict[str, list[float]],
        number_stats: dict[str, tuple[float, float]],
        profile_categorical_keys: list[str],
        profile_numeric: dict[str, tuple[float, float]],
        profile_edges: dict[str, list[float]],
        profile_values: Vocabulary,
        max_attrs: int,
    ) -> None:
        self.event_types = event_types
        self.channels = channels
        self.attr_keys = attr_keys
        self.attr_values = attr_values
        self.attr_kinds = attr_kinds
        self.type_key_edges = type_key_edges  # "type\x1fkey" -> quantile edges
        self.key_edges = key_edges  # key -> edges over all types (for a type the key was rare with)
        # "type\x1fkey" and "*\x1fkey" -> (mean, std) of the signed log: bins are coarse, thresholds are not
        self.number_stats = number_stats
        self.profile_categorical_keys = profile_categorical_keys  # one id slot each (numeric keys get a bin slot)
        self.profile_numeric = profile_numeric  # key -> (mean, std)
        self.profile_edges = profile_edges
        self.profile_values = profile_values
        self.max_attrs = max_attrs
        self.time_horizon = math.inf  # set from the training ages (set_time_horizon)
        self._attributes: dict[tuple[str, str], _Attribute] = {}
        self._layouts: dict[tuple[str, tuple[str, ...]], list[_Attribute]] = {}
        self._category_ids: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ sizes the model needs
    @property
    def profile_slots(self) -> int:
        return len(self.profile_categorical_keys)

    @property
    def profile_numeric_width(self) -> int:
        return 2 * len(self.profile_numeric) + 1  # value and missing flag per key, plus "has a profile"

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        examples: Sequence[Example],
        *,
        min_count: int = 5,
        max_attrs: int = 6,
        value_bins: int = 16,
        profile_bins: int = 8,
    ) -> FeatureSpace:
        events = _distinct_events(examples)
        profiles = _distinct_profiles(examples)

        type_counts: Counter[str] = Counter()
        channel_counts: Counter[str] = Counter()
        key_counts: Counter[str] = Counter()
        kind_counts: dict[str, Counter[str]] = defaultdict(Counter)
        numbers: dict[str, list[float]] = defaultdict(list)
        numbers_by_key: dict[str, list[float]] = defaultdict(list)
        categories: Counter[str] = Counter()
        for example in examples:
            channel_counts[example.contact.channel] += 1
        for event in events:
            type_counts[event.type] += 1
            channel_counts[event.channel] += 1
            for key, value in event.attrs.items():
                key_counts[key] += 1
                kind_counts[key][
                    "numeric" if _is_number(value) else "bool" if isinstance(value, bool) else "other"
                ] += 1
                if _is_number(value):
                    numbers[f"{event.type}\x1f{key}"].append(float(value))
                    numbers_by_key[key].append(float(value))
                else:
                    categories[f"{key}={_category(value)}"] += 1

        attr_keys = Vocabulary.fit(key_counts, min_count)
        attr_kinds = {key: _kind_of(kind_counts[key]) for key in attr_keys.tokens[2:]}
        type_key_edges = {
            pair: _quantile_edges(values, value_bins)
            for pair, values in numbers.items()
            if len(values) >= min_count and attr_kinds.get(pair.split("\x1f", 1)[1]) == "numeric"
        }
        key_edges = {
            key: _quantile_edges(values, value_bins)
            for key, values in numbers_by_key.items()
            if attr_kinds.get(key) == "numeric"
        }
        number_stats = {pair: _log_stats(numbers[pair]) for pair in type_key_edges}
        number_stats.update({f"*\x1f{key}": _log_stats(numbers_by_key[key]) for key in key_edges})
        value_tokens: list[str] = []
        for key in attr_keys.tokens[2:]:
            value_tokens.append(f"{key}={MISSING}")  # a known key with an unseen or unusable value
            if attr_kinds[key] == "numeric":
                value_tokens.extend(f"*\x1f{key}#q{b}" for b in range(len(key_edges.get(key, [])) + 1))
        for pair, edges in sorted(type_key_edges.items()):
            value_tokens.extend(f"{pair}#q{b}" for b in range(len(edges) + 1))
        kept_categories = sorted(
            (t for t, c in categories.items() if c >= min_count and t.split("=", 1)[0] in attr_keys),
            key=lambda t: (-categories[t], t),
        )
        attr_values = Vocabulary(value_tokens + [t for t in kept_categories if t not in set(value_tokens)])

        # Profiles: every key gets a categorical slot (numbers as quantile bins); numbers also standardised.
        profile_kind_counts: dict[str, Counter[str]] = defaultdict(Counter)
        profile_numbers: dict[str, list[float]] = defaultdict(list)
        profile_key_counts: Counter[str] = Counter()
        for profile in profiles:
            for key, value in profile.attrs.items():
                profile_key_counts[key] += 1
                profile_kind_counts[key]["numeric" if _is_number(value) else "other"] += 1
                if _is_number(value):
                    profile_numbers[key].append(float(value))
        profile_keys = sorted(k for k, c in profile_key_counts.items() if c >= min_count)
        profile_numeric: dict[str, tuple[float, float]] = {}
        profile_edges: dict[str, list[float]] = {}
        for key in profile_keys:
            if _kind_of(profile_kind_counts[key]) == "numeric" and profile_numbers[key]:
                array = np.asarray(profile_numbers[key], dtype=np.float64)
                profile_numeric[key] = (float(array.mean()), float(array.std()) or 1.0)
                profile_edges[key] = _quantile_edges(profile_numbers[key], profile_bins)
        profile_value_counts: Counter[str] = Counter()
        for profile in profiles:
            for key in profile_keys:
                if key not in profile_numeric and key in profile.attrs:
                    profile_value_counts[f"{key}={_category(profile.attrs[key])}"] += 1
        profile_tokens = [f"{key}={MISSING}" for key in profile_keys]
        for key in profile_keys:
            if key in profile_edges:
                profile_tokens.extend(f"{key}#q{b}" for b in range(len(profile_edges[key]) + 1))
        profile_tokens.extend(
            sorted(
                (t for t, c in profile_value_counts.items() if c >= min_count),
                key=lambda t: (-profile_value_counts[t], t),
            )
        )
        return cls(
            event_types=Vocabulary.fit(type_counts, min_count),
            channels=Vocabulary.fit(channel_counts, 1),
            attr_keys=attr_keys,
            attr_values=attr_values,
            attr_kinds=attr_kinds,
            type_key_edges=type_key_edges,
            key_edges=key_edges,
            number_stats=number_stats,
            profile_categorical_keys=profile_keys,
            profile_numeric=profile_numeric,
            profile_edges=profile_edges,
            profile_values=Vocabulary(profile_tokens),
            # No wider than the widest training event: empty slots would cost compute on every token.
            max_attrs=max(1, min(max_attrs, max((len(e.attrs) for e in events), default=1))),
        )

    # ------------------------------------------------------------------ encoding
    def _attribute(self, event_type: str, key: str) -> _Attribute:
        """How to encode `key` on events of `event_type` (cached: the same few pairs recur millions of times)."""
        found = self._attributes.get((event_type, key))
        if found is not None:
            return found
        kind = self.attr_kinds.get(key)
        if kind is None:
            found = _Attribute(key, UNK, UNK, "unknown")
        else:
            attribute = _Attribute(key, self.attr_keys.id(key), self.attr_values.id(f"{key}={MISSING}"), kind)
            if kind == "numeric":
                for pair, edges in (
                    (f"{event_type}\x1f{key}", self.type_key_edges.get(f"{event_type}\x1f{key}")),
                    (f"*\x1f{key}", self.key_edges.get(key)),
                ):
                    if edges is not None:
                        attribute.edges = edges
                        attribute.bin_ids = [self.attr_values.id(f"{pair}#q{b}") for b in range(len(edges) + 1)]
                        attribute.mean, attribute.std = self.number_stats[pair]
                        break
            found = attribute
        self._attributes[(event_type, key)] = found
        return found

    def _value(self, attribute: _Attribute, value: Any) -> tuple[int, float]:
        """The value id and, for numbers, the standardised signed log (0.0 otherwise)."""
        if attribute.kind == "unknown":
            return UNK, 0.0
        if attribute.kind == "numeric":
            number = _as_number(value)
            if number is None or attribute.edges is None or attribute.bin_ids is None:
                return attribute.missing_id, 0.0
            scaled = min(max((signed_log(number) - attribute.mean) / attribute.std, -5.0), 5.0)
            return attribute.bin_ids[bisect.bisect_right(attribute.edges, number)], scaled
        category = _category(value)
        value_id = self._category_ids.get((attribute.key, category))
        if value_id is None:
            value_id = self.attr_values.index.get(f"{attribute.key}={category}", attribute.missing_id)
            if len(self._category_ids) < 100_000:  # bounded: free-text values must not grow a server's memory
                self._category_ids[(attribute.key, category)] = value_id
        return value_id, 0.0

    def _layout(self, event_type: str, keys: tuple[str, ...]) -> list[_Attribute]:
        """The attributes that fill the slots, in slot order: known keys by frequency, then unknown by name."""
        found = self._layouts.get((event_type, keys))
        if found is None:
            attributes = [self._attribute(event_type, key) for key in keys]
            attributes.sort(key=lambda a: (a.key_id == UNK, a.key_id, a.key))
            found = attributes[: self.max_attrs]
            if len(self._layouts) < 100_000:
                self._layouts[(event_type, keys)] = found
        return found

    def encode_event(self, event: Event) -> tuple[int, int, list[int], list[int], list[float]]:
        """(type id, channel id, attribute key ids, value ids, numbers), the lists padded to `max_attrs`."""
        key_ids = [0] * self.max_attrs
        value_ids = [0] * self.max_attrs
        numbers = [0.0] * self.max_attrs
        attrs = event.attrs
        for slot, attribute in enumerate(self._layout(event.type, tuple(attrs))):
            key_ids[slot] = attribute.key_id
            value_ids[slot], numbers[slot] = self._value(attribute, attrs[attribute.key])
        types = self.event_types.index
        return types.get(event.type, UNK), self.channels.index.get(event.channel, UNK), key_ids, value_ids, numbers

    def encode_profile(self, profile: Profile | None) -> tuple[list[int], list[float]]:
        categorical: list[int] = []
        numeric: list[float] = []
        attrs: Mapping[str, Any] = profile.attrs if profile is not None else {}
        for key in self.profile_categorical_keys:
            value = attrs.get(key)
            if value is None:
                categorical.append(self.profile_values.id(f"{key}={MISSING}"))
            elif key in self.profile_edges:
                number = _as_number(value)
                token = (
                    f"{key}={MISSING}"
                    if number is None
                    else f"{key}#q{bisect.bisect_right(self.profile_edges[key], number)}"
                )
                categorical.append(self.profile_values.id(token))
            else:
                token = f"{key}={_category(value)}"
                categorical.append(
                    self.profile_values.id(token if token in self.profile_values else f"{key}={MISSING}")
                )
        for key, (mean, std) in self.profile_numeric.items():
            number = _as_number(attrs.get(key))
            if number is None:
                numeric.extend((0.0, 1.0))
            else:
                numeric.extend((float(np.clip((number - mean) / std, -5.0, 5.0)), 0.0))
        numeric.append(1.0 if profile is not None else 0.0)
        return categorical, numeric

    def encode(self, examples: Sequence[Example], max_events: int = 64) -> EncodedExamples:
        """Arrays for `examples`; events shared between examples (one customer's history) are encoded once."""
        event_rows: dict[int, int] = {}
        types: list[int] = [PAD]
        channels: list[int] = [PAD]
        times: list[float] = [0.0]
        keys: list[int] = [0] * self.max_attrs  # flat, row-major [E, K]
        values: list[int] = [0] * self.max_attrs
        numbers: list[float] = [0.0] * self.max_attrs
        profile_cache: dict[int, tuple[list[int], list[float]]] = {}
        n = len(examples)
        ptr = np.zeros(n + 1, dtype=np.int64)
        rows: list[int] = []
        contact_ts = np.zeros(n, dtype=np.float64)
        contact_channel = np.zeros(n, dtype=np.int64)
        calendar = np.zeros((n, 3), dtype=np.int64)
        profile_categorical = np.zeros((n, self.profile_slots), dtype=np.int64)
        profile_numeric = np.zeros((n, self.profile_numeric_width), dtype=np.float32)
        for i, example in enumerate(examples):
            recent = example.events[-max_events:] if max_events > 0 else ()
            for event in reversed(recent):  # newest first
                row = event_rows.get(id(event))
                if row is None:
                    type_id, channel_id, key_ids, value_ids, number_values = self.encode_event(event)
                    row = len(types)
                    event_rows[id(event)] = row
                    types.append(type_id)
                    channels.append(channel_id)
                    times.append(epoch_seconds(event.ts))
                    keys.extend(key_ids)
                    values.extend(value_ids)
                    numbers.extend(number_values)
                rows.append(row)
            ptr[i + 1] = len(rows)
            contact = example.contact
            ts = contact.ts if contact.ts.tzinfo is not None else contact.ts.replace(tzinfo=dt.UTC)
            ts = ts.astimezone(dt.UTC)
            contact_ts[i] = epoch_seconds(ts)
            contact_channel[i] = self.channels.id(contact.channel)
            calendar[i] = (ts.hour, ts.weekday(), ts.day - 1)
            cache_key = id(example.profile)
            encoded_profile = profile_cache.get(cache_key)
            if encoded_profile is None:
                encoded_profile = self.encode_profile(example.profile)
                profile_cache[cache_key] = encoded_profile
            profile_categorical[i] = encoded_profile[0]
            profile_numeric[i] = encoded_profile[1]
        return EncodedExamples(
            event_type=np.asarray(types, dtype=np.int64),
            event_channel=np.asarray(channels, dtype=np.int64),
            event_ts=np.asarray(times, dtype=np.float64),
            event_attr_key=np.asarray(keys, dtype=np.int64).reshape(len(types), self.max_attrs),
            event_attr_value=np.asarray(values, dtype=np.int64).reshape(len(types), self.max_attrs),
            event_attr_number=np.asarray(numbers, dtype=np.float32).reshape(len(types), self.max_attrs),
            ptr=ptr,
            rows=np.asarray(rows, dtype=np.int64),
            contact_ts=contact_ts,
            contact_channel=contact_channel,
            contact_calendar=calendar,
            profile_categorical=profile_categorical,
            profile_numeric=profile_numeric,
            time_horizon=self.time_horizon,
        )

    def set_time_horizon(self, encoded: EncodedExamples, quantile: float = 0.99) -> None:
        """Cap ages at the `quantile` of event ages in (training) `encoded`.

        Older events are rare in training (a history is only as long as the data), so their time embeddings
        are barely trained; reading them as the oldest well-trained age keeps them from acting like fresh ones.
        """
        if len(encoded.rows) == 0:
            return
        contact = np.repeat(encoded.contact_ts, encoded.lengths)
        ages = contact - encoded.event_ts[encoded.rows]
        self.time_horizon = float(np.quantile(ages, quantile))
        encoded.time_horizon = self.time_horizon

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "event_types": self.event_types.tokens[2:],
            "channels": self.channels.tokens[2:],
            "attr_keys": self.attr_keys.tokens[2:],
            "attr_values": self.attr_values.tokens[2:],
            "attr_kinds": self.attr_kinds,
            "type_key_edges": self.type_key_edges,
            "key_edges": self.key_edges,
            "number_stats": {k: list(v) for k, v in self.number_stats.items()},
            "profile_categorical_keys": self.profile_categorical_keys,
            "profile_numeric": {k: list(v) for k, v in self.profile_numeric.items()},
            "profile_edges": self.profile_edges,
            "profile_values": self.profile_values.tokens[2:],
            "max_attrs": self.max_attrs,
            "time_buckets": TIME_BUCKETS,
            "time_horizon": None if math.isinf(self.time_horizon) else self.time_horizon,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSpace:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported features format {data.get('format_version')!r}")
        space = cls(
            event_types=Vocabulary(data["event_types"]),
            channels=Vocabulary(data["channels"]),
            attr_keys=Vocabulary(data["attr_keys"]),
            attr_values=Vocabulary(data["attr_values"]),
            attr_kinds=dict(data["attr_kinds"]),
            type_key_edges={k: list(v) for k, v in data["type_key_edges"].items()},
            key_edges={k: list(v) for k, v in data["key_edges"].items()},
            number_stats={k: (float(v[0]), float(v[1])) for k, v in data["number_stats"].items()},
            profile_categorical_keys=list(data["profile_categorical_keys"]),
            profile_numeric={k: (float(v[0]), float(v[1])) for k, v in data["profile_numeric"].items()},
            profile_edges={k: list(v) for k, v in data["profile_edges"].items()},
            profile_values=Vocabulary(data["profile_values"]),
            max_attrs=int(data["max_attrs"]),
        )
        horizon = data.get("time_horizon")
        space.time_horizon = math.inf if horizon is None else float(horizon)
        return space

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> FeatureSpace:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


def _distinct_events(examples: Sequence[Example]) -> list[Event]:
    seen: dict[int, Event] = {}
    for example in examples:
        for event in example.events:
            seen.setdefault(id(event), event)
    return list(seen.values())


def _distinct_profiles(examples: Sequence[Example]) -> list[Profile]:
    seen: dict[str, Profile] = {}
    for example in examples:
        if example.profile is not None:
            seen.setdefault(example.profile.customer_id, example.profile)
    return list(seen.values())

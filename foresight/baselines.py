"""Baselines the Transformer must beat: the global prior, the last event type, and gradient-boosted trees.

Each implements foresight.predictor.Predictor and is built with `fit(train_examples)`. Vocabularies (event
types, attribute keys, categorical values) are learned from the training examples; anything unseen at
prediction time is pooled or treated as missing, never an error.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from bankcore.events import CHANNELS
from foresight.dataset import Example

NO_EVENT = "<none>"
OTHER_TYPE = "<other>"
_FLOOR = 1e-6


def training_intents(examples: Iterable[Example]) -> tuple[str, ...]:
    """The intents labelled in `examples`, sorted (the default column order of the baselines)."""
    return tuple(sorted({e.contact.intent for e in examples if e.contact.intent is not None}))


def _labels(examples: Sequence[Example]) -> list[str]:
    labels = [e.contact.intent for e in examples]
    if any(label is None for label in labels):
        raise ValueError("training examples must all be labelled (contact.intent)")
    return [str(label) for label in labels]


def _smoothed(counts: Mapping[str, float], intents: Sequence[str], alpha: float) -> np.ndarray:
    values = np.asarray([counts.get(intent, 0.0) for intent in intents], dtype=np.float64) + alpha
    return values / values.sum()


class GlobalPriorBaseline:
    """The training intent frequencies, Laplace-smoothed; the same row for every example."""

    name = "global_prior"

    def __init__(self, intents: Sequence[str], probabilities: np.ndarray) -> None:
        self._intents = tuple(intents)
        self.probabilities = np.asarray(probabilities, dtype=np.float64)

    @classmethod
    def fit(
        cls, examples: Sequence[Example], intents: Sequence[str] | None = None, *, alpha: float = 1.0
    ) -> GlobalPriorBaseline:
        intents = tuple(intents) if intents is not None else training_intents(examples)
        return cls(intents, _smoothed(Counter(_labels(examples)), intents, alpha))

    @property
    def intents(self) -> tuple[str, ...]:
        return self._intents

    def predict_proba(self, examples: Sequence[Example]) -> np.ndarray:
        return np.tile(self.probabilities, (len(examples), 1))


class LastEventTypeBaseline:
    """The intent distribution after the customer's last event type, shrunk towards the global prior.

    p(intent | type) = (count(type, intent) + m * prior(intent)) / (count(type) + m); examples with no events
    use the key NO_EVENT; types never seen in training get the prior.
    """

    name = "last_event_type"

    def __init__(self, intents: Sequence[str], prior: np.ndarray, table: Mapping[str, np.ndarray]) -> None:
        self._intents = tuple(intents)
        self.prior = prior
        self.table = dict(table)

    @classmethod
    def fit(
        cls, examples: Sequence[Example], intents: Sequence[str] | None = None, *, strength: float = 10.0
    ) -> LastEventTypeBaseline:
        intents = tuple(intents) if intents is not None else training_intents(examples)
        labels = _labels(examples)
        prior = _smoothed(Counter(labels), intents, 1.0)
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for example, label in zip(examples, labels, strict=True):
            counts[_last_type(example)][label] += 1
        table = {}
        for key, counter in counts.items():
            observed = np.asarray([counter.get(intent, 0) for intent in intents], dtype=np.float64)
            table[key] = (observed + strength * prior) / (observed.sum() + strength)
        return cls(intents, prior, table)

    @property
    def intents(self) -> tuple[str, ...]:
        return self._intents

    def predict_proba(self, examples: Sequence[Example]) -> np.ndarray:
        return np.asarray([self.table.get(_last_type(e), self.prior) for e in examples]).reshape(
            len(examples), len(self._intents)
        )


def _last_type(example: Example) -> str:
    return example.events[-1].type if example.events else NO_EVENT


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_category(value: Any) -> bool:
    return isinstance(value, str | bool)


@dataclass(frozen=True)
class AggregateFeatures:
    """Which hand-aggregated features exist, learned from the training vocabulary."""

    types: tuple[str, ...]  # the most frequent event types; the rest pool into OTHER_TYPE
    numeric_attrs: tuple[tuple[str, str], ...]  # (type, key) whose last value is a feature
    categorical_attrs: tuple[tuple[tuple[str, str], tuple[str, ...]], ...]  # (type, key) -> value vocabulary
    profile_numeric: tuple[str, ...]
    profile_categorical: tuple[tuple[str, tuple[str, ...]], ...]
    windows_h: tuple[float, ...] = (24.0, 24.0 * 7, 24.0 * 30)

    @classmethod
    def learn(
        cls,
        examples: Sequence[Example],
        *,
        max_types: int = 64,
        max_numeric: int = 48,
        max_categorical: int = 48,
        max_values: int = 32,
        min_count: int = 5,
    ) -> AggregateFeatures:
        type_counts: Counter[str] = Counter()
        numeric: Counter[tuple[str, str]] = Counter()
        categorical: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        profile_numeric: Counter[str] = Counter()
        profile_categorical: dict[str, Counter[str]] = defaultdict(Counter)
        seen_events: set[int] = set()
        for example in examples:
            for event in example.events:
                # Events recur across a customer's examples; count each once.
                marker = id(event)
                if marker in seen_events:
                    continue
                seen_events.add(marker)
                type_counts[event.type] += 1
                for key, value in event.attrs.items():
                    if _is_number(value):
                        numeric[(event.type, key)] += 1
                    elif _is_category(value):
                        categorical[(event.type, key)][str(value)] += 1
            if example.profile is not None:
                for key, value in example.profile.attrs.items():
                    if _is_number(value):
                        profile_numeric[key] += 1
                    elif _is_category(value):
                        profile_categorical[key][str(value)] += 1
        types = tuple(t for t, n in type_counts.most_common(max_types) if n >= min_count)
        kept = set(types)
        numeric_attrs = tuple(k for k, n in numeric.most_common() if n >= min_count and k[0] in kept)[:max_numeric]
        ranked = sorted(
            ((k, c) for k, c in categorical.items() if k[0] in kept and sum(c.values()) >= min_count),
            key=lambda item: -sum(item[1].values()),
        )[:max_categorical]
        categorical_attrs = tuple(
            (k, tuple(v for v, n in c.most_common(max_values) if n >= min_count)) for k, c in ranked
        )
        return cls(
            types=types,
            numeric_attrs=numeric_attrs,
            categorical_attrs=tuple(item for item in categorical_attrs if item[1]),
            profile_numeric=tuple(sorted(profile_numeric)),
            profile_categorical=tuple(
                (k, tuple(v for v, _ in c.most_common(max_values))) for k, c in sorted(profile_categorical.items())
            ),
        )

    def names(self) -> list[str]:
        names: list[str] = []
        for event_type in (*self.types, OTHER_TYPE):
            names += [f"{event_type}:count_{int(w)}h" for w in self.windows_h] + [f"{event_type}:hours_since"]
        names += ["all:count", "all:hours_since"]
        names += [f"{t}.{k}:last" for t, k in self.numeric_attrs]
        names += [f"{t}.{k}:last_value" for (t, k), _ in self.categorical_attrs]
        names += [f"profile.{k}" for k in self.profile_numeric]
        names += [f"profile.{k}" for k, _ in self.profile_categorical]
        names += ["contact.channel", "contact.hour"]
        return names

    def categorical_mask(self) -> np.ndarray:
        n_type_features = 4 * (len(self.types) + 1) + 2 + len(self.numeric_attrs)
        mask = [False] * n_type_features + [True] * len(self.categorical_attrs)
        mask += [False] * len(self.profile_numeric) + [True] * len(self.profile_categorical)
        mask += [True, False]
        return np.asarray(mask)

    def transform(self, examples: Sequence[Example]) -> np.ndarray:
        n_types = len(self.types) + 1
        type_index = {t: i for i, t in enumerate(self.types)}
        numeric_index = {k: i for i, k in enumerate(self.numeric_attrs)}
        categorical_index = {k: i for i, (k, _) in enumerate(self.categorical_attrs)}
        value_codes = [{v: float(j) for j, v in enumerate(values)} for _, values in self.categorical_attrs]
        profile_codes = [{v: float(j) for j, v in enumerate(values)} for _, values in self.profile_categorical]
        channel_codes = {c: float(i) for i, c in enumerate(CHANNELS)}
        windows = self.windows_h
        width = len(self.names())
        out = np.full((len(examples), width), np.nan, dtype=np.float32)
        base_numeric = 4 * n_types + 2
        base_categorical = base_numeric + len(self.numeric_attrs)
        base_profile = base_categorical + len(self.categorical_attrs)
        base_profile_categorical = base_profile + len(self.profile_numeric)
        for row, example in enumerate(examples):
            counts = np.zeros((n_types, len(windows)), dtype=np.float32)
            since = np.full(n_types, np.nan, dtype=np.float32)
            values = out[row]
            at = example.contact.ts
            for event in example.events:  # oldest first, so later events overwrite "last" values
                hours = (at - event.ts).total_seconds() / 3600.0
                index = type_index.get(event.type, n_types - 1)
                for w, limit in enumerate(windows):
                    if hours <= limit:
                        counts[index, w] += 1
                since[index] = hours
                for key, value in event.attrs.items():
                    pair = (event.type, key)
                    if _is_number(value):
                        column = numeric_index.get(pair)
                        if column is not None:
                            values[base_numeric + column] = value
                    elif _is_category(value):
                        column = categorical_index.get(pair)
                        if column is not None:
                            values[base_categorical + column] = value_codes[column].get(str(value), np.nan)
            values[: 4 * n_types] = np.concatenate([counts, since[:, None]], axis=1).ravel()
            values[4 * n_types] = len(example.events)
            if example.events:
                values[4 * n_types + 1] = (at - example.events[-1].ts).total_seconds() / 3600.0
            attrs = example.profile.attrs if example.profile is not None else {}
            for i, key in enumerate(self.profile_numeric):
                value = attrs.get(key)
                if _is_number(value):
                    values[base_profile + i] = value
            for i, (key, _) in enumerate(self.profile_categorical):
                value = attrs.get(key)
                if _is_category(value):
                    values[base_profile_categorical + i] = profile_codes[i].get(str(value), np.nan)
            values[-2] = channel_codes.get(example.contact.channel, np.nan)
            values[-1] = at.hour
        return out


class GradientBoostedBaseline:
    """HistGradientBoostingClassifier on the AggregateFeatures, early-stopped on its own validation fraction.

    OpenMP is held to `threads` (1 by default): on a busy machine libgomp's spin-waiting threads made a fit
    that takes 10 s on one thread take minutes on two.
    """

    name = "gradient_boosted"

    def __init__(
        self,
        intents: Sequence[str],
        space: AggregateFeatures,
        model: HistGradientBoostingClassifier,
        keep: np.ndarray,
        threads: int = 1,
    ) -> None:
        self._intents = tuple(intents)
        self.space = space
        self.model = model
        self.keep = keep  # the feature columns that vary in training
        self.threads = threads
        known = {label: i for i, label in enumerate(model.classes_.tolist())}
        self._columns = [known.get(intent) for intent in self._intents]

    @classmethod
    def fit(
        cls,
        examples: Sequence[Example],
        intents: Sequence[str] | None = None,
        *,
        seed: int = 0,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        validation_fraction: float = 0.1,
        threads: int = 1,
    ) -> GradientBoostedBaseline:
        intents = tuple(intents) if intents is not None else training_intents(examples)
        labels = np.asarray(_labels(examples))
        space = AggregateFeatures.learn(examples)
        features = space.transform(examples)
        # A column with fewer than two distinct values carries nothing (and an all-missing one trips the binner).
        keep = np.asarray([np.unique(column[~np.isnan(column)]).size > 1 for column in features.T], dtype=bool)
        model = HistGradientBoostingClassifier(
            learning_rate=learning_rate,
            max_iter=max_iter,
            max_leaf_nodes=31,
            min_samples_leaf=40,
            l2_regularization=1.0,
            categorical_features=space.categorical_mask()[keep],
            early_stopping=True,
            validation_fraction=validation_fraction,
            n_iter_no_change=5,
            random_state=seed,
        )
        with threadpool_limits(threads, user_api="openmp"):
            model.fit(features[:, keep], labels)
        return cls(intents, space, model, keep, threads)

    @property
    def intents(self) -> tuple[str, ...]:
        return self._intents

    def predict_proba(self, examples: Sequence[Example]) -> np.ndarray:
        if not examples:
            return np.zeros((0, len(self._intents)))
        features = self.space.transform(examples)[:, self.keep]
        with threadpool_limits(self.threads, user_api="openmp"):
            raw = self.model.predict_proba(features)
        out = np.full((len(examples), len(self._intents)), _FLOOR)
        for j, column in enumerate(self._columns):
            if column is not None:
                out[:, j] = np.maximum(raw[:, column], _FLOOR)
        return out / out.sum(axis=1, keepdims=True)

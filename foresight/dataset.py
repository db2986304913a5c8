"""Examples for foresight: each contact with the customer's events strictly before it, and the profile.

Only events with `ts < contact.ts` are ever attached (an event at the contact's own second is the contact
itself or later); `build_examples` is the one place that enforces it, for training and prediction alike.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bankcore.events import Contact, Event, Profile

DEFAULT_MAX_EVENTS = 64
DEFAULT_LOOKBACK = dt.timedelta(days=90)


@dataclass(frozen=True, slots=True)
class Example:
    contact: Contact
    events: tuple[Event, ...]  # strictly before contact.ts, oldest first, at most max_events
    profile: Profile | None


class EventIndex:
    """Events grouped by customer and sorted by time, for fast 'strictly before' lookups."""

    def __init__(self, events: Iterable[Event]) -> None:
        grouped: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            grouped[event.customer_id].append(event)
        self._events: dict[str, list[Event]] = {}
        self._times: dict[str, list[dt.datetime]] = {}
        for customer_id, items in grouped.items():
            items.sort(key=lambda e: e.ts)
            self._events[customer_id] = items
            self._times[customer_id] = [e.ts for e in items]

    def before(
        self,
        customer_id: str,
        at: dt.datetime,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        lookback: dt.timedelta = DEFAULT_LOOKBACK,
    ) -> tuple[Event, ...]:
        times = self._times.get(customer_id)
        if not times:
            return ()
        end = bisect.bisect_left(times, at)  # first index with ts >= at: everything before it is strictly earlier
        start = bisect.bisect_left(times, at - lookback)
        start = max(start, end - max_events)
        return tuple(self._events[customer_id][start:end])

    def customers(self) -> list[str]:
        return list(self._events)


def build_examples(
    contacts: Iterable[Contact],
    events: EventIndex | Iterable[Event],
    profiles: Mapping[str, Profile] | Iterable[Profile],
    *,
    max_events: int = DEFAULT_MAX_EVENTS,
    lookback: dt.timedelta = DEFAULT_LOOKBACK,
) -> list[Example]:
    index = events if isinstance(events, EventIndex) else EventIndex(events)
    by_customer = profiles if isinstance(profiles, Mapping) else {p.customer_id: p for p in profiles}
    return [
        Example(
            contact=contact,
            events=index.before(contact.customer_id, contact.ts, max_events=max_events, lookback=lookback),
            profile=by_customer.get(contact.customer_id),
        )
        for contact in contacts
    ]


@dataclass(frozen=True, slots=True)
class TimeSplit:
    train: list[Example]
    valid: list[Example]
    test: list[Example]


def time_split(examples: Sequence[Example], *, valid_fraction: float = 0.1, test_fraction: float = 0.2) -> TimeSplit:
    """Split by contact time: the earliest go to train, then validation, the latest to test."""
    ordered = sorted(examples, key=lambda e: (e.contact.ts, e.contact.customer_id))
    n = len(ordered)
    n_test = round(n * test_fraction)
    n_valid = round(n * valid_fraction)
    train_end = n - n_test - n_valid
    return TimeSplit(train=ordered[:train_end], valid=ordered[train_end : n - n_test], test=ordered[n - n_test :])

"""What came of a reminder, as the cross-channel event the foresight model learns from (once per outcome)."""

from __future__ import annotations

import datetime as dt
import hashlib

from bankcore.events import MAX_ID_CHARS, Event
from bankcore.reminders.store import OUTCOMES


def outcome_event(*, customer_id: str, channel: str, key: str, topic: str, outcome: str, now: dt.datetime) -> Event:
    """A `reminder_outcome` event; its id makes a second record of the same outcome of one reminder a no-op."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown reminder outcome {outcome!r} (one of {', '.join(OUTCOMES)})")
    return Event(
        customer_id=customer_id,
        ts=now,
        channel=channel,
        type="reminder_outcome",
        attrs={"outcome": outcome, "topic": topic},
        event_id=f"reminder:{outcome}:{hashlib.sha256(key.encode()).hexdigest()[:40]}"[:MAX_ID_CHARS],
    )

"""What the dispatch policy decides for one reminder at one moment: send, wait, suppress or cancel."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Send:
    """Send now on this channel, and not at or after `not_after` (UTC; None: no limit).

    `not_after` is when the customer's quiet hours begin: a send held up after the decision (a rate-limited
    channel's queue, a slow batch) must not go out once they have. It says how long the decision holds, not
    what was decided, so it is left out of comparisons: Send("wecom") is the same decision at any hour.
    """

    channel: str
    not_after: dt.datetime | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Wait:
    """Not now: look again at `until` (UTC); `reason` is quiet_hours or frequency_cap."""

    until: dt.datetime
    reason: str


@dataclass(frozen=True)
class Suppress:
    """Never send this reminder (opted_out, unreachable); final, kept for the record."""

    reason: str


@dataclass(frozen=True)
class Cancel:
    """The reminder is moot (settled: the due item was paid, replaced or closed); final."""

    reason: str


Decision = Send | Wait | Suppress | Cancel

"""What the dispatch policy decides for one reminder at one moment: send, wait, suppress or cancel."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Send:
    """Send now on this channel."""

    channel: str


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

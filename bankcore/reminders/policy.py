"""Dispatch policy as pure functions of (reminder, customer context, now): quiet hours, consent, caps, fallback, retry.

No database and no clock of its own (the store is separate from the policy, as in procrastinate and
APScheduler): the worker gathers a `CustomerContext` (bankcore.reminders.context), asks `decide`, and acts on
the decision. Everything here is tested with a fake clock.

Opt-outs are stored as (topic, channel) pairs as the dialogue records them (bankcore.customer_care):
topics `marketing | reminders | calls | all` plus the reminder topics of the rules file (loan, credit_card,
card, deposit, service); channels as the customer said them (wecom, miniprogram, ivr, sms, webchat, app) or
`all`. A reminder of topic T on channel C is opted out when a pair covers it:

- topic T itself, `reminders` (还款和到期提醒: every reminder topic) or `all`;
- `calls` too when C is `phone`, whichever channel the customer said it on ("别再打了" in a chat still means
  no calls);
- channel C itself or `all`; our outbound `phone` channel is the IVR adapter, so `ivr` covers it as well.

An opt-out said on one channel covers that channel only (the stored model is per channel, as
`customer_care.is_opted_out` reads it); saying it with `all`, or "别再打了" for calls, covers more.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bankcore.reminders.decisions import Cancel, Decision, Send, Suppress, Wait

UTC = dt.UTC
# The bank's zone (bankcore.sandbox.BANK_ZONE), named here so the policy stays free of the database layer.
DEFAULT_ZONE = "Asia/Shanghai"

# Opt-out topics that cover every reminder topic, and the one that covers every phone call.
ALL_REMINDERS_TOPICS = ("reminders", "all")
CALLS_TOPIC = "calls"
# Our outbound channel → the channel names an opt-out may have been recorded under.
OPT_OUT_CHANNEL_NAMES: dict[str, tuple[str, ...]] = {
    "phone": ("phone", "ivr"),
    "sms": ("sms",),
    "wecom": ("wecom",),
    "miniprogram": ("miniprogram",),
    "webchat": ("webchat",),
}


class ReminderLike(Protocol):
    """What the policy reads of a reminder (the store's Reminder row or a PlannedReminder both fit)."""

    @property
    def kind(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def channels(self) -> Sequence[str]: ...
    @property
    def attempts(self) -> int: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class QuietHours:
    """[start, end) in the customer's local time; end <= start means the window crosses midnight.

    start == end means no quiet hours at all (an empty window, not a 24-hour one: that would never send).
    """

    start: dt.time
    end: dt.time

    def contains(self, local: dt.time) -> bool:
        local = local.replace(tzinfo=None)
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@dataclass(frozen=True)
class FrequencyCap:
    """At most `max_sends` reminders per customer on one channel in any sliding `window`."""

    max_sends: int
    window: dt.timedelta


@dataclass(frozen=True)
class PolicyConfig:
    quiet: QuietHours = QuietHours(dt.time(21, 0), dt.time(8, 0))
    default_cap: FrequencyCap = FrequencyCap(2, dt.timedelta(hours=24))
    channel_caps: Mapping[str, FrequencyCap] = field(default_factory=dict)
    retry_base: dt.timedelta = dt.timedelta(seconds=300)
    retry_cap: dt.timedelta = dt.timedelta(seconds=3600)
    max_attempts: int = 4
    # Sends per second per channel, for the workers' campaign throttle (not a per-reminder decision).
    rate_limits: Mapping[str, float] = field(default_factory=dict)

    def cap_for(self, channel: str) -> FrequencyCap:
        return self.channel_caps.get(channel, self.default_cap)

    @property
    def cap_window(self) -> dt.timedelta:
        """The longest cap window: how far back the context must read recent sends."""
        return max([self.default_cap.window, *(cap.window for cap in self.channel_caps.values())])


@dataclass(frozen=True)
class CustomerContext:
    """What the policy needs to know about the customer at decision time (gathered from the database)."""

    customer_id: str
    timezone: str
    reachable: tuple[str, ...]  # channels the customer can be reached on
    opted_out: frozenset[tuple[str, str]]  # (topic, channel) as recorded; "all" is a wildcard for either
    recent_sends: tuple[tuple[str, dt.datetime], ...]  # (channel, sent at) within the longest cap window
    settled: bool  # the due item no longer needs a reminder (paid, replaced, closed)


def zone_of(name: str) -> ZoneInfo:
    """The customer's zone; an unknown name falls back to the bank's zone rather than failing a dispatch."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_ZONE)


def is_opted_out(opted_out: frozenset[tuple[str, str]], topic: str, channel: str) -> bool:
    """True when a recorded (topic, channel) opt-out covers this reminder topic on this channel."""
    topics = {topic, *ALL_REMINDERS_TOPICS}
    # "Don't call me" is about calls, whichever channel it was said on.
    if channel == "phone" and any(t == CALLS_TOPIC for t, _ in opted_out):
        return True
    channels = {*OPT_OUT_CHANNEL_NAMES.get(channel, (channel,)), "all"}
    return any(t in topics and c in channels for t, c in opted_out)


def in_quiet_hours(moment: dt.datetime, zone: ZoneInfo, quiet: QuietHours) -> bool:
    return quiet.contains(moment.astimezone(zone).time())


def next_allowed(now: dt.datetime, tz: str | ZoneInfo, quiet: QuietHours) -> dt.datetime:
    """`now` when it is outside quiet hours in `tz`, else the earliest end of the quiet window after it (UTC).

    The window's end is a wall-clock time: on a DST day it may not exist (spring forward) or exist twice
    (fall back), so every reading of it on the next days is tried and the earliest that is after `now` and
    outside quiet hours wins.
    """
    zone = tz if isinstance(tz, ZoneInfo) else zone_of(tz)
    if not in_quiet_hours(now, zone, quiet):
        return now
    local_day = now.astimezone(zone).date()
    candidates = []
    for days in range(3):
        for fold in (0, 1):
            local = dt.datetime.combine(local_day + dt.timedelta(days=days), quiet.end, tzinfo=zone).replace(fold=fold)
            moment = local.astimezone(UTC)
            if moment > now and not in_quiet_hours(moment, zone, quiet):
                candidates.append(moment)
        if candidates:
            return min(candidates)
    # Unreachable for a real zone (a quiet window is shorter than a day); kept so the function is total.
    return now + dt.timedelta(days=1)


def quiet_hours_begin(now: dt.datetime, tz: str | ZoneInfo, quiet: QuietHours) -> dt.datetime | None:
    """The next moment after `now` when quiet hours begin in `tz` (UTC); None when there are none.

    Like `next_allowed`, every reading of the start's wall-clock time on the next days is tried (DST may skip
    or repeat it) and the earliest after `now` that is inside quiet hours wins.
    """
    if quiet.start == quiet.end:
        return None
    zone = tz if isinstance(tz, ZoneInfo) else zone_of(tz)
    local_day = now.astimezone(zone).date()
    for days in range(3):
        candidates = []
        for fold in (0, 1):
            local = dt.datetime.combine(local_day + dt.timedelta(days=days), quiet.start, tzinfo=zone)
            moment = local.replace(fold=fold).astimezone(UTC)
            if moment > now and in_quiet_hours(moment, zone, quiet):
                candidates.append(moment)
        if candidates:
            return min(candidates)
    return None


def _cap_frees_at(sends: list[dt.datetime], cap: FrequencyCap, now: dt.datetime) -> dt.datetime | None:
    """None when the channel is under its cap at `now`, else when enough sends age out of the window."""
    in_window = sorted(sent for sent in sends if sent > now - cap.window)
    if len(in_window) < cap.max_sends:
        return None
    # Under the cap again once all but max_sends - 1 of them have left the window.
    return in_window[len(in_window) - cap.max_sends] + cap.window


def decide(reminder: ReminderLike, ctx: CustomerContext, config: PolicyConfig, now: dt.datetime) -> Decision:
    """The decision for `reminder` at `now`; final decisions (cancel, suppress) before waits, waits before sends."""
    if ctx.settled:
        return Cancel("settled")
    reachable = [channel for channel in reminder.channels if channel in ctx.reachable]
    if not reachable:
        return Suppress("unreachable")
    allowed = [channel for channel in reachable if not is_opted_out(ctx.opted_out, reminder.topic, channel)]
    if not allowed:
        return Suppress("opted_out")
    zone = zone_of(ctx.timezone)
    if in_quiet_hours(now, zone, config.quiet):
        return Wait(next_allowed(now, zone, config.quiet), "quiet_hours")
    frees_at: list[dt.datetime] = []
    for channel in allowed:
        sends = [sent for sent_channel, sent in ctx.recent_sends if sent_channel == channel]
        frees = _cap_frees_at(sends, config.cap_for(channel), now)
        if frees is None:
            return Send(channel, not_after=quiet_hours_begin(now, zone, config.quiet))
        frees_at.append(frees)
    # Every allowed channel is capped: wait for the first to free, and never into quiet hours.
    return Wait(next_allowed(min(frees_at), zone, config.quiet), "frequency_cap")


def retry_at(attempt: int, config: PolicyConfig, now: dt.datetime) -> dt.datetime | None:
    """When to try again after failed attempt number `attempt` (1-based); None once max_attempts are spent.

    Exponential backoff base * 2^(attempt-1), capped; no jitter, so a fake clock sees exact times (the
    quiet-hours check runs again when the retry comes due, so a retry never lands in quiet hours).
    """
    if attempt >= config.max_attempts:
        return None
    # In float seconds so a large attempt number saturates at the cap instead of overflowing timedelta.
    seconds = config.retry_base.total_seconds() * 2.0 ** min(max(attempt - 1, 0), 64)
    return now + dt.timedelta(seconds=min(seconds, config.retry_cap.total_seconds()))

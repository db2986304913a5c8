"""The pure dispatch policy with a fake clock: quiet hours across zones and DST, caps, consent, fallback, retries."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bankcore.reminders.decisions import Cancel, Send, Suppress, Wait
from bankcore.reminders.policy import (
    CustomerContext,
    FrequencyCap,
    PolicyConfig,
    QuietHours,
    decide,
    in_quiet_hours,
    next_allowed,
    retry_at,
)

UTC = dt.UTC
SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
KATHMANDU = ZoneInfo("Asia/Kathmandu")
AUCKLAND = ZoneInfo("Pacific/Auckland")
CONFIG = PolicyConfig(
    quiet=QuietHours(dt.time(21), dt.time(8)),
    default_cap=FrequencyCap(2, dt.timedelta(hours=24)),
    channel_caps={"phone": FrequencyCap(1, dt.timedelta(hours=24))},
)


@dataclass(frozen=True)
class FakeReminder:
    kind: str = "loan_instalment_due"
    topic: str = "loan"
    channels: Sequence[str] = ("wecom", "miniprogram", "phone")
    attempts: int = 0
    payload: Mapping[str, Any] = field(default_factory=dict)


REMINDER = FakeReminder()


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> dt.datetime:
    """A wall-clock time in `zone` as the UTC instant a fake clock would read."""
    return dt.datetime(*args, tzinfo=zone, fold=fold).astimezone(UTC)  # type: ignore[misc]


def ctx(
    *,
    timezone: str = "Asia/Shanghai",
    reachable: tuple[str, ...] = ("wecom", "miniprogram", "phone", "sms", "webchat"),
    opted_out: frozenset[tuple[str, str]] = frozenset(),
    recent_sends: tuple[tuple[str, dt.datetime], ...] = (),
    settled: bool = False,
) -> CustomerContext:
    return CustomerContext("C001", timezone, reachable, opted_out, recent_sends, settled)


# ------------------------------------------------------------------ quiet hours


@pytest.mark.parametrize(
    ("zone", "now", "expected"),
    [
        # Asia/Shanghai has no DST: the window is always 13:00-00:00 UTC.
        (SHANGHAI, local(SHANGHAI, 2026, 11, 20, 20, 59), Send("wecom")),
        (SHANGHAI, local(SHANGHAI, 2026, 11, 20, 21, 0), Wait(local(SHANGHAI, 2026, 11, 21, 8, 0), "quiet_hours")),
        (SHANGHAI, local(SHANGHAI, 2026, 11, 20, 23, 59), Wait(local(SHANGHAI, 2026, 11, 21, 8, 0), "quiet_hours")),
        # After midnight the window ends the same local day.
        (SHANGHAI, local(SHANGHAI, 2026, 11, 21, 0, 30), Wait(local(SHANGHAI, 2026, 11, 21, 8, 0), "quiet_hours")),
        (SHANGHAI, local(SHANGHAI, 2026, 11, 21, 7, 59), Wait(local(SHANGHAI, 2026, 11, 21, 8, 0), "quiet_hours")),
        (SHANGHAI, local(SHANGHAI, 2026, 11, 21, 8, 0), Send("wecom")),
        # The same UTC instant is daytime in New York and night in Shanghai.
        (NEW_YORK, dt.datetime(2026, 11, 20, 15, 0, tzinfo=UTC), Send("wecom")),
        (SHANGHAI, dt.datetime(2026, 11, 20, 15, 0, tzinfo=UTC), Wait(local(SHANGHAI, 2026, 11, 21, 8), "quiet_hours")),
        (NEW_YORK, local(NEW_YORK, 2026, 11, 20, 22, 0), Wait(local(NEW_YORK, 2026, 11, 21, 8, 0), "quiet_hours")),
    ],
)
def test_quiet_hours_hold_reminders_until_the_window_opens_in_the_customers_zone(
    zone: ZoneInfo, now: dt.datetime, expected: object
) -> None:
    assert decide(REMINDER, ctx(timezone=zone.key), CONFIG, now) == expected


@pytest.mark.parametrize(
    ("zone", "now", "not_after"),
    [
        (SHANGHAI, local(SHANGHAI, 2026, 12, 6, 20, 59, 59), local(SHANGHAI, 2026, 12, 6, 21, 0)),
        (SHANGHAI, local(SHANGHAI, 2026, 12, 6, 8, 0), local(SHANGHAI, 2026, 12, 6, 21, 0)),
        (KATHMANDU, dt.datetime(2026, 12, 6, 12, 0, tzinfo=UTC), dt.datetime(2026, 12, 6, 15, 15, tzinfo=UTC)),
        (NEW_YORK, dt.datetime(2026, 12, 6, 15, 0, tzinfo=UTC), dt.datetime(2026, 12, 7, 2, 0, tzinfo=UTC)),
        # Auckland in December is on NZDT (+13): its evening begins at 08:00 UTC.
        (AUCKLAND, dt.datetime(2026, 12, 6, 1, 0, tzinfo=UTC), dt.datetime(2026, 12, 6, 8, 0, tzinfo=UTC)),
    ],
)
def test_a_send_holds_only_until_quiet_hours_begin_in_the_customers_zone(
    zone: ZoneInfo, now: dt.datetime, not_after: dt.datetime
) -> None:
    decision = decide(REMINDER, ctx(timezone=zone.key), CONFIG, now)
    assert isinstance(decision, Send) and decision.not_after == not_after


def test_without_quiet_hours_a_send_holds_for_ever() -> None:
    config = replace(CONFIG, quiet=QuietHours(dt.time(8), dt.time(8)))
    decision = decide(REMINDER, ctx(), config, local(SHANGHAI, 2026, 11, 20, 3, 0))
    assert isinstance(decision, Send) and decision.not_after is None


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 31)),
    st.sampled_from(["Asia/Shanghai", "Asia/Kathmandu", "America/New_York", "Europe/London", "Pacific/Auckland"]),
)
def test_a_send_decided_at_any_moment_holds_exactly_until_the_next_quiet_hours(
    naive: dt.datetime, zone_name: str
) -> None:
    now = naive.replace(tzinfo=UTC)
    zone = ZoneInfo(zone_name)
    decision = decide(REMINDER, ctx(timezone=zone_name), CONFIG, now)
    if in_quiet_hours(now, zone, CONFIG.quiet):
        assert isinstance(decision, Wait)
        return
    assert isinstance(decision, Send) and decision.not_after is not None
    # Outside quiet hours up to not_after, inside from it, and that within the 13 hours of a day's window.
    assert now < decision.not_after <= now + dt.timedelta(hours=13)
    assert in_quiet_hours(decision.not_after, zone, CONFIG.quiet)
    assert not in_quiet_hours(decision.not_after - dt.timedelta(microseconds=1), zone, CONFIG.quiet)
    assert decision.not_after.astimezone(zone).time() == dt.time(21, 0)


def test_spring_forward_night_in_new_york_waits_until_8_edt_not_8_est() -> None:
    # 2026-03-08 02:00 EST jumps to 03:00 EDT: the night is an hour shorter in UTC.
    now = local(NEW_YORK, 2026, 3, 7, 22, 0)
    decision = decide(REMINDER, ctx(timezone="America/New_York"), CONFIG, now)
    assert decision == Wait(dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC), "quiet_hours")
    assert decision.until.astimezone(NEW_YORK).hour == 8


def test_fall_back_night_in_new_york_waits_until_8_est() -> None:
    # 2026-11-01 02:00 EDT falls back to 01:00 EST: the night is an hour longer in UTC.
    now = local(NEW_YORK, 2026, 10, 31, 22, 0)
    decision = decide(REMINDER, ctx(timezone="America/New_York"), CONFIG, now)
    assert decision == Wait(dt.datetime(2026, 11, 1, 13, 0, tzinfo=UTC), "quiet_hours")


def test_a_window_ending_in_the_repeated_hour_ends_at_its_second_reading_when_now_is_past_the_first() -> None:
    quiet = QuietHours(dt.time(0, 0), dt.time(1, 30))
    # 01:10 on the second (EST) pass through 01:00-02:00; the first 01:30 (EDT) is already in the past.
    now = local(NEW_YORK, 2026, 11, 1, 1, 10, fold=1)
    assert now == dt.datetime(2026, 11, 1, 6, 10, tzinfo=UTC)
    assert next_allowed(now, NEW_YORK, quiet) == dt.datetime(2026, 11, 1, 6, 30, tzinfo=UTC)


def test_a_window_ending_in_the_skipped_hour_ends_after_the_jump() -> None:
    quiet = QuietHours(dt.time(21, 0), dt.time(2, 30))  # 02:30 does not exist on 2026-03-08 in New York
    now = local(NEW_YORK, 2026, 3, 8, 1, 30)
    until = next_allowed(now, NEW_YORK, quiet)
    assert until > now
    assert not in_quiet_hours(until, NEW_YORK, quiet)
    assert until.astimezone(NEW_YORK).date() == dt.date(2026, 3, 8)


def test_a_daytime_window_that_does_not_cross_midnight() -> None:
    config = replace(CONFIG, quiet=QuietHours(dt.time(12, 0), dt.time(14, 0)))
    assert decide(REMINDER, ctx(), config, local(SHANGHAI, 2026, 11, 20, 11, 59)) == Send("wecom")
    assert decide(REMINDER, ctx(), config, local(SHANGHAI, 2026, 11, 20, 13, 0)) == Wait(
        local(SHANGHAI, 2026, 11, 20, 14, 0), "quiet_hours"
    )
    assert decide(REMINDER, ctx(), config, local(SHANGHAI, 2026, 11, 20, 23, 0)) == Send("wecom")


def test_equal_start_and_end_means_no_quiet_hours() -> None:
    config = replace(CONFIG, quiet=QuietHours(dt.time(8), dt.time(8)))
    assert decide(REMINDER, ctx(), config, local(SHANGHAI, 2026, 11, 20, 3, 0)) == Send("wecom")


def test_next_allowed_is_now_outside_quiet_hours() -> None:
    now = local(SHANGHAI, 2026, 11, 20, 10, 0)
    assert next_allowed(now, "Asia/Shanghai", CONFIG.quiet) == now


def test_an_unknown_zone_falls_back_to_the_banks_zone() -> None:
    now = local(SHANGHAI, 2026, 11, 20, 22, 0)
    assert decide(REMINDER, ctx(timezone="Mars/Olympus"), CONFIG, now) == Wait(
        local(SHANGHAI, 2026, 11, 21, 8), "quiet_hours"
    )


# ------------------------------------------------------------------ consent, reach, fallback

DAY = local(SHANGHAI, 2026, 11, 20, 10, 0)


@pytest.mark.parametrize(
    ("opted_out", "expected"),
    [
        (frozenset(), Send("wecom")),
        # Opting out on one channel moves the reminder to the next preferred channel.
        (frozenset({("loan", "wecom")}), Send("miniprogram")),
        (frozenset({("reminders", "wecom")}), Send("miniprogram")),
        (frozenset({("all", "wecom")}), Send("miniprogram")),
        (frozenset({("loan", "wecom"), ("loan", "miniprogram")}), Send("phone")),
        (frozenset({("loan", "wecom"), ("reminders", "miniprogram")}), Send("phone")),
        # Opting out of every channel the reminder could use.
        (frozenset({("loan", "wecom"), ("loan", "miniprogram"), ("loan", "phone")}), Suppress("opted_out")),
        (frozenset({("loan", "wecom"), ("loan", "miniprogram"), ("loan", "ivr")}), Suppress("opted_out")),
        (frozenset({("loan", "wecom"), ("loan", "miniprogram"), ("calls", "wecom")}), Suppress("opted_out")),
        (frozenset({("loan", "all")}), Suppress("opted_out")),
        (frozenset({("reminders", "all")}), Suppress("opted_out")),
        (frozenset({("all", "all")}), Suppress("opted_out")),
        # Other topics do not cover loan reminders.
        (frozenset({("marketing", "all")}), Send("wecom")),
        (frozenset({("deposit", "all")}), Send("wecom")),
        (frozenset({("calls", "all")}), Send("wecom")),
        (frozenset({("loan", "sms")}), Send("wecom")),
    ],
)
def test_opt_outs_from_each_channel_and_all(opted_out: frozenset[tuple[str, str]], expected: object) -> None:
    assert decide(REMINDER, ctx(opted_out=opted_out), CONFIG, DAY) == expected


@pytest.mark.parametrize(
    ("reachable", "expected"),
    [
        (("wecom", "miniprogram", "phone"), Send("wecom")),
        (("miniprogram", "phone"), Send("miniprogram")),
        (("phone", "webchat"), Send("phone")),
        (("sms", "webchat"), Suppress("unreachable")),
        ((), Suppress("unreachable")),
    ],
)
def test_channel_preference_falls_back_along_the_rules_order(reachable: tuple[str, ...], expected: object) -> None:
    assert decide(REMINDER, ctx(reachable=reachable), CONFIG, DAY) == expected


def test_the_rules_order_decides_not_the_contexts() -> None:
    reminder = FakeReminder(channels=("phone", "wecom"))
    assert decide(reminder, ctx(reachable=("wecom", "phone")), CONFIG, DAY) == Send("phone")


def test_settled_cancels_before_anything_else_even_in_quiet_hours() -> None:
    night = local(SHANGHAI, 2026, 11, 20, 23, 0)
    everything = ctx(settled=True, opted_out=frozenset({("all", "all")}), reachable=())
    assert decide(REMINDER, everything, CONFIG, night) == Cancel("settled")
    assert decide(REMINDER, ctx(settled=True), CONFIG, DAY) == Cancel("settled")


def test_suppression_is_decided_at_night_too_rather_than_waiting_to_suppress() -> None:
    night = local(SHANGHAI, 2026, 11, 20, 23, 0)
    assert decide(REMINDER, ctx(opted_out=frozenset({("all", "all")})), CONFIG, night) == Suppress("opted_out")


# ------------------------------------------------------------------ frequency caps


def test_a_capped_channel_falls_back_to_the_next() -> None:
    sends = (("wecom", DAY - dt.timedelta(hours=5)), ("wecom", DAY - dt.timedelta(hours=1)))
    assert decide(REMINDER, ctx(recent_sends=sends), CONFIG, DAY) == Send("miniprogram")


def test_sends_older_than_the_window_do_not_count() -> None:
    sends = (("wecom", DAY - dt.timedelta(hours=25)), ("wecom", DAY - dt.timedelta(hours=1)))
    assert decide(REMINDER, ctx(recent_sends=sends), CONFIG, DAY) == Send("wecom")


def test_per_channel_caps_override_the_default() -> None:
    reminder = FakeReminder(channels=("phone", "sms"))
    sends = (("phone", DAY - dt.timedelta(hours=3)),)
    assert decide(reminder, ctx(recent_sends=sends), CONFIG, DAY) == Send("sms")


def test_when_every_channel_is_capped_wait_for_the_earliest_to_free() -> None:
    reminder = FakeReminder(channels=("wecom", "phone"))
    sends = (
        ("wecom", DAY - dt.timedelta(hours=20)),
        ("wecom", DAY - dt.timedelta(hours=2)),
        ("phone", DAY - dt.timedelta(hours=22)),
    )
    # wecom frees when its 20-hour-old send ages out (in 4 h), phone when its send does (in 2 h).
    assert decide(reminder, ctx(recent_sends=sends), CONFIG, DAY) == Wait(DAY + dt.timedelta(hours=2), "frequency_cap")


def test_a_cap_that_frees_in_quiet_hours_waits_for_the_morning() -> None:
    reminder = FakeReminder(channels=("phone",))
    now = local(SHANGHAI, 2026, 11, 20, 20, 0)
    sends = (("phone", now - dt.timedelta(hours=23)),)  # frees at 21:00, when quiet hours start
    assert decide(reminder, ctx(recent_sends=sends), CONFIG, now) == Wait(
        local(SHANGHAI, 2026, 11, 21, 8, 0), "frequency_cap"
    )


def test_over_the_cap_counts_how_many_must_age_out() -> None:
    reminder = FakeReminder(channels=("wecom",))
    sends = tuple(("wecom", DAY - dt.timedelta(hours=h)) for h in (1, 3, 10, 12))  # 4 sends, cap 2
    # Under the cap once 3 of them are gone: the third oldest (3 h ago) leaves in 21 h.
    decision = decide(reminder, ctx(recent_sends=sends), CONFIG, DAY)
    assert decision == Wait(next_allowed(DAY + dt.timedelta(hours=21), SHANGHAI, CONFIG.quiet), "frequency_cap")


# ------------------------------------------------------------------ retries


def test_retries_back_off_exponentially_up_to_the_cap_then_give_up() -> None:
    now = DAY
    delays = [retry_at(attempt, CONFIG, now) for attempt in range(1, 6)]
    assert delays[:3] == [now + dt.timedelta(seconds=s) for s in (300, 600, 1200)]
    assert delays[3:] == [None, None]  # max_attempts 4: the fourth failure is the last
    capped = replace(CONFIG, retry_base=dt.timedelta(seconds=1000), retry_cap=dt.timedelta(seconds=1500))
    assert retry_at(2, capped, now) == now + dt.timedelta(seconds=1500)


def test_a_huge_attempt_number_saturates_at_the_cap() -> None:
    config = replace(CONFIG, max_attempts=10_000)
    assert retry_at(5_000, config, DAY) == DAY + CONFIG.retry_cap


# ------------------------------------------------------------------ properties

ZONES = (
    "Asia/Shanghai",
    "America/New_York",
    "Europe/London",
    "Asia/Kolkata",
    "Australia/Lord_Howe",  # half-hour DST shift
    "Pacific/Chatham",
    "America/Sao_Paulo",
)
instants = st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 31), timezones=st.just(UTC))
clock = st.builds(dt.time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))


@settings(max_examples=300, deadline=None)
@given(
    now=instants,
    zone=st.sampled_from(ZONES),
    start=clock,
    end=clock,
    sends=st.lists(st.tuples(st.sampled_from(["wecom", "miniprogram", "phone"]), st.integers(0, 48 * 60)), max_size=6),
)
def test_never_sends_in_quiet_hours_and_never_waits_into_them(
    now: dt.datetime, zone: str, start: dt.time, end: dt.time, sends: list[tuple[str, int]]
) -> None:
    config = replace(CONFIG, quiet=QuietHours(start, end))
    recent = tuple((channel, now - dt.timedelta(minutes=minutes)) for channel, minutes in sends)
    decision = decide(REMINDER, ctx(timezone=zone, recent_sends=recent), config, now)
    tz = ZoneInfo(zone)
    if isinstance(decision, Send):
        assert not in_quiet_hours(now, tz, config.quiet)
    else:
        assert isinstance(decision, Wait), decision
        assert decision.until > now
        assert not in_quiet_hours(decision.until, tz, config.quiet)
        assert decision.until - now <= dt.timedelta(hours=50)


@settings(max_examples=300, deadline=None)
@given(now=instants, zone=st.sampled_from(ZONES), start=clock, end=clock)
def test_next_allowed_is_outside_quiet_hours_and_within_a_day(
    now: dt.datetime, zone: str, start: dt.time, end: dt.time
) -> None:
    quiet = QuietHours(start, end)
    until = next_allowed(now, zone, quiet)
    assert until >= now
    assert not in_quiet_hours(until, ZoneInfo(zone), quiet)
    assert until - now <= dt.timedelta(hours=25)
    if until > now:
        assert in_quiet_hours(now, ZoneInfo(zone), quiet)


def test_the_policy_needs_no_database() -> None:
    code = (
        "import sys, bankcore.reminders.policy, bankcore.reminders.decisions; "
        "assert 'sqlalchemy' not in sys.modules, 'the policy imported the database layer'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""Features: numbers computed from a RiskInput, the same way live and offline, in a fixed order.

The names are what rules and the learned score read. Event-derived features come in two kinds: per signal
named in the rules file (`ev_password_reset_24h`, `hours_since_new_device`, ...), which rules can name, and
hashed per event type (`evh_07_24h`), which let the learned score use event types nobody mapped to a signal
(another bank's vocabulary) when it is trained on that bank's data.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from bankcore.events import Event
from bankcore.risk.signals import EventCount, RiskInput, fold

if TYPE_CHECKING:
    from bankcore.risk.config import RulesConfig

WINDOWS: tuple[tuple[str, dt.timedelta], ...] = (
    ("1h", dt.timedelta(hours=1)),
    ("24h", dt.timedelta(hours=24)),
    ("7d", dt.timedelta(days=7)),
)
HASH_BUCKETS = 16
HOURS_CAP = 168.0
# Below this, "amount vs usual" is measured against this floor: a customer who only ever sent 20 yuan
# is not 100 times over their habit when they send 2,000.
USUAL_FLOOR = 200.0
CHANNEL_FEATURES = ("app", "wecom", "miniprogram", "ivr")

BASE_FEATURES: tuple[str, ...] = (
    "amount",
    "log_amount",
    "is_repayment",
    "history_count",
    "amount_vs_usual",
    "amount_vs_max",
    "payee_new",
    "payee_on_fraud_list",
    "cross_border",
    "transfers_1h",
    "transfers_24h",
    "amount_1h",
    "amount_24h",
    "new_payees_24h",
    "night",
    "hour_sin",
    "hour_cos",
    *(f"channel_{name}" for name in CHANNEL_FEATURES),
    "channel_other",
    "input_voice",
    "input_keypad",
    "device_unknown",
    "caller_id_mismatch",
    "failed_verifications_24h",
    "fraud_phrase_hits",
    "events_24h",
    "events_7d",
    "event_channels_24h",
)


def feature_names(signals: Sequence[str]) -> tuple[str, ...]:
    names = list(BASE_FEATURES)
    for signal in signals:
        names.extend(f"ev_{signal}_{window}" for window, _ in WINDOWS)
        names.append(f"hours_since_{signal}")
    for bucket in range(HASH_BUCKETS):
        names.extend((f"evh_{bucket:02d}_24h", f"evh_{bucket:02d}_7d"))
    return tuple(names)


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except Exception:  # an unknown zone name in a record must not stop an assessment
        return ZoneInfo("Asia/Shanghai")


@lru_cache(maxsize=4096)
def _bucket(event_type: str) -> int:
    return zlib.crc32(event_type.strip().casefold().encode("utf-8")) % HASH_BUCKETS


def count_events(events: Sequence[Event], ts: dt.datetime) -> tuple[EventCount, ...]:
    """Events at or before `ts` and less than 7 days old, counted per (type, channel) and window."""
    hour_ago, day_ago, week_ago = ts - dt.timedelta(hours=1), ts - dt.timedelta(hours=24), ts - dt.timedelta(days=7)
    tally: dict[tuple[str, str], list[Any]] = {}
    for event in events:
        if not week_ago < event.ts <= ts:
            continue
        entry = tally.setdefault((event.type, event.channel), [0, 0, 0, event.ts])
        entry[0] += event.ts > hour_ago
        entry[1] += event.ts > day_ago
        entry[2] += 1
        entry[3] = max(entry[3], event.ts)
    return tuple(
        EventCount(event_type, channel, n_1h, n_24h, n_7d, latest)
        for (event_type, channel), (n_1h, n_24h, n_7d, latest) in sorted(tally.items())
    )


def phrase_hits(utterances: Sequence[str], phrases: Sequence[str]) -> list[str]:
    """The phrases (folded: width, case, spaces) found in what the customer said."""
    said = fold("\n".join(utterances))
    return [phrase for phrase in phrases if fold(phrase) and fold(phrase) in said]


def compute(
    risk: RiskInput, signals: Sequence[str], signal_of_type: dict[str, str], phrases: Sequence[str]
) -> dict[str, float]:
    """All features of one input, keyed by name in `feature_names(signals)` order."""
    amount = float(risk.amount)
    ts = risk.ts
    prior = [p for p in risk.history if p.ts <= ts]
    amounts = [float(p.amount) for p in prior]
    usual = max(statistics.median(amounts), USUAL_FLOOR) if amounts else USUAL_FLOOR
    largest = max(max(amounts), USUAL_FLOOR) if amounts else USUAL_FLOOR
    hour_ago, day_ago = ts - dt.timedelta(hours=1), ts - dt.timedelta(hours=24)
    last_hour = [p for p in prior if p.ts > hour_ago]
    last_day = [p for p in prior if p.ts > day_ago]
    seen: set[str] = set(risk.older_payees)
    new_in_day: set[str] = set()
    for past in sorted(prior, key=lambda p: p.ts):
        if past.payee_key not in seen and past.ts > day_ago:
            new_in_day.add(past.payee_key)
        seen.add(past.payee_key)
    payee_new = risk.payee_new
    if payee_new and risk.payee_key is not None:
        new_in_day.add(risk.payee_key)
    local = ts.astimezone(_zone(risk.timezone))
    hour = local.hour + local.minute / 60.0
    out: dict[str, float] = {
        "amount": amount,
        "log_amount": math.log1p(max(amount, 0.0)),
        "is_repayment": float(risk.kind != "transfer"),
        "history_count": float(len(prior)),
        "amount_vs_usual": amount / usual,
        "amount_vs_max": amount / largest,
        "payee_new": float(payee_new),
        "payee_on_fraud_list": float(risk.payee_on_fraud_list),
        "cross_border": float(risk.cross_border),
        "transfers_1h": float(len(last_hour)),
        "transfers_24h": float(len(last_day)),
        "amount_1h": sum(float(p.amount) for p in last_hour),
        "amount_24h": sum(float(p.amount) for p in last_day),
        "new_payees_24h": float(len(new_in_day)),
        "night": float(local.hour < 6),
        "hour_sin": math.sin(2 * math.pi * hour / 24),
        "hour_cos": math.cos(2 * math.pi * hour / 24),
    }
    for name in CHANNEL_FEATURES:
        out[f"channel_{name}"] = float(risk.channel == name)
    out["channel_other"] = float(risk.channel not in CHANNEL_FEATURES)
    out["input_voice"] = float(risk.input_mode == "voice")
    out["input_keypad"] = float(risk.input_mode == "keypad")
    out["device_unknown"] = float(risk.device_known is False)
    out["caller_id_mismatch"] = float(risk.caller_id_mismatch)
    out["failed_verifications_24h"] = float(risk.failed_verifications_24h)
    out["fraud_phrase_hits"] = float(len(phrase_hits(risk.utterances, phrases)))

    counts = risk.event_counts if risk.event_counts is not None else count_events(risk.events, ts)
    out["events_24h"] = float(sum(c.last_24h for c in counts))
    out["events_7d"] = float(sum(c.last_7d for c in counts))
    out["event_channels_24h"] = float(len({c.channel for c in counts if c.last_24h}))
    per_signal: dict[str, list[EventCount]] = {signal: [] for signal in signals}
    hashed = [[0.0, 0.0] for _ in range(HASH_BUCKETS)]
    for count in counts:
        if not count.last_7d:
            continue
        signal = signal_of_type.get(count.type.strip().casefold())
        if signal in per_signal:
            per_signal[signal].append(count)
        bucket = hashed[_bucket(count.type)]
        bucket[0] += count.last_24h
        bucket[1] += count.last_7d
    for signal in signals:
        matched = per_signal[signal]
        out[f"ev_{signal}_1h"] = float(sum(c.last_1h for c in matched))
        out[f"ev_{signal}_24h"] = float(sum(c.last_24h for c in matched))
        out[f"ev_{signal}_7d"] = float(sum(c.last_7d for c in matched))
        latest = max((c.latest for c in matched), default=None)
        out[f"hours_since_{signal}"] = (
            min((ts - latest).total_seconds() / 3600.0, HOURS_CAP) if latest is not None else HOURS_CAP
        )
    for index, (day, week) in enumerate(hashed):
        out[f"evh_{index:02d}_24h"] = day
        out[f"evh_{index:02d}_7d"] = week
    return out


def compute_for(risk: RiskInput, config: RulesConfig) -> dict[str, float]:
    """Features of one input under a rules configuration (its signals and phrases)."""
    return compute(risk, tuple(config.event_signals), config.signal_of_event_type, config.fraud_phrases)

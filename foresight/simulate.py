"""A simulated bank: profiles, events and contacts whose intent is drawn from a known posterior.

Each contact's intent is sampled from softmax(base(profile) + channel effect + sum over the customer's visible
events of effect(type, attrs) * 0.5 ** (age / half_life(type))). "Visible" means exactly what
foresight.dataset attaches to an example (strictly before the contact, within the lookback, the last
max_events), so the written posterior is the Bayes-optimal prediction for any model that sees examples.
Contacts come from a background rate plus contacts triggered by events (a cluster process), so the contact
rate rises after a triggering event. Everything is columnar numpy until the records are built at the end.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bankcore.events import Contact, Event, Profile, format_ts, parse_ts, write_jsonl
from foresight.dataset import DEFAULT_LOOKBACK, DEFAULT_MAX_EVENTS, Example

INTENTS: tuple[str, ...] = (
    "check_balance",
    "transaction_history",
    "transfer_money",
    "failed_transfer_inquiry",
    "credit_card_bill",
    "credit_card_repay",
    "report_lost_card",
    "replace_card",
    "activate_card",
    "reset_password",
    "loan_repayment",
    "deposit_maturity",
    "branch_lookup",
    "interest_rate",
    "exchange_rate",
    "report_fraud",
    "human_handoff",
    "complain",
)
INTENT_INDEX = {name: i for i, name in enumerate(INTENTS)}
N_INTENTS = len(INTENTS)

# The core-banking event types keep their names under a vocabulary shift: the bank's live system emits them.
CORE_EVENT_TYPES: tuple[str, ...] = (
    "transfer_failed",
    "card_expiring",
    "credit_card_due",
    "loan_instalment_due",
    "deposit_maturing",
)
CONTACT_CHANNELS: tuple[str, ...] = ("app", "wecom", "miniprogram", "ivr")
AGE_BANDS: tuple[str, ...] = ("18-25", "26-35", "36-50", "51-65", "65+")
SEGMENTS: tuple[str, ...] = ("mass", "affluent", "private")
DEFAULT_START = dt.datetime(2025, 3, 3, tzinfo=dt.UTC)
DAY = 86_400
HOUR = 3_600
# Logit scales of the event and the profile/channel effects; tuned so that Bayes-optimal top-1 is about 0.65.
EVENT_SCALE = 2.8
PROFILE_SCALE = 1.5

_BASE_LOGITS = {
    "check_balance": 1.0,
    "transaction_history": 0.8,
    "transfer_money": 0.6,
    "failed_transfer_inquiry": -0.6,
    "credit_card_bill": 0.1,
    "credit_card_repay": -0.1,
    "report_lost_card": -0.9,
    "replace_card": -0.7,
    "activate_card": -0.7,
    "reset_password": 0.0,
    "loan_repayment": -0.3,
    "deposit_maturity": -0.6,
    "branch_lookup": 0.0,
    "interest_rate": -0.3,
    "exchange_rate": -0.6,
    "report_fraud": -1.1,
    "human_handoff": 0.3,
    "complain": -0.5,
}
_CHANNEL_LOGITS: dict[str, dict[str, float]] = {
    "app": {"transaction_history": 0.3, "transfer_money": 0.2, "human_handoff": -0.3},
    "wecom": {"complain": 0.4, "interest_rate": 0.3},
    "miniprogram": {"branch_lookup": 0.4, "exchange_rate": 0.2},
    "ivr": {"human_handoff": 0.8, "report_lost_card": 0.5, "report_fraud": 0.4, "transaction_history": -0.3},
}


@dataclass(frozen=True, slots=True)
class Posterior:
    """The distribution one contact's intent was sampled from."""

    customer_id: str
    ts: dt.datetime
    probabilities: Mapping[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "ts": format_ts(self.ts), "posterior": dict(self.probabilities)}


@dataclass(frozen=True, slots=True)
class SimulatedData:
    profiles: list[Profile]
    events: list[Event]
    contacts: list[Contact]
    posteriors: list[Posterior]
    intents: tuple[str, ...] = INTENTS
    type_names: Mapping[str, str] = field(default_factory=dict)  # canonical event type -> name as written

    def write(self, out_dir: str | Path) -> dict[str, int]:
        """Writes the four JSON Lines files, byte for byte what bankcore.events.write_jsonl would write."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return {
            "profiles": write_jsonl(out / "profiles.jsonl", self.profiles),
            "events": _write_fast(out / "events.jsonl", self.events),
            "contacts": write_jsonl(out / "contacts.jsonl", self.contacts),
            "posteriors": _write_fast(out / "posteriors.jsonl", self.posteriors),
        }


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _write_fast(path: Path, records: Sequence[Event] | Sequence[Posterior]) -> int:
    """write_jsonl for millions of records: one encoder, each timestamp formatted once."""
    encode = _ENCODER.encode
    formatted: dict[dt.datetime, str] = {}
    with path.open("w", encoding="utf-8") as handle:
        lines: list[str] = []
        for record in records:
            ts = formatted.get(record.ts)
            if ts is None:
                ts = formatted[record.ts] = format_ts(record.ts)
            if isinstance(record, Event) and record.event_id is None:
                lines.append(
                    f'{{"customer_id":{encode(record.customer_id)},"ts":"{ts}","channel":"{record.channel}",'
                    f'"type":{encode(record.type)},"attrs":{encode(dict(record.attrs))}}}\n'
                )
            elif isinstance(record, Posterior):
                lines.append(
                    f'{{"customer_id":{encode(record.customer_id)},"ts":"{ts}",'
                    f'"posterior":{encode(dict(record.probabilities))}}}\n'
                )
            else:
                lines.append(encode(record.to_json()) + "\n")
            if len(lines) >= 10_000:
                handle.writelines(lines)
                lines.clear()
        handle.writelines(lines)
    return len(records)


@dataclass
class _Profiles:
    n: int
    age: np.ndarray  # index into AGE_BANDS
    segment: np.ndarray  # index into SEGMENTS
    city_tier: np.ndarray  # 1..3
    credit_card: np.ndarray  # bool
    loan: np.ndarray
    deposit: np.ndarray
    preferred: np.ndarray  # index into CONTACT_CHANNELS
    tenure: np.ndarray  # years
    activity: np.ndarray  # hidden multiplier of event rates


@dataclass
class _Block:
    """One event type's events, columnar."""

    type: str
    customer: np.ndarray
    t: np.ndarray  # seconds since start
    channel: np.ndarray  # index into bankcore CHANNELS names below
    attrs: dict[str, np.ndarray]
    effects: np.ndarray  # (n, N_INTENTS) logits
    trigger: np.ndarray  # probability that this event triggers a contact
    half_life_h: float
    delay_h: float  # mean delay of a triggered contact


_EVENT_CHANNELS: tuple[str, ...] = ("app", "wecom", "miniprogram", "ivr", "branch", "core")


class _Generator:
    """Draws every event type in a fixed order from one seeded generator (determinism per seed)."""

    def __init__(self, rng: np.random.Generator, profiles: _Profiles, days: int) -> None:
        self.rng = rng
        self.p = profiles
        self.days = days
        self.horizon = days * DAY
        self.blocks: list[_Block] = []

    # -- helpers -------------------------------------------------------------------------------------------------
    def poisson(self, rate_per_day: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        rate = np.broadcast_to(np.asarray(rate_per_day, dtype=np.float64), (self.p.n,))
        counts = self.rng.poisson(rate * self.days)
        customer = np.repeat(np.arange(self.p.n, dtype=np.int64), counts)
        t = self.rng.integers(0, self.horizon, size=customer.size, dtype=np.int64)
        return customer, t

    def children(
        self, parent: _Block, probability: np.ndarray | float, delay_h: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keep = self.rng.random(parent.customer.size) < probability
        delay = np.broadcast_to(np.asarray(delay_h, dtype=np.float64), (parent.customer.size,))[keep]
        t = parent.t[keep] + 60 + (self.rng.exponential(1.0, keep.sum()) * delay * HOUR).astype(np.int64)
        inside = t < self.horizon
        return parent.customer[keep][inside], t[inside], keep.nonzero()[0][inside]

    def choice(self, n: int, values: Sequence[str], probs: Sequence[float] | None = None) -> np.ndarray:
        return self.rng.choice(len(values), size=n, p=None if probs is None else np.asarray(probs) / np.sum(probs))

    def channel(self, n: int, options: Mapping[str, float]) -> np.ndarray:
        names = list(options)
        picked = self.choice(n, names, list(options.values()))
        return np.asarray([_EVENT_CHANNELS.index(name) for name in names], dtype=np.int64)[picked]

    def amount(self, n: int, log_mean: float, sigma: float, low: float = 1.0) -> np.ndarray:
        return np.maximum(np.round(np.exp(self.rng.normal(log_mean, sigma, n)), 2), low)

    def add(
        self,
        type_name: str,
        customer: np.ndarray,
        t: np.ndarray,
        channel: np.ndarray,
        attrs: dict[str, np.ndarray],
        effects: list[tuple[str, np.ndarray | float]],
        trigger: np.ndarray | float,
        half_life_h: float,
        delay_h: float,
    ) -> _Block:
        n = customer.size
        matrix = np.zeros((n, N_INTENTS), dtype=np.float64)
        for intent, weight in effects:
            matrix[:, INTENT_INDEX[intent]] += weight
        block = _Block(
            type=type_name,
            customer=customer,
            t=t,
            channel=channel,
            attrs=attrs,
            effects=matrix * EVENT_SCALE,
            trigger=np.broadcast_to(np.asarray(trigger, dtype=np.float64), (n,)).copy(),
            half_life_h=half_life_h,
            delay_h=delay_h,
        )
        self.blocks.append(block)
        return block

    # -- the event catalogue -----------------------------------------------------------------------------------
    def generate(self) -> list[_Block]:
        p = self.p
        act = p.activity
        old = p.age == 4
        young = p.age == 0
        app_user = p.preferred == 0
        wealth = np.select([p.segment == 2, p.segment == 1], [3.0, 2.0], 1.0)
        cat = np.asarray  # readability: categorical columns hold value indices until records are built

        # app_login: frequent, weakly informative.
        c, t = self.poisson(0.15 * act * np.where(app_user, 1.5, 1.0) * np.where(old, 0.4, 1.0))
        n = c.size
        self.add(
            "app_login",
            c,
            t,
            self.channel(n, {"app": 1.0}),
            {
                "device": cat(self.choice(n, _DEVICES, (0.45, 0.45, 0.1))),
                "session_s": np.round(np.exp(self.rng.normal(5.0, 0.9, n))).astype(np.int64),
            },
            [("check_balance", 0.3), ("transaction_history", 0.2)],
            0.008,
            6,
            1,
        )

        # login_failed -> password_locked
        c, t = self.poisson(0.02 * act * np.where(old, 2.0, 1.0))
        n = c.size
        attempts = np.minimum(self.rng.geometric(0.5, n), 6)
        cause = self.choice(n, _LOGIN_CAUSES, (0.6, 0.25, 0.15))
        login_failed = self.add(
            "login_failed",
            c,
            t,
            self.channel(n, {"app": 0.7, "miniprogram": 0.3}),
            {"attempts": attempts, "cause": cat(cause)},
            [
                ("reset_password", 1.2 + 0.9 * (attempts >= 3)),
                ("human_handoff", 0.5 * (cause == 2)),
                ("check_balance", -0.3),
            ],
            0.06 + 0.05 * np.minimum(attempts, 4),
            12,
            2,
        )
        c1, t1, _ = self.children(login_failed, np.where(attempts >= 3, 0.5, 0.08), 0.2)
        c2, t2 = self.poisson(0.002)
        c, t = np.concatenate([c1, c2]), np.concatenate([t1, t2])
        n = c.size
        lock_hours = np.asarray((1, 24))[self.choice(n, ("1", "24"), (0.7, 0.3))]
        locked = self.add(
            "password_locked",
            c,
            t,
            self.channel(n, {"core": 1.0}),
            {"lock_hours": lock_hours},
            [("reset_password", 2.6), ("human_handoff", 0.4 + 0.9 * (lock_hours == 24))],
            0.4,
            24,
            2,
        )

        # transfer_failed (core banking)
        c, t = self.poisson(0.018 * act * np.where(p.segment == 0, 1.3, 1.0))
        n = c.size
        amount = self.amount(n, 8.0, 1.4)
        reason = self.choice(n, _TRANSFER_REASONS, (0.35, 0.2, 0.15, 0.2, 0.1))
        big = amount >= 50_000
        failed = self.add(
            "transfer_failed",
            c,
            t,
            self.channel(n, {"core": 1.0}),
            {"amount": amount, "reason": cat(reason)},
            [
                (
                    "failed_transfer_inquiry",
                    1.8 - 1.2 * (reason == 0) + 1.0 * (reason == 1) - 0.6 * (reason == 2) + 0.5 * (reason == 3),
                ),
                ("check_balance", 1.9 * (reason == 0)),
                ("transfer_money", 2.2 * (reason == 2) + 1.0 * (reason == 3) + 0.3 * (reason == 0)),
                ("complain", 0.5 * (reason == 1) + 0.7 * (reason == 4) + 0.7 * big),
                ("human_handoff", 1.6 * (reason == 4) + 0.7 * big),
                ("report_fraud", 0.7 * (reason == 4)),
            ],
            0.3 + 0.2 * big,
            24,
            3,
        )

        # card_declined
        c, t = self.poisson(0.012 * act)
        n = c.size
        merchant = self.choice(n, _MERCHANTS, (0.35, 0.1, 0.25, 0.15, 0.15))
        reason = self.choice(n, _DECLINE_REASONS, (0.4, 0.15, 0.2, 0.25))
        self.add(
            "card_declined",
            c,
            t,
            self.channel(n, {"core": 1.0}),
            {"amount": self.amount(n, 6.0, 1.2), "merchant": cat(merchant), "reason": cat(reason)},
            [
                ("check_balance", 1.3 * (reason == 0)),
                ("credit_card_bill", 0.4 * (reason == 0) * p.credit_card[c]),
                ("replace_card", 2.2 * (reason == 1)),
                ("report_fraud", 1.0 * (reason == 2) + 0.5 * (merchant == 1)),
                ("human_handoff", 0.9 * (reason == 2)),
                ("reset_password", 1.7 * (reason == 3)),
                ("exchange_rate", 0.7 * (merchant == 1)),
            ],
            0.22,
            12,
            2,
        )

        # card_expiring (core) -> card_shipped; card_frozen -> card_shipped
        c, t = self.poisson(0.002 + 0.001 * p.credit_card)
        n = c.size
        days_left = self.rng.integers(3, 61, n)
        kind = np.where(p.credit_card[c] & (self.rng.random(n) < 0.5), 1, 0)
        soon = days_left <= 14
        expiring = self.add(
            "card_expiring",
            c,
            t,
            self.channel(n, {"core": 1.0}),
            {"days_left": days_left, "card_kind": cat(kind)},
            [("replace_card", 1.0 + 1.5 * soon), ("activate_card", 0.3), ("credit_card_bill", 0.2 * (kind == 1))],
            0.06 + 0.16 * soon,
            72,
            12,
        )
        c, t = self.poisson(0.0025 * act)
        n = c.size
        frozen = self.add(
            "card_frozen",
            c,
            t,
            self.channel(n, {"app": 0.8, "wecom": 0.2}),
            {"card_kind": cat(np.where(p.credit_card[c] & (self.rng.random(n) < 0.5), 1, 0))},
            [("report_lost_card", 2.8), ("replace_card", 0.9)],
            0.55,
            24,
            1,
        )
        c1, t1, i1 = self.children(expiring, 0.7, expiring.attrs["days_left"] * 12.0)
        c2, t2, i2 = self.children(frozen, 0.8, 72.0)
        c = np.concatenate([c1, c2])
        t = np.concatenate([t1, t2])
        n = c.size
        kind = np.concatenate([expiring.attrs["card_kind"][i1], frozen.attrs["card_kind"][i2]])
        courier = self.choice(n, _COURIERS, (0.5, 0.3, 0.2))
        shipped = self.add(
            "card_shipped",
            c,
            t,
            self.channel(n, {"core": 1.0}),
            {"card_kind": cat(kind), "courier": cat(courier)},
            [("activate_card", 2.4), ("branch_lookup", 1.6 * (courier == 2)), ("replace_card", 0.3)],
            0.3,
            96,
            24,
        )

        # credit_card_due (core): roughly monthly for card holders
        c, t = self.poisson(np.where(p.credit_card, 1 / 30, 0.0))
        n = c.size
        amount = self.amount(n, 8.3, 1.0)
        days_left = self.rng.integers(0, 11, n)
        urgent = days_left <= 3
        due = self.add(
            "credit_card_due",
            c,
            t,
            self.channel(n, {"core": 1.0}),
            {"amount": amount, "minimum": np.round(amount * 0.1, 2), "days_left": days_left},
            [
                ("credit_card_repay", 0.5 + 1.8 * urgent),
                ("credit_card_bill", 1.8 - 1.4 * urgent + 0.6 * (amount >= 20_000)),
                ("check_balance", 0.3 * urgent),
            ],
            0.08 + 0.1 * urgent,
            48,
            8,
        )

        # statement_issued
        c, t = self.poisson(1 / 30)
        n = c.size
        kind = np.where(p.credit_card[c] & (self.rng.random(n) < 0.5), 1, 0)
        self.add(
            "statement_issued",
            c,
            t,
            self.channel(n, {"core": 1.0}),
            {"statement": cat(kind), "transactions": self.rng.poisson(25, n)},
            [("transaction_history", 1.2), ("credit_card_bill", 0.9 * (kind == 1))],
            0.035,
            72,
            24,
        )

        # loan_instalment_due (core)
        c, t = self.poisson(np.where(p.loan, 1 / 30, 0.0))
        n = c.size
        days_left = self.rng.integers(0, 8, n)
        self.add(
            "loan_instalment_due",
            c,
            t,
            self.channel(n, {"core": 1.0}),
            {"amount": self.amount(n, 8.0, 0.7), "days_left": days_left},
            [("loan_repayment", 2.0 + 0.8 * (days_left <= 2)), ("check_balance", 0.5)],
            0.1 + 0.12 * (days_left <= 2),
            48,
            8,
        )

        # deposit_maturing (core)
        c, t = self.poisson(np.where(p.deposit, 0.007, 0.0))
        n = c.size
        amount = self.amount(n, 11.0, 1.0, 1000.0)
        days_left = self.rng.integers(1, 31, n)
        self.add(
            "deposit_maturing",
            c,
            t,
            self.channel(n, {"core": 1.0}),
            {"amount": amount, "days_left": days_left},
            [
                ("deposit_maturity", 2.1 + 0.7 * (days_left <= 7)),
                ("interest_rate", 0.7 + 1.1 * (amount >= 200_000)),
                ("transfer_money", 0.3),
            ],
            0.2,
            96,
            24,
        )

        # large_transaction
        c, t = self.poisson(0.004 * act * wealth)
        n = c.size
        amount = self.amount(n, 10.8, 0.8, 20_000.0)
        debit = self.rng.random(n) < 0.6
        self.add(
            "large_transaction",
            c,
            t,
            self.channel(n, {"core": 1.0}),
            {"amount": amount, "direction": cat(np.where(debit, 0, 1))},
            [
                ("transaction_history", 1.2 * debit),
                ("report_fraud", debit * (0.3 + 1.3 * (amount >= 200_000))),
                ("check_balance", 1.4 * ~debit),
            ],
            0.12,
            24,
            3,
        )

        # suspicious_login
        c, t = self.poisson(0.003 * act)
        n = c.size
        signal = self.choice(n, _SIGNALS, (0.5, 0.25, 0.25))
        self.add(
            "suspicious_login",
            c,
            t,
            self.channel(n, {"core": 1.0}),
            {"signal": cat(signal), "same_city": self.rng.random(n) < 0.6},
            [
                ("report_fraud", 1.6 + 1.0 * (signal == 1)),
                ("reset_password", 0.8),
                ("human_handoff", 0.5 * (signal == 2)),
            ],
            0.4,
            12,
            1,
        )

        # salary_credit
        c, t = self.poisson(np.where(old, 0.0, 1 / 30))
        n = c.size
        self.add(
            "salary_credit",
            c,
            t,
            self.channel(n, {"core": 1.0}),
            {"amount": self.amount(n, 9.0, 0.5)},
            [("check_balance", 0.5), ("transfer_money", 0.6), ("credit_card_repay", 0.3 * p.credit_card[c])],
            0.03,
            48,
            12,
        )

        # fx_page_view, rate_page_view
        c, t = self.poisson(0.008 * act * wealth * np.where(young, 1.5, 1.0))
        n = c.size
        dwell = np.round(np.exp(self.rng.normal(3.5, 0.8, n))).astype(np.int64)
        self.add(
            "fx_page_view",
            c,
            t,
            self.channel(n, {"app": 0.6, "miniprogram": 0.4}),
            {"currency": cat(self.choice(n, _CURRENCIES, (0.45, 0.15, 0.15, 0.15, 0.1))), "dwell_s": dwell},
            [("exchange_rate", 1.2 + 0.9 * (dwell >= 60))],
            0.06,
            24,
            4,
        )
        c, t = self.poisson(0.008 * act * np.where(p.segment > 0, 1.8, 1.0))
        n = c.size
        product = self.choice(n, _PRODUCTS, (0.5, 0.25, 0.25))
        self.add(
            "rate_page_view",
            c,
            t,
            self.channel(n, {"app": 0.5, "miniprogram": 0.3, "wecom": 0.2}),
            {"product": cat(product), "dwell_s": np.round(np.exp(self.rng.normal(3.5, 0.8, n))).astype(np.int64)},
            [
                ("interest_rate", 1.3),
                ("loan_repayment", 0.6 * (product == 1)),
                ("deposit_maturity", 0.4 * (product == 0)),
            ],
            0.06,
            24,
            4,
        )

        # branch_visit, branch_search
        c, t = self.poisson(0.004 * np.where(old, 3.0, 1.0) * np.where(p.city_tier == 3, 1.5, 1.0))
        n = c.size
        purpose = self.choice(n, _PURPOSES, (0.4, 0.25, 0.2, 0.15))
        wait = np.round(np.exp(self.rng.normal(2.9, 0.6, n))).astype(np.int64)
        long_wait = wait >= 45
        self.add(
            "branch_visit",
            c,
            t,
            self.channel(n, {"branch": 1.0}),
            {"purpose": cat(purpose), "wait_minutes": wait},
            [
                ("complain", 1.9 * long_wait),
                ("human_handoff", 0.5 * long_wait),
                ("activate_card", 0.9 * (purpose == 1)),
                ("branch_lookup", 0.4),
            ],
            0.04 + 0.18 * long_wait,
            48,
            6,
        )
        c, t = self.poisson(0.004 * np.where(p.city_tier == 3, 1.5, 1.0))
        n = c.size
        self.add(
            "branch_search",
            c,
            t,
            self.channel(n, {"miniprogram": 0.6, "app": 0.4}),
            {"radius_km": np.round(self.rng.uniform(0.5, 20, n), 1)},
            [("branch_lookup", 2.3)],
            0.15,
            12,
            1,
        )

        # complaint_filed, app_crash
        c, t = self.poisson(0.002)
        n = c.size
        category = self.choice(n, _COMPLAINTS, (0.3, 0.3, 0.2, 0.2))
        self.add(
            "complaint_filed",
            c,
            t,
            self.channel(n, {"wecom": 0.5, "app": 0.3, "branch": 0.2}),
            {"category": cat(category)},
            [("complain", 2.2), ("human_handoff", 1.0), ("transaction_history", 0.4 * (category == 0))],
            0.4,
            72,
            12,
        )
        c, t = self.poisson(0.006 * act * np.where(app_user, 1.5, 1.0))
        n = c.size
        screen = self.choice(n, _SCREENS, (0.25, 0.3, 0.15, 0.3))
        self.add(
            "app_crash",
            c,
            t,
            self.channel(n, {"app": 1.0}),
            {"screen": cat(screen), "app_version": cat(self.choice(n, _VERSIONS, (0.2, 0.3, 0.5)))},
            [
                ("complain", 0.5),
                ("human_handoff", 0.3),
                ("transfer_money", 0.9 * (screen == 1)),
                ("failed_transfer_inquiry", 0.8 * (screen == 1)),
                ("reset_password", 1.0 * (screen == 0)),
                ("activate_card", 0.5 * (screen == 2)),
            ],
            0.15,
            6,
            1,
        )

        # Resolutions: many customers settle the matter themselves, and then do not ask about it. A resolving
        # event cancels its cause's effect (same size, same half-life), so what counts is the order of the two.
        for origin, name, probability, delay_h, channels, effects, copied in (
            (locked, "password_reset", 0.5, 2.0, {"app": 0.7, "miniprogram": 0.3}, [("reset_password", -2.6)], ()),
            (
                failed,
                "transfer_succeeded",
                0.4,
                3.0,
                {"core": 1.0},
                [("failed_transfer_inquiry", -1.8), ("transfer_money", -0.8)],
                ("amount",),
            ),
            (
                shipped,
                "card_activated",
                0.5,
                24.0,
                {"app": 0.6, "branch": 0.2, "ivr": 0.2},
                [("activate_card", -2.4)],
                ("card_kind",),
            ),
            (
                due,
                "credit_card_repaid",
                0.5,
                24.0,
                {"core": 1.0},
                [("credit_card_repay", -2.0), ("credit_card_bill", -1.0)],
                ("amount",),
            ),
        ):
            c, t, parent = self.children(origin, probability, delay_h)
            n = c.size
            self.add(
                name,
                c,
                t,
                self.channel(n, channels),
                {key: origin.attrs[key][parent] for key in copied},
                [(intent, np.full(n, weight)) for intent, weight in effects],
                0.0,
                origin.half_life_h,
                1,
            )

        # Pure noise: no effect on the intent, never triggers a contact.
        for name, rate, channels, columns in (
            ("push_opened", 0.04, {"app": 1.0}, {"campaign": _CAMPAIGNS}),
            ("marketing_sms_sent", 0.05, {"core": 1.0}, {"campaign": _CAMPAIGNS}),
            ("page_view_home", 0.06, {"app": 0.6, "miniprogram": 0.4}, {"dwell_s": None}),
            ("wechat_article_read", 0.025, {"wecom": 1.0}, {"topic": _TOPICS, "read_s": None}),
            ("points_redeemed", 0.004, {"app": 1.0}, {"points": None}),
        ):
            c, t = self.poisson(rate * act)
            n = c.size
            attrs = {
                key: cat(self.choice(n, values))
                if values is not None
                else np.round(np.exp(self.rng.normal(4.0, 1.0, n))).astype(np.int64)
                for key, values in columns.items()
            }
            self.add(name, c, t, self.channel(n, channels), attrs, [], 0.0, 1, 1)
        return self.blocks


_DEVICES = ("ios", "android", "harmonyos")
_LOGIN_CAUSES = ("wrong_password", "wrong_otp", "device_change")
# The sandbox bank's own failure codes (bankcore.transfers), so simulated and live core events share them.
_TRANSFER_REASONS = (
    "insufficient_funds",
    "payee_bank_down",
    "over_single_limit",
    "payee_account_closed",
    "risk_control",
)
_MERCHANTS = ("online", "overseas", "supermarket", "fuel", "travel")
_DECLINE_REASONS = ("insufficient_funds", "card_expired", "risk_control", "wrong_pin")
_CARD_KINDS = ("debit", "credit")
_COURIERS = ("sf_express", "ems", "branch_pickup")
_SIGNALS = ("new_device", "foreign_ip", "emulator")
_CURRENCIES = ("USD", "EUR", "JPY", "HKD", "GBP")
_PRODUCTS = ("deposit", "loan", "wealth")
_PURPOSES = ("cash", "card", "account", "wealth")
_COMPLAINTS = ("fees", "service", "app", "wait_time")
_SCREENS = ("login", "transfer", "card", "home")
_VERSIONS = ("5.1.0", "5.2.3", "5.3.1")
_CAMPAIGNS = ("spring_sale", "wealth_week", "card_cashback", "fund_promo")
_TOPICS = ("market_news", "fraud_awareness", "product_intro", "holiday_hours")

# Which value vocabulary each categorical attribute key uses (the generator stores indices).
_CATEGORICAL_VALUES: dict[tuple[str, str], tuple[str, ...]] = {
    ("app_login", "device"): _DEVICES,
    ("login_failed", "cause"): _LOGIN_CAUSES,
    ("transfer_failed", "reason"): _TRANSFER_REASONS,
    ("card_declined", "merchant"): _MERCHANTS,
    ("card_declined", "reason"): _DECLINE_REASONS,
    ("card_expiring", "card_kind"): _CARD_KINDS,
    ("card_frozen", "card_kind"): _CARD_KINDS,
    ("card_activated", "card_kind"): _CARD_KINDS,
    ("card_shipped", "card_kind"): _CARD_KINDS,
    ("card_shipped", "courier"): _COURIERS,
    ("statement_issued", "statement"): _CARD_KINDS,
    ("large_transaction", "direction"): ("debit", "credit"),
    ("suspicious_login", "signal"): _SIGNALS,
    ("fx_page_view", "currency"): _CURRENCIES,
    ("rate_page_view", "product"): _PRODUCTS,
    ("branch_visit", "purpose"): _PURPOSES,
    ("complaint_filed", "category"): _COMPLAINTS,
    ("app_crash", "screen"): _SCREENS,
    ("app_crash", "app_version"): _VERSIONS,
    ("push_opened", "campaign"): _CAMPAIGNS,
    ("marketing_sms_sent", "campaign"): _CAMPAIGNS,
    ("wechat_article_read", "topic"): _TOPICS,
}


def _draw_profiles(rng: np.random.Generator, n: int) -> _Profiles:
    age = rng.choice(5, size=n, p=[0.15, 0.3, 0.3, 0.17, 0.08])
    wealth_draw = rng.random(n) + 0.08 * age
    segment = np.select([wealth_draw > 1.22, wealth_draw > 0.88], [2, 1], 0)
    city_tier = rng.choice(3, size=n, p=[0.35, 0.4, 0.25]) + 1
    credit_card = rng.random(n) < 0.45 + 0.15 * (segment > 0) - 0.2 * (age == 4)
    loan = rng.random(n) < np.where((age >= 1) & (age <= 3), 0.35, 0.1)
    deposit = rng.random(n) < 0.3 + 0.1 * age + 0.2 * (segment > 0)
    preferred_p = np.where((age == 4)[:, None], [[0.2, 0.2, 0.1, 0.5]], [[0.45, 0.2, 0.2, 0.15]])
    preferred = (rng.random(n)[:, None] > np.cumsum(preferred_p, axis=1)).sum(axis=1)
    tenure = np.round(np.minimum(rng.exponential(6.0, n), 30.0), 1)
    activity = np.exp(rng.normal(-0.125, 0.5, n))
    return _Profiles(n, age, segment, city_tier, credit_card, loan, deposit, preferred, tenure, activity)


def _base_logits(p: _Profiles) -> np.ndarray:
    logits = np.tile(np.asarray([_BASE_LOGITS[name] for name in INTENTS]), (p.n, 1))

    def add(intent: str, weight: np.ndarray | float) -> None:
        logits[:, INTENT_INDEX[intent]] += weight

    old, young = p.age == 4, p.age == 0
    add("branch_lookup", 0.8 * old + 0.4 * (p.city_tier == 3))
    add("human_handoff", 0.8 * old + 0.5 * (p.segment == 2))
    add("reset_password", 0.3 * old + 0.3 * (p.tenure < 1))
    add("check_balance", 0.3 * old)
    add("transfer_money", 0.3 * young)
    add("exchange_rate", 0.3 * young + 0.6 * (p.segment == 2) + 0.3 * (p.segment == 1))
    add("interest_rate", 0.8 * (p.segment == 2) + 0.4 * (p.segment == 1))
    add("deposit_maturity", 0.5 * (p.segment == 2))
    add("credit_card_bill", np.where(p.credit_card, 0.6, -2.0))
    add("credit_card_repay", np.where(p.credit_card, 0.6, -2.0))
    add("loan_repayment", np.where(p.loan, 0.8, -2.0))
    add("deposit_maturity", np.where(p.deposit, 0.5, -1.5))
    add("activate_card", 0.6 * (p.tenure < 1))
    return logits * PROFILE_SCALE


def _profile_records(p: _Profiles, ids: list[str]) -> list[Profile]:
    columns = zip(
        p.age.tolist(),
        p.segment.tolist(),
        p.city_tier.tolist(),
        p.credit_card.tolist(),
        p.loan.tolist(),
        p.deposit.tolist(),
        p.preferred.tolist(),
        p.tenure.tolist(),
        strict=True,
    )
    return [
        Profile(
            customer_id=customer_id,
            attrs={
                "age_band": AGE_BANDS[age],
                "segment": SEGMENTS[segment],
                "city_tier": tier,
                "has_credit_card": card,
                "has_loan": loan,
                "has_deposit": deposit,
                "preferred_channel": CONTACT_CHANNELS[preferred],
                "tenure_years": tenure,
            },
        )
        for customer_id, (age, segment, tier, card, loan, deposit, preferred, tenure) in zip(ids, columns, strict=True)
    ]


def _shifted_names(vocab_seed: int | None) -> tuple[dict[str, str], dict[str, str]]:
    """Renames of the non-core event types and their attribute keys (identity without a seed)."""
    if vocab_seed is None:
        return {}, {}
    rng = np.random.default_rng([vocab_seed, 0x5EED])
    letters = np.asarray(list(string.ascii_lowercase))

    def token(prefix: str) -> str:
        return prefix + "".join(rng.choice(letters, 7).tolist())

    type_map = {t: token("evt_") for t in _ALL_TYPES if t not in CORE_EVENT_TYPES}
    key_map = {k: token("k_") for k in sorted(_NONCORE_KEYS)}
    return type_map, key_map


_ALL_TYPES: tuple[str, ...] = (
    "app_login",
    "login_failed",
    "password_locked",
    "transfer_failed",
    "card_declined",
    "card_expiring",
    "card_frozen",
    "card_shipped",
    "credit_card_due",
    "statement_issued",
    "loan_instalment_due",
    "deposit_maturing",
    "large_transaction",
    "suspicious_login",
    "salary_credit",
    "fx_page_view",
    "rate_page_view",
    "branch_visit",
    "branch_search",
    "complaint_filed",
    "app_crash",
    "push_opened",
    "marketing_sms_sent",
    "page_view_home",
    "wechat_article_read",
    "points_redeemed",
    "password_reset",
    "transfer_succeeded",
    "card_activated",
    "credit_card_repaid",
)
_NONCORE_KEYS: frozenset[str] = frozenset(
    {
        "device",
        "session_s",
        "attempts",
        "cause",
        "lock_hours",
        "amount",
        "merchant",
        "reason",
        "card_kind",
        "courier",
        "statement",
        "transactions",
        "direction",
        "signal",
        "same_city",
        "currency",
        "dwell_s",
        "product",
        "purpose",
        "wait_minutes",
        "radius_km",
        "category",
        "screen",
        "app_version",
        "campaign",
        "topic",
        "read_s",
        "points",
    }
)


def _attr_lists(block: _Block, key_map: Mapping[str, str]) -> list[dict[str, Any]]:
    keys: list[str] = []
    columns: list[list[Any]] = []
    for key, column in block.attrs.items():
        values = _CATEGORICAL_VALUES.get((block.type, key))
        if values is not None:
            as_list: list[Any] = np.asarray(values, dtype=object)[column].tolist()
        elif column.dtype == np.float64:
            as_list = [round(v, 2) for v in column.tolist()]
        else:
            as_list = column.tolist()
        keys.append(key_map.get(key, key) if block.type not in CORE_EVENT_TYPES else key)
        columns.append(as_list)
    return (
        [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]
        if keys
        else [{} for _ in range(block.customer.size)]
    )


def simulate(
    customers: int,
    days: int,
    seed: int = 0,
    *,
    vocab_seed: int | None = None,
    start: dt.datetime = DEFAULT_START,
    max_events: int = DEFAULT_MAX_EVENTS,
    lookback: dt.timedelta = DEFAULT_LOOKBACK,
) -> SimulatedData:
    """Simulates `customers` customers over `days` days; the same arguments give the same data."""
    if customers < 1 or days < 1:
        raise ValueError("customers and days must be positive")
    # Millions of small records and no cycles among them: the cyclic collector would only rescan them.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _simulate(customers, days, seed, vocab_seed, start, max_events, lookback)
    finally:
        if collecting:
            gc.enable()


def _simulate(
    customers: int,
    days: int,
    seed: int,
    vocab_seed: int | None,
    start: dt.datetime,
    max_events: int,
    lookback: dt.timedelta,
) -> SimulatedData:
    rng = np.random.default_rng(seed)
    profiles = _draw_profiles(rng, customers)
    ids = [f"S{seed:03d}-{i:07d}" for i in range(customers)]
    blocks = _Generator(rng, profiles, days).generate()

    # All events, sorted by (customer, time): the key makes "strictly before" a searchsorted.
    type_of = np.concatenate([np.full(b.customer.size, i, dtype=np.int64) for i, b in enumerate(blocks)])
    customer = np.concatenate([b.customer for b in blocks])
    t = np.concatenate([b.t for b in blocks])
    effects = np.concatenate([b.effects for b in blocks])
    half_life = np.concatenate([np.full(b.customer.size, b.half_life_h * HOUR, dtype=np.float64) for b in blocks])
    key = customer * (1 << 40) + t
    order = np.argsort(key, kind="stable")
    type_of, customer, t, effects, half_life, key = (a[order] for a in (type_of, customer, t, effects, half_life, key))

    contact_customer, contact_t, contact_channel = _draw_contacts(rng, profiles, blocks, days)
    logits = _base_logits(profiles)[contact_customer]
    logits += np.asarray(
        [[_CHANNEL_LOGITS[ch].get(name, 0.0) * PROFILE_SCALE for name in INTENTS] for ch in CONTACT_CHANNELS]
    )[contact_channel]
    contact_key = contact_customer * (1 << 40) + contact_t
    end = np.searchsorted(key, contact_key, side="left")
    begin = np.maximum(np.searchsorted(key, contact_key - int(lookback.total_seconds()), side="left"), end - max_events)
    for back in range(1, max_events + 1):
        index = end - back
        valid = index >= begin
        if not valid.any():
            break
        rows = index[valid]
        age = (contact_t[valid] - t[rows]).astype(np.float64)
        logits[valid] += effects[rows] * np.power(0.5, age / half_life[rows])[:, None]
    logits -= logits.max(axis=1, keepdims=True)
    posterior = np.exp(logits)
    posterior /= posterior.sum(axis=1, keepdims=True)
    cumulative = np.cumsum(posterior, axis=1)
    draws = rng.random(posterior.shape[0])[:, None]
    intent = np.minimum((draws > cumulative).sum(axis=1), N_INTENTS - 1)

    type_map, key_map = _shifted_names(vocab_seed)
    all_attrs = [row for block in blocks for row in _attr_lists(block, key_map)]
    channel_of = np.concatenate([b.channel for b in blocks])[order]
    id_array = np.asarray(ids, dtype=object)
    times = _timestamps(start, np.concatenate([t, contact_t]))
    event_times, contact_times = times[: t.size], times[t.size :]
    # Positional construction through map(): the records are built millions of times.
    events = list(
        map(
            Event,
            id_array[customer].tolist(),
            event_times,
            np.asarray(_EVENT_CHANNELS, dtype=object)[channel_of].tolist(),
            np.asarray([type_map.get(b.type, b.type) for b in blocks], dtype=object)[type_of].tolist(),
            [all_attrs[i] for i in order.tolist()],
        )
    )
    contacts = list(
        map(
            Contact,
            id_array[contact_customer].tolist(),
            contact_times,
            np.asarray(CONTACT_CHANNELS, dtype=object)[contact_channel].tolist(),
            np.asarray(INTENTS, dtype=object)[intent].tolist(),
        )
    )
    rounded = np.round(posterior, 6).tolist()
    posteriors = [
        Posterior(customer_id=contact.customer_id, ts=contact.ts, probabilities=dict(zip(INTENTS, row, strict=True)))
        for contact, row in zip(contacts, rounded, strict=True)
    ]
    return SimulatedData(
        profiles=_profile_records(profiles, ids),
        events=events,
        contacts=contacts,
        posteriors=posteriors,
        type_names={b.type: type_map.get(b.type, b.type) for b in blocks},
    )


def _timestamps(start: dt.datetime, seconds: np.ndarray) -> list[dt.datetime]:
    """Datetimes for offsets in seconds; offsets repeat a lot, so each distinct one is built once."""
    unique, inverse = np.unique(seconds, return_inverse=True)
    built = [start + dt.timedelta(seconds=s) for s in unique.tolist()]
    return [built[i] for i in inverse.tolist()]


def _draw_contacts(
    rng: np.random.Generator, p: _Profiles, blocks: list[_Block], days: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background contacts plus contacts triggered by events; sorted by (customer, time)."""
    horizon = days * DAY
    background_rate = 0.01 * np.where(p.age == 4, 1.5, 1.0)
    counts = rng.poisson(background_rate * days)
    customers = [np.repeat(np.arange(p.n, dtype=np.int64), counts)]
    times = [rng.integers(0, horizon, size=customers[0].size, dtype=np.int64)]
    # Triggered contacts prefer a channel that fits their trigger (fraud and locks by phone).
    lean: list[np.ndarray] = [np.full(customers[0].size, -1, dtype=np.int64)]
    phone_types = {"suspicious_login", "password_locked", "card_frozen", "transfer_failed"}
    for block in blocks:
        fire = rng.random(block.customer.size) < block.trigger
        if not fire.any():
            continue
        delay = 120 + (rng.exponential(block.delay_h * HOUR, fire.sum())).astype(np.int64)
        t = block.t[fire] + delay
        inside = t < horizon
        customers.append(block.customer[fire][inside])
        times.append(t[inside])
        lean.append(np.full(inside.sum(), 3 if block.type in phone_types else -1, dtype=np.int64))
    customer = np.concatenate(customers)
    t = np.concatenate(times)
    leaning = np.concatenate(lean)
    n = customer.size
    draw = rng.random(n)
    channel = np.where(
        draw < 0.55,
        p.preferred[customer],
        np.where((leaning >= 0) & (draw < 0.8), np.maximum(leaning, 0), rng.integers(0, len(CONTACT_CHANNELS), n)),
    )
    order = np.lexsort((t, customer))
    customer, t, channel = customer[order], t[order], channel[order]
    # One contact per customer and second: (customer_id, ts) identifies a contact and its posterior.
    first = np.r_[True, (customer[1:] != customer[:-1]) | (t[1:] != t[:-1])]
    return customer[first], t[first], channel[first]


class PosteriorPredictor:
    """The simulator's own posterior as a Predictor: the Bayes-optimal model of simulated data."""

    name = "bayes_optimal"

    def __init__(self, posteriors: Iterable[Posterior], intents: Sequence[str] | None = None) -> None:
        table = {(p.customer_id, p.ts): p.probabilities for p in posteriors}
        if intents is None:
            first = next(iter(table.values()), {})
            intents = tuple(first) if first else INTENTS
        self._intents = tuple(intents)
        self._table = table

    @classmethod
    def from_jsonl(cls, path: str | Path, intents: Sequence[str] | None = None) -> PosteriorPredictor:
        return cls(read_posteriors(path), intents)

    @property
    def intents(self) -> tuple[str, ...]:
        return self._intents

    def predict_proba(self, examples: Sequence[Example]) -> np.ndarray:
        out = np.empty((len(examples), len(self._intents)))
        for row, example in enumerate(examples):
            found = self._table.get((example.contact.customer_id, example.contact.ts))
            if found is None:
                raise KeyError(f"no posterior for {example.contact.customer_id} at {format_ts(example.contact.ts)}")
            out[row] = [float(found.get(intent, 0.0)) for intent in self._intents]
        out /= out.sum(axis=1, keepdims=True)
        return out


def read_posteriors(path: str | Path) -> list[Posterior]:
    out = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                out.append(Posterior(record["customer_id"], parse_ts(record["ts"]), record["posterior"]))
    return out


def expected_top1(posteriors: Iterable[Posterior]) -> float:
    """The expected top-1 accuracy of predicting each posterior's argmax: the Bayes-optimal accuracy."""
    values = [max(p.probabilities.values()) for p in posteriors]
    return float(np.mean(values)) if values else float("nan")

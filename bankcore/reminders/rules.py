"""The reminder rules file that ops edit (YAML): what to remind of, when, on which channels, under which policy.

Format (see `rules.yaml` next to this module for the shipped file):

    version: 1
    policy:
      quiet_hours: {start: "21:00", end: "08:00"}      # customer's local time; may cross midnight
      frequency_caps:                                   # sends per customer and channel in a sliding window
        default: {max: 2, per_hours: 24}
        phone: {max: 1, per_hours: 24}                  # optional per-channel overrides
      retry: {base_seconds: 300, cap_seconds: 3600, max_attempts: 4}
      rate_limits: {phone: 5.0, wecom: 50.0}            # campaign sends per second, per channel
    rules:
      - id: loan_instalment
        kind: loan_instalment_due
        offsets_days: [3, 1]                            # T-3 and T-1
        send_at: "10:00"                                # customer's local time
        channels: [wecom, miniprogram, phone]           # preference order; the policy falls back along it
        topic: loan                                     # opt-out topic; defaults by kind
        min_amount: "100.00"                            # optional: skip smaller amounts
      - id: maintenance_notice
        kind: service_notice
        offsets_days: [1]
        channels: [wecom, miniprogram]
        opt_in_required: true                           # only customers whose profile says so
        notice: {id: "maint-20261205", date: "2026-12-05", text: "..."}

Every mistake is reported as one `RulesFileError` naming the file and the place (`rules[2] (card_expiring)
.offsets_days[0]: ...`), never a partial configuration.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bankcore.reminders.policy import FrequencyCap, PolicyConfig, QuietHours
from bankcore.rules_files import read_rules_document

KINDS = (
    "loan_instalment_due",
    "card_statement_due",
    "card_expiring",
    "deposit_maturing",
    "auto_debit_failed",
    "service_notice",
)
Kind = Literal[
    "loan_instalment_due",
    "card_statement_due",
    "card_expiring",
    "deposit_maturing",
    "auto_debit_failed",
    "service_notice",
]
CHANNELS = ("wecom", "miniprogram", "phone", "sms", "webchat")
Channel = Literal["wecom", "miniprogram", "phone", "sms", "webchat"]
TOPICS = ("loan", "credit_card", "card", "deposit", "service")
Topic = Literal["loan", "credit_card", "card", "deposit", "service"]

# The opt-out topic a rule uses when the file does not say.
DEFAULT_TOPIC: dict[str, str] = {
    "loan_instalment_due": "loan",
    "card_statement_due": "credit_card",
    "card_expiring": "card",
    "deposit_maturing": "deposit",
    "auto_debit_failed": "loan",
    "service_notice": "service",
}
# Reminders are planned at most a year ahead; a larger offset is a typo (days vs hours, an extra zero).
MAX_OFFSET_DAYS = 366


class RulesFileError(ValueError):
    """A reminder rules file that cannot be used; the message names the file, the place and what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _parse_clock(value: Any) -> dt.time:
    """ "HH:MM" local time; YAML may already have turned an unquoted 10:00 into minutes (600)."""
    if isinstance(value, dt.time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads unquoted 10:00 as the sexagesimal integer 600.
        if 0 <= value < 24 * 60:
            return dt.time(value // 60, value % 60)
        raise ValueError(f'{value} is not a time of day; write it quoted, like "10:00"')
    if not isinstance(value, str):
        raise ValueError('must be a local time written "HH:MM"')
    try:
        parsed = dt.time.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f'{value!r} is not a local time written "HH:MM"') from None
    if parsed.second or parsed.microsecond or parsed.tzinfo is not None:
        raise ValueError(f'{value!r}: write hours and minutes only, without a zone ("HH:MM")')
    return parsed


class QuietHoursSection(_Strict):
    start: dt.time = dt.time(21, 0)
    end: dt.time = dt.time(8, 0)

    _clock = field_validator("start", "end", mode="before")(_parse_clock)


class CapSection(_Strict):
    max: int = Field(default=2, ge=1, le=1000)
    per_hours: float = Field(default=24.0, gt=0, le=24 * 31)


class RetrySection(_Strict):
    base_seconds: float = Field(default=300.0, gt=0)
    cap_seconds: float = Field(default=3600.0, gt=0)
    max_attempts: int = Field(default=4, ge=1, le=100)

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> RetrySection:
        if self.cap_seconds < self.base_seconds:
            raise ValueError("cap_seconds must be at least base_seconds")
        return self


CapKey = Literal["default", "wecom", "miniprogram", "phone", "sms", "webchat"]


def _default_caps() -> dict[CapKey, CapSection]:
    return {"default": CapSection()}


class PolicySection(_Strict):
    quiet_hours: QuietHoursSection = QuietHoursSection()
    frequency_caps: dict[CapKey, CapSection] = Field(default_factory=_default_caps)
    retry: RetrySection = RetrySection()
    rate_limits: dict[Channel, float] = Field(default_factory=dict)

    @field_validator("rate_limits")
    @classmethod
    def _positive_rates(cls, value: dict[str, float]) -> dict[str, float]:
        for channel, rate in value.items():
            if not rate > 0:
                raise ValueError(f"{channel}: a rate limit is sends per second and must be above 0")
        return value


class ServiceNotice(_Strict):
    """The notice a service_notice rule announces; `date` is the day it is about (the due date)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
    date: dt.date
    text: str = Field(min_length=1, max_length=500)


class Rule(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,47}$")
    kind: Kind
    enabled: bool = True
    offsets_days: tuple[int, ...] = Field(min_length=1)
    send_at: dt.time = dt.time(10, 0)
    channels: tuple[Channel, ...] = Field(min_length=1)
    topic: Topic | None = None
    min_amount: Decimal | None = Field(default=None, ge=0)
    opt_in_required: bool = False
    notice: ServiceNotice | None = None

    _clock = field_validator("send_at", mode="before")(_parse_clock)

    @field_validator("offsets_days")
    @classmethod
    def _offsets(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for offset in value:
            if not 0 <= offset <= MAX_OFFSET_DAYS:
                raise ValueError(f"{offset}: offsets are days before the due date, 0..{MAX_OFFSET_DAYS}")
        if len(set(value)) != len(value):
            raise ValueError("an offset is listed twice")
        # Largest first: T-3 before T-1, the order reminders go out.
        return tuple(sorted(value, reverse=True))

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a channel is listed twice")
        return value

    @model_validator(mode="after")
    def _kind_specific(self) -> Rule:
        if self.kind == "service_notice" and self.notice is None:
            raise ValueError("a service_notice rule needs notice: {id, date, text}")
        if self.kind != "service_notice" and self.notice is not None:
            raise ValueError("notice: only service_notice rules announce a notice")
        if self.kind == "auto_debit_failed" and self.offsets_days != (0,):
            raise ValueError("auto_debit_failed reminders go out as soon as the failure is seen: offsets_days: [0]")
        if self.min_amount is not None and self.kind in ("card_expiring", "service_notice"):
            raise ValueError(f"min_amount: {self.kind} reminders carry no amount")
        return self

    @property
    def opt_out_topic(self) -> str:
        return self.topic or DEFAULT_TOPIC[self.kind]

    @property
    def max_offset(self) -> int:
        return self.offsets_days[0]


class RulesDocument(_Strict):
    version: int = Field(ge=1)
    policy: PolicySection = PolicySection()
    rules: tuple[Rule, ...] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> RulesDocument:
        ids = [rule.id for rule in self.rules]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"rules: duplicate rule id(s) {', '.join(duplicated)}")
        return self


@dataclass(frozen=True)
class ReminderRules:
    """A validated rules file; `version` is a digest of its effective content (logged with each plan)."""

    rules: tuple[Rule, ...]
    policy_section: PolicySection
    version: str
    source: str

    @property
    def enabled_rules(self) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if rule.enabled)

    def policy(self) -> PolicyConfig:
        return policy_config(self.policy_section)


def policy_config(section: PolicySection) -> PolicyConfig:
    """The pure policy's configuration from the file's policy section."""
    caps: dict[str, FrequencyCap] = {
        str(channel): FrequencyCap(max_sends=cap.max, window=dt.timedelta(hours=cap.per_hours))
        for channel, cap in section.frequency_caps.items()
    }
    default = caps.pop("default", FrequencyCap(max_sends=2, window=dt.timedelta(hours=24)))
    return PolicyConfig(
        quiet=QuietHours(section.quiet_hours.start, section.quiet_hours.end),
        default_cap=default,
        channel_caps=caps,
        retry_base=dt.timedelta(seconds=section.retry.base_seconds),
        retry_cap=dt.timedelta(seconds=section.retry.cap_seconds),
        max_attempts=section.retry.max_attempts,
        rate_limits={str(channel): rate for channel, rate in section.rate_limits.items()},
    )


def _place(loc: tuple[int | str, ...], document: Any) -> str:
    """`rules[2] (card_expiring).offsets_days[0]` from pydantic's ('rules', 2, 'offsets_days', 0)."""
    text = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
            if index == 1 and loc[0] == "rules":
                rule_id = _rule_id(document, part)
                if rule_id:
                    text += f" ({rule_id})"
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


def _rule_id(document: Any, index: int) -> str | None:
    try:
        rule_id = document["rules"][index]["id"]
    except (KeyError, IndexError, TypeError):
        return None
    return rule_id if isinstance(rule_id, str) else None


def build_rules(document: Any, source: str = "<rules>") -> ReminderRules:
    """Validate a parsed rules document; RulesFileError naming the source and place when it is unusable."""
    try:
        if not isinstance(document, Mapping):
            raise ValueError("the rules file must be a YAML mapping with at least 'version'")
        parsed = RulesDocument.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{_place(tuple(item['loc']), document)}: {item['msg'].removeprefix('Value error, ')}"
            for item in error.errors()
        )
        raise RulesFileError(f"{source}: {problems}") from None
    except ValueError as error:
        raise RulesFileError(f"{source}: {error}") from None
    effective = {
        "policy": parsed.policy.model_dump(mode="json"),
        "rules": [rule.model_dump(mode="json") for rule in parsed.rules],
    }
    digest = hashlib.sha256(json.dumps(effective, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
    return ReminderRules(rules=parsed.rules, policy_section=parsed.policy, version=digest[:16], source=source)


def load_rules(path: str | Path) -> ReminderRules:
    """Read and validate a rules file; RulesFileError (never a partial configuration) when it is unusable."""
    path = Path(path)
    return build_rules(read_rules_document(path, RulesFileError), str(path))


DEFAULT_RULES_PATH = Path(__file__).with_name("rules.yaml")

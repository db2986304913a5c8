"""A simulated bank's transfers and cross-channel events: a varied legitimate population and three scam patterns.

Written as a labelled set (`bankcore.risk.dataset`). Deterministic for a seed: each customer has its own
random stream, so a customer's data does not depend on how many others are simulated.

Legitimate customers come from five personas (salary earners, small-amount frequent payers, business owners,
elderly rare users, students) with their own rates, amounts, payee circles, channels and hours, plus regular
obligations (rent, family support, payroll, repayments) and income (salary, pension, allowance, customers'
payments) as `incoming_transfer` events. Every signal a scam shows also occurs legitimately:

- large transfers to new payees (tuition, car deposit, renovation, hospital), often after a limit change or an
  early deposit withdrawal; frequent small new payees; payments abroad;
- spam-call tags (`suspicious_call` and its synonyms) arriving at random, more often for the elderly;
- new phones (a new device, often a password reset, sometimes a new SIM), app reinstalls, forgotten passwords,
  logins flagged while travelling, remote help from family (`screen_share_detected`);
- bursts: payroll fan-outs, splitting a bill among friends, organising a trip (friends pay in, the organiser
  pays several new payees); night transfers; voice and IVR transfers, calls from an unregistered number;
- what customers say: mostly plain requests, sometimes words such as 冻结 or 挂失 about their own card, and
  rarely words on the fraud-phrase list used innocently (返利 for card cash-back, 投标保证金).

Scams (label "scam", at most one episode per customer, after the warm-up) are about 1-3% of labelled records:

- `coached`: a scammer on the phone talks the customer into paying a new payee. The call is tagged in
  most cases but not all; coaching phrases are typed or said in a minority of sessions (half of them not on
  the rules' phrase list); a limit change, an early deposit withdrawal, a loan or screen sharing happens in
  some; one to four transfers, often a large share of savings; a "task" variant starts with small payments.
- `takeover`: a password reset or SIM change and a new device shortly before (or, with stolen credentials, a
  new device and a flagged login only), transfers from the attacker's device to new payees draining a large
  share of the balance, often at night.
- `mule`: the account receives several incoming transfers, then fans the money out to several new payees
  within minutes to hours, sometimes again a day or two later.

A device counts as known once it has been bound to the customer for a day. Transfers in the first
`warmup_days` are written without a label: they are history for the labelled ones, not examples.
`vocabulary="alt"` renames every event type to names the rules file does not know.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bankcore.events import UTC, Event
from bankcore.risk.dataset import LabelledSetWriter, Session, TransferRecord
from bankcore.risk.signals import payee_key

VOCABULARIES = ("default", "alt")
DEFAULT_START = dt.datetime(2025, 3, 1, tzinfo=UTC)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)
DEVICE_CHANNELS = ("app", "wecom", "miniprogram")
SCAM_PATTERNS = ("coached", "takeover", "mule")

# Event roles → type names. The default vocabulary spells each risk signal several ways, as the rules file
# maps them; the other roles are open-vocabulary types no rule reads.
DEFAULT_TYPES: dict[str, tuple[tuple[str, float], ...]] = {
    "flagged_call": (("suspicious_call", 0.6), ("flagged_incoming_call", 0.25), ("fraud_call_alert", 0.15)),
    "password_reset": (("password_reset", 0.6), ("password_change", 0.25), ("login_password_reset", 0.15)),
    "new_device": (("new_device", 0.6), ("device_bound", 0.25), ("new_device_login", 0.15)),
    "sim_change": (("sim_change", 0.6), ("sim_swap", 0.25), ("phone_number_change", 0.15)),
    "suspicious_login": (("suspicious_login", 0.6), ("login_anomaly", 0.25), ("risky_login", 0.15)),
}
# Another bank's vocabulary: no name here is in the rules file, so only the learned score can use them.
ALT_TYPES: dict[str, tuple[tuple[str, float], ...]] = {
    "flagged_call": (("risk_call_tag", 0.7), ("telco_fraud_flag", 0.3)),
    "password_reset": (("acct_pwd_reset", 0.7), ("credential_update", 0.3)),
    "new_device": (("handset_registered", 0.7), ("terminal_binding", 0.3)),
    "sim_change": (("msisdn_swap", 0.7), ("subscriber_card_change", 0.3)),
    "suspicious_login": (("auth_anomaly", 0.7), ("geo_velocity_alert", 0.3)),
    "login": (("session_start", 1.0),),
    "app_open": (("app_launch", 1.0),),
    "view_balance": (("balance_enquiry", 1.0),),
    "statement_viewed": (("stmt_open", 1.0),),
    "card_payment": (("pos_purchase", 1.0),),
    "bill_payment": (("utility_payment", 1.0),),
    "incoming_transfer": (("credit_in", 1.0),),
    "atm_withdrawal": (("cash_out", 1.0),),
    "notification_opened": (("push_read", 1.0),),
    "profile_update": (("kyc_edit", 1.0),),
    "transfer_limit_change": (("quota_adjust", 1.0),),
    "deposit_early_withdrawal": (("td_break", 1.0),),
    "loan_disbursed": (("credit_drawdown", 1.0),),
    "screen_share_detected": (("rdp_session_seen", 1.0),),
    "card_lost_report": (("card_block_req", 1.0),),
    "call_centre_contact": (("hotline_contact", 1.0),),
}
# Which channel emits each event role.
EVENT_CHANNELS: dict[str, tuple[str, ...]] = {
    "flagged_call": ("core",),
    "password_reset": ("app", "app", "ivr"),
    "new_device": ("app",),
    "sim_change": ("core",),
    "suspicious_login": ("app", "miniprogram"),
    "incoming_transfer": ("core",),
    "card_payment": ("core",),
    "atm_withdrawal": ("core",),
    "bill_payment": ("app", "miniprogram"),
    "loan_disbursed": ("core",),
    "deposit_early_withdrawal": ("app", "branch"),
    "call_centre_contact": ("ivr",),
    "card_lost_report": ("app", "ivr"),
}
NOISE_EVENTS: tuple[tuple[str, float], ...] = (
    ("app_open", 0.33),
    ("login", 0.2),
    ("view_balance", 0.2),
    ("card_payment", 0.12),
    ("notification_opened", 0.05),
    ("statement_viewed", 0.04),
    ("bill_payment", 0.03),
    ("atm_withdrawal", 0.01),
    ("call_centre_contact", 0.01),
    ("profile_update", 0.01),
    # Rare on their own, and also part of scams: a scam must not be the only reason to see them.
    ("transfer_limit_change", 0.004),
    ("deposit_early_withdrawal", 0.003),
    ("loan_disbursed", 0.002),
    ("screen_share_detected", 0.001),
)

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍建国红梅鹏辉斌飞宇浩凯琳晨欣怡子涵博文轩雨"
BANKS = ("工商银行", "农业银行", "中国银行", "建设银行", "交通银行", "招商银行", "邮储银行", "浦发银行", "兴业银行")
BUSINESS_PAYEES = ("贸易有限公司", "物流有限公司", "建材商行", "食品批发部", "科技有限公司", "装饰工程部")

PLAIN_REQUESTS = (
    "给{name}转{amount}元",
    "转账给{name}",
    "帮我转{amount}块给{name}",
    "我要转账",
    "转{amount}到{name}的卡上",
    "还是上次那个账户，转{amount}",
    "转一下{amount}",
)
BIG_PURCHASE_REQUESTS = (
    "交学费{amount}",
    "付购车定金{amount}",
    "装修款转给装修公司",
    "给医院转住院押金",
    "转首付款",
    "付新房东的房租和押金",
)
# Innocent sentences with words scammers use too; the last two contain rules-file phrases.
CONTEXT_REQUESTS = (
    "我的卡挂失了，钱先转到这张卡",
    "上个月账户被冻结过，现在能转账吗",
    "卡被冻结了吗？先帮我转账",
    "挂失补卡以后还能转账吗",
    "信用卡返利到账了吗，顺便转个账",
    "交投标保证金{amount}",
)
COACHING_LISTED = (
    "对方说要把钱转到安全账户",
    "公检法的人让我转账配合调查",
    "他们说我涉嫌洗钱，要做资金核查",
    "刷单返的钱要先垫付",
    "客服说要注销校园贷，不然影响征信",
    "要先交保证金才能提现",
    "投资导师让我追加投资",
    "对方说要交解冻费",
)
COACHING_UNLISTED = (
    "警官说这是配合调查，要保密",
    "他说钱转过去只是验证一下，马上退回来",
    "对方是电商客服，说要退款给我",
    "说是帮我提高信用额度",
    "老师说这只股票稳赚不赔",
    "快点转，对方在电话里等着",
    "他说我的账户不安全，要转到新账户",
)


@dataclass(frozen=True)
class Persona:
    name: str
    share: float
    transfers_per_30d: tuple[float, float]  # spontaneous transfers, per customer log-uniform in this range
    usual_amount: tuple[float, float]  # the customer's typical amount, log-uniform
    balance_multiple: tuple[float, float]  # balance as a multiple of the usual amount
    circle: tuple[int, int]  # how many payees the customer pays regularly
    new_payee: float  # chance a spontaneous transfer goes to someone never paid
    noise_per_day: tuple[float, float]  # app opens, logins, card payments...
    channels: tuple[tuple[str, float], ...]
    hours: tuple[float, ...]  # weight of each local hour
    night_owl: float
    flagged_calls_per_day: float  # spam-call tags (legitimate customers get them too)
    scam: dict[str, float]  # chance of each scam episode over 45 labelled days


# Weight of each local hour 0..23, by habit.
# fmt: off
_DAY_HOURS = (0.3, 0.15, 0.1, 0.08, 0.08, 0.2, 0.5, 1.2, 2, 2.5, 2.5, 2.5,
              3, 2.5, 2.2, 2.2, 2.2, 2.2, 2.5, 3, 3.2, 3, 2, 1)
_OFFICE_HOURS = (0.1, 0.05, 0.05, 0.05, 0.05, 0.1, 0.3, 1, 3, 4, 4, 3.5,
                 2.5, 3.5, 4, 4, 3.5, 3, 2, 1.5, 1.2, 1, 0.6, 0.3)
_EARLY_HOURS = (0.05, 0.02, 0.02, 0.02, 0.05, 0.3, 1.5, 3, 4, 4, 3.5, 2.5,
                1.5, 2, 2.5, 2.5, 2, 1.5, 1, 0.8, 0.5, 0.3, 0.1, 0.05)
_LATE_HOURS = (1.2, 0.8, 0.4, 0.2, 0.1, 0.1, 0.2, 0.5, 1, 1.5, 2, 2.5,
               3, 2.5, 2.5, 2.5, 2.5, 2.5, 3, 3.5, 4, 4, 3.5, 2.5)
_NIGHT_HOURS = (3, 3, 2.5, 2, 1.5, 0.8, 0.3, 0.3, 0.3, 0.5, 0.8, 1,
                1, 1, 1, 1, 1, 1, 1, 1.5, 2, 2.5, 3, 3)
_CALL_HOURS = (0, 0, 0, 0, 0, 0, 0, 0.5, 2, 3, 3, 3,
               2, 3, 3, 3, 3, 2, 2, 1.5, 1, 0.5, 0.2, 0)
# fmt: on

# fmt: off
PERSONAS: tuple[Persona, ...] = (
    Persona(
        "salary", 0.36, (2, 8), (300, 3000), (15, 80), (3, 8), 0.08, (0.3, 1.2),
        (("app", 0.7), ("wecom", 0.1), ("miniprogram", 0.1), ("ivr", 0.05), ("branch", 0.05)),
        _DAY_HOURS, 0.08, 0.025, {"coached": 0.045, "takeover": 0.0375, "mule": 0.012},
    ),
    Persona(
        "small_payer", 0.20, (10, 35), (30, 300), (40, 250), (6, 20), 0.2, (0.5, 2.0),
        (("app", 0.6), ("wecom", 0.15), ("miniprogram", 0.2), ("ivr", 0.03), ("branch", 0.02)),
        _DAY_HOURS, 0.12, 0.025, {"coached": 0.03, "takeover": 0.0225, "mule": 0.03},
    ),
    Persona(
        "business", 0.10, (8, 30), (3000, 30000), (15, 60), (5, 15), 0.07, (0.5, 1.5),
        (("app", 0.75), ("wecom", 0.1), ("miniprogram", 0.05), ("ivr", 0.02), ("branch", 0.08)),
        _OFFICE_HOURS, 0.05, 0.03, {"coached": 0.0225, "takeover": 0.0375, "mule": 0.006},
    ),
    Persona(
        "elderly", 0.14, (0.5, 3), (500, 5000), (30, 200), (1, 4), 0.05, (0.05, 0.4),
        (("app", 0.35), ("ivr", 0.3), ("branch", 0.3), ("wecom", 0.05)),
        _EARLY_HOURS, 0.02, 0.05, {"coached": 0.09, "takeover": 0.045, "mule": 0.003},
    ),
    Persona(
        "student", 0.20, (4, 15), (30, 500), (8, 50), (4, 12), 0.15, (0.4, 1.5),
        (("app", 0.45), ("wecom", 0.2), ("miniprogram", 0.3), ("ivr", 0.02), ("branch", 0.03)),
        _LATE_HOURS, 0.2, 0.02, {"coached": 0.045, "takeover": 0.0225, "mule": 0.045},
    ),
)
# fmt: on
ABROAD_ZONES = ("Europe/London", "America/New_York", "Australia/Sydney", "Asia/Tokyo")


def _pick(rng: random.Random, weighted: Sequence[tuple[str, float]]) -> str:
    return _cumulative(tuple(weighted)).pick(rng)


@dataclass(frozen=True)
class _Cumulative:
    names: tuple[Any, ...]
    bounds: tuple[float, ...]

    def pick(self, rng: random.Random) -> Any:
        return self.names[bisect.bisect_right(self.bounds, rng.random() * self.bounds[-1])]


@lru_cache(maxsize=16)
def _hour_picker(hours: tuple[float, ...]) -> _Cumulative:
    return _cumulative(tuple(enumerate(hours)))


@lru_cache(maxsize=256)
def _cumulative(weighted: tuple[tuple[Any, float], ...]) -> _Cumulative:
    return _Cumulative(tuple(name for name, _ in weighted), tuple(itertools.accumulate(w for _, w in weighted)))


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 50:  # normal approximation; exactness does not matter here
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _money(value: float) -> Decimal:
    return Decimal(f"{max(value, 1.0):.2f}")


def _round_amount(rng: random.Random, value: float) -> float:
    """People type round amounts more often than not."""
    if value >= 1000 and rng.random() < 0.6:
        return float(round(value, -2))
    if value >= 50 and rng.random() < 0.5:
        return float(round(value, -1))
    return round(value, 2)


@dataclass
class _Payee:
    key: str
    weight: float
    typical: float
    cross_border: bool = False


@dataclass
class _Draft:
    ts: dt.datetime
    amount: float
    payee: str | None
    kind: str = "transfer"
    channel: str = "app"
    input_mode: str = "button"
    utterances: tuple[str, ...] = ()
    label: str = "legit"
    pattern: str | None = None
    fraud_list: bool = False
    cross_border: bool = False
    failed: int = 0
    caller_mismatch: bool = False
    executed: bool = True
    # A device not in the customer's timeline (the attacker's or a mule controller's) and when it was bound.
    foreign_device: tuple[str, dt.datetime] | None = None


@dataclass
class _Customer:
    """One simulated customer: draws its habits, then its transfers and events over the period."""

    index: int
    seed: int
    start: dt.datetime
    days: int
    warmup_days: int
    rng: random.Random = field(init=False)
    persona: Persona = field(init=False)
    customer_id: str = field(init=False)
    transfers: list[_Draft] = field(default_factory=list)
    events: list[tuple[dt.datetime, str, str, dict[str, Any]]] = field(default_factory=list)
    devices: list[tuple[dt.datetime, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = self.rng = random.Random(f"bankbot-risk-sim/{self.seed}/{self.index}")
        self.customer_id = f"C{self.index:06d}"
        self.persona = rng.choices(PERSONAS, [p.share for p in PERSONAS])[0]
        persona = self.persona
        self.end = self.start + self.days * DAY
        self.labelled_from = self.start + self.warmup_days * DAY
        self.timezone = "Asia/Shanghai"
        if persona.name == "student" and rng.random() < 0.06:
            self.timezone = rng.choice(ABROAD_ZONES)
        self.zone = ZoneInfo(self.timezone)
        self._local_start = self.start.astimezone(self.zone)
        self._midnights: dict[int, dt.datetime] = {}
        self.name = self._name()
        self.usual = _log_uniform(rng, *persona.usual_amount)
        self.balance = self.usual * _log_uniform(rng, *persona.balance_multiple)
        self.rate = _log_uniform(rng, *persona.transfers_per_30d) / 30.0
        self.noise_rate = _log_uniform(rng, *persona.noise_per_day)
        self.night_owl = rng.random() < persona.night_owl
        self.channels = persona.channels
        self.payees: list[_Payee] = [self._new_payee() for _ in range(rng.randint(*persona.circle))]
        if rng.random() < 0.04 or self.timezone != "Asia/Shanghai":
            self.payees.append(self._new_payee(cross_border=True))
        self.devices.append((self.start - rng.uniform(60, 900) * DAY, self._device_id()))

    # --- small helpers -------------------------------------------------------------------------------------

    def _device_id(self) -> str:
        return f"D{self.rng.getrandbits(48):012x}"

    def _name(self) -> str:
        rng = self.rng
        return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))

    def _new_payee(self, *, cross_border: bool = False, business: bool | None = None) -> _Payee:
        rng = self.rng
        if business is None:
            business = self.persona.name == "business" and rng.random() < 0.6
        name = self._name()
        if business:
            name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(BUSINESS_PAYEES)
        key = payee_key(rng.choice(BANKS), f"{rng.randint(0, 9999):04d}", name)
        typical = self.usual * _log_uniform(rng, 0.3, 3.0)
        return _Payee(key=key, weight=_log_uniform(rng, 0.2, 5.0), typical=typical, cross_border=cross_border)

    def _local(self, day: int, hour: float) -> dt.datetime:
        midnight = self._midnights.get(day)
        if midnight is None:
            local_day = (self._local_start + day * DAY).date()
            midnight = dt.datetime.combine(local_day, dt.time(0), tzinfo=self.zone).astimezone(UTC)
            self._midnights[day] = midnight
        return midnight + hour * HOUR

    def _hour(self, hours: tuple[float, ...] | None = None) -> float:
        rng = self.rng
        if hours is None:
            hours = _NIGHT_HOURS if self.night_owl and rng.random() < 0.35 else self.persona.hours
        return float(_hour_picker(hours).pick(rng)) + rng.random()

    def _time(self, day: int, hours: tuple[float, ...] | None = None) -> dt.datetime:
        return self._local(day, self._hour(hours))

    def _event(
        self, ts: dt.datetime, role: str, attrs: dict[str, Any] | None = None, channel: str | None = None
    ) -> None:
        if not self.start <= ts < self.end:
            return
        channel = channel or self.rng.choice(EVENT_CHANNELS.get(role, ("app", "app", "miniprogram", "wecom")))
        self.events.append((ts, role, channel, attrs or {}))

    def _channel(self) -> str:
        return _pick(self.rng, self.channels)

    def _input_mode(self, channel: str) -> str:
        rng = self.rng
        if channel == "ivr":
            return "voice" if rng.random() < 0.6 else "keypad"
        if channel in ("branch", "core"):
            return "button"
        if channel == "app":
            return _pick(rng, (("button", 0.7), ("text", 0.25), ("voice", 0.05)))
        return _pick(rng, (("text", 0.7), ("voice", 0.15), ("button", 0.15)))

    def _plain_utterances(self, amount: float, payee: str, big: bool = False) -> tuple[str, ...]:
        rng = self.rng
        said = []
        if rng.random() < 0.012:
            context = rng.choice(CONTEXT_REQUESTS[:4]) if rng.random() < 0.85 else rng.choice(CONTEXT_REQUESTS[4:])
            said.append(context.format(amount=f"{amount:.0f}"))
        template = rng.choice(BIG_PURCHASE_REQUESTS if big and rng.random() < 0.6 else PLAIN_REQUESTS)
        said.append(template.format(name=payee, amount=f"{amount:.0f}"))
        if rng.random() < 0.3:
            said.append(rng.choice(("好的", "确认", "对", "是的，确认转账")))
        return tuple(said)

    def _session_noise(self, draft: _Draft) -> None:
        """Verification failures and caller ID mismatches: the same rates whatever the label."""
        rng = self.rng
        roll = rng.random()
        draft.failed = 0 if roll < 0.965 else (rng.randint(1, 2) if roll < 0.995 else rng.randint(3, 4))
        if draft.channel == "ivr" and rng.random() < 0.06:
            draft.caller_mismatch = True

    def _transfer(
        self,
        ts: dt.datetime,
        amount: float,
        payee: _Payee | None,
        *,
        kind: str = "transfer",
        channel: str | None = None,
        big: bool = False,
        label: str = "legit",
        pattern: str | None = None,
    ) -> _Draft | None:
        if not self.start <= ts < self.end:
            return None
        rng = self.rng
        channel = channel or self._channel()
        mode = self._input_mode(channel)
        amount = _round_amount(rng, amount)
        draft = _Draft(
            ts=ts,
            amount=amount,
            payee=payee.key if payee is not None else None,
            kind=kind,
            channel=channel,
            input_mode=mode,
            label=label,
            pattern=pattern,
            cross_border=payee.cross_border if payee is not None else False,
        )
        if mode in ("text", "voice") and payee is not None:
            name = payee.key.rsplit("|", 1)[-1]  # the holder's name, as the customer would say it
            draft.utterances = self._plain_utterances(amount, name, big)
        self._session_noise(draft)
        if label == "legit":
            draft.executed = rng.random() > 0.015
            draft.fraud_list = rng.random() < 0.00005  # the list has a few wrongly listed accounts
        if channel in DEVICE_CHANNELS:
            self._event(ts - rng.uniform(0.3, 8) * MINUTE, rng.choice(("login", "app_open")), channel=channel)
            if rng.random() < 0.4:
                self._event(ts - rng.uniform(0.1, 3) * MINUTE, "view_balance", channel=channel)
        self.transfers.append(draft)
        return draft

    def _circle_payee(self) -> _Payee:
        return self.rng.choices(self.payees, [p.weight for p in self.payees])[0]

    def _amount_for(self, payee: _Payee) -> float:
        return payee.typical * math.exp(self.rng.gauss(0, 0.45))

    # --- legitimate life -----------------------------------------------------------------------------------

    def simulate_legit(self) -> None:
        rng, persona = self.rng, self.persona
        # Counts over the period, then a uniform day each: the same as a daily Poisson draw, and faster.
        for _ in range(_poisson(rng, self.rate * self.days)):
            day = rng.randrange(self.days)
            if rng.random() < persona.new_payee:
                payee = self._new_payee()
                if rng.random() < 0.5:
                    self.payees.append(payee)
            else:
                payee = self._circle_payee()
            self._transfer(self._time(day), self._amount_for(payee), payee)
        for _ in range(_poisson(rng, self.noise_rate * self.days)):
            self._event(self._time(rng.randrange(self.days)), _pick(rng, NOISE_EVENTS))
        for _ in range(_poisson(rng, persona.flagged_calls_per_day * self.days)):
            day = rng.randrange(self.days)
            self._event(self._time(day, _DAY_HOURS), "flagged_call", {"duration_s": rng.randint(3, 600)})
        self._monthly()
        scale = self.days / 90.0
        episodes = (
            (self._big_purchase, {"student": 0.12, "business": 0.15, "elderly": 0.06}.get(persona.name, 0.08)),
            (self._new_phone, 0.12),
            (self._reinstall, 0.08),
            (self._forgot_password, 0.1),
            (self._travel_login, 0.06),
            (self._trip_organiser, {"student": 0.06, "small_payer": 0.05, "salary": 0.04}.get(persona.name, 0.01)),
            (self._group_payments, {"student": 0.2, "small_payer": 0.2, "salary": 0.06}.get(persona.name, 0.02)),
            (self._remote_help, 0.12 if persona.name == "elderly" else 0.01),
            (self._sim_replacement, 0.03),
            (self._move_savings, {"elderly": 0.05, "salary": 0.04, "business": 0.03}.get(persona.name, 0.015)),
        )
        for episode, chance in episodes:
            # Rates are per 90 days; a longer period can hold more than one episode.
            for _ in range(_poisson(rng, chance * scale)):
                episode(rng.randrange(self.days))

    def _monthly(self) -> None:
        rng, persona = self.rng, self.persona
        # (kind, payee, amount): rent, family support, repayments of the customer's own card and loan.
        obligations: list[tuple[str, _Payee | None, float]] = []
        if persona.name == "salary" and rng.random() < 0.6:
            obligations.append(("transfer", self._new_payee(), self.usual * rng.uniform(1.5, 4)))
        if persona.name in ("salary", "business") and rng.random() < 0.5:
            obligations.append(("transfer", self._new_payee(), self.usual * rng.uniform(0.5, 2)))
        if persona.name == "elderly" and rng.random() < 0.6:
            obligations.append(("transfer", self._new_payee(), self.usual * rng.uniform(0.5, 2)))
        if persona.name == "student" and rng.random() < 0.3:
            obligations.append(("transfer", self._new_payee(), self.usual * rng.uniform(2, 6)))
        if rng.random() < 0.5:
            obligations.append(("card_repayment", None, self.usual * rng.uniform(0.5, 3)))
        if rng.random() < 0.2:
            obligations.append(("loan_repayment", None, self.usual * rng.uniform(1, 4)))
        self.payees.extend(payee for _, payee, _ in obligations if payee is not None)
        employees = (
            [self._new_payee(business=False) for _ in range(rng.randint(3, 12))] if persona.name == "business" else []
        )
        income = {"salary": 8, "elderly": 4, "student": 2}.get(persona.name, 0) * self.usual
        pay_day = rng.randrange(28)
        for month_start in range(-rng.randrange(30), self.days, 30):
            for kind, obliged_payee, amount in obligations:
                day = month_start + rng.randrange(3) + 1
                channel = "core" if kind != "transfer" or rng.random() < 0.4 else None
                hours = _EARLY_HOURS if channel == "core" else None
                self._transfer(
                    self._time(day, hours),
                    amount * math.exp(rng.gauss(0, 0.05)),
                    obliged_payee,
                    kind=kind,
                    channel=channel,
                )
            if income:
                self._event(
                    self._time(month_start + pay_day, _OFFICE_HOURS),
                    "incoming_transfer",
                    {"amount": f"{income * rng.uniform(0.9, 1.1):.2f}"},
                )
            if persona.name == "business":
                if rng.random() < 0.1:
                    employees.append(self._new_payee(business=False))
                    employees.pop(0)
                ts = self._time(month_start + pay_day, _OFFICE_HOURS)
                channel = self._channel()
                channel = "app" if channel == "ivr" else channel
                for employee in employees:
                    ts += rng.uniform(0.3, 6) * MINUTE
                    self._transfer(ts, self.usual * rng.uniform(0.4, 1.2), employee, channel=channel)
        if persona.name == "business":
            for _ in range(_poisson(rng, rng.uniform(0.5, 4) * self.days)):
                day = rng.randrange(self.days)
                self._event(
                    self._time(day, _OFFICE_HOURS),
                    "incoming_transfer",
                    {"amount": f"{self.usual * _log_uniform(rng, 0.2, 3):.2f}"},
                )

    def _big_purchase(self, day: int) -> None:
        """Tuition, a car, a down payment, renovation, a hospital: large, to a new payee, sometimes prepared."""
        rng = self.rng
        ts = self._time(day)
        if rng.random() < 0.35:
            self._event(ts - rng.uniform(0.2, 48) * HOUR, "transfer_limit_change")
        if rng.random() < 0.2:
            self._event(ts - rng.uniform(0.5, 72) * HOUR, "deposit_early_withdrawal", {"amount": f"{self.usual:.0f}"})
        for _ in range(rng.randint(0, 3)):
            self._event(ts - rng.uniform(1, 120) * MINUTE, rng.choice(("app_open", "view_balance")))
        payee = self._new_payee(business=rng.random() < 0.6)
        if rng.random() < 0.6:
            amount = max(self.usual * _log_uniform(rng, 5, 40), 3000)
        else:  # a car or a down payment: a large share of the savings
            amount = max(self.balance * rng.uniform(0.2, 0.9), 3000)
        amount = min(amount, self.balance * 0.95)
        parts = 1 if rng.random() < 0.75 else rng.randint(2, 3)
        for part in range(parts):
            self._transfer(ts + part * rng.uniform(1, 30) * MINUTE, amount / parts, payee, big=True)
        if rng.random() < 0.5:
            self.payees.append(payee)

    def _move_savings(self, day: int) -> None:
        """Savings moved to the customer's own account at another bank (a better rate): new payee, most of it."""
        rng = self.rng
        ts = self._time(day)
        if rng.random() < 0.3:
            self._event(ts - rng.uniform(0.2, 24) * HOUR, "deposit_early_withdrawal", {"amount": f"{self.usual:.0f}"})
        own = _Payee(payee_key(rng.choice(BANKS), f"{rng.randint(0, 9999):04d}", self.name), 1.0, self.usual)
        amount = self.balance * rng.uniform(0.3, 0.95)
        parts = 1 if rng.random() < 0.7 else 2
        for part in range(parts):
            self._transfer(ts + part * rng.uniform(1, 20) * MINUTE, amount / parts, own)
        self.payees.append(own)

    def _switch_device(self, ts: dt.datetime) -> None:
        self.devices.append((ts, self._device_id()))
        self.devices.sort()

    def _new_phone(self, day: int) -> None:
        rng = self.rng
        ts = self._time(day)
        self._switch_device(ts)
        self._event(ts, "new_device", {"model": rng.choice(("iPhone", "Huawei", "Xiaomi", "OPPO", "vivo"))})
        if rng.random() < 0.35:
            self._event(ts + rng.uniform(1, 90) * MINUTE, "password_reset")
        if rng.random() < 0.1:
            self._event(ts - rng.uniform(0.5, 24) * HOUR, "sim_change")
        if rng.random() < 0.3:  # moving money on the new phone the same day
            payee = self._new_payee() if rng.random() < 0.2 else self._circle_payee()
            self._transfer(ts + rng.uniform(0.2, 20) * HOUR, self._amount_for(payee), payee)

    def _reinstall(self, day: int) -> None:
        ts = self._time(day)
        self._switch_device(ts)
        if self.rng.random() < 0.5:
            self._event(ts, "new_device")

    def _forgot_password(self, day: int) -> None:
        rng = self.rng
        ts = self._time(day)
        self._event(ts, "password_reset")
        if rng.random() < 0.3:
            payee = self._circle_payee() if rng.random() < 0.85 else self._new_payee()
            draft = self._transfer(ts + rng.uniform(0.1, 10) * HOUR, self._amount_for(payee), payee)
            if draft is not None:
                draft.failed = max(draft.failed, rng.randint(1, 3))

    def _sim_replacement(self, day: int) -> None:
        self._event(self._time(day), "sim_change")

    def _travel_login(self, day: int) -> None:
        rng = self.rng
        for offset in range(rng.randint(1, 3)):
            self._event(self._time(day + offset), "suspicious_login", {"country": rng.choice(("JP", "TH", "FR", "US"))})
        if rng.random() < 0.3:  # a hotel or a guide, paid from abroad
            payee = self._new_payee(cross_border=rng.random() < 0.5)
            self._transfer(self._time(day + 1), self.usual * _log_uniform(rng, 0.5, 6), payee)

    def _trip_organiser(self, day: int) -> None:
        """Friends pay their share in, the organiser pays the hotel, the agency, the tickets."""
        rng = self.rng
        ts = self._time(day)
        total = 0.0
        for _ in range(rng.randint(3, 8)):
            share = _log_uniform(rng, 300, 3000)
            total += share
            ts += rng.uniform(2, 90) * MINUTE
            self._event(ts, "incoming_transfer", {"amount": f"{share:.2f}"})
        for _ in range(rng.randint(2, 4)):
            ts += rng.uniform(3, 120) * MINUTE
            self._transfer(ts, total * rng.uniform(0.15, 0.5), self._new_payee(business=True))

    def _group_payments(self, day: int) -> None:
        """Splitting a bill or a group purchase: several small payments within the hour, some to new payees."""
        rng = self.rng
        ts = self._time(day)
        for _ in range(rng.randint(2, 6)):
            ts += rng.uniform(0.5, 15) * MINUTE
            payee = self._new_payee() if rng.random() < 0.5 else self._circle_payee()
            self._transfer(ts, _log_uniform(rng, 20, 400), payee)

    def _remote_help(self, day: int) -> None:
        """A son or daughter helps over screen sharing."""
        rng = self.rng
        ts = self._time(day)
        self._event(ts, "screen_share_detected")
        if rng.random() < 0.5:
            payee = self._circle_payee() if rng.random() < 0.7 else self._new_payee()
            self._transfer(ts + rng.uniform(2, 40) * MINUTE, self._amount_for(payee), payee)

    # --- scams ---------------------------------------------------------------------------------------------

    def simulate_scam(self, scam_scale: float = 1.0) -> None:
        rng = self.rng
        labelled_days = self.days - self.warmup_days
        if labelled_days < 2:
            return
        roll, scale = rng.random(), scam_scale * labelled_days / 45.0
        for pattern in SCAM_PATTERNS:
            chance = self.persona.scam.get(pattern, 0.0) * scale
            if roll < chance:
                day = self.warmup_days + rng.randrange(labelled_days - 1)
                {"coached": self._coached, "takeover": self._takeover, "mule": self._mule}[pattern](day)
                return
            roll -= chance

    def _scam_payee(self, fraud_listed: float) -> tuple[_Payee, bool]:
        payee = self._new_payee(business=self.rng.random() < 0.2)
        return payee, self.rng.random() < fraud_listed

    def _coached(self, day: int) -> None:
        rng = self.rng
        call = self._time(day, _CALL_HOURS)
        if rng.random() < 0.7:
            self._event(call + rng.uniform(0, 2) * MINUTE, "flagged_call", {"duration_s": rng.randint(300, 5400)})
        ts = call + _log_uniform(rng, 5, 360) * MINUTE
        for _ in range(rng.randint(1, 5)):
            self._event(ts - rng.uniform(0.5, 60) * MINUTE, rng.choice(("app_open", "view_balance", "login")))
        if rng.random() < 0.4:
            self._event(ts - rng.uniform(2, 50) * MINUTE, "transfer_limit_change")
        if self.persona.name in ("elderly", "salary", "business") and rng.random() < 0.25:
            self._event(ts - rng.uniform(5, 120) * MINUTE, "deposit_early_withdrawal", {"amount": f"{self.usual:.0f}"})
        if rng.random() < (0.4 if self.persona.name == "student" else 0.08):
            self._event(ts - rng.uniform(5, 120) * MINUTE, "loan_disbursed")
        if rng.random() < 0.15:
            self._event(ts - rng.uniform(1, 30) * MINUTE, "screen_share_detected")
        count = _pick(rng, (("1", 0.5), ("2", 0.25), ("3", 0.15), ("4", 0.1)))
        task_scam = rng.random() < 0.2  # "刷单": small paid-back tasks first, then ever larger ones
        total = self.balance * rng.uniform(0.3, 1.0)
        channel = _pick(rng, (("app", 0.7), ("wecom", 0.07), ("miniprogram", 0.08), ("ivr", 0.1), ("branch", 0.05)))
        if self.persona.name == "elderly" and rng.random() < 0.3:
            channel = rng.choice(("ivr", "branch"))
        payee, listed = self._scam_payee(0.08)
        for index in range(int(count)):
            if index and rng.random() < 0.4:
                payee, listed = self._scam_payee(0.08)
            if task_scam and index < int(count) - 1:
                amount = _log_uniform(rng, 50, 800) * (index + 1)
            else:
                amount = max(total / int(count) * rng.uniform(0.7, 1.3), 1000)
            draft = self._transfer(ts, min(amount, 200_000), payee, channel=channel, label="scam", pattern="coached")
            if draft is not None:
                draft.fraud_list = listed
                if draft.input_mode in ("text", "voice") and rng.random() < 0.45:
                    coaching = rng.choice(COACHING_LISTED if rng.random() < 0.5 else COACHING_UNLISTED)
                    draft.utterances = (coaching, *draft.utterances)
            ts += _log_uniform(rng, 3, 600) * MINUTE

    def _takeover(self, day: int) -> None:
        rng = self.rng
        night = rng.random() < 0.35
        start = self._time(day, _NIGHT_HOURS if night else _DAY_HOURS)
        variant = _pick(rng, (("reset", 0.5), ("sim", 0.25), ("credentials", 0.25)))
        device = self._device_id()
        ts = start
        if variant == "sim":
            self._event(ts, "sim_change")
            ts += rng.uniform(2, 60) * MINUTE
            if rng.random() < 0.6:
                self._event(ts, "password_reset")
        elif variant == "reset":
            self._event(ts, "password_reset")
        if variant != "credentials" or rng.random() < 0.7:
            ts += rng.uniform(1, 20) * MINUTE
            self._event(ts, "new_device", {"model": rng.choice(("Android", "iPhone", "Huawei"))})
        bound = ts
        if rng.random() < (0.6 if variant == "credentials" else 0.4):
            self._event(ts + rng.uniform(0, 5) * MINUTE, "suspicious_login")
        if rng.random() < 0.3:
            self._event(ts + rng.uniform(1, 10) * MINUTE, "profile_update")
        ts += _log_uniform(rng, 3, 180) * MINUTE
        total = self.balance * rng.uniform(0.5, 0.98)
        count = int(_pick(rng, (("1", 0.5), ("2", 0.35), ("3", 0.15))))
        channel = "app" if rng.random() < 0.8 else "miniprogram"
        payee, listed = self._scam_payee(0.08)
        for _ in range(count):
            if rng.random() < 0.5:
                payee, listed = self._scam_payee(0.08)
            draft = self._transfer(
                ts,
                min(total / count * rng.uniform(0.7, 1.3), 200_000),
                payee,
                channel=channel,
                label="scam",
                pattern="takeover",
            )
            if draft is not None:
                draft.fraud_list = listed
                draft.foreign_device = (device, bound)
                if rng.random() < 0.3:
                    draft.failed = max(draft.failed, rng.randint(1, 3))
            ts += _log_uniform(rng, 1, 60) * MINUTE

    def _mule(self, day: int) -> None:
        rng = self.rng
        controller = (self._device_id(), self._time(day - 1)) if rng.random() < 0.3 else None
        rounds = 1 if rng.random() < 0.7 else 2
        for round_index in range(rounds):
            ts = self._time(day + round_index * rng.randint(1, 2), _LATE_HOURS)
            if controller is not None and round_index == 0:
                self._event(controller[1], "new_device")
            total = 0.0
            for _ in range(rng.randint(2, 8)):
                inflow = _log_uniform(rng, 2000, 30000)
                total += inflow
                ts += _log_uniform(rng, 0.5, 40) * MINUTE
                self._event(ts, "incoming_transfer", {"amount": f"{inflow:.2f}"})
            count = rng.randint(2, 8)
            for _ in range(count):
                ts += _log_uniform(rng, 1, 25) * MINUTE
                payee, listed = self._scam_payee(0.05)
                amount = total * rng.uniform(0.9, 0.98) / count * rng.uniform(0.8, 1.2)
                draft = self._transfer(ts, amount, payee, label="scam", pattern="mule")
                if draft is not None:
                    draft.fraud_list = listed
                    if controller is not None:
                        draft.foreign_device = controller

    # --- output --------------------------------------------------------------------------------------------

    def _device_at(self, ts: dt.datetime) -> tuple[str, dt.datetime]:
        current = self.devices[0]
        for since, device in self.devices:
            if since > ts:
                break
            current = (since, device)
        return current[1], current[0]

    def records(self, vocabulary: dict[str, tuple[tuple[str, float], ...]]) -> tuple[list[TransferRecord], list[Event]]:
        rng = self.rng
        self.transfers.sort(key=lambda d: d.ts)
        out: list[TransferRecord] = []
        for number, draft in enumerate(self.transfers):
            device_id: str | None = None
            known: bool | None = None
            if draft.channel in DEVICE_CHANNELS:
                if draft.foreign_device is not None:
                    device_id, since = draft.foreign_device
                else:
                    device_id, since = self._device_at(draft.ts)
                known = draft.ts - since >= DAY
            labelled = draft.ts >= self.labelled_from
            out.append(
                TransferRecord(
                    transfer_id=f"T{self.index:06d}-{number:04d}",
                    customer_id=self.customer_id,
                    ts=draft.ts.replace(microsecond=0),
                    channel=draft.channel,
                    amount=_money(draft.amount),
                    kind=draft.kind,
                    payee_key=draft.payee,
                    payee_on_fraud_list=draft.fraud_list,
                    cross_border=draft.cross_border,
                    session=Session(
                        input_mode=draft.input_mode,
                        device_id=device_id,
                        device_known=known,
                        caller_id_mismatch=draft.caller_mismatch,
                        failed_verifications_24h=draft.failed,
                        utterances=draft.utterances,
                    ),
                    timezone=self.timezone,
                    executed=draft.executed,
                    label=draft.label if labelled else None,
                    pattern=draft.pattern if labelled else None,
                )
            )
        self.events.sort(key=lambda e: e[0])
        events = [
            Event(
                customer_id=self.customer_id,
                ts=ts.replace(microsecond=0),
                channel=channel,
                type=_pick(rng, vocabulary[role]) if role in vocabulary else role,
                attrs=attrs,
            )
            for ts, role, channel, attrs in self.events
        ]
        return out, events


def _vocabulary(name: str) -> dict[str, tuple[tuple[str, float], ...]]:
    if name == "default":
        return DEFAULT_TYPES
    if name == "alt":
        return ALT_TYPES
    raise ValueError(f"vocabulary must be one of {', '.join(VOCABULARIES)}; got {name!r}")


def simulate_customers(
    customers: int = 2000,
    seed: int = 0,
    start: dt.datetime = DEFAULT_START,
    days: int = 90,
    vocabulary: str = "default",
    warmup_days: int = 45,
    scam_scale: float = 1.0,
) -> Iterator[tuple[list[TransferRecord], list[Event]]]:
    """Each simulated customer's transfers and events, customer by customer (see `simulate`)."""
    if customers < 1 or days < 1 or not 0 <= warmup_days < days:
        raise ValueError("need customers >= 1, days >= 1 and 0 <= warmup_days < days")
    if not 0 <= scam_scale <= 4:
        raise ValueError("scam_scale must be between 0 and 4")
    types = _vocabulary(vocabulary)
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    for index in range(customers):
        customer = _Customer(index, seed, start, days, warmup_days)
        customer.simulate_legit()
        customer.simulate_scam(scam_scale)
        yield customer.records(types)


def simulate(
    out_dir: str | Path,
    customers: int = 2000,
    seed: int = 0,
    start: dt.datetime = DEFAULT_START,
    days: int = 90,
    vocabulary: str = "default",
    warmup_days: int = 45,
    scam_scale: float = 1.0,
) -> dict[str, int]:
    """Simulate `customers` customers over `days` days from `start` and write a labelled set to out_dir.

    The first `warmup_days` days are history only (unlabelled). `scam_scale` multiplies the chance of a scam
    episode (tests enrich scams to measure detection on fewer customers; legitimate records do not change).
    Returns counts: customers, transfers, events, labelled, scam and scam_<pattern>.
    """
    counts = {"customers": customers, "labelled": 0, "scam": 0}
    counts.update({f"scam_{pattern}": 0 for pattern in SCAM_PATTERNS})
    with LabelledSetWriter(out_dir) as writer:
        for transfers, events in simulate_customers(customers, seed, start, days, vocabulary, warmup_days, scam_scale):
            writer.write(transfers, events)
            for record in transfers:
                counts["labelled"] += record.label is not None
                if record.label == "scam":
                    counts["scam"] += 1
                    counts[f"scam_{record.pattern}"] += 1
    counts.update(writer.counts)
    return counts

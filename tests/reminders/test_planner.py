"""The planner and the customer context on a small sandbox bank in SQLite: offsets, keys, zones, horizon, settlement."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bankcore import sandbox
from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
from bankcore.models import (
    Account,
    Card,
    ChannelIdentity,
    CrossChannelEvent,
    Customer,
    CustomerProfile,
    Deposit,
    Loan,
    LoanInstalment,
    OptOut,
    Reminder,
    SubscriptionConsent,
)
from bankcore.reminders import messages, store
from bankcore.reminders.context import gather_context
from bankcore.reminders.decisions import Send
from bankcore.reminders.planned import PlannedReminder
from bankcore.reminders.planner import plan, plan_and_store
from bankcore.reminders.policy import DEFAULT_ZONE, decide
from bankcore.reminders.rules import DEFAULT_RULES_PATH, ReminderRules, build_rules, load_rules

UTC = dt.UTC
SHANGHAI_ZONE = "Asia/Shanghai"
NEW_YORK_ZONE = "America/New_York"
# Friday 2026-11-20 10:00 in Beijing, 2026-11-19 21:00 in New York (the day before, locally).
NOW = dt.datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
SH_TODAY = dt.date(2026, 11, 20)
NY_TODAY = dt.date(2026, 11, 19)


def days(n: int) -> dt.timedelta:
    return dt.timedelta(days=n)


RULES: dict[str, Any] = {
    "version": 1,
    "rules": [
        {"id": "loan", "kind": "loan_instalment_due", "offsets_days": [3, 1], "channels": ["wecom", "phone"]},
        {"id": "statement", "kind": "card_statement_due", "offsets_days": [3, 1], "channels": ["wecom"]},
        {"id": "expiry", "kind": "card_expiring", "offsets_days": [30, 7], "channels": ["wecom", "sms"]},
        {"id": "deposit", "kind": "deposit_maturing", "offsets_days": [7, 1], "channels": ["wecom"]},
        {"id": "debit", "kind": "auto_debit_failed", "offsets_days": [0], "channels": ["wecom", "phone"]},
        {
            "id": "notice",
            "kind": "service_notice",
            "offsets_days": [1],
            "channels": ["wecom"],
            "opt_in_required": True,
            "notice": {"id": "maint-1", "date": "2026-11-21", "text": "明日凌晨系统维护。"},
        },
    ],
}


@pytest.fixture(scope="module")
def empty_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reminders-db") / "empty.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def factory(empty_template: Path, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    path = tmp_path / "bank.db"
    shutil.copyfile(empty_template, path)
    engine = make_engine(f"sqlite:///{path}")
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def _customer(session: Session, customer_id: str, zone: str, *, phone: str | None = "13800000000") -> None:
    session.add(Customer(id=customer_id, name="测试", surname="王", title="先生", phone=phone, timezone=zone))


def _loan(session: Session, loan_id: str, customer_id: str, dues: list[tuple[dt.date, str]]) -> None:
    session.add(
        Loan(
            id=loan_id,
            customer_id=customer_id,
            product="consumer",
            name="个人消费贷款",
            principal=Decimal("10000.00"),
            outstanding=Decimal("8000.00"),
            rate=Decimal("4.35"),
            start_date=dt.date(2026, 1, 1),
            end_date=dt.date(2027, 12, 31),
        )
    )
    for seq, (due, status) in enumerate(dues, start=1):
        session.add(
            LoanInstalment(
                loan_id=loan_id,
                seq=seq,
                due_date=due,
                amount=Decimal("1491.20"),
                principal_part=Decimal("1400.00"),
                interest_part=Decimal("91.20"),
                status=status,
            )
        )


@pytest.fixture
def bank(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """Two customers a world apart, with something of every kind due, plus items the planner must skip."""
    with unit_of_work(factory) as session:
        _customer(session, "CSH", SHANGHAI_ZONE)
        _customer(session, "CNY", NEW_YORK_ZONE)
        session.flush()
        session.add_all(
            [
                ChannelIdentity(channel="wecom", external_id="csh", customer_id="CSH"),
                ChannelIdentity(channel="miniprogram_openid", external_id="o-csh", customer_id="CSH"),
            ]
        )
        _loan(
            session,
            "LSH",
            "CSH",
            [
                (SH_TODAY + days(3), "due"),
                (SH_TODAY + days(2), "due"),
                (SH_TODAY + days(1), "paid"),
                (SH_TODAY + days(20), "due"),
            ],
        )
        _loan(session, "LNY", "CNY", [(NY_TODAY + days(3), "due")])
        session.add_all(
            [
                Account(
                    id="ACR",
                    customer_id="CSH",
                    kind="credit",
                    name="白金信用卡",
                    last4="5512",
                    balance=Decimal("-800.00"),
                    statement_balance=Decimal("632.00"),
                    minimum_payment=Decimal("63.20"),
                    statement_due_date=SH_TODAY + days(1),
                ),
                Account(
                    id="ACR0",
                    customer_id="CSH",
                    kind="credit",
                    name="金卡",
                    last4="7788",
                    balance=Decimal("0.00"),
                    statement_balance=Decimal("0.00"),
                    statement_due_date=SH_TODAY + days(1),
                ),
                Account(id="ADB", customer_id="CSH", kind="debit", name="借记卡账户", last4="3821"),
            ]
        )
        session.flush()
        session.add_all(
            [
                Card(
                    id="K1",
                    customer_id="CSH",
                    account_id="ADB",
                    last4="3821",
                    kind="debit",
                    status="active",
                    expiry=SH_TODAY + days(30),
                ),
                Card(
                    id="K2",
                    customer_id="CSH",
                    account_id="ACR",
                    last4="5512",
                    kind="credit",
                    status="lost",
                    expiry=SH_TODAY + days(7),
                ),
                Card(
                    id="K3",
                    customer_id="CSH",
                    account_id="ACR0",
                    last4="7788",
                    kind="credit",
                    status="active",
                    expiry=SH_TODAY + days(40),
                ),
            ]
        )
        for deposit_id, status in (("D1", "active"), ("D2", "closed")):
            session.add(
                Deposit(
                    id=deposit_id,
                    customer_id="CSH",
                    product="fixed",
                    name="一年定期",
                    amount=Decimal("50000.00"),
                    rate=Decimal("1.50"),
                    term_months=12,
                    start_date=SH_TODAY + days(7) - days(365),
                    maturity_date=SH_TODAY + days(7),
                    auto_renew=False,
                    status=status,
                )
            )
        failure_attrs = {"item_id": "LSH", "item_name": "个人消费贷款", "amount": 1491.2, "reason": "insufficient"}
        session.add_all(
            [
                CrossChannelEvent(
                    event_id="ad-1",
                    customer_id="CNY",
                    ts=NOW - dt.timedelta(hours=2),
                    channel="core",
                    type="auto_debit_failed",
                    attrs=failure_attrs,
                ),
                # Failed, then succeeded on the retry: nothing to remind of.
                CrossChannelEvent(
                    event_id="ad-2",
                    customer_id="CSH",
                    ts=NOW - dt.timedelta(hours=5),
                    channel="core",
                    type="auto_debit_failed",
                    attrs=failure_attrs,
                ),
                CrossChannelEvent(
                    event_id="ad-2-ok",
                    customer_id="CSH",
                    ts=NOW - dt.timedelta(hours=4),
                    channel="core",
                    type="auto_debit_succeeded",
                    attrs={"item_id": "LSH"},
                ),
                # Too old: the next cycle's reminders take over.
                CrossChannelEvent(
                    event_id="ad-3",
                    customer_id="CSH",
                    ts=NOW - days(3),
                    channel="core",
                    type="auto_debit_failed",
                    attrs=failure_attrs,
                ),
                # A customer the bank does not hold.
                CrossChannelEvent(
                    event_id="ad-4",
                    customer_id="GHOST",
                    ts=NOW - dt.timedelta(hours=1),
                    channel="core",
                    type="auto_debit_failed",
                    attrs=failure_attrs,
                ),
                CustomerProfile(customer_id="CSH", attrs={"service_notice_opt_in": True}),
                CustomerProfile(customer_id="CNY", attrs={"service_notice_opt_in": False}),
            ]
        )
    return factory


def _plan(bank: sessionmaker[Session], rules: ReminderRules | None = None, **kwargs: Any) -> list[PlannedReminder]:
    with unit_of_work(bank) as session:
        return plan(session, rules or build_rules(RULES), NOW, **kwargs)


def test_plans_one_reminder_per_item_and_remaining_offset(bank: sessionmaker[Session]) -> None:
    keys = [reminder.key for reminder in _plan(bank)]
    assert sorted(keys) == sorted(
        [
            # Due in 3 days: T-3 today, T-1 later. Due in 2 days: T-3 was yesterday, only T-1 remains.
            "CSH:loan:LSH:1:2026-11-23:T-3",
            "CSH:loan:LSH:1:2026-11-23:T-1",
            "CSH:loan:LSH:2:2026-11-22:T-1",
            # New York's today is the 19th: its instalment is due on the 22nd.
            "CNY:loan:LNY:1:2026-11-22:T-3",
            "CNY:loan:LNY:1:2026-11-22:T-1",
            "CSH:statement:ACR:2026-11-21:T-1",
            "CSH:expiry:K1:2026-12-20:T-30",
            "CSH:expiry:K1:2026-12-20:T-7",
            "CSH:deposit:D1:2026-11-27:T-7",
            "CSH:deposit:D1:2026-11-27:T-1",
            "CNY:debit:ad-1:2026-11-19:T-0",
            "CSH:notice:maint-1:2026-11-21:T-1",
        ]
    )


def test_paid_closed_lost_zero_balance_and_far_items_are_skipped(bank: sessionmaker[Session]) -> None:
    keys = " ".join(reminder.key for reminder in _plan(bank))
    for absent in (":LSH:3:", ":LSH:4:", "ACR0", "K2", "K3", "D2", "ad-2", "ad-3", "ad-4", "GHOST", "CNY:notice"):
        assert absent not in keys


def test_send_after_is_ten_in_the_morning_in_each_customers_zone(bank: sessionmaker[Session]) -> None:
    zones = {"CSH": SHANGHAI_ZONE, "CNY": NEW_YORK_ZONE}
    for reminder in _plan(bank):
        if reminder.kind == "auto_debit_failed":
            continue
        local = reminder.send_after.astimezone(ZoneInfo(zones[reminder.customer_id]))
        assert local.time() == dt.time(10, 0), reminder.key
        offset = int(reminder.key.rsplit("T-", 1)[1])
        assert local.date() == reminder.due_date - days(offset)
    by_key = {reminder.key: reminder for reminder in _plan(bank)}
    assert by_key["CSH:loan:LSH:1:2026-11-23:T-3"].send_after == dt.datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    # 10:00 EST on the 19th has passed in New York (it is 21:00 there): it still goes, today.
    assert by_key["CNY:loan:LNY:1:2026-11-22:T-3"].send_after == dt.datetime(2026, 11, 19, 15, 0, tzinfo=UTC)
    assert by_key["CNY:loan:LNY:1:2026-11-22:T-1"].send_after == dt.datetime(2026, 11, 21, 15, 0, tzinfo=UTC)


def test_a_failed_auto_debit_goes_as_soon_as_it_is_seen(bank: sessionmaker[Session]) -> None:
    (debit,) = [reminder for reminder in _plan(bank) if reminder.kind == "auto_debit_failed"]
    assert debit.send_after == NOW - dt.timedelta(hours=2)
    assert debit.payload["amount"] == "1491.20"
    assert debit.payload["debit_item_id"] == "LSH"
    assert "自动扣款1491.20元未能成功" in messages.render(debit.kind, debit.payload)


def test_planning_twice_gives_the_same_reminders_in_the_same_order(bank: sessionmaker[Session]) -> None:
    first, second = _plan(bank), _plan(bank)
    assert first == second
    assert len({reminder.key for reminder in first}) == len(first)
    assert [r.send_after for r in first] == sorted(r.send_after for r in first)


def test_the_horizon_bounds_how_far_ahead_items_are_planned(bank: sessionmaker[Session]) -> None:
    keys = [reminder.key for reminder in _plan(bank, horizon_days=5)]
    assert not any(":K1:" in key for key in keys)  # the card expires in 30 days
    assert not any(":D1:" in key for key in keys)  # the deposit matures in 7 days
    assert "CSH:loan:LSH:1:2026-11-23:T-3" in keys


def test_disabled_rules_and_min_amount_skip_reminders(bank: sessionmaker[Session]) -> None:
    document: dict[str, Any] = {**RULES, "rules": [dict(rule) for rule in RULES["rules"]]}
    document["rules"][0]["enabled"] = False
    document["rules"][1]["min_amount"] = "1000"  # the statement owes 632.00
    document["rules"][3]["min_amount"] = "50000"  # the deposit is exactly 50,000.00: kept
    keys = [reminder.key for reminder in _plan(bank, build_rules(document))]
    assert not any(":loan:" in key or ":statement:" in key for key in keys)
    assert "CSH:deposit:D1:2026-11-27:T-7" in keys


def test_payloads_carry_what_the_message_needs_and_never_a_card_number(bank: sessionmaker[Session]) -> None:
    for reminder in _plan(bank):
        text = messages.render(reminder.kind, reminder.payload)
        assert text.startswith(f"【{messages.TITLES[reminder.kind]}】"), text
        assert "{" not in text
        assert not re.search(r"\d{12,}", repr(reminder.payload))
        assert reminder.payload["due_date"] == reminder.due_date.isoformat()
        assert reminder.topic and reminder.channels
    by_key = {reminder.key: reminder for reminder in _plan(bank)}
    statement = by_key["CSH:statement:ACR:2026-11-21:T-1"]
    assert statement.payload["last4"] == "5512"
    assert statement.payload["amount"] == "632.00"
    assert statement.topic == "credit_card"
    assert messages.render(statement.kind, statement.payload) == (
        "【信用卡还款提醒】王先生您好，您尾号5512的白金信用卡本期账单应还632.00元，最低还款63.20元，"
        "到期还款日为11月21日。如已还款请忽略。"
    )


def test_the_shipped_rules_plan_the_demo_bank(factory: sessionmaker[Session]) -> None:
    with unit_of_work(factory) as session:
        sandbox.load_sandbox(session, sandbox.demo_document(), now=NOW)
    rules = load_rules(DEFAULT_RULES_PATH)
    with unit_of_work(factory) as session:
        planned = [reminder for day in range(0, 10) for reminder in plan(session, rules, NOW + days(day))]
    kinds = {reminder.kind for reminder in planned}
    assert {"loan_instalment_due", "card_statement_due"} <= kinds
    for reminder in planned:
        messages.render(reminder.kind, reminder.payload)


# ------------------------------------------------------------------ storing and the customer context


@dataclass
class FakeDeliveries:
    """Deliveries the store reports for frequency caps, without running a worker to make them."""

    rows: list[tuple[str, str, dt.datetime]] = field(default_factory=list)

    def recent_deliveries(
        self, session: Session, customer_id: str, since: dt.datetime
    ) -> list[tuple[str, dt.datetime]]:
        return [(channel, at) for cid, channel, at in self.rows if cid == customer_id and at >= since]


@pytest.fixture
def deliveries(monkeypatch: pytest.MonkeyPatch) -> FakeDeliveries:
    fake = FakeDeliveries()
    monkeypatch.setattr(store, "recent_deliveries", fake.recent_deliveries)
    return fake


def test_plan_and_store_creates_nothing_twice(bank: sessionmaker[Session]) -> None:
    rules = build_rules(RULES)
    with unit_of_work(bank) as session:
        planned, created = plan_and_store(session, rules, NOW)
    assert planned == created == 12
    with unit_of_work(bank) as session:
        assert plan_and_store(session, rules, NOW) == (12, 0)
        stored = {key: send_after for key, send_after in session.execute(select(Reminder.key, Reminder.send_after))}
    expected = {reminder.key: reminder.send_after for reminder in _plan(bank)}
    assert stored == expected


def test_a_stored_reminder_is_what_the_policy_and_the_context_read(bank: sessionmaker[Session]) -> None:
    with unit_of_work(bank) as session:
        plan_and_store(session, build_rules(RULES), NOW)
    with unit_of_work(bank) as session:
        row = session.scalars(select(Reminder).where(Reminder.key == "CSH:loan:LSH:1:2026-11-23:T-3")).one()
        ctx = gather_context(session, row, NOW, cap_window=dt.timedelta(hours=24))
        assert decide(row, ctx, build_rules(RULES).policy(), NOW) == Send("wecom")


def _reminder(bank: sessionmaker[Session], key: str) -> PlannedReminder:
    return {reminder.key: reminder for reminder in _plan(bank)}[key]


def test_context_reads_zone_reach_opt_outs_and_recent_sends(
    bank: sessionmaker[Session], deliveries: FakeDeliveries
) -> None:
    reminder = _reminder(bank, "CSH:loan:LSH:1:2026-11-23:T-3")
    deliveries.rows += [
        ("CSH", "wecom", NOW - dt.timedelta(hours=3)),
        ("CSH", "wecom", NOW - dt.timedelta(hours=30)),  # outside the window
        ("CNY", "wecom", NOW - dt.timedelta(hours=1)),  # someone else
    ]
    with unit_of_work(bank) as session:
        session.add(OptOut(customer_id="CSH", topic="reminders", channel="sms", created_at=NOW))
    with unit_of_work(bank) as session:
        ctx = gather_context(session, reminder, NOW, cap_window=dt.timedelta(hours=24))
    # Bound in the mini-program but no subscribe-message consent: a subscribe message cannot reach them.
    assert ctx.reachable == ("wecom", "phone", "sms", "webchat")
    with unit_of_work(bank) as session:
        session.add(
            SubscriptionConsent(openid="o-csh", customer_id="CSH", template_id="T1", remaining=1, updated_at=NOW)
        )
    with unit_of_work(bank) as session:
        ctx = gather_context(session, reminder, NOW, cap_window=dt.timedelta(hours=24))
    assert ctx.customer_id == "CSH"
    assert ctx.timezone == SHANGHAI_ZONE
    assert ctx.reachable == ("wecom", "miniprogram", "phone", "sms", "webchat")
    assert ctx.opted_out == frozenset({("reminders", "sms")})
    assert ctx.recent_sends == (("wecom", NOW - dt.timedelta(hours=3)),)
    assert ctx.settled is False


def test_a_customer_without_phone_or_bindings_is_reachable_on_webchat_only(
    bank: sessionmaker[Session], deliveries: FakeDeliveries
) -> None:
    reminder = _reminder(bank, "CNY:loan:LNY:1:2026-11-22:T-1")
    with unit_of_work(bank) as session:
        customer = session.get(Customer, "CNY")
        assert customer is not None
        customer.phone = None
    with unit_of_work(bank) as session:
        ctx = gather_context(session, reminder, NOW, cap_window=dt.timedelta(hours=24))
    assert ctx.reachable == ("webchat",)
    assert ctx.timezone == NEW_YORK_ZONE


def _settled(bank: sessionmaker[Session], reminder: PlannedReminder, now: dt.datetime = NOW) -> bool:
    with unit_of_work(bank) as session:
        return gather_context(session, reminder, now, cap_window=dt.timedelta(hours=24)).settled


def test_settlement_before_dispatch_is_seen_for_each_kind(
    bank: sessionmaker[Session], deliveries: FakeDeliveries
) -> None:
    loan = _reminder(bank, "CSH:loan:LSH:1:2026-11-23:T-3")
    statement = _reminder(bank, "CSH:statement:ACR:2026-11-21:T-1")
    card = _reminder(bank, "CSH:expiry:K1:2026-12-20:T-30")
    deposit = _reminder(bank, "CSH:deposit:D1:2026-11-27:T-7")
    debit = _reminder(bank, "CNY:debit:ad-1:2026-11-19:T-0")
    notice = _reminder(bank, "CSH:notice:maint-1:2026-11-21:T-1")
    everything = (loan, statement, card, deposit, debit, notice)
    assert not any(_settled(bank, reminder) for reminder in everything)

    with unit_of_work(bank) as session:
        instalment = session.query(LoanInstalment).filter_by(loan_id="LSH", seq=1).one()
        instalment.status = "paid"
        account = session.get(Account, "ACR")
        assert account is not None
        account.statement_balance = Decimal("0.00")
        held = session.get(Card, "K1")
        assert held is not None
        held.status = "replaced"
        matured = session.get(Deposit, "D1")
        assert matured is not None
        matured.status = "closed"
        session.add(
            CrossChannelEvent(
                event_id="ad-1-ok",
                customer_id="CNY",
                ts=NOW - dt.timedelta(minutes=30),
                channel="core",
                type="auto_debit_succeeded",
                attrs={"item_id": "LSH"},
            )
        )
    assert [_settled(bank, reminder) for reminder in everything] == [True] * 5 + [False]


def test_a_changed_expiry_or_due_date_settles_the_old_reminder(
    bank: sessionmaker[Session], deliveries: FakeDeliveries
) -> None:
    statement = _reminder(bank, "CSH:statement:ACR:2026-11-21:T-1")
    card = _reminder(bank, "CSH:expiry:K1:2026-12-20:T-30")
    with unit_of_work(bank) as session:
        account = session.get(Account, "ACR")
        held = session.get(Card, "K1")
        assert account is not None and held is not None
        account.statement_due_date = SH_TODAY + days(31)
        held.expiry = dt.date(2029, 12, 31)
    assert _settled(bank, statement) and _settled(bank, card)


def test_a_reminder_past_its_due_date_is_moot(bank: sessionmaker[Session], deliveries: FakeDeliveries) -> None:
    notice = _reminder(bank, "CSH:notice:maint-1:2026-11-21:T-1")
    debit = _reminder(bank, "CNY:debit:ad-1:2026-11-19:T-0")
    assert _settled(bank, notice, NOW + days(2))
    # A failed auto-debit stays worth reminding of for a few days (quiet hours may hold it overnight).
    assert not _settled(bank, debit, NOW + days(2))
    assert _settled(bank, debit, NOW + days(5))


def test_the_policys_fallback_zone_is_the_banks_zone() -> None:
    assert sandbox.BANK_ZONE.key == DEFAULT_ZONE

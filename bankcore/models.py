"""Typed SQLAlchemy models of the shared database: customers, identities and the sandbox core bank."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

UTC = dt.UTC
CENT = Decimal("0.01")

# Internal accounts of the bank (customer_id NULL, kind 'internal'); created by the initial migration.
OPENING_ACCOUNT_ID = "INT-OPENING"
CLEARING_ACCOUNT_ID = "INT-CLEARING"
CARD_SETTLEMENT_ACCOUNT_ID = "INT-CARD-SETTLEMENT"
LOAN_SERVICING_ACCOUNT_ID = "INT-LOAN-SERVICING"
INTERNAL_ACCOUNTS = {
    OPENING_ACCOUNT_ID: "Opening balances",
    CLEARING_ACCOUNT_ID: "Clearing for external payees",
    CARD_SETTLEMENT_ACCOUNT_ID: "Card settlement",
    LOAN_SERVICING_ACCOUNT_ID: "Loan servicing",
}


class _ScaledDecimal(TypeDecorator[Decimal]):
    """Exact decimals with a fixed scale.

    SQLite has no decimal type: there the value travels as a float (exact for 2-decimal amounts below
    10^13) and is rebuilt from its shortest repr, which avoids SQLAlchemy's lossy-Decimal warning.
    """

    impl = Numeric
    cache_ok = True
    precision = 18
    scale = 2

    def __init__(self) -> None:
        super().__init__(self.precision, self.scale)
        self._quantum = Decimal(1).scaleb(-self.scale)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=False))
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("money and rates must be Decimal, not float")
        quantised = Decimal(value).quantize(self._quantum)
        return float(quantised) if dialect.name == "sqlite" else quantised

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(str(value)).quantize(self._quantum)


class Money(_ScaledDecimal):
    cache_ok = True
    precision = 18
    scale = 2


class Rate(_ScaledDecimal):
    """Interest rates in percent and exchange rates per 100 units of foreign currency."""

    cache_ok = True
    precision = 12
    scale = 4


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC in and out; SQLite stores naive UTC text, so tzinfo is put back on read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise ValueError(f"timestamps must be timezone-aware datetimes, got {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    surname: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(8))
    phone: Mapped[str | None] = mapped_column(String(32))
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    # NULL means the bank-wide limit from settings applies.
    single_transfer_limit: Mapped[Decimal | None] = mapped_column(Money())
    daily_transfer_limit: Mapped[Decimal | None] = mapped_column(Money())
    # HMAC of the 6-digit transaction PIN (bankcore.verification.digest_code); NULL: no PIN set.
    pin_digest: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class ChannelIdentity(Base):
    __tablename__ = "channel_identities"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # debit | credit | internal
    name: Mapped[str] = mapped_column(String(64))
    last4: Mapped[str | None] = mapped_column(String(4))
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    # Signed from the holder's side: a credit account owing 8,650.00 has balance -8,650.00.
    balance: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0.00"))
    credit_limit: Mapped[Decimal | None] = mapped_column(Money())
    statement_balance: Mapped[Decimal | None] = mapped_column(Money())
    minimum_payment: Mapped[Decimal | None] = mapped_column(Money())
    statement_date: Mapped[dt.date | None] = mapped_column(Date)
    statement_due_date: Mapped[dt.date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | frozen | closed
    opened_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class Card(Base):
    __tablename__ = "cards"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    last4: Mapped[str] = mapped_column(String(4))
    kind: Mapped[str] = mapped_column(String(16))  # debit | credit
    status: Mapped[str] = mapped_column(String(16))  # active | inactive | frozen | lost | replaced
    expiry: Mapped[dt.date] = mapped_column(Date)
    replaces_card_id: Mapped[str | None] = mapped_column(String(32))
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    status_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Payee(Base):
    __tablename__ = "payees"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    bank_name: Mapped[str] = mapped_column(String(64))
    account_last4: Mapped[str | None] = mapped_column(String(4))
    # Set when the payee banks with us: the money lands on that account inside our ledger.
    internal_account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"))
    external_status: Mapped[str] = mapped_column(String(16), default="ok")  # ok | closed | invalid
    # ISO 3166-1 alpha-2 country of the payee's bank: anything but CN is a cross-border transfer.
    country: Mapped[str] = mapped_column(String(2), default="CN", server_default="CN")
    created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Journal(Base):
    __tablename__ = "journal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    kind: Mapped[str] = mapped_column(String(32))  # opening | adjustment | history | transfer | ...
    description: Mapped[str] = mapped_column(String(200))


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_account_created", "account_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    journal_id: Mapped[int] = mapped_column(ForeignKey("journal.id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[Decimal] = mapped_column(Money())  # signed: + credit to the holder, - debit
    balance_after: Mapped[Decimal] = mapped_column(Money())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    description: Mapped[str] = mapped_column(String(200))
    counterparty: Mapped[str | None] = mapped_column(String(100))


class Transfer(Base):
    __tablename__ = "transfers"
    # History and limits read one customer's transfers of some statuses (completed, authorised).
    __table_args__ = (Index("ix_transfers_customer_status", "customer_id", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    source_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    payee_id: Mapped[str] = mapped_column(ForeignKey("payees.id"))
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    channel: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    # pending_confirmation | awaiting_verification | authorized | completed | failed | cancelled
    # ('executing' exists only inside the executing transaction, never committed)
    status: Mapped[str] = mapped_column(String(32))
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    authorized_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    executed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    journal_id: Mapped[int | None] = mapped_column(ForeignKey("journal.id"))


class VerificationChallenge(Base):
    __tablename__ = "verification_challenges"
    __table_args__ = (Index("ix_verification_challenges_customer_subject", "customer_id", "subject_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    purpose: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(64))
    code_digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # pending | verified | failed | expired | consumed
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class CardRepayment(Base):
    __tablename__ = "card_repayments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    credit_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    source_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    mode: Mapped[str] = mapped_column(String(16))  # full | minimum | amount
    amount: Mapped[Decimal] = mapped_column(Money())
    channel: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(32))  # pending_confirmation | completed | failed | cancelled
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    executed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    journal_id: Mapped[int | None] = mapped_column(ForeignKey("journal.id"))


class Loan(Base):
    __tablename__ = "loans"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    product: Mapped[str] = mapped_column(String(32))  # mortgage | consumer | car | business
    name: Mapped[str] = mapped_column(String(64))
    principal: Mapped[Decimal] = mapped_column(Money())
    outstanding: Mapped[Decimal] = mapped_column(Money())
    rate: Mapped[Decimal] = mapped_column(Rate())  # yearly, percent
    repayment_account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"))
    start_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | closed


class LoanInstalment(Base):
    __tablename__ = "loan_instalments"
    __table_args__ = (UniqueConstraint("loan_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    loan_id: Mapped[str] = mapped_column(ForeignKey("loans.id"))
    seq: Mapped[int] = mapped_column(Integer)
    due_date: Mapped[dt.date] = mapped_column(Date)
    amount: Mapped[Decimal] = mapped_column(Money())
    principal_part: Mapped[Decimal] = mapped_column(Money())
    interest_part: Mapped[Decimal] = mapped_column(Money())
    status: Mapped[str] = mapped_column(String(16), default="due")  # due | paid
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class LoanRepayment(Base):
    __tablename__ = "loan_repayments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    loan_id: Mapped[str] = mapped_column(ForeignKey("loans.id"))
    instalment_seq: Mapped[int | None] = mapped_column(Integer)
    source_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[Decimal] = mapped_column(Money())
    channel: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))  # completed | failed
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    journal_id: Mapped[int | None] = mapped_column(ForeignKey("journal.id"))


class Deposit(Base):
    __tablename__ = "deposits"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    product: Mapped[str] = mapped_column(String(32))  # fixed | large_cd | notice
    name: Mapped[str] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(Money())
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    rate: Mapped[Decimal] = mapped_column(Rate())
    term_months: Mapped[int] = mapped_column(Integer)
    start_date: Mapped[dt.date] = mapped_column(Date)
    maturity_date: Mapped[dt.date] = mapped_column(Date)
    auto_renew: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | matured | closed


class Branch(Base):
    __tablename__ = "branches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    city: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(200))
    hours: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str] = mapped_column(String(32))
    services: Mapped[str] = mapped_column(String(200), default="")


class InterestRate(Base):
    __tablename__ = "interest_rates"
    __table_args__ = (UniqueConstraint("product", "term_months"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    product: Mapped[str] = mapped_column(String(32))  # deposit_demand | deposit_fixed | large_cd | loan_*
    product_name: Mapped[str] = mapped_column(String(64))
    term_months: Mapped[int | None] = mapped_column(Integer)  # NULL: no term (demand deposits)
    rate: Mapped[Decimal] = mapped_column(Rate())  # yearly, percent
    effective_date: Mapped[dt.date] = mapped_column(Date)


class ExchangeRate(Base):
    __tablename__ = "exchange_rates"

    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    name: Mapped[str] = mapped_column(String(32))
    # CNY per 100 units of the foreign currency, as Chinese banks quote them.
    buy: Mapped[Decimal] = mapped_column(Rate())
    sell: Mapped[Decimal] = mapped_column(Rate())
    as_of: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class SmsOutbox(Base):
    __tablename__ = "sms_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    phone: Mapped[str | None] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class OptOut(Base):
    __tablename__ = "opt_outs"
    __table_args__ = (UniqueConstraint("customer_id", "topic", "channel"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    topic: Mapped[str] = mapped_column(String(32))  # marketing | reminders | calls | all
    channel: Mapped[str] = mapped_column(String(32))  # sms | wecom | miniprogram | ivr | app | all
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class Complaint(Base):
    __tablename__ = "complaints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    category: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class Handoff(Base):
    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.id"), index=True)
    reason: Mapped[str] = mapped_column(String(64))
    priority: Mapped[str] = mapped_column(String(16))  # normal | high
    channel: Mapped[str] = mapped_column(String(32))
    summary: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | assigned | closed
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class FraudReport(Base):
    __tablename__ = "fraud_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    frozen_card_ids: Mapped[str] = mapped_column(String(400), default="")  # comma-separated
    handoff_id: Mapped[int | None] = mapped_column(ForeignKey("handoffs.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class CrossChannelEvent(Base):
    """One cross-channel event (bankcore.events.Event); `event_id` is the client's id, unique when given."""

    __tablename__ = "cx_events"
    __table_args__ = (Index("ix_cx_events_customer_ts", "customer_id", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    # Not a foreign key: events arrive for customers the sandbox bank does not hold (imports, simulations).
    customer_id: Mapped[str] = mapped_column(String(64))
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    channel: Mapped[str] = mapped_column(String(16))
    type: Mapped[str] = mapped_column(String(64))
    attrs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class CustomerProfile(Base):
    """Profile attributes for foresight (bankcore.events.Profile); the latest upload wins."""

    __tablename__ = "customer_profiles"

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    attrs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class ContactRecord(Base):
    """A contact with the bank: imported labels, or a live conversation with its predicted and final intent."""

    __tablename__ = "contacts"
    __table_args__ = (Index("ix_contacts_customer_ts", "customer_id", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    channel: Mapped[str] = mapped_column(String(16))
    intent: Mapped[str | None] = mapped_column(String(64))  # the final (resolved) reason; NULL while open
    predicted_intent: Mapped[str | None] = mapped_column(String(64))
    predicted_p: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16), default="import")  # import | live
    # Live contacts: the Rasa conversation and session they belong to, so the final intent finds its row.
    conversation_id: Mapped[str | None] = mapped_column(String(128), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class RiskDecision(Base):
    """One risk decision with its inputs and reasons (the audit trail); the latest per subject is in force."""

    __tablename__ = "risk_decisions"
    __table_args__ = (
        Index("ix_risk_decisions_customer_created", "customer_id", "created_at"),
        Index("ix_risk_decisions_subject", "subject_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))  # transfer | card_repayment | loan_repayment
    subject_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))  # allow | step_up | warn | hold | block
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # The signals (secrets never among them) and the features the decision was computed from.
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    score: Mapped[float | None] = mapped_column(Float)
    warning_key: Mapped[str | None] = mapped_column(String(64))
    freeze: Mapped[bool] = mapped_column(Boolean, default=False)
    rules_version: Mapped[str] = mapped_column(String(32))
    model_version: Mapped[str | None] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    stepped_up_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class RiskWatchlistEntry(Base):
    """The bank's fraud list: payee accounts (bankcore.risk.signals.payee_key), devices, caller numbers."""

    __tablename__ = "risk_watchlist"
    __table_args__ = (UniqueConstraint("kind", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # payee | device | caller
    key: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(200), default="")
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class Reminder(Base):
    """One outbound reminder the scheduler owes a customer (bankcore.reminders.store keeps its state machine).

    planned → due → dispatching → delivered | failed | cancelled | suppressed. `key` is unique per customer,
    rule, due item and offset, so planning twice creates nothing twice; it is also the channel's
    idempotency key, so a reminder re-sent after a worker crash is deduplicated by the platform.
    """

    __tablename__ = "reminders"
    __table_args__ = (Index("ix_reminders_status_next_attempt", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    rule_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))  # loan_instalment_due | card_statement_due | card_expiring | ...
    topic: Mapped[str] = mapped_column(String(32))  # the opt-out topic (loan, credit_card, card, deposit, ...)
    item_id: Mapped[str] = mapped_column(String(128))  # the due thing: instalment, account, card, deposit ...
    due_date: Mapped[dt.date] = mapped_column(Date)
    send_after: Mapped[dt.datetime] = mapped_column(UTCDateTime())  # earliest dispatch
    channels: Mapped[list[str]] = mapped_column(JSON, default=list)  # preference order
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # planned | due | dispatching | delivered | failed | cancelled | suppressed
    status: Mapped[str] = mapped_column(String(16), default="planned")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When a worker may next claim it; while dispatching, the lease's end (so takeover is the same range scan).
    # NULL once the reminder is final.
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    channel: Mapped[str | None] = mapped_column(String(32))  # the channel it was finally sent on
    outcome: Mapped[str | None] = mapped_column(String(16))  # reached | acted | promised | declined | opted_out
    last_error: Mapped[str | None] = mapped_column(Text)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class ReminderAttempt(Base):
    """One claim of a reminder and how it ended: the attempt history the store writes with each completion."""

    __tablename__ = "reminder_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reminder_id: Mapped[int] = mapped_column(ForeignKey("reminders.id"), index=True)
    attempt_no: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # delivered | failed | retry | waiting | suppressed | cancelled
    result: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")


class ChannelInboxMessage(Base):
    """A platform message the gateway acknowledged and still owes (or owed) an answer.

    Unique per (channel, platform message id), so a platform's retry of a callback is recognised as the same
    message however many gateway processes receive it. The decoded message is kept sealed (encrypted with a
    key derived from the secret key: it may hold a one-time code) only until it is answered, so a crash
    between the acknowledgement and the answer loses nothing: the message is taken up again.
    received → processing (leased) → answered | failed.
    """

    __tablename__ = "channel_inbox"
    __table_args__ = (
        UniqueConstraint("channel", "platform_msg_id"),
        Index("ix_channel_inbox_status_lease", "status", "lease_until"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    platform_msg_id: Mapped[str] = mapped_column(String(160))
    external_user: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # text | voice | event:<name> | ...
    sealed_body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="received")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    duplicates: Mapped[int] = mapped_column(Integer, default=0)  # platform retries seen and dropped
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)


class ChannelOutboxMessage(Base):
    """A reply owed to a platform user, sent through the platform's API with retries and backoff.

    `idempotency_key` is unique: an answer queued twice (a message processed again after a crash) is sent
    once. pending → sending (leased) → sent | failed; `partial_failure` keeps what the platform reported with
    errcode 0 (invaliduser and the like).
    """

    __tablename__ = "channel_outbox"
    __table_args__ = (Index("ix_channel_outbox_status_next", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    external_user: Mapped[str] = mapped_column(String(128), index=True)
    inbox_id: Mapped[int | None] = mapped_column(ForeignKey("channel_inbox.id"), index=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    platform_msg_id: Mapped[str | None] = mapped_column(String(128))
    partial_failure: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)


class PendingBinding(Base):
    """A platform user part-way through binding to a customer (phone number, then the SMS code).

    The typed phone number is not kept: only the customer it matched, if any (an unknown number gets the same
    answer and a binding that can never verify, so the flow does not tell which numbers are customers').
    """

    __tablename__ = "pending_bindings"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))  # the identity channel (wecom, miniprogram_openid, phone)
    external_id: Mapped[str] = mapped_column(String(128))
    stage: Mapped[str] = mapped_column(String(16))  # phone | code
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.id"))
    phone_tail: Mapped[str | None] = mapped_column(String(4))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class SubscriptionConsent(Base):
    """A mini-program user's consent to subscribe messages of one template (订阅消息).

    One-time subscriptions allow one message per acceptance: `remaining` counts acceptances not yet used; a
    43101 answer from WeChat (no consent) sets it to 0.
    """

    __tablename__ = "subscription_consents"
    __table_args__ = (UniqueConstraint("openid", "template_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    openid: Mapped[str] = mapped_column(String(128))
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.id"), index=True)
    template_id: Mapped[str] = mapped_column(String(128))
    remaining: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class OpsUser(Base):
    """A member of staff who uses the ops console: operations (edit data, train, promote), tester, viewer."""

    __tablename__ = "ops_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, with its parameters and salt
    role: Mapped[str] = mapped_column(String(16))  # ops | tester | viewer
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class OpsSession(Base):
    """A signed-in console session: the cookie holds a random token, the table only its SHA-256."""

    __tablename__ = "ops_sessions"

    token_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("ops_users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class OpsAuditEntry(Base):
    """Every change made through the console: who, what, when, and the diff."""

    __tablename__ = "ops_audit"
    __table_args__ = (Index("ix_ops_audit_at", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255), default="")
    diff: Mapped[str] = mapped_column(Text, default="")


class OpsInboxItem(Base):
    """A customer message as the NLU understood it, copied from Rasa's tracker store for review.

    The tracker store's `events` table has no column for the confidence or the channel, so paging 100,000
    messages by "least sure first" needs this indexed copy; it is filled incrementally (`event_id` is the
    tracker event's id) with texts masked again on the way in.
    """

    __tablename__ = "ops_inbox"
    __table_args__ = (
        Index("ix_ops_inbox_review", "status", "is_fallback", "confidence"),
        # The review queue within a channel, and a status over a date range (migration 0008).
        Index("ix_ops_inbox_channel_review", "status", "channel", "is_fallback", "confidence"),
        Index("ix_ops_inbox_status_ts", "status", "ts"),
        Index("ix_ops_inbox_channel_ts", "channel", "ts"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(Integer, unique=True)
    conversation: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(32))
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    text: Mapped[str] = mapped_column(Text)
    intent: Mapped[str] = mapped_column(String(64))
    confidence: Mapped[float] = mapped_column(Float)
    entities: Mapped[list[Any]] = mapped_column(JSON, default=list)
    is_fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="new")  # new | confirmed | corrected | dismissed
    reviewed_by: Mapped[str | None] = mapped_column(String(64))
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class OpsModel(Base):
    """A Rasa model the console trained or served: its file, the data it came from, who, when, and the gate.

    Status: candidate (passed the gate, may be promoted), refused (the gate said no), serving (loaded in the
    Rasa server now), retired (served before: a rollback target).
    """

    __tablename__ = "ops_models"
    __table_args__ = (Index("ix_ops_models_status", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    file_name: Mapped[str] = mapped_column(String(128), unique=True)  # bankbot-<data hash>.tar.gz
    data_hash: Mapped[str] = mapped_column(String(32))
    fingerprint: Mapped[str] = mapped_column(String(64), default="")  # Rasa's model_id, as GET /status reports it
    trained_by: Mapped[str] = mapped_column(String(64))
    trained_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    status: Mapped[str] = mapped_column(String(16))
    gate: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    promoted_by: Mapped[str | None] = mapped_column(String(64))
    promoted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class OpsModelJob(Base):
    """A background job of the console (train and gate, promote, roll back), its progress and outcome.

    `active` is 1 while the job is queued or running and NULL after: its unique constraint lets only one job
    run at a time whatever the number of gateway processes. A job that stops sending heartbeats is failed.
    """

    __tablename__ = "ops_model_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # train | promote | rollback
    requested_by: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("ops_models.id"))
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued | running | succeeded | failed
    phase: Mapped[str] = mapped_column(String(32), default="")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    pid: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[int | None] = mapped_column(Integer, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class TurnClaim(Base):
    """Who is running a customer message right now, so a retried message is answered once across gateways.

    `message_key` is the Rasa conversation id and the client's message id. A gateway inserts the row before it
    sends the message to Rasa and renews `lease_until` while it waits; `done_at` is set once Rasa answered. A
    retry finds the row: still leased → it waits; done, or the lease ran out (the gateway died) → it looks for
    the message in the conversation's tracker before sending it again. Rows are pruned after a day.
    """

    __tablename__ = "turn_claims"
    __table_args__ = (Index("ix_turn_claims_created_at", "created_at"),)

    message_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    lease_until: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    done_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)

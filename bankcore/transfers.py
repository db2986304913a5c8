"""Transfers to saved payees: prepare, verify with a one-time code, authorise, execute at most once."""

from __future__ import annotations

import datetime as dt
import unicodedata
import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from bankcore import messages, verification
from bankcore.accounts import default_debit_account, load_own_account
from bankcore.customers import customer_zone, transfer_limits
from bankcore.database import lock_customer
from bankcore.errors import InvalidStateError, NotFoundError, TransferRejected
from bankcore.ledger import Leg, available, checked_amount, lock_accounts, new_id, post
from bankcore.models import CLEARING_ACCOUNT_ID, Account, Customer, Payee, Transfer
from bankcore.risk import store as risk_store
from bankcore.risk.engine import Decision
from bankcore.risk.gather import SessionContext
from bankcore.risk.service import RiskService
from bankcore.settings import Settings

PENDING_CONFIRMATION = "pending_confirmation"
AWAITING_VERIFICATION = "awaiting_verification"
AUTHORIZED = "authorized"
EXECUTING = "executing"  # only inside the executing transaction; never committed
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
# Stopped by the risk service for a call-back: not executed, not counted, cancellable.
HELD = "held"
FINAL_STATUSES = (COMPLETED, FAILED, CANCELLED)
# Transfers that count against the daily limit.
COUNTED_STATUSES = (COMPLETED, AUTHORIZED)


@dataclass(frozen=True)
class TransferView:
    id: str
    customer_id: str
    source_account_id: str
    source_account_name: str
    source_account_last4: str | None
    payee_id: str
    payee_name: str
    payee_bank: str
    payee_account_last4: str | None
    amount: Decimal
    currency: str
    channel: str
    status: str
    failure_reason: str | None
    idempotency_key: str
    created_at: dt.datetime
    authorized_at: dt.datetime | None
    executed_at: dt.datetime | None
    journal_id: int | None


def _view(session: Session, transfer: Transfer) -> TransferView:
    source = session.get(Account, transfer.source_account_id)
    payee = session.get(Payee, transfer.payee_id)
    assert source is not None and payee is not None  # foreign keys guarantee both
    return TransferView(
        id=transfer.id,
        customer_id=transfer.customer_id,
        source_account_id=source.id,
        source_account_name=source.name,
        source_account_last4=source.last4,
        payee_id=payee.id,
        payee_name=payee.name,
        payee_bank=payee.bank_name,
        payee_account_last4=payee.account_last4,
        amount=transfer.amount,
        currency=transfer.currency,
        channel=transfer.channel,
        status=transfer.status,
        failure_reason=transfer.failure_reason,
        idempotency_key=transfer.idempotency_key,
        created_at=transfer.created_at,
        authorized_at=transfer.authorized_at,
        executed_at=transfer.executed_at,
        journal_id=transfer.journal_id,
    )


def _fold(name: str) -> str:
    return "".join(unicodedata.normalize("NFKC", name).split()).casefold()


def find_payee(session: Session, customer_id: str, payee_name: str) -> Payee | None:
    """A saved payee by name (width, case and spaces ignored) or by payee id."""
    payees = list(session.scalars(select(Payee).where(Payee.customer_id == customer_id).order_by(Payee.id)))
    wanted = _fold(payee_name or "")
    if not wanted:
        return None
    for payee in payees:
        if _fold(payee.name) == wanted or payee.id == payee_name:
            return payee
    return None


def _day_window(customer: Customer, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    local = now.astimezone(customer_zone(customer))
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + dt.timedelta(days=1)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def daily_total(
    session: Session,
    customer: Customer,
    now: dt.datetime,
    exclude_id: str | None = None,
    statuses: tuple[str, ...] = COUNTED_STATUSES,
) -> Decimal:
    """Transfers (by default completed and authorised) of the customer's local day (customer.timezone)."""
    start, end = _day_window(customer, now)
    when = func.coalesce(Transfer.executed_at, Transfer.authorized_at, Transfer.created_at)
    query = select(Transfer.amount).where(
        Transfer.customer_id == customer.id,
        Transfer.status.in_(statuses),
        when >= start,
        when < end,
    )
    if exclude_id is not None:
        query = query.where(Transfer.id != exclude_id)
    # Summed in Python: SQLite would sum floats.
    return sum(session.scalars(query), Decimal("0.00"))


def _load(session: Session, customer_id: str, transfer_id: str, *, lock: bool = False) -> Transfer:
    query = select(Transfer).where(Transfer.id == transfer_id, Transfer.customer_id == customer_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    transfer = session.execute(query).scalar_one_or_none()
    if transfer is None:
        raise NotFoundError("transfer_not_found", transfer_id=transfer_id)
    return transfer


def get_transfer(session: Session, customer_id: str, transfer_id: str) -> TransferView:
    return _view(session, _load(session, customer_id, transfer_id))


def prepare(
    session: Session,
    settings: Settings,
    customer_id: str,
    *,
    payee_name: str,
    amount: Decimal | int | str,
    source_account_id: str | None = None,
    channel: str,
    now: dt.datetime,
    idempotency_key: str | None = None,
) -> TransferView:
    """Validate a transfer and store it as pending_confirmation; raises TransferRejected with a code.

    `idempotency_key` lets a retried action find the transfer it already prepared instead of a twin.
    """
    if idempotency_key is not None:
        existing = session.scalar(
            select(Transfer).where(Transfer.idempotency_key == idempotency_key, Transfer.customer_id == customer_id)
        )
        if existing is not None:
            return _view(session, existing)
    value = checked_amount(amount)
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFoundError("customer_not_found", customer_id=customer_id)
    if source_account_id:
        source = load_own_account(session, customer_id, source_account_id)
    else:
        source = default_debit_account(session, customer_id)
    if source.kind != "debit":
        # Transfers leave debit accounts only; cash advances from credit cards are not offered.
        raise TransferRejected("source_not_debit", account_id=source.id)
    payee = find_payee(session, customer_id, payee_name)
    if payee is None:
        raise TransferRejected("unknown_payee", payee_name=payee_name)
    if payee.internal_account_id is not None:
        target = session.get(Account, payee.internal_account_id)
        if target is not None and target.customer_id == customer_id:
            raise TransferRejected("self_transfer", payee_name=payee.name)
    if source.status != "active":
        raise TransferRejected("account_frozen", account_id=source.id)
    # Limits first, as at execution: "over the 50,000 limit" is the actionable answer for a large amount.
    single, daily = transfer_limits(settings, customer)
    if value > single:
        raise TransferRejected("over_single_limit", limit=str(single))
    used = daily_total(session, customer, now)
    if used + value > daily:
        raise TransferRejected("over_daily_limit", limit=str(daily), remaining=str(max(daily - used, 0)))
    if available(source) < value:
        raise TransferRejected("insufficient_funds", available=str(available(source)))
    transfer = Transfer(
        id=new_id("T"),
        customer_id=customer_id,
        source_account_id=source.id,
        payee_id=payee.id,
        amount=value,
        currency=source.currency,
        channel=channel,
        idempotency_key=idempotency_key or uuid.uuid4().hex,
        status=PENDING_CONFIRMATION,
        created_at=now,
        updated_at=now,
    )
    session.add(transfer)
    session.flush()
    return _view(session, transfer)


def request_verification(
    session: Session, settings: Settings, customer_id: str, transfer_id: str, now: dt.datetime
) -> verification.Challenge:
    """After the customer confirmed the read-back: send a one-time code (again, if asked to resend)."""
    transfer = _load(session, customer_id, transfer_id, lock=True)
    if transfer.status not in (PENDING_CONFIRMATION, AWAITING_VERIFICATION):
        raise InvalidStateError("transfer_not_pending", status=transfer.status)
    problem = risk_store.clearance_problem(session, transfer.id)
    if problem is not None:
        # The code authorises the payment, so it is sent only once the risk checks are passed.
        raise InvalidStateError("transfer_not_risk_cleared", reason=problem)
    payee = session.get(Payee, transfer.payee_id)
    assert payee is not None
    transfer.status = AWAITING_VERIFICATION
    transfer.updated_at = now
    session.flush()
    return verification.issue(
        session,
        settings,
        customer_id,
        "transfer",
        transfer.id,
        now,
        detail=messages.transfer_detail(payee.name, payee.account_last4, transfer.amount),
    )


def authorize(
    session: Session,
    settings: Settings,
    customer_id: str,
    transfer_id: str,
    code_digest: str | None,
    now: dt.datetime,
) -> verification.CheckResult:
    """Check the code; `verified` authorises the transfer, `locked` cancels it (too many wrong codes)."""
    transfer = _load(session, customer_id, transfer_id, lock=True)
    if transfer.status != AWAITING_VERIFICATION:
        raise InvalidStateError("transfer_not_awaiting_verification", status=transfer.status)
    result = verification.check(session, settings, customer_id, transfer.id, code_digest, now)
    if result.outcome == verification.VERIFIED:
        assert result.challenge_id is not None
        verification.consume(session, result.challenge_id, now)
        transfer.status = AUTHORIZED
        transfer.authorized_at = now
        transfer.updated_at = now
    elif result.outcome == verification.LOCKED:
        transfer.status = CANCELLED
        transfer.failure_reason = "verification_locked"
        transfer.updated_at = now
    session.flush()
    return result


def execute(session: Session, settings: Settings, customer_id: str, transfer_id: str, now: dt.datetime) -> TransferView:
    """Move the money of an authorised transfer at most once; a repeated call returns the same outcome.

    Failures found at execution (payee account closed or invalid, frozen account, funds, limits) end
    the transfer as `failed` with `failure_reason` and move no money: the sandbox's clearing house
    answers synchronously, so there is never a posting to reverse. At execution the daily limit counts
    completed transfers only: executions of one customer are serialised by the customer-row lock, so
    the first authorised transfer to run wins (prepare counted authorised ones as well).
    """
    transfer = _load(session, customer_id, transfer_id, lock=True)
    if transfer.status in (COMPLETED, FAILED):
        return _view(session, transfer)
    if transfer.status != AUTHORIZED:
        raise InvalidStateError("transfer_not_authorized", status=transfer.status)
    # The claim: only one unit of work can move authorized → executing; a concurrent one sees 0 rows.
    claimed = session.execute(
        update(Transfer)
        .where(Transfer.id == transfer.id, Transfer.status == AUTHORIZED)
        .values(status=EXECUTING, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(transfer)
        if transfer.status in (COMPLETED, FAILED):
            return _view(session, transfer)
        raise InvalidStateError("transfer_not_authorized", status=transfer.status)
    set_committed_value(transfer, "status", EXECUTING)

    customer = lock_customer(session, customer_id)
    payee = session.get(Payee, transfer.payee_id)
    assert customer is not None and payee is not None
    target_id = payee.internal_account_id or CLEARING_ACCOUNT_ID
    accounts = lock_accounts(session, [transfer.source_account_id, target_id])
    source, target = accounts[transfer.source_account_id], accounts[target_id]
    single, daily = transfer_limits(settings, customer)

    failure: str | None = None
    if risk_store.clearance_problem(session, transfer.id) is not None:
        # Defence in depth: authorisation required clearance already; execution checks it again.
        failure = "risk_not_cleared"
    elif source.status != "active":
        failure = "account_frozen"
    elif payee.external_status == "closed" or target.status == "closed":
        failure = "payee_account_closed"
    elif payee.external_status == "invalid":
        failure = "payee_account_invalid"
    elif transfer.amount > single:
        failure = "over_single_limit"
    elif daily_total(session, customer, now, statuses=(COMPLETED,)) + transfer.amount > daily:
        failure = "over_daily_limit"
    elif available(source) < transfer.amount:
        failure = "insufficient_funds"

    if failure is None:
        tail = f"（尾号{payee.account_last4}）" if payee.account_last4 else ""
        journal = post(
            session,
            kind="transfer",
            description=f"transfer {transfer.id}",
            created_at=now,
            legs=[
                Leg(source, -transfer.amount, f"转账给{payee.name}{tail}", payee.name),
                Leg(target, transfer.amount, f"{customer.name}转入", customer.name),
            ],
        )
        transfer.status = COMPLETED
        transfer.journal_id = journal.id
    else:
        transfer.status = FAILED
        transfer.failure_reason = failure
    transfer.executed_at = now
    transfer.updated_at = now
    session.flush()
    return _view(session, transfer)


@dataclass(frozen=True)
class RiskOutcome:
    decision: Decision
    decision_id: str
    transfer: TransferView
    frozen_account_id: str | None  # the source account frozen by a block rule


def assess_risk(
    session: Session,
    service: RiskService,
    customer_id: str,
    transfer_id: str,
    context: SessionContext,
    now: dt.datetime,
) -> RiskOutcome:
    """After the read-back is confirmed and before any code is sent: the risk decision, applied.

    block cancels the transfer (and freezes the source account when the rule says so); hold parks it as
    `held` for the bank's call-back; warn, step_up and allow leave it pending, and clearance_problem then
    says what is still owed (acknowledgement, stronger verification). Raises RiskUnavailable: the caller
    then moves no money.
    """
    transfer = _load(session, customer_id, transfer_id, lock=True)
    if transfer.status != PENDING_CONFIRMATION:
        raise InvalidStateError("transfer_not_pending", status=transfer.status)
    payee = session.get(Payee, transfer.payee_id)
    assert payee is not None
    decision, stored = service.assess(
        session,
        kind="transfer",
        customer_id=customer_id,
        subject_id=transfer.id,
        amount=transfer.amount,
        currency=transfer.currency,
        payee=payee,
        context=context,
        now=now,
        exclude_transfer_id=transfer.id,
    )
    frozen: str | None = None
    if decision.action == "block":
        transfer.status = CANCELLED
        transfer.failure_reason = "risk_blocked"
        if decision.freeze:
            source = lock_accounts(session, [transfer.source_account_id])[transfer.source_account_id]
            source.status = "frozen"
            frozen = source.id
    elif decision.action == "hold":
        transfer.status = HELD
        transfer.failure_reason = "risk_hold"
    transfer.updated_at = now
    session.flush()
    return RiskOutcome(decision, stored.id, _view(session, transfer), frozen)


def cancel_unassessed(session: Session, customer_id: str, transfer_id: str, reason: str, now: dt.datetime) -> None:
    """Cancel a transfer the risk service could not assess (fail closed), in its own unit of work."""
    transfer = _load(session, customer_id, transfer_id, lock=True)
    if transfer.status in (PENDING_CONFIRMATION, AWAITING_VERIFICATION, HELD):
        transfer.status = CANCELLED
        transfer.failure_reason = reason
        transfer.updated_at = now
        session.flush()


def acknowledge_warning(session: Session, customer_id: str, transfer_id: str, now: dt.datetime) -> None:
    transfer = _load(session, customer_id, transfer_id, lock=True)
    if transfer.status != PENDING_CONFIRMATION:
        raise InvalidStateError("transfer_not_pending", status=transfer.status)
    risk_store.mark_acknowledged(session, transfer.id, now)


def _pin_subject(transfer_id: str) -> str:
    return f"{transfer_id}:pin"


def request_pin(
    session: Session, settings: Settings, customer_id: str, transfer_id: str, now: dt.datetime
) -> verification.Challenge:
    """Stronger verification: a challenge for the customer's transaction PIN (nothing is sent)."""
    transfer = _load(session, customer_id, transfer_id, lock=True)
    if transfer.status != PENDING_CONFIRMATION:
        raise InvalidStateError("transfer_not_pending", status=transfer.status)
    return verification.issue_pin_challenge(session, settings, customer_id, _pin_subject(transfer.id), now)


def verify_pin(
    session: Session,
    settings: Settings,
    customer_id: str,
    transfer_id: str,
    pin_digest: str | None,
    now: dt.datetime,
) -> verification.CheckResult:
    """Check the PIN digest; `verified` records the stronger verification, `locked` cancels the transfer."""
    transfer = _load(session, customer_id, transfer_id, lock=True)
    if transfer.status != PENDING_CONFIRMATION:
        raise InvalidStateError("transfer_not_pending", status=transfer.status)
    result = verification.check(session, settings, customer_id, _pin_subject(transfer.id), pin_digest, now)
    if result.outcome == verification.VERIFIED:
        assert result.challenge_id is not None
        verification.consume(session, result.challenge_id, now)
        risk_store.mark_stepped_up(session, transfer.id, now)
    elif result.outcome == verification.LOCKED:
        transfer.status = CANCELLED
        transfer.failure_reason = "pin_locked"
        transfer.updated_at = now
    session.flush()
    return result


def cancel(session: Session, customer_id: str, transfer_id: str, now: dt.datetime) -> TransferView:
    """Cancel a transfer that has not run; cancelling twice is harmless, a finished one cannot be."""
    transfer = _load(session, customer_id, transfer_id, lock=True)
    if transfer.status == CANCELLED:
        return _view(session, transfer)
    if transfer.status in (COMPLETED, FAILED):
        raise InvalidStateError("transfer_not_cancellable", status=transfer.status)
    transfer.status = CANCELLED
    transfer.failure_reason = transfer.failure_reason or "cancelled_by_customer"
    transfer.updated_at = now
    session.flush()
    return _view(session, transfer)


def failed_transfers(
    session: Session,
    customer_id: str,
    since: dt.datetime | None = None,
    *,
    payee_name: str | None = None,
    limit: int = 5,
) -> list[TransferView]:
    """Failed transfers, newest first, optionally since a time and to one payee."""
    when = func.coalesce(Transfer.executed_at, Transfer.created_at)
    query = select(Transfer).where(Transfer.customer_id == customer_id, Transfer.status == FAILED)
    if since is not None:
        query = query.where(when >= since)
    if payee_name:
        payee = find_payee(session, customer_id, payee_name)
        if payee is None:
            return []
        query = query.where(Transfer.payee_id == payee.id)
    rows = session.scalars(query.order_by(when.desc(), Transfer.id.desc()).limit(limit))
    return [_view(session, t) for t in rows]


@dataclass(frozen=True)
class PayeeView:
    id: str
    name: str
    bank_name: str
    account_last4: str | None
    internal: bool  # the payee banks with us
    external_status: str  # ok | closed | invalid


def list_payees(session: Session, customer_id: str) -> list[PayeeView]:
    """The customer's saved payees (the gateway feeds their names to jieba and the payee slot)."""
    rows = session.scalars(select(Payee).where(Payee.customer_id == customer_id).order_by(Payee.id))
    return [
        PayeeView(p.id, p.name, p.bank_name, p.account_last4, p.internal_account_id is not None, p.external_status)
        for p in rows
    ]

"""Credit-card bills and repayment, loan instalments, deposit maturity."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from uuid import uuid4

from rasa_sdk.events import EventType, SlotSet

from actions import messages
from actions.reminders import note_reminder_outcome
from actions.runtime import BankAction, Turn
from actions.transfer_risk import repayment_allowed
from bankcore import accounts, credit_cards, deposits, loans
from bankcore.money import AmountError, format_amount, parse_amount


def _statement_line(statement: credit_cards.StatementView) -> str:
    return messages.STATEMENT.format(
        last4=statement.card_last4 or "",
        statement_balance=format_amount(statement.statement_balance),
        minimum_payment=format_amount(statement.minimum_payment),
        due_date=_day(statement.due_date),
        outstanding=format_amount(statement.current_balance),
        available=format_amount(statement.available_credit),
    )


def _day(day: date | None) -> str:
    return f"{day:%Y年%m月%d日}" if day else "—"


def _has_credit_card(turn: Turn) -> bool:
    if accounts.list_accounts(turn.session, turn.customer_id, kind="credit"):
        return True
    turn.dispatcher.utter_message(response="utter_no_credit_card")
    return False


def _default_source(turn: Turn) -> accounts.AccountView | None:
    debit = [a for a in accounts.list_accounts(turn.session, turn.customer_id, kind="debit") if a.status == "active"]
    return max(debit, key=lambda a: a.balance) if debit else None


class ActionCreditCardBill(BankAction):
    action_name = "action_credit_card_bill"

    def act(self, turn: Turn) -> list[EventType]:
        if not _has_credit_card(turn):
            return []
        statement = credit_cards.statement(turn.session, turn.customer_id, last4=turn.entity("card_last4"))
        turn.dispatcher.utter_message(text=_statement_line(statement))
        return []


class ActionCreditCardRepay(BankAction):
    """Choose full / minimum / an amount, then read the repayment back for confirmation."""

    action_name = "action_credit_card_repay"

    def act(self, turn: Turn) -> list[EventType]:
        if not _has_credit_card(turn):
            return []
        statement = credit_cards.statement(turn.session, turn.customer_id, last4=turn.entity("card_last4"))
        mode = turn.entity("repay_mode")
        amount: Decimal | None = None
        raw_amount = turn.entity("amount")
        if raw_amount:
            try:
                amount = parse_amount(raw_amount)
                mode = "amount"
            except AmountError:
                turn.dispatcher.utter_message(response="utter_error_invalid_amount")
                return []
        elif mode is None and any(word in turn.text for word in ("全额", "全部", "还清", "结清")):
            mode = "full"
        elif mode is None and "最低" in turn.text:
            mode = "minimum"
        if mode not in {"full", "minimum", "amount"}:
            if statement.current_balance <= 0:
                turn.dispatcher.utter_message(response="utter_nothing_to_repay")
                return []
            turn.dispatcher.utter_message(
                response="utter_ask_repay_mode",
                statement_balance=format_amount(statement.statement_balance),
                minimum_payment=format_amount(statement.minimum_payment),
                due_date=_day(statement.due_date),
                buttons=[
                    {
                        "title": messages.REPAY_FULL_BUTTON.format(amount=format_amount(statement.statement_balance)),
                        "payload": '/credit_card_repay{"repay_mode": "full"}',
                    },
                    {
                        "title": messages.REPAY_MINIMUM_BUTTON.format(amount=format_amount(statement.minimum_payment)),
                        "payload": '/credit_card_repay{"repay_mode": "minimum"}',
                    },
                ],
            )
            return []
        source = _default_source(turn)
        if source is None:
            turn.dispatcher.utter_message(text=messages.NO_ACCOUNTS)
            return []
        repayment = credit_cards.prepare_repayment(
            turn.session,
            turn.customer_id,
            mode=mode,
            amount=amount,
            source_account_id=source.id,
            last4=statement.card_last4,
            channel=turn.channel,
            now=turn.now,
        )
        turn.dispatcher.utter_message(
            response="utter_card_repayment_readback",
            source_name=source.name,
            source_last4=source.last4 or "",
            amount=format_amount(repayment.amount),
            card_last4=repayment.card_last4 or "",
        )
        return [SlotSet("pending_confirmation", "card_repayment"), SlotSet("pending_subject", repayment.id)]


def confirm_card_repayment(turn: Turn, repayment_id: str) -> None:
    pending = credit_cards.get_repayment(turn.session, turn.customer_id, repayment_id)
    if pending.status == "pending_confirmation" and not repayment_allowed(
        turn, "card_repayment", repayment_id, pending.amount
    ):
        credit_cards.cancel_repayment(turn.session, turn.customer_id, repayment_id)
        return
    done = credit_cards.execute_repayment(turn.session, turn.customer_id, repayment_id, turn.now)
    note_reminder_outcome(turn, "acted")
    after = credit_cards.statement(turn.session, turn.customer_id, last4=done.card_last4)
    turn.dispatcher.utter_message(
        response="utter_card_repayment_done",
        card_last4=done.card_last4 or "",
        amount=format_amount(done.amount),
        outstanding=format_amount(after.current_balance),
    )


class ActionLoanRepayment(BankAction):
    action_name = "action_loan_repayment"

    def act(self, turn: Turn) -> list[EventType]:
        found = loans.list_loans(turn.session, turn.customer_id)
        if not found:
            turn.dispatcher.utter_message(response="utter_no_loans")
            return []
        lines = [
            messages.LOAN_LINE.format(
                name=loan.name,
                due_date=_day(loan.next_due_date),
                amount=format_amount(loan.next_amount or Decimal("0")),
                outstanding=format_amount(loan.outstanding),
            )
            for loan in found
        ]
        # Whether the customer asked what is due or asked to pay it, the answer is the schedule and an offer
        # to pay the next instalment now; nothing moves until they confirm the read-back ("不用" declines).
        turn.dispatcher.utter_message(text="\n".join(lines))
        due = [loan for loan in found if loan.next_amount]
        source = _default_source(turn)
        if not due or source is None:
            return []
        loan = due[0]
        turn.dispatcher.utter_message(
            response="utter_loan_repayment_readback",
            source_name=source.name,
            source_last4=source.last4,
            loan_name=loan.name,
            amount=format_amount(loan.next_amount or Decimal("0")),
        )
        subject = f"{loan.id}|{source.id}|{uuid4().hex}"
        return [SlotSet("pending_confirmation", "loan_repayment"), SlotSet("pending_subject", subject)]


def confirm_loan_repayment(turn: Turn, subject: str) -> None:
    # The idempotency key was minted at the read-back: confirming twice repays once.
    loan_id, source_id, idempotency_key = subject.split("|")
    due = loans.get_loan(turn.session, turn.customer_id, loan_id)
    if due.next_amount and not repayment_allowed(turn, "loan_repayment", idempotency_key, due.next_amount):
        return
    done = loans.repay_instalment(
        turn.session,
        turn.customer_id,
        loan_id,
        source_account_id=source_id,
        idempotency_key=idempotency_key,
        channel=turn.channel,
        now=turn.now,
    )
    if done.status != "completed":
        turn.dispatcher.utter_message(response=f"utter_error_{done.failure_reason or 'generic'}")
        return
    note_reminder_outcome(turn, "acted")
    loan = loans.get_loan(turn.session, turn.customer_id, loan_id)
    turn.dispatcher.utter_message(
        response="utter_loan_repayment_done",
        loan_name=loan.name,
        amount=format_amount(done.amount),
        outstanding=format_amount(loan.outstanding),
    )


class ActionDepositMaturity(BankAction):
    action_name = "action_deposit_maturity"

    def act(self, turn: Turn) -> list[EventType]:
        found = deposits.list_deposits(turn.session, turn.customer_id)
        if not found:
            turn.dispatcher.utter_message(response="utter_no_deposits")
            return []
        today = turn.now.date()
        lines = []
        for deposit in found:
            days = (deposit.maturity_date - today).days
            lines.append(
                messages.DEPOSIT_LINE.format(
                    name=deposit.name,
                    amount=format_amount(deposit.amount),
                    rate=f"{deposit.rate:.2f}",
                    maturity_date=f"{deposit.maturity_date:%Y年%m月%d日}",
                    days_left=messages.DEPOSIT_DAYS_LEFT.format(days=days) if days > 0 else messages.DEPOSIT_MATURED,
                    renewal=messages.DEPOSIT_RENEWAL[bool(deposit.auto_renew)],
                )
            )
        turn.dispatcher.utter_message(text="\n".join(lines))
        return []

"""A reminder the scheduler opened a conversation with: read it, offer what to do, and record what came of it.

The scheduler sends `/EXTERNAL_reminder{...}` (channels/reminder_conversations.py) with the reminder as
entities of their own (reminder_kind, reminder_topic, reminder_key, reminder_item, reminder_amount,
reminder_due, reminder_card: no form slot such as `amount` is filled by a reminder) and the customer in the
message metadata, like every gateway turn. Outcomes (acted, promised, declined, opted out) become
`reminder_outcome` cross-channel events, which the foresight model reads like any other event.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

from rasa_sdk.events import EventType, SlotSet

from actions.runtime import BankAction, Turn, entity_values
from bankcore import customers, deposits, loans
from bankcore.dates import future_date_phrase
from bankcore.event_store import store_events
from bankcore.money import format_amount
from bankcore.reminders.outcomes import outcome_event

logger = logging.getLogger(__name__)

# What the customer can do next, per kind of reminder (button title, payload).
_NEXT_STEPS: dict[str, list[tuple[str, str]]] = {
    "loan_instalment_due": [("现在还款", "/loan_repayment"), ("稍后再说", "/deny")],
    "card_statement_due": [("现在还款", "/credit_card_repay"), ("稍后再说", "/deny")],
    "auto_debit_failed": [("现在还款", "/loan_repayment"), ("稍后再说", "/deny")],
    "deposit_maturing": [("查看我的定期", "/deposit_maturity"), ("知道了", "/deny")],
}
_KNOWN_KINDS = frozenset(
    {
        "loan_instalment_due",
        "card_statement_due",
        "card_expiring",
        "deposit_maturing",
        "auto_debit_failed",
        "service_notice",
    }
)


def _due_text(value: str | None) -> str:
    try:
        day = dt.date.fromisoformat(str(value))
    except ValueError:
        return str(value or "近期")
    return f"{day.month}月{day.day}日"


class ActionReminder(BankAction):
    action_name = "action_reminder"

    def act(self, turn: Turn) -> list[EventType]:
        kind = turn.entity("reminder_kind") or ""
        key = turn.entity("reminder_key")
        topic = turn.entity("reminder_topic")
        item = turn.entity("reminder_item") or ""
        customer = customers.get_customer(turn.session, turn.customer_id)
        params: dict[str, Any] = {
            "title": f"{customer.surname}{customer.title}",
            "amount": format_amount_text(turn.entity("reminder_amount")),
            "due_date": _due_text(turn.entity("reminder_due")),
            "product": "",
            "card_last4": turn.entity("reminder_card") or "",
            "notice": "",
        }
        params.update(_item_details(turn, kind, item))
        response = f"utter_reminder_{kind}" if kind in _KNOWN_KINDS else "utter_reminder_generic"
        buttons = [{"title": title, "payload": payload} for title, payload in _NEXT_STEPS.get(kind, [])]
        turn.dispatcher.utter_message(response=response, buttons=buttons or None, **params)
        return [SlotSet("reminder_topic", topic), SlotSet("reminder_key", key)]


def format_amount_text(value: str | None) -> str:
    if not value:
        return ""
    try:
        return format_amount(Decimal(value))
    except ArithmeticError:
        return value


def _item_details(turn: Turn, kind: str, item: str) -> dict[str, Any]:
    """Names the reminder's entities do not carry (product names), read from the bank; best effort."""
    try:
        if kind in ("loan_instalment_due", "auto_debit_failed"):
            for loan in loans.list_loans(turn.session, turn.customer_id):
                if item.startswith(loan.id) or item == loan.id:
                    return {"product": loan.name}
            return {"product": "贷款"}
        if kind == "deposit_maturing":
            for deposit in deposits.list_deposits(turn.session, turn.customer_id):
                if deposit.id == item:
                    return {"product": deposit.name}
            return {"product": "定期存款"}
    except Exception:
        logger.warning("reminder details unavailable", exc_info=True, extra={"customer_id": turn.customer_id})
    return {}


def note_reminder_outcome(turn: Turn, outcome: str) -> None:
    """When this conversation was opened by a reminder, record what came of it (once per outcome)."""
    key = turn.slot("reminder_key")
    if not key:
        return
    event = outcome_event(
        customer_id=turn.customer_id,
        channel=turn.channel,
        key=str(key),
        topic=str(turn.slot("reminder_topic") or ""),
        outcome=outcome,
        now=turn.now,
    )
    store_events(turn.session, [event])


class ActionReminderDeclined(BankAction):
    action_name = "action_reminder_declined"

    def act(self, turn: Turn) -> list[EventType]:
        note_reminder_outcome(turn, "declined")
        turn.dispatcher.utter_message(response="utter_reminder_declined")
        return []


def _promised_day(turn: Turn) -> str | None:
    """The day the customer promised, in their words: the model's last date entity (in "这个月的钱我月底之前会还的"
    the first names the bill, the last the day), trimmed to the day phrase in it (the model may tag a character
    beyond it: "月底前会"), or the day phrase in the text when it tagged none."""
    dates = entity_values(turn.tracker, "date")
    if dates:
        return future_date_phrase(dates[-1]) or dates[-1]
    return future_date_phrase(turn.text)


class ActionReminderPromised(BankAction):
    """A promise to pay later ("我明天就还"): acknowledged with the day repeated, and recorded as the outcome of
    the reminder that opened the conversation (once per reminder, like the other outcomes)."""

    action_name = "action_reminder_promised"

    def act(self, turn: Turn) -> list[EventType]:
        if not turn.slot("reminder_key"):
            # A promise with no reminder to answer: nothing to record, only where to pay or look.
            turn.dispatcher.utter_message(response="utter_promise_without_reminder")
            return []
        note_reminder_outcome(turn, "promised")
        said = _promised_day(turn)
        if said:
            turn.dispatcher.utter_message(response="utter_reminder_promised_on_date", date=said)
        else:
            turn.dispatcher.utter_message(response="utter_reminder_promised")
        return []

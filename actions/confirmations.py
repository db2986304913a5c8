"""Affirm and deny: carry out or cancel whatever the last read-back asked the customer to confirm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.cards import confirm_activation, confirm_replacement
from actions.credit_and_loans import confirm_card_repayment, confirm_loan_repayment
from actions.foresight_greeting import reroute_to_intent
from actions.runtime import BankAction, Turn
from actions.transfer_risk import acknowledge_warning, assess_confirmed_transfer
from actions.transfers import cancel_transfer, clear_pending, clear_transfer_slots
from bankcore.errors import BankError

_CONFIRMERS: dict[str, Callable[[Turn, str], None]] = {
    "card_repayment": confirm_card_repayment,
    "loan_repayment": confirm_loan_repayment,
    "card_replacement": confirm_replacement,
    "card_activation": confirm_activation,
}


# Confirmations after which money moves (a risk warning has its own explicit acknowledgement).
_MONEY_MOVING = frozenset({"transfer", "card_repayment", "loan_repayment"})
_EXPLICIT_YES = "/affirm"


def _spoken_without_explicit_yes(tracker: Tracker) -> bool:
    """A voice turn whose "yes" is not a closed-answer payload (the voice session sends `/affirm...`)."""
    message = tracker.latest_message or {}
    metadata = message.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("input_mode") != "voice":
        return False
    return not str(message.get("text") or "").strip().startswith(_EXPLICIT_YES)


def read_back_in_last_reply(events: list[dict[str, Any]]) -> bool:
    """Whether the assistant's reply just before the customer's latest message set something to confirm."""
    users_seen = 0
    for event in reversed(events):
        if event.get("event") == "user":
            users_seen += 1
            if users_seen == 2:
                return False
        elif users_seen == 1 and event.get("event") == "slot" and event.get("name") == "pending_confirmation":
            return event.get("value") is not None
    return False


class ActionConfirmPending(BankAction):
    action_name = "action_confirm_pending"

    def act(self, turn: Turn) -> list[EventType]:
        pending = turn.slot("pending_confirmation")
        subject = turn.slot("pending_subject")
        if not pending or not subject:
            turn.dispatcher.utter_message(response="utter_nothing_to_confirm")
            return []
        if not turn.slot("awaiting_code") and not read_back_in_last_reply(turn.tracker.events):
            # A "好的" several turns after a read-back (the customer asked something else meanwhile) must not
            # move money: the offer lapses and the customer starts the request again.
            turn.dispatcher.utter_message(response="utter_nothing_to_confirm")
            return clear_pending()
        if pending in _MONEY_MOVING and _spoken_without_explicit_yes(turn.tracker):
            # By voice, only a yes the recogniser matched against the read-back's closed answers (or a key
            # press) counts; free speech the NLU merely classified as "affirm" does not move money.
            turn.dispatcher.utter_message(response="utter_voice_explicit_yes")
            # Setting the slot again keeps the read-back open for the explicit answer that follows.
            return [SlotSet("pending_confirmation", pending)]
        if pending == "foresight":
            # "是" to the greeting's guess: go straight into that skill, as if the customer had asked for it.
            return [*clear_pending(), *reroute_to_intent(turn.tracker, str(subject))]
        if pending == "transfer":
            if turn.slot("awaiting_code"):
                # Confirming again while the code is outstanding sends nothing new: the code is what's missing.
                turn.dispatcher.utter_message(response="utter_code_still_needed")
                return []
            # The risk decision comes before any code is sent: it may warn, ask for the PIN, hold or block.
            return assess_confirmed_transfer(turn, str(subject))
        if pending == "risk_warning":
            return acknowledge_warning(turn, str(subject))
        _CONFIRMERS[str(pending)](turn, str(subject))
        return clear_pending()

    def on_bank_error(self, turn_dispatcher: CollectingDispatcher, error: BankError) -> list[EventType]:
        events = super().on_bank_error(turn_dispatcher, error)
        return [*events, *clear_pending()]


class ActionCancelPending(BankAction):
    action_name = "action_cancel_pending"

    def act(self, turn: Turn) -> list[EventType]:
        pending = turn.slot("pending_confirmation")
        subject = turn.slot("pending_subject")
        active_loop = turn.tracker.active_loop.get("name")
        events: list[EventType] = []
        if active_loop:
            events.append({"event": "active_loop", "name": None})
            events.append(SlotSet("requested_slot", None))
        if pending in ("transfer", "risk_warning") and subject:
            cancel_transfer(turn, str(subject))
        elif active_loop == "transfer_form":
            turn.dispatcher.utter_message(response="utter_transfer_cancelled")
        elif pending == "foresight":
            turn.dispatcher.utter_message(response="utter_foresight_declined")
        elif pending == "card_replacement":
            # Declining a replacement after a loss report leaves the card frozen, which is what the customer wants.
            turn.dispatcher.utter_message(response="utter_anything_else")
        else:
            turn.dispatcher.utter_message(response="utter_cancelled")
        return [*events, *clear_transfer_slots(), *clear_pending()]

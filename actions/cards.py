"""Cards: report a lost card (frozen at once), replace it, activate a new one."""

from __future__ import annotations

from rasa_sdk.events import EventType, SlotSet

from actions import messages
from actions.runtime import BankAction, Turn
from bankcore import cards


def _card_name(card: cards.CardView) -> str:
    return messages.ACCOUNT_KIND_NAMES.get(card.kind, "银行卡")


def _choose_card(turn: Turn, candidates: list[cards.CardView], intent: str) -> cards.CardView | None:
    """The card the customer named (last four digits), the only candidate, or None after asking which."""
    last4 = turn.entity("card_last4")
    if last4:
        named = [card for card in candidates if card.last4 == last4]
        if named:
            return named[0]
        turn.dispatcher.utter_message(response="utter_error_card_not_found", last4=last4)
        return None
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        turn.dispatcher.utter_message(response="utter_no_cards")
        return None
    buttons = [
        {
            "title": messages.CARD_BUTTON.format(
                name=_card_name(card), last4=card.last4, status=messages.CARD_STATUS_NAMES.get(card.status, "")
            ),
            "payload": f'/{intent}{{"card_last4": "{card.last4}"}}',
        }
        for card in candidates
    ]
    turn.dispatcher.utter_message(response="utter_choose_card", buttons=buttons)
    return None


def _ask_replacement(turn: Turn, card: cards.CardView) -> list[EventType]:
    turn.dispatcher.utter_message(
        response="utter_card_replacement_readback", last4=card.last4, card_name=_card_name(card)
    )
    return [SlotSet("pending_confirmation", "card_replacement"), SlotSet("pending_subject", card.last4)]


class ActionReportLostCard(BankAction):
    action_name = "action_report_lost_card"

    def act(self, turn: Turn) -> list[EventType]:
        usable = [c for c in cards.list_cards(turn.session, turn.customer_id) if c.status in {"active", "frozen"}]
        card = _choose_card(turn, usable, "report_lost_card")
        if card is None:
            return []
        frozen = cards.report_lost(turn.session, turn.customer_id, card.last4, turn.now)
        turn.dispatcher.utter_message(
            response="utter_card_frozen_lost", last4=frozen.last4, card_name=_card_name(frozen)
        )
        return [SlotSet("pending_confirmation", "card_replacement"), SlotSet("pending_subject", frozen.last4)]


class ActionReplaceCard(BankAction):
    action_name = "action_replace_card"

    def act(self, turn: Turn) -> list[EventType]:
        replaceable = [
            c for c in cards.list_cards(turn.session, turn.customer_id) if c.status in {"active", "frozen", "lost"}
        ]
        card = _choose_card(turn, replaceable, "replace_card")
        return [] if card is None else _ask_replacement(turn, card)


class ActionActivateCard(BankAction):
    action_name = "action_activate_card"

    def act(self, turn: Turn) -> list[EventType]:
        inactive = [c for c in cards.list_cards(turn.session, turn.customer_id) if c.status == "inactive"]
        if not inactive and not turn.entity("card_last4"):
            turn.dispatcher.utter_message(response="utter_no_inactive_card")
            return []
        card = _choose_card(turn, inactive or cards.list_cards(turn.session, turn.customer_id), "activate_card")
        if card is None:
            return []
        turn.dispatcher.utter_message(
            response="utter_card_activation_readback", last4=card.last4, card_name=_card_name(card)
        )
        return [SlotSet("pending_confirmation", "card_activation"), SlotSet("pending_subject", card.last4)]


def confirm_replacement(turn: Turn, last4: str) -> None:
    new_card = cards.request_replacement(turn.session, turn.customer_id, last4, turn.now)
    turn.dispatcher.utter_message(response="utter_card_replaced", new_last4=new_card.last4)


def confirm_activation(turn: Turn, last4: str) -> None:
    card = cards.activate(turn.session, turn.customer_id, last4, turn.now)
    turn.dispatcher.utter_message(response="utter_card_activated", last4=card.last4, card_name=_card_name(card))

"""Branches, interest and exchange rates, the low-confidence fallback, and stray form answers."""

from __future__ import annotations

import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import FormValidationAction

from actions import messages
from actions.foresight_greeting import first_utterance_prior, reroute_to_intent
from actions.runtime import BankAction, Turn
from bankcore import branches, rates
from bankcore.errors import BankError
from foresight.prior import combine, nlu_ranking

logger = logging.getLogger("actions.guidance")

_GUESSES = 2
_NOT_A_GUESS = {"nlu_fallback", "inform", "affirm", "deny", "submit_otp", "out_of_scope"}


class ValidateBranchForm(FormValidationAction):
    def name(self) -> str:
        return "validate_branch_form"

    async def validate_location(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        text = str(value or "").strip()
        return {"location": text or None}


class ActionBranchLookup(BankAction):
    action_name = "action_branch_lookup"

    def act(self, turn: Turn) -> list[EventType]:
        location = str(turn.slot("location") or turn.entity("location") or "")
        found = branches.find_branches(turn.session, location, limit=3)
        if not found:
            turn.dispatcher.utter_message(response="utter_no_branch_found", location=location)
            return [SlotSet("location", None)]
        lines = [messages.BRANCH_HEADER]
        lines += [
            messages.BRANCH_LINE.format(name=b.name, address=b.address, hours=b.hours, phone=b.phone) for b in found
        ]
        turn.dispatcher.utter_message(text="\n".join(lines))
        return [SlotSet("location", None)]


class ActionInterestRate(BankAction):
    action_name = "action_interest_rate"

    def act(self, turn: Turn) -> list[EventType]:
        table = rates.interest_rates(turn.session)
        # The customer may name a product ("定期", "房贷") or a term ("三年"): show the rows that match.
        text = turn.text.replace("两", "二")
        by_product = [row for row in table if _mentions(text, row.product_name)]
        by_term = [row for row in by_product or table if _term_names(row.term_months) & _words(text)]
        shown = by_term or by_product or table
        lines = [messages.INTEREST_HEADER.format(product_scope=messages.INTEREST_SCOPE_ALL)]
        lines += [
            messages.INTEREST_LINE.format(
                product=row.product_name, term=_term_label(row.term_months), rate=f"{row.rate:.2f}"
            )
            for row in shown
        ]
        turn.dispatcher.utter_message(text="\n".join(lines))
        return []


class ActionExchangeRate(BankAction):
    action_name = "action_exchange_rate"

    def act(self, turn: Turn) -> list[EventType]:
        currency = (turn.entity("currency") or "").upper()
        if not currency:
            rows = rates.list_exchange_rates(turn.session)
            lines = [messages.EXCHANGE_HEADER]
            lines += [
                messages.EXCHANGE_ROW.format(
                    currency_name=messages.CURRENCY_NAMES.get(r.currency, r.currency),
                    currency=r.currency,
                    buy=f"{r.buy:.2f}",
                    sell=f"{r.sell:.2f}",
                    unit=r.unit,
                )
                for r in rows
            ]
            turn.dispatcher.utter_message(text="\n".join(lines))
            return []
        try:
            row = rates.exchange_rate(turn.session, currency)
        except BankError:
            turn.dispatcher.utter_message(text=messages.UNKNOWN_CURRENCY.format(currency=currency))
            return []
        turn.dispatcher.utter_message(
            text=messages.EXCHANGE_LINE.format(
                currency_name=messages.CURRENCY_NAMES.get(row.currency, row.currency),
                currency=row.currency,
                buy=f"{row.buy:.2f}",
                sell=f"{row.sell:.2f}",
                unit=row.unit,
                as_of=f"{row.as_of:%m月%d日 %H:%M}",
            )
        )
        return []


_CHINESE_DIGITS = "零一二三四五六七八九十"


def _chinese_number(number: int) -> str:
    if number <= 10:
        return _CHINESE_DIGITS[number]
    tens, ones = divmod(number, 10)
    return ("" if tens == 1 else _CHINESE_DIGITS[tens]) + "十" + (_CHINESE_DIGITS[ones] if ones else "")


def _term_names(months: int | None) -> set[str]:
    """The ways a customer names a term: 3个月, 三个月, 1年, 一年, 十二个月..."""
    if months is None:
        return set()
    names = {f"{months}个月", f"{_chinese_number(months)}个月"} if months <= 99 else set()
    if months % 12 == 0:
        years = months // 12
        names |= {f"{years}年", f"{_chinese_number(years)}年"}
    if months == 6:
        names.add("半年")
    return names


def _words(text: str) -> set[str]:
    return {text[i:j] for i in range(len(text)) for j in range(i + 1, min(len(text), i + 6) + 1)}


def _mentions(text: str, product_name: str) -> bool:
    """'整存整取定期' is mentioned by '定期'; compare on two-character pieces of the product name."""
    pieces = {product_name[i : i + 2] for i in range(len(product_name) - 1)}
    return any(piece in text for piece in pieces)


def _term_label(months: int | None) -> str:
    if months is None:
        return ""
    if months % 12 == 0:
        return messages.TERM_YEARS.format(years=months // 12)
    return messages.TERM_MONTHS.format(months=months)


def not_understood(parse_data: dict[str, Any]) -> bool:
    """A message we could not act on: low confidence, or an "answer" outside any question that carries nothing."""
    intent = (parse_data.get("intent") or {}).get("name")
    return intent == "nlu_fallback" or (intent == "inform" and not parse_data.get("entities"))


def _consecutive_fallbacks(tracker: Tracker) -> int:
    count = 0
    for event in reversed(tracker.events):
        if event.get("event") != "user":
            continue
        if not not_understood(event.get("parse_data") or {}):
            break
        count += 1
    return count


class ActionOfferTopGuesses(Action):
    """Low confidence: offer the two likeliest requests as buttons; the second miss in a row goes to a human."""

    def name(self) -> str:
        return "action_offer_top_guesses"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        if _consecutive_fallbacks(tracker) >= 2:
            dispatcher.utter_message(response="utter_fallback_handoff")
            return [FollowupAction("action_human_handoff")]
        ranking = nlu_ranking(tracker.latest_message)
        prior = first_utterance_prior(tracker)
        if prior:
            combined = combine(ranking, prior)
            if combined.accepted is not None and combined.accepted not in _NOT_A_GUESS:
                logger.info("foresight prior settled an unsure first utterance as %s", combined.accepted)
                return reroute_to_intent(tracker, combined.accepted)
            ranking = combined.ranking
        guesses = [name for name, _ in ranking if name in messages.INTENT_LABELS and name not in _NOT_A_GUESS][
            :_GUESSES
        ]
        buttons = [{"title": messages.INTENT_LABELS[name], "payload": f"/{name}"} for name in guesses]
        buttons.append({"title": messages.FALLBACK_OTHER, "payload": "/human_handoff"})
        dispatcher.utter_message(response="utter_fallback_choices", buttons=buttons)
        return []


class ActionRouteInform(Action):
    """An answer given outside any form ("北京朝阳区", "美元", "给张三"): start the request it belongs to."""

    def name(self) -> str:
        return "action_route_inform"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        entities = {e.get("entity") for e in tracker.latest_message.get("entities") or []}
        if entities & {"payee", "amount"}:
            return [FollowupAction("transfer_form")]
        if "location" in entities:
            return [FollowupAction("branch_form")]
        if "currency" in entities:
            return [FollowupAction("action_exchange_rate")]
        if "card_last4" in entities:
            dispatcher.utter_message(response="utter_ask_rephrase")
            return []
        # Nothing to route ("嗯那个就是…"): treat it like low confidence and offer the likeliest requests.
        return [FollowupAction("action_offer_top_guesses")]

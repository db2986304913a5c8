"""Answer before asked: at session start ask the foresight model why the customer is here, and greet with it.

`action_session_start` (every channel, every new session) predicts the contact reason, records the contact
(predicted now, final intent later) and keeps the top predictions in a slot; it says nothing, because on a
text-first contact the customer's own words come right after it. `action_proactive_greeting` runs when a
channel opens a conversation before the customer has spoken (the gateway sends "/contact_opened"): above the
confidence threshold it names the predicted need and offers it as a yes/no (a pending confirmation of kind
"foresight", so "是" goes straight into the skill and "不是" or anything else is understood normally); below
it, or with no model or an unknown customer, it is a plain greeting. Nothing here may fail a conversation.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActionExecuted, EventType, SessionStarted, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions import messages
from actions.runtime import channel_of, customer_id_of, session_factory, settings, utc_now
from bankcore.database import unit_of_work
from bankcore.events import public_channel

if TYPE_CHECKING:
    from foresight.service import ForesightService

logger = logging.getLogger("actions.foresight")

FORESIGHT_SLOT = "foresight_top"
# A `contact` event this recent belongs to the contact being predicted.
_CURRENT_CONTACT = timedelta(minutes=5)
METADATA_SLOT = "session_started_metadata"


@lru_cache(maxsize=1)
def foresight_service() -> ForesightService | None:
    """The model, loaded once per action-server process; None (plain greetings) when there is none."""
    try:
        from foresight.service import ForesightService

        current = settings()
        return ForesightService.load(current.foresight_model_dir, threshold=current.foresight_threshold)
    except Exception:
        logger.exception("foresight model could not be loaded; greetings will be plain")
        return None


def _predict_and_record(customer_id: str, gateway_channel: str, conversation_id: str) -> list[dict[str, Any]]:
    """Top predictions for this contact (empty when none), and the live contact row for retraining."""
    from bankcore import event_store

    channel = public_channel(gateway_channel)
    now = utc_now()
    top: list[dict[str, Any]] = []
    service = foresight_service()
    with unit_of_work(session_factory()) as session:
        # The gateway has usually just recorded this contact as a `contact` event: the contact starts then, and
        # it is not evidence of itself. Predicting "as of" its start leaves it out (only events strictly before
        # count), and the labelled contact gets the same time, so retraining sees what serving saw.
        started = event_store.last_event_ts(session, customer_id, type=event_store.CONTACT_EVENT_TYPE, channel=channel)
        if started is not None and now - _CURRENT_CONTACT <= started <= now:
            now = started
        if service is not None:
            ranked = service.predict_for(session, customer_id, channel, now, k=100)
            if ranked is None:
                logger.info("no foresight for %s: no events and no profile", customer_id)
            else:
                top = [{"intent": r.intent, "p": round(r.p, 4)} for r in ranked]
        event_store.open_live_contact(
            session,
            customer_id=customer_id,
            channel=channel,
            ts=now,
            conversation_id=conversation_id,
            predicted_intent=top[0]["intent"] if top else None,
            predicted_p=top[0]["p"] if top else None,
        )
    return top


async def _foresee(customer_id: str, tracker: Tracker) -> list[dict[str, Any]]:
    """`_predict_and_record` off the event loop; a failure is a log line and no prediction, never an error."""
    try:
        return await asyncio.to_thread(_predict_and_record, customer_id, channel_of(tracker), tracker.sender_id)
    except Exception:
        logger.exception("foresight failed for %s", customer_id)
        return []


class ActionSessionStart(Action):
    def name(self) -> str:
        return "action_session_start"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        metadata = tracker.get_slot(METADATA_SLOT) or {}
        events: list[EventType] = [SessionStarted()]
        if metadata:
            # SessionStarted clears the slots; the metadata is how later actions know the customer.
            events.append(SlotSet(METADATA_SLOT, metadata))
        customer_id = customer_id_of(tracker)
        if customer_id:
            # Set even when empty: None means "not predicted in this session yet" to the greeting.
            events.append(SlotSet(FORESIGHT_SLOT, await _foresee(customer_id, tracker)))
        events.append(ActionExecuted("action_listen"))
        return events


def _salutation(customer_id: str | None) -> tuple[str, str] | None:
    from bankcore.models import Customer

    if customer_id is None:
        return None
    with unit_of_work(session_factory()) as session:
        customer = session.get(Customer, customer_id)
        return (customer.surname, customer.title) if customer is not None else None


def offered_need(top: Any, threshold: float) -> str | None:
    """The predicted intent to name in the greeting, or None for a plain greeting."""
    if not isinstance(top, list) or not top or not isinstance(top[0], dict):
        return None
    intent, p = top[0].get("intent"), top[0].get("p")
    if not isinstance(intent, str) or intent not in messages.FORESIGHT_NEEDS:
        return None
    return intent if isinstance(p, int | float) and p >= threshold else None


class ActionProactiveGreeting(Action):
    def name(self) -> str:
        return "action_proactive_greeting"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        customer_id = customer_id_of(tracker)
        try:
            salutation = await asyncio.to_thread(_salutation, customer_id)
        except Exception:
            logger.exception("could not read the customer for the greeting")
            salutation = None
        events: list[EventType] = []
        top = tracker.get_slot(FORESIGHT_SLOT)
        if top is None and customer_id is not None:
            # Rasa did not start a session for this turn (a conversation restarted through the API continues
            # without one): predict and record the contact here, once.
            top = await _foresee(customer_id, tracker)
            events.append(SlotSet(FORESIGHT_SLOT, top))
        service = foresight_service()
        need = offered_need(top, service.threshold) if service is not None else None
        if need is None:
            if salutation is None:
                dispatcher.utter_message(response="utter_greet")
            else:
                dispatcher.utter_message(response="utter_greet_named", surname=salutation[0], title=salutation[1])
            return events
        dispatcher.utter_message(
            response="utter_foresight_offer",
            salutation=messages.FORESIGHT_SALUTATION.format(surname=salutation[0], title=salutation[1])
            if salutation
            else "",
            need=messages.FORESIGHT_NEEDS[need],
            buttons=[
                {"title": messages.FORESIGHT_YES, "payload": "/affirm"},
                {"title": messages.FORESIGHT_NO, "payload": "/deny"},
            ],
        )
        return [*events, SlotSet("pending_confirmation", "foresight"), SlotSet("pending_subject", need)]


def reroute_to_intent(tracker: Tracker, intent: str) -> list[EventType]:
    """Replay the customer's latest message as `intent`, so the skill's rules and stories take over.

    The same move Rasa's two-stage fallback makes: a listen, then a user event with the intended intent and
    the original text and metadata (the authenticated customer travels in the metadata).
    """
    latest = tracker.latest_message or {}
    text = str(latest.get("text") or "")
    return [
        ActionExecuted("action_listen"),
        {
            "event": "user",
            "text": text,
            "parse_data": {
                "text": text,
                "intent": {"name": intent, "confidence": 1.0},
                "intent_ranking": [{"name": intent, "confidence": 1.0}],
                "entities": latest.get("entities") or [],
            },
            "input_channel": latest.get("input_channel"),
            "metadata": latest.get("metadata") or {},
        },
    ]


# Intents that are part of opening or answering a conversation, not a request of the customer's own.
_NOT_A_REQUEST = {"contact_opened", "affirm", "deny", "greet"}


def first_utterance_prior(tracker: Tracker) -> dict[str, float]:
    """The session's foresight distribution while the customer is on their first request; else empty."""
    top = tracker.get_slot(FORESIGHT_SLOT)
    if not isinstance(top, list) or not top:
        return {}
    requests = 0
    for event in reversed(tracker.events):
        if event.get("event") == "session_started":
            break
        if event.get("event") == "user":
            intent = ((event.get("parse_data") or {}).get("intent") or {}).get("name")
            if intent not in _NOT_A_REQUEST:
                requests += 1
    if requests != 1:
        return {}
    return {str(t["intent"]): float(t["p"]) for t in top if isinstance(t, dict) and "intent" in t and "p" in t}

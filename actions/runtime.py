"""What every action shares: settings, the database, the signed-in customer, and error handling."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import Session, sessionmaker

from actions import messages
from bankcore.database import make_engine, make_session_factory, unit_of_work
from bankcore.errors import BankError
from bankcore.logging_setup import configure_logging
from bankcore.money import format_amount
from bankcore.settings import Settings

logger = logging.getLogger("actions")


@lru_cache(maxsize=1)
def settings() -> Settings:
    current = Settings.from_env()
    configure_logging(current, "actions")
    return current


@lru_cache(maxsize=1)
def session_factory() -> sessionmaker[Session]:
    return make_session_factory(make_engine(settings().database_url))


def utc_now() -> datetime:
    return datetime.now(UTC)


def gateway_metadata(tracker: Tracker, key: str) -> str | None:
    """A value the gateway set in the metadata: of the latest message, or, for actions that run right after
    the session starts, of the message that started it (Rasa keeps that in a slot)."""
    for metadata in (tracker.latest_message.get("metadata"), tracker.get_slot("session_started_metadata")):
        value = metadata.get(key) if isinstance(metadata, dict) else None
        if isinstance(value, str) and value:
            return value
    return None


def customer_id_of(tracker: Tracker) -> str | None:
    """The customer the gateway authenticated; the action server trusts nothing else (not slots, not text)."""
    customer_id = gateway_metadata(tracker, "customer_id")
    if customer_id is not None:
        return customer_id
    for event in reversed(tracker.events):
        if event.get("event") in {"user", "session_started"}:
            metadata = event.get("metadata") or {}
            if isinstance(metadata.get("customer_id"), str) and metadata["customer_id"]:
                return str(metadata["customer_id"])
    return None


def channel_of(tracker: Tracker) -> str:
    return gateway_metadata(tracker, "channel") or "unknown"


def _readable(value: Any) -> str:
    """Amounts in details are shown the way customers read money (50,000.00)."""
    text = str(value)
    try:
        return format_amount(Decimal(text)) if re.fullmatch(r"-?\d+(\.\d+)?", text) else text
    except InvalidOperation:
        return text


def utter_bank_error(dispatcher: CollectingDispatcher, error: BankError, **extra: Any) -> None:
    """Tell the customer what went wrong in the words of the Rasa response the error names."""
    details = {key: _readable(value) for key, value in {**error.details, **extra}.items()}
    dispatcher.utter_message(response=error.message_key, **details)


def entity_values(tracker: Tracker, name: str, *, with_pieces: bool = False) -> list[str]:
    """The values of entity `name` in the latest message, pieces that touch in the text joined into one.

    The tokenizer may cut a spoken amount ("两千五") into two tokens that the model tags as two adjacent
    entities; they are one amount. A lone entity keeps its (synonym-mapped) value. `with_pieces` also lists
    each joined piece on its own, after the joined values (a name the model cut short, "李华" + "转").
    """
    message = tracker.latest_message or {}
    text = str(message.get("text") or "")
    found = [e for e in message.get("entities") or [] if e.get("entity") == name]
    spans = sorted(
        (e for e in found if isinstance(e.get("start"), int) and isinstance(e.get("end"), int)),
        key=lambda e: (e["start"], e["end"]),
    )
    groups: list[list[dict[str, Any]]] = []
    for entity in spans:
        if groups and entity["start"] <= groups[-1][-1]["end"]:
            groups[-1].append(entity)
        else:
            groups.append([entity])
    values: list[str] = []
    for group in groups:
        if len(group) == 1:
            value = str(group[0].get("value") if group[0].get("value") is not None else "")
        else:
            value = text[group[0]["start"] : max(e["end"] for e in group)]
        if value and value not in values:
            values.append(value)
    if with_pieces:
        for group in groups:
            for entity in group if len(group) > 1 else []:
                piece = str(entity.get("value") or "")
                if piece and piece not in values:
                    values.append(piece)
    for entity in found:
        if entity not in spans and entity.get("value") is not None and str(entity["value"]) not in values:
            values.append(str(entity["value"]))
    return values


@dataclass
class Turn:
    """One action run against the bank: a unit of work for the signed-in customer."""

    session: Session
    settings: Settings
    customer_id: str
    now: datetime
    tracker: Tracker
    dispatcher: CollectingDispatcher

    def slot(self, name: str) -> Any:
        return self.tracker.get_slot(name)

    def entity(self, name: str) -> str | None:
        values = entity_values(self.tracker, name)
        return values[0] if values else None

    @property
    def text(self) -> str:
        return str(self.tracker.latest_message.get("text") or "")

    @property
    def channel(self) -> str:
        return channel_of(self.tracker)


class BankAction(Action):
    """An action that works on the signed-in customer's bank in one database transaction.

    Subclasses implement `act`; a `BankError` becomes the reply its message key names and `on_bank_error`'s
    events, anything else a polite service error (and a log line), never a stack trace to the customer.
    """

    action_name = ""

    def name(self) -> str:
        return self.action_name

    def act(self, turn: Turn) -> list[EventType]:
        raise NotImplementedError

    def on_bank_error(self, turn_dispatcher: CollectingDispatcher, error: BankError) -> list[EventType]:
        utter_bank_error(turn_dispatcher, error)
        return []

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        customer_id = customer_id_of(tracker)
        # A phone call the bank placed reaches the customer's number, not yet proven to be the customer: the
        # phone line says so ("caller_verified": "no") until the PIN is keyed.
        if customer_id is None or gateway_metadata(tracker, "caller_verified") == "no":
            # The custom JSON tells a channel why (the phone line then asks for the caller's PIN).
            dispatcher.utter_message(response="utter_not_signed_in", json_message={"needs": "identity"})
            return []
        return await run_in_bank(self.name(), customer_id, tracker, dispatcher, domain, self.act, self.on_bank_error)


# The contact reasons the foresight model predicts (each has its wording for the greeting): a skill serving
# one of them resolves the contact.
CONTACT_REASONS = frozenset(messages.FORESIGHT_NEEDS)


def record_final_intent(tracker: Tracker) -> None:
    """Label the conversation's open live contact with the reason the customer turned out to have.

    Its own transaction, after the skill's: labelling is for retraining and must never undo banking work.
    """
    intent = (tracker.latest_message.get("intent") or {}).get("name")
    if intent not in CONTACT_REASONS:
        return
    try:
        from bankcore import event_store

        with unit_of_work(session_factory()) as session:
            event_store.resolve_live_contact(session, tracker.sender_id, str(intent))
    except Exception:
        logger.exception("could not record the final intent of %s", tracker.sender_id)


async def run_in_bank(
    action_name: str,
    customer_id: str,
    tracker: Tracker,
    dispatcher: CollectingDispatcher,
    domain: dict[str, Any],
    work: Callable[[Turn], list[EventType]],
    on_bank_error: Callable[[CollectingDispatcher, BankError], list[EventType]],
) -> list[EventType]:
    """Run `work` off the event loop in one unit of work; map failures to replies."""

    def in_transaction() -> list[EventType]:
        with unit_of_work(session_factory()) as session:
            turn = Turn(session, settings(), customer_id, utc_now(), tracker, dispatcher)
            return work(turn)

    try:
        events = await asyncio.to_thread(in_transaction)
        await asyncio.to_thread(record_final_intent, tracker)
        return events
    except BankError as error:
        logger.info("bank error in %s: %s", action_name, error.code)
        if error.message_key not in (domain.get("responses") or {}):
            logger.warning("no response %s for bank error %s", error.message_key, error.code)
            error.message_key = "utter_error_generic"
        return on_bank_error(dispatcher, error)
    except Exception:
        logger.exception("action %s failed", action_name)
        dispatcher.utter_message(response="utter_service_error")
        return []

"""Rasa tracker events, as Rasa's pika event broker publishes them, mapped to cross-channel events (pure).

Rasa publishes one message per tracker event (rasa/core/tracker_store.py, `_stream_new_events`): the JSON of
`{"sender_id": ..., **event.as_dict()}`, for instance a user message

    {"sender_id": "webchat:C001", "event": "user", "timestamp": 1767225600.123, "text": "...",
     "parse_data": {"intent": {"name": "check_balance", "confidence": 0.98}, "entities": [...], ...},
     "input_channel": "rest", "message_id": "...", "metadata": {"customer_id": "C001", "channel": "webchat", ...}}

and an action `{"sender_id", "event": "action", "timestamp", "name", "policy", "confidence", "metadata"}`.

What is stored carries no free text (a message may still hold personal data the redaction missed): intents,
confidences and channels only.

- a customer's message            -> `chat_message` {intent, confidence, gateway_channel, input: text|payload}
- the NLU fallback intent         -> also `nlu_fallback` {source: nlu, confidence, top_intent}
- `action_default_fallback`       -> `nlu_fallback` {source: core}
- `action_human_handoff`          -> `handoff` {}

A user message whose metadata has no `customer_id` (a guest, not yet bound) is not stored. Rasa's action events
carry no message metadata, so their customer comes from the conversation id, which the gateway builds as
`<channel>:<customer_id>` (`channels.rasa_client.sender_id_for`); guests' ids are `<channel>:guest-<digest>`.
Messages the gateway and the scheduler send on the system's behalf (`/contact_opened`, `/EXTERNAL_reminder`) are
not the customer's words and are skipped (the gateway records the contact itself).

The event id is a hash of the conversation, the Rasa event's timestamp and type and what tells it apart, plus our
event type: a redelivered or re-published event maps to the same id, which the store keeps once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bankcore.events import Event, RecordError, parse_event, public_channel

UTC = dt.UTC

HANDOFF_ACTION = "action_human_handoff"
CORE_FALLBACK_ACTION = "action_default_fallback"
NLU_FALLBACK_INTENT = "nlu_fallback"
# Intents of messages sent on the system's behalf, never typed by the customer.
SYSTEM_INTENTS = frozenset({"contact_opened"})
SYSTEM_INTENT_PREFIX = "EXTERNAL_"
GUEST_PREFIX = "guest-"

CHAT_MESSAGE = "chat_message"
NLU_FALLBACK = "nlu_fallback"
HANDOFF = "handoff"


class InvalidMessage(ValueError):
    """A broker message that is not a Rasa event (not JSON, not an object, no sender or timestamp)."""


@dataclass(frozen=True)
class Mapped:
    """What one Rasa event becomes: events to store (possibly none) and, when none, why."""

    events: tuple[Event, ...] = ()
    skipped: str | None = None
    # For metrics: the gateway channel and, for a typed message, the NLU confidence.
    gateway_channel: str = ""
    confidence: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def decode(body: bytes) -> dict[str, Any]:
    """The Rasa event in a broker message body (UTF-8 JSON object)."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidMessage(f"not UTF-8 JSON: {type(error).__name__}") from None
    if not isinstance(data, dict):
        raise InvalidMessage("not a JSON object")
    if not isinstance(data.get("sender_id"), str) or not data["sender_id"]:
        raise InvalidMessage("no sender_id")
    if not isinstance(data.get("event"), str):
        raise InvalidMessage("no event type")
    timestamp = data.get("timestamp")
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        raise InvalidMessage("no numeric timestamp")
    return data


def event_id(sender_id: str, timestamp: float, rasa_type: str, distinguisher: str, our_type: str) -> str:
    """A stable id (64 characters at most) for one stored event derived from one Rasa event."""
    key = "\x1f".join((sender_id, repr(float(timestamp)), rasa_type, distinguisher, our_type))
    return "rasa-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def customer_of_sender(sender_id: str) -> tuple[str, str] | None:
    """(gateway channel, customer id) of a conversation id `<channel>:<customer_id>`; None for a guest or
    any other shape."""
    channel, separator, customer_id = sender_id.partition(":")
    if not separator or not channel or not customer_id or customer_id.startswith(GUEST_PREFIX):
        return None
    return channel, customer_id


def _timestamp(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(float(value), UTC)


def _event(record: dict[str, Any]) -> Event:
    """Validated the way every other source of events is (ids, channel vocabulary, time range, attrs size)."""
    return parse_event({**record, "ts": record["ts"].isoformat()})


def _metadata(data: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = data.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def _is_system_intent(intent: str) -> bool:
    return intent in SYSTEM_INTENTS or intent.startswith(SYSTEM_INTENT_PREFIX)


def _intent(parse_data: Any) -> tuple[str, float | None, list[Any]]:
    if not isinstance(parse_data, Mapping):
        return "", None, []
    intent = parse_data.get("intent")
    name, confidence = "", None
    if isinstance(intent, Mapping):
        name = str(intent.get("name") or "")
        raw = intent.get("confidence")
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            confidence = float(raw)
    ranking = parse_data.get("intent_ranking")
    return name, confidence, ranking if isinstance(ranking, list) else []


def _top_intent(ranking: list[Any]) -> str | None:
    """The best real intent behind a fallback (the ranking lists nlu_fallback first, then the classifier's)."""
    for entry in ranking:
        if isinstance(entry, Mapping):
            name = entry.get("name")
            if isinstance(name, str) and name and name != NLU_FALLBACK_INTENT:
                return name
    return None


def map_user_message(data: Mapping[str, Any]) -> Mapped:
    sender_id: str = data["sender_id"]
    metadata = _metadata(data)
    customer_id = metadata.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id.strip():
        return Mapped(skipped="no_customer")
    gateway_channel = metadata.get("channel")
    if not isinstance(gateway_channel, str) or not gateway_channel:
        gateway_channel = sender_id.partition(":")[0]
    intent, confidence, ranking = _intent(data.get("parse_data"))
    if not intent:
        return Mapped(skipped="no_intent", gateway_channel=gateway_channel)
    if _is_system_intent(intent):
        return Mapped(skipped="system_message", gateway_channel=gateway_channel)
    text = data.get("text")
    typed = not (isinstance(text, str) and text.startswith("/"))
    ts = _timestamp(data["timestamp"])
    channel = public_channel(gateway_channel)
    distinguisher = str(data.get("message_id") or intent)
    attrs: dict[str, Any] = {
        "intent": intent,
        "gateway_channel": gateway_channel,
        "input": "text" if typed else "payload",
    }
    if confidence is not None:
        attrs["confidence"] = round(confidence, 4)
    records = [
        {
            "customer_id": customer_id,
            "ts": ts,
            "channel": channel,
            "type": CHAT_MESSAGE,
            "attrs": attrs,
            "event_id": event_id(sender_id, data["timestamp"], "user", distinguisher, CHAT_MESSAGE),
        }
    ]
    if intent == NLU_FALLBACK_INTENT:
        fallback: dict[str, Any] = {"source": "nlu", "gateway_channel": gateway_channel}
        if confidence is not None:
            fallback["confidence"] = attrs["confidence"]
        top = _top_intent(ranking)
        if top is not None:
            fallback["top_intent"] = top
        records.append(
            {
                "customer_id": customer_id,
                "ts": ts,
                "channel": channel,
                "type": NLU_FALLBACK,
                "attrs": fallback,
                "event_id": event_id(sender_id, data["timestamp"], "user", distinguisher, NLU_FALLBACK),
            }
        )
    try:
        events = tuple(_event(record) for record in records)
    except RecordError as error:
        return Mapped(skipped="invalid", gateway_channel=gateway_channel, extra={"field": error.field})
    return Mapped(events=events, gateway_channel=gateway_channel, confidence=confidence if typed else None)


def map_action(data: Mapping[str, Any]) -> Mapped:
    name = data.get("name")
    if name == HANDOFF_ACTION:
        our_type, attrs = HANDOFF, {}
    elif name == CORE_FALLBACK_ACTION:
        our_type, attrs = NLU_FALLBACK, {"source": "core"}
    else:
        return Mapped(skipped="not_relayed")
    sender_id: str = data["sender_id"]
    metadata = _metadata(data)
    owner = customer_of_sender(sender_id)
    if owner is None:
        return Mapped(skipped="no_customer")
    gateway_channel, customer_id = owner
    if isinstance(metadata.get("customer_id"), str) and metadata["customer_id"]:
        customer_id = metadata["customer_id"]
    record = {
        "customer_id": customer_id,
        "ts": _timestamp(data["timestamp"]),
        "channel": public_channel(gateway_channel),
        "type": our_type,
        "attrs": {**attrs, "gateway_channel": gateway_channel},
        "event_id": event_id(sender_id, data["timestamp"], "action", str(name), our_type),
    }
    try:
        event = _event(record)
    except RecordError as error:
        return Mapped(skipped="invalid", gateway_channel=gateway_channel, extra={"field": error.field})
    return Mapped(events=(event,), gateway_channel=gateway_channel)


def map_rasa_event(data: Mapping[str, Any]) -> Mapped:
    """The cross-channel events one decoded Rasa event becomes (see the module docstring)."""
    kind = data.get("event")
    if kind == "user":
        return map_user_message(data)
    if kind == "action":
        return map_action(data)
    return Mapped(skipped="not_relayed")

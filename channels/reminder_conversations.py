"""Opening a Rasa conversation with a reminder, so the customer's reply continues it (chat and phone reminders).

The reminder goes to Rasa as `/EXTERNAL_reminder{entities}` through the REST channel with the customer in the
message metadata, exactly like a gateway turn. Rasa 3.6's `POST /conversations/{id}/trigger_intent` carries no
metadata, so on a conversation the customer has not started, the action server could not tell whose bank to
read; and the REST reply hands back the reminder's text and buttons, which the channel then sends.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from channels.rasa_client import BotMessage, RasaClient, sender_id_for

REMINDER_INTENT = "EXTERNAL_reminder"
# Payload keys that become entities, under names of their own (see actions/reminders.py).
_ENTITY_OF_PAYLOAD = {"amount": "reminder_amount", "due_date": "reminder_due", "card_last4": "reminder_card"}


def reminder_message(*, kind: str, topic: str, key: str, item_id: str, payload: Mapping[str, Any]) -> str:
    """The `/intent{entities}` text Rasa reads as the reminder intent with its entities (no NLU involved)."""
    entities: dict[str, str] = {
        "reminder_kind": kind,
        "reminder_topic": topic,
        "reminder_key": key,
        "reminder_item": item_id,
    }
    for source, entity in _ENTITY_OF_PAYLOAD.items():
        value = payload.get(source)
        if value is not None and value != "":
            entities[entity] = str(value)
    return "/" + REMINDER_INTENT + json.dumps(entities, ensure_ascii=False, separators=(",", ":"))


async def open_reminder_conversation(
    rasa: RasaClient,
    *,
    customer_id: str,
    channel: str,
    kind: str,
    topic: str,
    key: str,
    item_id: str,
    payload: Mapping[str, Any],
) -> list[BotMessage]:
    """Say the reminder in the customer's conversation on `channel`; returns what the channel should deliver.

    Raises `RasaUnavailable` when Rasa does not answer (the scheduler retries with backoff).
    """
    text = reminder_message(kind=kind, topic=topic, key=key, item_id=item_id, payload=payload)
    metadata = {"customer_id": customer_id, "channel": channel, "locale": "zh-CN", "reminder_key": key}
    return await rasa.send_message(sender_id_for(channel, customer_id), text, metadata)

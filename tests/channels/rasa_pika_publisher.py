"""Publishes Rasa events into RabbitMQ with Rasa's own PikaEventBroker: run with .venv-rasa's Python.

The tests of the event relay must see exactly what a Rasa server sends, so this script uses Rasa 3.6's classes
end to end: the event broker built from the `event_broker` section our `rasa_endpoints` writes (exchange and
queue declared by Rasa's code), the events built from `rasa.shared.core.events`, and each message body made the way
`TrackerStore._stream_new_events` makes it (`{"sender_id": ...}` updated with `event.as_dict()`).

Input (stdin, JSON): {"broker": {...event_broker section...}, "events": [spec, ...], "print_only": false}
A spec: {"sender_id", "event": "user"|"action"|"bot"|"slot", "timestamp"?, "times"?: publish it that many times,
         user: "text", "intent", "confidence", "metadata", "message_id"?, "ranking"?;
         action: "name"; bot: "text"; slot: "name", "value"}
With print_only the bodies are written to stdout as JSON lines instead of being published.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from rasa.core.brokers.broker import EventBroker
from rasa.shared.core.events import ActionExecuted, BotUttered, Event, SlotSet, UserUttered
from rasa.utils.endpoints import EndpointConfig


def build(spec: dict[str, Any]) -> Event:
    kind = spec["event"]
    timestamp = spec.get("timestamp")
    if kind == "user":
        intent = {"name": spec["intent"], "confidence": spec.get("confidence", 1.0)}
        parse_data = {
            "intent": intent,
            "entities": [],
            "text": spec["text"],
            "message_id": spec.get("message_id"),
            "metadata": spec.get("metadata") or {},
            "intent_ranking": spec.get("ranking") or [intent],
        }
        return UserUttered(
            spec["text"],
            intent,
            [],
            parse_data=parse_data,
            timestamp=timestamp,
            input_channel="rest",
            message_id=spec.get("message_id"),
            metadata=spec.get("metadata") or {},
        )
    if kind == "action":
        return ActionExecuted(
            spec["name"], policy="RulePolicy", confidence=1.0, timestamp=timestamp, metadata={"model_id": "test"}
        )
    if kind == "bot":
        return BotUttered(spec["text"], {"elements": None}, {"utter_action": "utter_test"}, timestamp=timestamp)
    if kind == "slot":
        return SlotSet(spec["name"], spec.get("value"), timestamp=timestamp)
    raise ValueError(f"unknown event kind {kind!r}")


def body_of(spec: dict[str, Any]) -> dict[str, Any]:
    # rasa/core/tracker_store.py, TrackerStore._stream_new_events
    body = {"sender_id": spec["sender_id"]}
    body.update(build(spec).as_dict())
    return body


async def publish(config: dict[str, Any], specs: list[dict[str, Any]]) -> None:
    broker = await EventBroker.create(EndpointConfig.from_dict(config), loop=asyncio.get_running_loop())
    assert broker is not None
    for spec in specs:
        body = body_of(spec)
        for _ in range(int(spec.get("times", 1))):
            broker.publish(body)
    # publish() schedules a task per message; wait until every one has been confirmed by the broker.
    tasks = getattr(broker, "_background_tasks", set())
    while tasks:
        await asyncio.gather(*list(tasks), return_exceptions=True)
    await broker.close()


def main() -> None:
    request = json.load(sys.stdin)
    specs = request["events"]
    if request.get("print_only"):
        for spec in specs:
            print(json.dumps(body_of(spec), ensure_ascii=False))
        return
    asyncio.run(publish(request["broker"], specs))


if __name__ == "__main__":
    main()

"""Fills, reads and restores Rasa's SQL tracker store with Rasa 3.6's own SQLTrackerStore: run with .venv-rasa's Python.

The retention tests work on an `events` table created and filled by Rasa's code, not by a copy of its schema.

Input (stdin, JSON): {"store": {SQLTrackerStore keyword arguments}, "command": ..., ...}
- fill:     "conversations": [{"sender_id", "start": epoch seconds, "turns": n}] -> one session each: session start,
            then n turns (user message, action, bot message, action_listen), 10 ms apart
- append:   "sender_id", "start", "turns" -> a new session with n turns added to a stored conversation
- count:    "senders": [...] -> prints {"sender_id": events in the full tracker (0: none)}
- restore:  "archive": a retention archive (gzip JSON Lines) -> each conversation saved back, as Rasa's
            `PUT /conversations/<id>/tracker/events` would
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
from typing import Any

from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, Event, SessionStarted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker


def session(start: float, turns: int) -> list[Event]:
    events: list[Event] = [ActionExecuted("action_session_start", timestamp=start), SessionStarted(timestamp=start)]
    stamp = start
    for turn in range(turns):
        stamp += 0.01
        intent = {"name": "check_balance", "confidence": 0.9}
        metadata = {"customer_id": "C001", "channel": "webchat"}
        events += [
            ActionExecuted("action_listen", timestamp=stamp),
            UserUttered(
                f"第{turn}句",
                intent,
                [],
                parse_data={"intent": intent, "entities": [], "text": f"第{turn}句"},
                timestamp=stamp + 0.001,
                metadata=metadata,
            ),
            ActionExecuted("utter_balance", timestamp=stamp + 0.002),
            BotUttered("您的余额是1,000.00元", timestamp=stamp + 0.003),
        ]
    events.append(ActionExecuted("action_listen", timestamp=stamp + 0.004))
    return events


async def run(request: dict[str, Any]) -> Any:
    store = SQLTrackerStore(Domain.empty(), **request["store"])
    command = request["command"]
    if command == "fill":
        for conversation in request["conversations"]:
            tracker = DialogueStateTracker.from_events(
                conversation["sender_id"], session(conversation["start"], conversation["turns"])
            )
            await store.save(tracker)
        return None
    if command == "append":
        tracker = await store.retrieve_full_tracker(request["sender_id"])
        assert tracker is not None
        for event in session(request["start"], request["turns"]):
            tracker.update(event)
        await store.save(tracker)
        return None
    if command == "count":
        counts = {}
        for sender_id in request["senders"]:
            tracker = await store.retrieve_full_tracker(sender_id)
            counts[sender_id] = len(tracker.events) if tracker is not None else 0
        return counts
    if command == "restore":
        with gzip.open(request["archive"], "rt", encoding="utf-8") as archive:
            for line in archive:
                conversation = json.loads(line)
                tracker = DialogueStateTracker.from_dict(conversation["sender_id"], conversation["events"])
                await store.save(tracker)
        return None
    raise ValueError(f"unknown command {command!r}")


def main() -> None:
    result = asyncio.run(run(json.load(sys.stdin)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""The bot's replies as the JSON the web chat page and the mini-program client read (their outbound half)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from channels.rasa_client import BotMessage

# Input hints a bot message may carry in its custom JSON ({"input": "otp"}); the page knows these.
_INPUT_HINTS = frozenset({"otp", "pin"})


class JsonRepliesOutput:
    """`{"messages": [{"text", "buttons": [{"title", "payload"}], "image"?, "input"?}]}`."""

    def render(self, replies: Sequence[BotMessage]) -> dict[str, Any]:
        return {"messages": [self.render_message(reply) for reply in replies]}

    def render_message(self, reply: BotMessage) -> dict[str, Any]:
        rendered: dict[str, Any] = {
            "text": reply.text or "",
            "buttons": [{"title": button.title, "payload": button.payload} for button in reply.buttons],
        }
        if reply.image:
            rendered["image"] = reply.image
        hint = _input_hint(reply.custom)
        if hint is not None:
            rendered["input"] = hint
        # Other custom JSON is for richer channels; passing it blindly to a browser would widen what a
        # response could make the page do, so only known hints go through.
        return rendered


def _input_hint(custom: Mapping[str, Any] | None) -> str | None:
    if not custom:
        return None
    hint = custom.get("input")
    return hint if isinstance(hint, str) and hint in _INPUT_HINTS else None


class WebChatOutput(JsonRepliesOutput):
    """The H5 web chat page's rendering."""


class MiniProgramOutput(JsonRepliesOutput):
    """The mini-program client's rendering (the same vocabulary; speech, when asked for, is added beside it)."""

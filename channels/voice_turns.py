"""Where a voice session meets the gateway: turns go through the shared text pipeline, replies come back speakable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from channels.rasa_client import BotMessage, RasaUnavailable
from channels.turns import TurnContext, handle_text_turn
from voice.events import Choice, Expectation, Reply
from voice.session import DialogueUnavailable, TurnFunction

# Input hints of Rasa responses (`custom: {input: ...}`) that change how a voice reply is answered.
_SECRET_HINTS: Mapping[str, Expectation] = {"pin": "pin", "otp": "otp"}
# Input modes a voice channel may report; anything else is recorded as voice.
_INPUT_MODES = frozenset({"voice", "keypad", "text"})


def voice_replies(messages: Sequence[BotMessage]) -> list[Reply]:
    """Rasa's replies as the voice layer needs them: text, the answer they expect, and their choices."""
    replies: list[Reply] = []
    for message in messages:
        text = message.text or ""
        choices = tuple(Choice(title=b.title, payload=b.payload) for b in message.buttons)
        hint = message.custom.get("input") if message.custom else None
        expect: Expectation = "free"
        if isinstance(hint, str) and hint in _SECRET_HINTS:
            expect = _SECRET_HINTS[hint]
        elif choices:
            expect = "choice"
        if text or choices or expect != "free":
            replies.append(Reply(text=text, expect=expect, choices=choices))
    return replies


def voice_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The Rasa metadata of a voice turn: how it was said (voice, keypad, text) and how sure the recogniser was."""
    mode = metadata.get("input_mode")
    extras: dict[str, Any] = {"input_mode": mode if mode in _INPUT_MODES else "voice"}
    confidence = metadata.get("asr_confidence")
    if isinstance(confidence, int | float):
        extras["asr_confidence"] = float(confidence)
    return extras


def voice_turn_function(ctx: TurnContext, *, customer_id: str, channel: str) -> TurnFunction:
    """A voice session's turn: the gateway's text pipeline (code diversion, redaction) with voice metadata."""

    async def turn(text: str, metadata: Mapping[str, Any]) -> Sequence[Reply]:
        try:
            messages = await handle_text_turn(
                ctx, customer_id=customer_id, channel=channel, text=text, extra_metadata=voice_metadata(metadata)
            )
        except RasaUnavailable as error:
            raise DialogueUnavailable(str(error)) from error
        return voice_replies(messages)

    return turn

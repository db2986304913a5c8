"""The shape of a channel adapter, after Rasa's InputChannel/OutputChannel: an inbound and an outbound half.

An adapter owns one platform's protocol and nothing else. Its inbound half registers routes, verifies and
decodes the platform's request (signature, token), maps the platform user to a customer and hands one turn
to `channels.turns.handle_text_turn`. Its outbound half renders the bot's replies (`BotMessage`: text,
buttons, image, custom JSON) in the platform's format, either in the HTTP answer (web chat) or by calling
the platform's send API (WeCom `message/send`, mini-program subscribe messages, IVR speech).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from aiohttp import web

from channels.rasa_client import BotMessage

Rendered_co = TypeVar("Rendered_co", covariant=True)


class InboundAdapter(Protocol):
    """Verifies and decodes one platform's requests; `channel` is the name sent to Rasa as metadata."""

    channel: str

    def register(self, app: web.Application) -> None:
        """Add this adapter's routes (and middlewares, if it needs its own) to the gateway application."""
        ...


class OutboundRenderer(Protocol[Rendered_co]):
    """Turns the bot's replies into what the platform displays or speaks."""

    def render(self, replies: Sequence[BotMessage]) -> Rendered_co: ...

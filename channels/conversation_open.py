"""Open a conversation before the customer speaks, so the assistant can greet first (and guess why they came).

A channel calls this when its window opens (the web chat page loads, a WeCom user enters the agent, a call is
answered). The turn is the gateway-only intent "/contact_opened", sent with the authenticated metadata: Rasa
starts a session (the action server predicts the contact reason there) and answers with the greeting.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from channels.rasa_client import BotMessage, RasaUnavailable, sender_id_for
from channels.turns import LOCALE, TurnContext

logger = logging.getLogger("channels.open")

CONTACT_OPENED = "/contact_opened"


async def open_conversation(
    ctx: TurnContext, *, customer_id: str, channel: str, extra_metadata: Mapping[str, Any] | None = None
) -> list[BotMessage]:
    """The assistant's opening replies; raises RasaUnavailable for the adapter to render."""
    metadata: dict[str, Any] = {"locale": LOCALE, **(extra_metadata or {})}
    metadata.update(customer_id=customer_id, channel=channel)
    metadata.pop("otp_digest", None)
    ctx.note_turn(customer_id, channel)
    try:
        replies = await ctx.rasa.send_message(sender_id_for(channel, customer_id), CONTACT_OPENED, metadata)
    except RasaUnavailable:
        ctx.metrics.count_turn(channel, "rasa_unavailable")
        raise
    ctx.metrics.count_turn(channel, "opened")
    logger.info("conversation opened", extra={"customer_id": customer_id, "channel": channel})
    return replies

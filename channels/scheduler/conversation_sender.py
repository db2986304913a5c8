"""A sender that says the reminder in the customer's Rasa conversation, then hands Rasa's reply to the channel.

Opening the conversation first is what lets the customer answer the reminder ("现在还款" goes into the
repayment). What the channel then does with the reply is its adapter's outbound half (WeCom's outbox, the
mini-program's subscribe message, a phone call); a channel without one configured uses `deliver_by_log`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from bankcore.reminders.store import ClaimedReminder
from channels.rasa_client import BotMessage, RasaClient, RasaUnavailable
from channels.reminder_conversations import open_reminder_conversation
from channels.scheduler.senders import SendResult

log = logging.getLogger(__name__)

# Reminder channels whose conversation lives under another gateway channel's name.
CONVERSATION_CHANNEL = {"phone": "ivr"}

# Delivers Rasa's reply on one channel: (reminder, replies, idempotency key) -> result.
Deliver = Callable[[ClaimedReminder, Sequence[BotMessage], str], Awaitable[SendResult]]


async def deliver_by_log(reminder: ClaimedReminder, replies: Sequence[BotMessage], idempotency_key: str) -> SendResult:
    # Counts only: the reply holds amounts and the customer's name.
    log.info("reminder %s: %d messages for %s (log-only channel)", idempotency_key, len(replies), reminder.customer_id)
    return SendResult(ok=True, detail="logged")


class ConversationSender:
    """Opens the reminder conversation on the channel, then delivers the reply through that channel's deliverer."""

    def __init__(self, rasa: RasaClient, deliverers: Mapping[str, Deliver] | None = None) -> None:
        self.rasa = rasa
        self.deliverers = dict(deliverers or {})

    async def send(self, reminder: ClaimedReminder, channel: str, idempotency_key: str) -> SendResult:
        try:
            replies = await open_reminder_conversation(
                self.rasa,
                customer_id=reminder.customer_id,
                # The customer answers a phone reminder in the phone line's conversation.
                channel=CONVERSATION_CHANNEL.get(channel, channel),
                kind=reminder.kind,
                topic=reminder.topic,
                key=idempotency_key,
                item_id=reminder.item_id,
                payload=reminder.payload,
            )
        except RasaUnavailable as error:
            return SendResult(ok=False, retryable=True, detail=f"rasa unavailable: {error}")
        if not replies:
            return SendResult(ok=False, retryable=True, detail="the assistant said nothing")
        deliver = self.deliverers.get(channel, deliver_by_log)
        return await deliver(reminder, replies, idempotency_key)

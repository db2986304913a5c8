"""How a reminder reaches the customer by phone: the gateway's SIP agent places the call and says Rasa's reply.

The scheduler runs apart from the gateway, which holds the SIP agent, so it asks for the call over loopback HTTP
(`POST /ivr/outbound-calls`, service token) and waits for the outcome: answered (delivered), or busy / no
answer / declined / failed, which the worker retries with backoff and the policy may move to another channel.
The reminder's key is the call's idempotency key: a retried request after an answered call dials no one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiohttp

from bankcore.reminders.store import ClaimedReminder
from channels.rasa_client import BotMessage
from channels.scheduler.conversation_sender import Deliver
from channels.scheduler.senders import SendError, SendResult

logger = logging.getLogger(__name__)

# Ringing (30 s by default) plus set-up and a margin.
CALL_TIMEOUT_S = 75.0


def _message_json(message: BotMessage) -> dict[str, object]:
    out: dict[str, object] = {"text": message.text or ""}
    if message.buttons:
        out["buttons"] = [{"title": b.title, "payload": b.payload} for b in message.buttons]
    if message.custom:
        out["custom"] = dict(message.custom)
    return out


def phone_deliverer(http: aiohttp.ClientSession, gateway_url: str, token: str) -> Deliver:
    async def deliver(reminder: ClaimedReminder, replies: Sequence[BotMessage], key: str) -> SendResult:
        body = {
            "customer_id": reminder.customer_id,
            "key": key,
            "topic": reminder.topic,
            "messages": [_message_json(m) for m in replies],
        }
        try:
            async with http.post(
                f"{gateway_url}/ivr/outbound-calls",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S),
            ) as response:
                if response.status == 404:
                    return SendResult(ok=False, retryable=False, detail="the customer has no phone number")
                if response.status != 200:
                    return SendError("platform_error", f"gateway answered {response.status}").as_result()
                outcome = await response.json()
        except (aiohttp.ClientError, TimeoutError) as error:
            return SendError("platform_error", f"gateway unreachable: {type(error).__name__}").as_result()
        status = str(outcome.get("outcome"))
        logger.info("reminder %s: phone call %s", key, status)
        if status == "answered":
            return SendResult(ok=True, detail="call answered")
        if status == "busy":
            return SendError("busy", f"SIP {outcome.get('status')}").as_result()
        if status == "no_answer":
            return SendError("no_answer", f"SIP {outcome.get('status')}").as_result()
        if status == "declined":
            return SendResult(ok=False, retryable=True, detail=f"declined (SIP {outcome.get('status')})")
        return SendError("platform_error", f"call failed (SIP {outcome.get('status')})").as_result()

    return deliver

"""RasaClient against a fake Rasa on loopback: REST webhook, trigger_intent, status, failures."""

from __future__ import annotations

import aiohttp
import pytest

from channels.rasa_client import BotMessage, Button, RasaClient, RasaUnavailable
from tests.channels.support import RASA_TOKEN, FakeRasa


async def test_send_message_decodes_text_buttons_image_and_custom(fake_rasa: FakeRasa) -> None:
    fake_rasa.responder = lambda body: [
        {"recipient_id": "webchat:C001", "text": "您好", "buttons": [{"title": "是", "payload": "/affirm"}]},
        {"recipient_id": "webchat:C001", "image": "https://example.invalid/x.png"},
        {"recipient_id": "webchat:C001", "custom": {"input": "otp"}},
        {"recipient_id": "webchat:C001", "buttons": [{"payload": "/deny"}, {"title": "no payload"}]},
        "not a message",  # type: ignore[list-item]
    ]
    observed: list[tuple[str, str]] = []
    async with aiohttp.ClientSession() as http:
        client = RasaClient(http, fake_rasa.url, RASA_TOKEN, on_latency=lambda e, o, s: observed.append((e, o)))
        replies = await client.send_message("webchat:C001", "你好", {"customer_id": "C001", "channel": "webchat"})
    assert replies == [
        BotMessage(text="您好", buttons=(Button("是", "/affirm"),)),
        BotMessage(image="https://example.invalid/x.png"),
        BotMessage(custom={"input": "otp"}),
        BotMessage(buttons=(Button("/deny", "/deny"),)),
    ]
    assert fake_rasa.received == [
        {
            "sender": "webchat:C001",
            "message": "你好",
            "metadata": {"customer_id": "C001", "channel": "webchat"},
        }
    ]
    assert observed == [("webhook", "ok")]


async def test_trigger_intent_keeps_the_conversation_id_and_asks_for_the_latest_channel(
    fake_rasa: FakeRasa,
) -> None:
    async with aiohttp.ClientSession() as http:
        client = RasaClient(http, fake_rasa.url, RASA_TOKEN)
        replies = await client.trigger_intent("ivr:C001", "remind_card_due", {"card_last4": "1234"})
    assert replies == [BotMessage(text="您的信用卡还款日快到了")]
    _method, path, query = fake_rasa.requests[-1]
    assert path.startswith("/conversations/ivr:C001/trigger_intent?")
    assert query == {"token": RASA_TOKEN, "output_channel": "latest"}
    assert fake_rasa.received[-1] == {
        "trigger_intent": {"name": "remind_card_due", "entities": {"card_last4": "1234"}},
        "conversation_id": "ivr:C001",
    }


async def test_status_sends_the_token(fake_rasa: FakeRasa) -> None:
    async with aiohttp.ClientSession() as http:
        assert (await RasaClient(http, fake_rasa.url, RASA_TOKEN).status())["model_file"]
        with pytest.raises(RasaUnavailable):
            await RasaClient(http, fake_rasa.url, "wrong").status()


async def test_unreachable_rasa_raises_rasa_unavailable() -> None:
    async with aiohttp.ClientSession() as http:
        client = RasaClient(http, "http://127.0.0.1:9", RASA_TOKEN, message_timeout_s=2)
        with pytest.raises(RasaUnavailable):
            await client.send_message("webchat:C001", "hi", {})


async def test_a_malformed_reply_raises_rasa_unavailable(fake_rasa: FakeRasa) -> None:
    fake_rasa.responder = lambda body: {"not": "a list"}  # type: ignore[assignment,return-value]
    async with aiohttp.ClientSession() as http:
        with pytest.raises(RasaUnavailable):
            await RasaClient(http, fake_rasa.url, RASA_TOKEN).send_message("webchat:C001", "hi", {})

"""A voice session wired to the live stack (gateway pipeline in-process, real Rasa and action server on loopback)."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp

from bankcore import accounts
from bankcore.database import unit_of_work
from bankcore.sandbox import outbox
from channels.metrics import GatewayMetrics
from channels.rasa_client import RasaClient, sender_id_for
from channels.turns import TurnContext
from channels.voice_turns import voice_turn_function
from voice.events import AudioChunk, Final, Reply
from voice.session import TurnFunction, VoiceConfig, VoiceSession

RATE = 8000
CHUNK = RATE * 2 // 10  # 100 ms


@dataclass
class VoiceCall:
    """One customer's voice conversation and what it produced."""

    session: VoiceSession
    turn: TurnFunction
    stack: Any
    customer_id: str
    events: list[Any] = field(default_factory=list)

    async def speak(self, pcm: bytes) -> list[Any]:
        out: list[Any] = []
        for offset in range(0, len(pcm), CHUNK):
            out += await self.session.feed_audio(pcm[offset : offset + CHUNK], RATE)
        out += await self.session.end_of_input()
        self.events += out
        return out

    async def keys(self, digits: str) -> list[Any]:
        out = await self.session.dtmf(digits)
        self.events += out
        return out

    async def type(self, text: str) -> list[Any]:
        out = await self.session.text(text)
        self.events += out
        return out

    def latest_code(self) -> str:
        with unit_of_work(self.stack.db_session_factory) as db:
            messages = outbox(db, self.customer_id)
        match = re.search(r"\d{6}", messages[0].text)
        assert match, messages[0].text
        return match.group(0)

    def codes_sent(self) -> int:
        with unit_of_work(self.stack.db_session_factory) as db:
            return len(outbox(db, self.customer_id, limit=1000))

    def balance(self, account_id: str) -> Decimal:
        with unit_of_work(self.stack.db_session_factory) as db:
            return accounts.get_account(db, self.customer_id, account_id).balance


def replies(events: Sequence[Any]) -> list[Reply]:
    return [e for e in events if isinstance(e, Reply)]


def said(events: Sequence[Any]) -> str:
    return "\n".join(r.text for r in replies(events))


def finals(events: Sequence[Any]) -> list[Final]:
    return [e for e in events if isinstance(e, Final)]


def audio_seconds(events: Sequence[Any]) -> float:
    return sum(len(e.pcm) / 2 / e.sample_rate for e in events if isinstance(e, AudioChunk))


def restart_conversation(stack: Any, channel: str, customer_id: str) -> None:
    url = (
        f"{stack.rasa_url}/conversations/{sender_id_for(channel, customer_id)}/tracker/events?token={stack.rasa_token}"
    )
    body = json.dumps({"event": "restart"}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=30).close()


@asynccontextmanager
async def voice_call(
    stack: Any, customer_id: str, open_stream: Any, synthesizer: Any, *, channel: str = "voice", **session: Any
) -> AsyncIterator[VoiceCall]:
    restart_conversation(stack, channel, customer_id)
    async with aiohttp.ClientSession() as http:
        ctx = TurnContext(
            settings=stack.settings,
            rasa=RasaClient(http, stack.rasa_url, stack.rasa_token),
            session_factory=stack.db_session_factory,
            metrics=GatewayMetrics.create(),
        )
        turn = voice_turn_function(ctx, customer_id=customer_id, channel=channel)
        voice = VoiceSession(
            open_stream=open_stream,
            synthesizer=synthesizer,
            turn=turn,
            config=VoiceConfig(output_sample_rate=RATE),
            **session,
        )
        try:
            yield VoiceCall(voice, turn, stack, customer_id)
        finally:
            await voice.hangup()

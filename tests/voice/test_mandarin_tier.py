"""The whole Mandarin voice dialogue (balance check, transfer) when BANKBOT_VOSK_MODEL is a Mandarin model.

No Mandarin Vosk model can be obtained on this machine; install one (for example vosk-model-small-cn-0.22)
with `bankbot models install ARCHIVE --sha256 ...` and point BANKBOT_VOSK_MODEL at it to run this tier.
The customer's speech is made by the product's own TTS (espeak-ng reading pinyin), so this measures the
mechanics with synthetic speech, not accuracy on real callers.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.voice.voice_stack import RATE, said, voice_call
from voice.audio import silence
from voice.tts import EspeakPinyinSynthesizer

pytestmark = [pytest.mark.rasa, pytest.mark.voice_model]

C003_PIN = "864209"
_CJK = re.compile(r"[\u4e00-\u9fff]")


async def mandarin(text: str) -> bytes:
    return silence(0.3, RATE) + await EspeakPinyinSynthesizer(speed=140).synthesize(text, RATE) + silence(0.8, RATE)


def _mandarin_model() -> Path:
    configured = os.environ.get("BANKBOT_VOSK_MODEL")
    if not configured:
        pytest.skip(
            "Mandarin voice tier: set BANKBOT_VOSK_MODEL to a Mandarin Vosk model (e.g. vosk-model-small-cn-0.22)"
        )
    path = Path(configured)
    if not (path / "am" / "final.mdl").exists():
        pytest.skip(f"Mandarin voice tier: BANKBOT_VOSK_MODEL={configured} is not a Vosk model directory")
    return path


@pytest.fixture(scope="module")
def mandarin_engine() -> Iterator[object]:
    from voice.asr import AsrEngine, AsrModel

    engine = AsrEngine(AsrModel(_mandarin_model()), workers=2, max_streams=4)
    probe = asyncio.run(_transcribe(engine, "余额"))
    if not _CJK.search(probe):
        pytest.skip(f"Mandarin voice tier: the configured model does not transcribe Mandarin (heard {probe!r})")
    yield engine
    asyncio.run(engine.aclose())


async def _transcribe(engine, text: str) -> str:  # type: ignore[no-untyped-def]
    stream = engine.open_stream(RATE, words=True)
    pcm = await mandarin(text)
    texts = []
    for offset in range(0, len(pcm), 1600):
        texts += [e.text for e in await stream.feed(pcm[offset : offset + 1600]) if getattr(e, "words", None)]
    texts.append((await stream.finish()).text)
    return " ".join(t for t in texts if t)


async def test_balance_check_by_voice(live_stack, mandarin_engine):  # type: ignore[no-untyped-def]
    async with voice_call(
        live_stack, "C001", lambda: mandarin_engine.open_stream(RATE, words=True), EspeakPinyinSynthesizer()
    ) as call:
        events = await call.speak(await mandarin("查一下我的余额"))
        assert "余额" in said(events), said(call.events)


async def test_transfer_by_voice_with_spoken_amount_read_back_and_spoken_yes(live_stack, mandarin_engine):  # type: ignore[no-untyped-def]
    async with voice_call(
        live_stack, "C003", lambda: mandarin_engine.open_stream(RATE, words=True), EspeakPinyinSynthesizer()
    ) as call:
        before = call.balance("A3001")
        readback = await call.speak(await mandarin("给李娜转三百块"))
        text = said(readback)
        if "对吗" in " ".join(getattr(e, "text", "") for e in readback):
            readback = await call.speak(await mandarin("对"))  # a low-confidence amount was read back first
            text = said(readback)
        assert "李娜" in text and "300.00" in text, said(call.events)
        events = await call.speak(await mandarin("确认"))
        for _ in range(3):
            expecting = [getattr(e, "expect", None) for e in events if hasattr(e, "expect")]
            if expecting and expecting[-1] == "pin":
                events = await call.keys(C003_PIN)
            elif expecting and expecting[-1] == "otp":
                events = await call.keys(call.latest_code())
        assert "转账成功" in said(call.events)
        assert call.balance("A3001") == before - Decimal("300.00")

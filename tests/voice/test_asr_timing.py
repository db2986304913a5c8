"""The recogniser's per-utterance timing callback (the phone line's real-time-factor metric): one report per
utterance heard, with the utterance's audio time and the time spent recognising it; none for silence."""

from __future__ import annotations

import pytest

from tests.voice.korean_speech import KoreanSpeech, chunks, silence
from voice.asr import AsrEngine, AsrModel, EndpointConfig
from voice.events import Final

pytestmark = pytest.mark.voice_model

RATE = 16000


class Timings:
    def __init__(self) -> None:
        self.reports: list[tuple[float, float]] = []

    def __call__(self, audio_seconds: float, processing_seconds: float) -> None:
        self.reports.append((audio_seconds, processing_seconds))


async def test_each_utterance_reports_its_audio_and_recognition_time(
    korean_model: AsrModel, speech: KoreanSpeech
) -> None:
    timings = Timings()
    engine = AsrEngine(korean_model, workers=1, max_streams=2, on_utterance=timings)
    try:
        stream = engine.open_stream(RATE)
        one = speech.padded("잔액 조회 부탁합니다", RATE, before=0.3, after=1.2)
        two = speech.padded("상담원 연결해 주세요", RATE, before=0.3, after=1.2)
        finals = []
        for piece in chunks(one + two, RATE // 5):
            finals += [event for event in await stream.feed(piece) if isinstance(event, Final)]
        await stream.finish()
    finally:
        await engine.aclose()
    assert len(finals) == 2
    assert len(timings.reports) == 2
    fed = (len(one) + len(two)) / 2 / RATE
    assert sum(audio for audio, _ in timings.reports) <= fed + 0.01
    for audio, processing in timings.reports:
        assert 1.0 < audio < fed
        assert 0 < processing / audio < 5


async def test_silence_reports_nothing_and_a_failing_callback_does_not_stop_recognition(
    korean_model: AsrModel, speech: KoreanSpeech
) -> None:
    calls = 0

    def broken(audio_seconds: float, processing_seconds: float) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("a metrics backend fell over")

    engine = AsrEngine(korean_model, workers=1, max_streams=2, on_utterance=broken)
    try:
        stream = engine.open_stream(RATE, endpoint=EndpointConfig(no_input_s=1.0))
        for piece in chunks(silence(2.5, RATE), RATE // 5):
            await stream.feed(piece)
        assert calls == 0
        events = []
        for piece in chunks(speech.padded("안녕하세요", RATE, before=0.2, after=1.2), RATE // 5):
            events += await stream.feed(piece)
        assert any(isinstance(event, Final) and event.text for event in events)
        await stream.finish()
    finally:
        await engine.aclose()
    assert calls == 1

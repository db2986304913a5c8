"""Streaming recognition on the Korean Vosk model: events, endpointing, grammars, concurrency, bad input."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.voice.korean_speech import KoreanSpeech, chunks, silence, white_noise
from voice.asr import AsrBusy, AsrEngine, AsrModel, AsrModelError, AsrStream, AsrStreamClosed, EndpointConfig
from voice.events import AsrEvent, Final, NoInput, Partial, SpeechStarted
from voice.grammar import yes_no_grammar

pytestmark = pytest.mark.voice_model

RATE = 16000
# 100 ms chunks at 16 kHz, the size a telephone gateway batches 20 ms frames into.
CHUNK = 3200
YES_NO = yes_no_grammar("ko").phrases()


async def feed_all(stream: AsrStream, pcm: bytes, chunk: int = CHUNK) -> list[AsrEvent]:
    events: list[AsrEvent] = []
    for piece in chunks(pcm, chunk):
        events.extend(await stream.feed(piece))
    return events


def finals(events: Sequence[AsrEvent]) -> list[Final]:
    return [event for event in events if isinstance(event, Final)]


def outline(event: AsrEvent) -> tuple[object, ...]:
    """What must not depend on scheduling: the kind of event, and a Final's text and reason."""
    if isinstance(event, Final):
        return ("final", event.text, event.reason)
    return (type(event).__name__,)


async def recognise(engine: AsrEngine, pcm: bytes, rate: int = RATE, **options: object) -> list[AsrEvent]:
    """All events of one stream over `pcm`, the eof Final included when it holds words."""
    stream = engine.open_stream(rate, **options)  # type: ignore[arg-type]
    events = await feed_all(stream, pcm, chunk=rate // 5)
    last = await stream.finish()
    return [*events, last] if last.text else events


def test_model_reports_rate_vocabulary_and_missing_unk(korean_model: AsrModel) -> None:
    assert korean_model.sample_rate == 16000
    assert korean_model.has_unk is False
    assert korean_model.has_word("네")
    assert not korean_model.has_word("맞아요")


def test_missing_or_empty_model_path_raises_model_error(tmp_path: Path) -> None:
    with pytest.raises(AsrModelError, match="no Vosk model"):
        AsrModel(tmp_path / "missing")
    with pytest.raises(AsrModelError, match="does not look like"):
        AsrModel(tmp_path)


async def test_free_decoding_at_16k_streams_speech_started_partials_then_final(
    engine: AsrEngine, speech: KoreanSpeech
) -> None:
    audio = speech.padded("안녕하세요", RATE, before=0.5, after=1.0)
    events = await recognise(engine, audio)

    kinds = [type(event) for event in events]
    assert kinds[0] is SpeechStarted
    assert Partial in kinds
    final_at = kinds.index(Final)
    assert kinds.index(Partial) < final_at
    final = finals(events)[0]
    assert final.text and final.reason in ("endpoint", "silence")
    assert 0.0 < final.confidence <= 1.0
    # The speech starts 0.5 s into the stream; the word timings say so.
    assert 0.2 <= final.words[0].start <= 0.9
    assert all(w.start < w.end <= final.end for w in final.words)
    assert events.count(SpeechStarted(at=0.5)) == 1


async def test_8k_telephone_audio_is_resampled_for_the_16k_model(engine: AsrEngine, speech: KoreanSpeech) -> None:
    audio = speech.padded("네", 8000, before=0.5, after=1.0)
    events = await recognise(engine, audio, rate=8000, grammar=YES_NO)

    assert any(isinstance(event, Partial) and event.text == "네" for event in events)
    [final] = finals(events)
    assert final.text == "네"
    # Timings are in stream seconds whatever the caller's rate: ~1.1 s of speech+padding precede the end.
    assert 0.3 <= final.words[0].start < final.words[0].end <= 1.3


async def test_grammar_switch_mid_stream_changes_what_is_recognised(engine: AsrEngine, speech: KoreanSpeech) -> None:
    word = speech.padded("이체", RATE, before=0.2, after=0.9)
    stream = engine.open_stream(RATE)
    free = finals(await feed_all(stream, word))
    stream.set_grammar(YES_NO)
    closed = finals(await feed_all(stream, word))
    stream.set_grammar(None)
    free_again = finals(await feed_all(stream, word))
    await stream.finish()

    allowed = set(YES_NO)
    assert free and closed and free_again
    assert not set(free[0].text.split()) <= allowed
    assert set(closed[0].text.split()) <= allowed
    assert not set(free_again[0].text.split()) <= allowed
    # Word times keep counting from the start of the stream across recogniser switches.
    assert free[0].words[0].start < closed[0].words[0].start < free_again[0].words[0].start
    assert closed[0].words[0].start > free[0].end


async def test_silence_after_speech_ends_the_utterance(engine: AsrEngine, speech: KoreanSpeech) -> None:
    spoken = speech.pcm("네", RATE)
    stream = engine.open_stream(RATE, grammar=YES_NO, endpoint=EndpointConfig(silence_s=0.3))
    events = await feed_all(stream, silence(0.5, RATE) + spoken + silence(2.0, RATE))
    await stream.finish()

    first = finals(events)[0]
    assert first.text == "네"
    assert first.reason == "silence"
    speech_end = 0.5 + len(spoken) / 2 / RATE
    # Within the 0.3 s timeout (espeak's quiet tail counts as silence) plus one 0.1 s block.
    assert speech_end - 0.2 <= first.end <= speech_end + 0.4


async def test_endless_speech_is_cut_at_max_utterance(engine: AsrEngine) -> None:
    stream = engine.open_stream(
        RATE, grammar=YES_NO, endpoint=EndpointConfig(max_utterance_s=1.0, silence_s=5.0, no_input_s=60.0)
    )
    events = await feed_all(stream, white_noise(3.5, RATE, amplitude=3000))
    await stream.finish()

    cut = finals(events)
    assert [final.reason for final in cut] == ["max_utterance"] * 3
    assert [final.end for final in cut] == [1.0, 2.0, 3.0]
    # Three cut utterances and the one still running at the end.
    assert sum(isinstance(event, SpeechStarted) for event in events) == 4


async def test_no_input_fires_once_per_timeout_and_restarts(engine: AsrEngine) -> None:
    stream = engine.open_stream(RATE, grammar=YES_NO, endpoint=EndpointConfig(no_input_s=1.0))
    events = await feed_all(stream, silence(3.5, RATE))
    final = await stream.finish()

    assert events == [NoInput(after_seconds=1.0)] * 3
    assert final.text == "" and final.reason == "eof"


async def test_n_best_alternatives_and_word_timings(engine: AsrEngine, speech: KoreanSpeech) -> None:
    audio = speech.padded("아니요", RATE, before=0.5, after=1.0)
    with_words = finals(await recognise(engine, audio, grammar=YES_NO))[0]
    n_best = finals(await recognise(engine, audio, grammar=YES_NO, max_alternatives=3))[0]

    assert with_words.words and not with_words.alternatives
    assert all(0.0 <= word.conf <= 1.0 and 0.3 <= word.start < word.end <= 1.8 for word in with_words.words)
    assert with_words.confidence == pytest.approx(np.mean([word.conf for word in with_words.words]))
    assert 1 <= len(n_best.alternatives) <= 3
    assert n_best.alternatives[0].text == n_best.text
    assert n_best.words and n_best.words[0].start < n_best.words[0].end
    # Vosk gives no word confidences in n-best mode.
    assert n_best.confidence == 0.0


async def test_four_concurrent_streams_share_one_model(engine: AsrEngine, speech: KoreanSpeech) -> None:
    words = ["네", "아니요", "네", "아니요"]
    busy_seen: list[int] = []

    async def watch() -> None:
        while True:
            busy_seen.append(engine.stats().busy_workers)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(recognise(engine, speech.padded(word, RATE), grammar=YES_NO) for word in words))
    watcher.cancel()

    # Values rather than texts: 아니요 and 아니오 are the same answer and the model picks either for espeak's voice.
    grammar = yes_no_grammar("ko")
    heard = [grammar.match_text(finals(events)[0].text) for events in results]
    assert [match.value if match else None for match in heard] == ["affirm", "deny", "affirm", "deny"]
    assert max(busy_seen) <= engine.workers
    assert engine.stats().open_streams == 0


async def test_admission_refuses_streams_beyond_max_streams(korean_model: AsrModel) -> None:
    engine = AsrEngine(korean_model, workers=1, max_streams=2)
    try:
        first = engine.open_stream(RATE, grammar=YES_NO)
        engine.open_stream(RATE, grammar=YES_NO)
        with pytest.raises(AsrBusy):
            engine.open_stream(RATE)
        first.close()
        engine.open_stream(RATE, grammar=YES_NO)
        assert engine.stats().open_streams == 2
    finally:
        await engine.aclose()


async def test_chunks_of_one_stream_run_in_order_one_at_a_time(engine: AsrEngine, speech: KoreanSpeech) -> None:
    audio = speech.padded("아니요", RATE)
    sequential = engine.open_stream(RATE, grammar=YES_NO)
    expected = await feed_all(sequential, audio)
    await sequential.finish()

    stream = engine.open_stream(RATE, grammar=YES_NO)
    queued_seen: list[int] = []

    async def watch() -> None:
        while True:
            queued_seen.append(engine.stats().queued_chunks)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    # Every chunk submitted at once: the stream must still decode them one by one, in submission order.
    per_chunk = await asyncio.gather(*(stream.feed(piece) for piece in chunks(audio, CHUNK)))
    watcher.cancel()
    await stream.finish()

    # Same utterances in the same order. (Vosk is not bit-reproducible between two recognisers, its float sums
    # run on BLAS threads: confidences, and under load a partial or an endpoint frame, can differ.)
    got = [outline(event) for events in per_chunk for event in events if not isinstance(event, Partial)]
    assert got == [outline(event) for event in expected if not isinstance(event, Partial)]
    # One stream never has more than one chunk waiting in the pool.
    assert max(queued_seen) <= 1


async def test_cancelled_feed_does_not_let_the_next_chunk_overtake(engine: AsrEngine, speech: KoreanSpeech) -> None:
    audio = speech.padded("네", RATE)
    pieces = chunks(audio, CHUNK)
    stream = engine.open_stream(RATE, grammar=YES_NO)
    task = asyncio.create_task(stream.feed(pieces[0]))
    await asyncio.sleep(0)
    task.cancel()
    events: list[AsrEvent] = []
    for piece in pieces[1:]:
        events.extend(await stream.feed(piece))
    events.append(await stream.finish())
    # The cancelled chunk was still decoded (first), so the word is heard complete and the stream stays usable.
    assert any(isinstance(event, Final) and event.text == "네" for event in events)
    assert engine.stats().open_streams == 0


async def test_silence_only_gives_an_empty_final_and_no_speech(engine: AsrEngine) -> None:
    events = await recognise(engine, silence(2.0, RATE), grammar=YES_NO)
    assert not any(isinstance(event, SpeechStarted | Final) for event in events)


async def test_clipped_audio_does_not_crash(engine: AsrEngine) -> None:
    square = np.where(np.arange(2 * RATE) // 40 % 2 == 0, 32767, -32768).astype("<i2").tobytes()
    loud_noise = white_noise(1.0, RATE, amplitude=40000)  # mostly clipped to full scale
    events = await recognise(engine, square + loud_noise, grammar=YES_NO)
    assert isinstance(events[0], SpeechStarted)


async def test_odd_length_chunks_are_reassembled(engine: AsrEngine, speech: KoreanSpeech) -> None:
    audio = speech.padded("네", RATE)
    stream = engine.open_stream(RATE, grammar=YES_NO)
    events = await feed_all(stream, audio, chunk=333)
    events.append(await stream.finish())
    assert [final.text for final in finals(events) if final.text] == ["네"]


async def test_wrongly_declared_sample_rate_still_recognises_something_without_crashing(
    engine: AsrEngine, speech: KoreanSpeech
) -> None:
    # 8 kHz audio declared as 16 kHz: plays at double speed; nothing to assert but survival and a clean end.
    events = await recognise(engine, speech.padded("아니요", 8000), rate=RATE, grammar=YES_NO)
    assert all(isinstance(event, SpeechStarted | Partial | Final | NoInput) for event in events)
    assert engine.stats().open_streams == 0


async def test_a_minute_of_audio_fed_as_fast_as_possible(engine: AsrEngine, speech: KoreanSpeech) -> None:
    turn = speech.padded("네", RATE, before=0.5, after=1.5) + white_noise(1.0, RATE, amplitude=2000, seed=1)
    minute = (turn * (60 * RATE * 2 // len(turn) + 1))[: 60 * RATE * 2]
    stream = engine.open_stream(RATE, grammar=YES_NO, endpoint=EndpointConfig(max_utterance_s=5.0))
    events = await feed_all(stream, minute, chunk=16000)
    final = await stream.finish()

    assert stream.seconds == pytest.approx(60.0)
    assert len(finals(events)) >= 10
    assert final.end == pytest.approx(60.0)


async def test_closed_stream_refuses_audio_and_closing_twice_is_harmless(engine: AsrEngine) -> None:
    stream = engine.open_stream(RATE)
    stream.close()
    stream.close()
    assert engine.stats().open_streams == 0
    with pytest.raises(AsrStreamClosed):
        await stream.feed(silence(0.1, RATE))


def test_grammar_words_outside_the_vocabulary_are_dropped_with_a_warning(
    korean_model: AsrModel, caplog: pytest.LogCaptureFixture
) -> None:
    engine = AsrEngine(korean_model, workers=1, max_streams=1)
    try:
        stream = engine.open_stream(RATE, grammar=["네"])
        with caplog.at_level(logging.WARNING, logger="voice.asr"):
            stream.set_grammar(["맞아요", "네"])
        assert "맞아요" in caplog.text
        with pytest.raises(ValueError, match="vocabulary"):
            stream.set_grammar(["맞아요"])
        stream.close()
    finally:
        engine._pool.shutdown()

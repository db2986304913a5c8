"""Speech synthesis: real espeak-ng for Mandarin (via pinyin) and Korean, the prompt cache, and chunking."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from voice.audio import duration_seconds, rms
from voice.events import AudioChunk
from voice.tts import (
    CachedSynthesizer,
    EspeakPinyinSynthesizer,
    EspeakSynthesizer,
    SpeechSynthesizer,
    SynthesisError,
    chunks,
    pinyin_for_espeak,
    plain_for_espeak,
)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="Debian's espeak-ng is not installed")

SHORT_REPLY = "您的余额是五百元。"
LONG_REPLY = "您好，您的账户余额是一万二千三百元。本月还有一笔信用卡账单待还，还有什么可以帮您的吗？"


# --- Text preparation -------------------------------------------------------------------------------------------


def test_pinyin_conversion_uses_tone_numbers() -> None:
    assert pinyin_for_espeak("余额") == "yu2 e2"


def test_pinyin_conversion_marks_the_neutral_tone_as_five() -> None:
    assert pinyin_for_espeak("我的") == "wo3 de5"


def test_pinyin_conversion_reads_polyphonic_characters_in_context() -> None:
    assert pinyin_for_espeak("银行") == "yin2 hang2"


def test_chinese_punctuation_becomes_ascii_pauses() -> None:
    assert pinyin_for_espeak("你好，再见。对吗？好！一；二：三、四") == (
        "ni3 hao3, zai4 jian4. dui4 ma5? hao3! yi1; er4: san1, si4"
    )


def test_digits_and_latin_text_pass_through() -> None:
    assert pinyin_for_espeak("尾号1234的VISA卡") == "wei3 hao4 1234 de5 VISA ka3"
    # Full-width letters and digits are folded to ASCII so espeak-ng can read them.
    assert pinyin_for_espeak("ＡＴＭ１２") == "ATM12"


def test_plain_text_keeps_the_script_and_maps_punctuation() -> None:
    assert plain_for_espeak("  잔액은，  오만 원입니다。 ") == "잔액은, 오만 원입니다."


# --- espeak-ng --------------------------------------------------------------------------------------------------


@needs_espeak
@pytest.mark.parametrize("sample_rate", [8000, 16000])
async def test_mandarin_reply_is_synthesised_at_the_requested_rate(sample_rate: int) -> None:
    synthesizer = EspeakPinyinSynthesizer()
    pcm = await synthesizer.synthesize(LONG_REPLY, sample_rate)
    seconds = duration_seconds(pcm, sample_rate)
    assert len(pcm) % 2 == 0
    # About 40 syllables: several seconds of speech, not a blip and not a runaway.
    assert 4.0 < seconds < 20.0
    assert rms(pcm) > 500


@needs_espeak
async def test_duration_grows_with_the_text() -> None:
    synthesizer = EspeakPinyinSynthesizer()
    short = duration_seconds(await synthesizer.synthesize(SHORT_REPLY, 8000), 8000)
    long = duration_seconds(await synthesizer.synthesize(LONG_REPLY, 8000), 8000)
    ratio = len(LONG_REPLY) / len(SHORT_REPLY)
    assert 0.4 * ratio < long / short < 1.6 * ratio


@needs_espeak
async def test_both_rates_carry_the_same_speech() -> None:
    synthesizer = EspeakPinyinSynthesizer()
    narrow = await synthesizer.synthesize(SHORT_REPLY, 8000)
    wide = await synthesizer.synthesize(SHORT_REPLY, 16000)
    assert duration_seconds(narrow, 8000) == pytest.approx(duration_seconds(wide, 16000), abs=0.01)


@needs_espeak
async def test_korean_voice_speaks_hangul() -> None:
    pcm = await EspeakSynthesizer("ko").synthesize("안녕하세요, 잔액을 알려 드릴게요.", 16000)
    assert duration_seconds(pcm, 16000) > 1.0
    assert rms(pcm) > 500


@needs_espeak
async def test_blank_text_gives_no_audio_without_running_espeak() -> None:
    synthesizer = EspeakPinyinSynthesizer(executable="/nonexistent/espeak-ng")
    assert await synthesizer.synthesize(" \n ", 8000) == b""


async def test_missing_executable_raises_synthesis_error() -> None:
    synthesizer = EspeakPinyinSynthesizer(executable="/nonexistent/espeak-ng")
    with pytest.raises(SynthesisError, match="cannot run"):
        await synthesizer.synthesize(SHORT_REPLY, 8000)


@needs_espeak
async def test_unknown_voice_raises_synthesis_error_with_espeak_message() -> None:
    with pytest.raises(SynthesisError, match="exited with"):
        await EspeakSynthesizer("nosuchvoice").synthesize("hello", 8000)


async def test_engine_that_hangs_is_killed_after_the_timeout(tmp_path: Path) -> None:
    hanging = tmp_path / "hanging-tts"
    hanging.write_text("#!/bin/sh\nexec sleep 30\n")
    hanging.chmod(0o755)
    synthesizer = EspeakSynthesizer("ko", executable=str(hanging), timeout=0.3)
    started = time.monotonic()
    with pytest.raises(SynthesisError, match="longer than"):
        await synthesizer.synthesize("x", 8000)
    assert time.monotonic() - started < 5


async def test_engine_with_empty_output_raises_synthesis_error(tmp_path: Path) -> None:
    silent = tmp_path / "silent-tts"
    silent.write_text("#!/bin/sh\ncat >/dev/null\n")
    silent.chmod(0o755)
    with pytest.raises(SynthesisError, match="unreadable audio"):
        await EspeakSynthesizer("ko", executable=str(silent)).synthesize("x", 8000)


async def test_unsupported_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        await EspeakPinyinSynthesizer().synthesize(SHORT_REPLY, 44100)


# --- Cache ------------------------------------------------------------------------------------------------------


class CountingSynthesizer:
    """Wraps a synthesizer and counts the calls that reach it; `delay` widens the window for concurrent requests."""

    def __init__(self, inner: SpeechSynthesizer, delay: float = 0.0) -> None:
        self.inner = inner
        self.name = inner.name
        self.delay = delay
        self.calls: list[tuple[str, int]] = []

    async def synthesize(self, text: str, sample_rate: int) -> bytes:
        self.calls.append((text, sample_rate))
        if self.delay:
            await asyncio.sleep(self.delay)
        return await self.inner.synthesize(text, sample_rate)


class FakeSynthesizer:
    """Deterministic PCM without espeak-ng, for cache behaviour that does not depend on real speech."""

    name = "fake"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    async def synthesize(self, text: str, sample_rate: int) -> bytes:
        if self.fail:
            raise SynthesisError("engine down")
        return text.encode("utf-8").ljust(sample_rate // 10, b"\x00")[: sample_rate // 10 * 2]


@needs_espeak
async def test_cache_hit_does_not_run_espeak_again() -> None:
    counting = CountingSynthesizer(EspeakPinyinSynthesizer())
    cache = CachedSynthesizer(counting)
    first = await cache.synthesize(SHORT_REPLY, 8000)
    second = await cache.synthesize(SHORT_REPLY, 8000)
    assert first == second
    assert counting.calls == [(SHORT_REPLY, 8000)]
    await cache.synthesize(SHORT_REPLY, 16000)  # another rate is another entry
    assert len(counting.calls) == 2


@needs_espeak
async def test_disk_cache_survives_a_new_instance(tmp_path: Path) -> None:
    first_counting = CountingSynthesizer(EspeakPinyinSynthesizer())
    original = await CachedSynthesizer(first_counting, cache_dir=tmp_path).synthesize(SHORT_REPLY, 16000)
    assert len(list(tmp_path.glob("*.wav"))) == 1

    second_counting = CountingSynthesizer(EspeakPinyinSynthesizer())
    restored = await CachedSynthesizer(second_counting, cache_dir=tmp_path).synthesize(SHORT_REPLY, 16000)
    assert restored == original
    assert second_counting.calls == []


async def test_disk_cache_ignores_a_corrupt_file(tmp_path: Path) -> None:
    counting = CountingSynthesizer(FakeSynthesizer())
    await CachedSynthesizer(counting, cache_dir=tmp_path).synthesize("hello", 8000)
    (cached_file,) = tmp_path.glob("*.wav")
    cached_file.write_bytes(b"garbage")
    again = await CachedSynthesizer(counting, cache_dir=tmp_path).synthesize("hello", 8000)
    assert again == await FakeSynthesizer().synthesize("hello", 8000)
    assert len(counting.calls) == 2


async def test_persist_if_keeps_customer_specific_text_off_the_disk(tmp_path: Path) -> None:
    cache = CachedSynthesizer(
        FakeSynthesizer(), cache_dir=tmp_path, persist_if=lambda text: not any(c.isdigit() for c in text)
    )
    await cache.synthesize("余额 12345 元", 8000)
    assert list(tmp_path.iterdir()) == []
    await cache.synthesize("请输入密码", 8000)
    assert len(list(tmp_path.glob("*.wav"))) == 1


async def test_concurrent_requests_for_one_prompt_synthesise_once() -> None:
    counting = CountingSynthesizer(FakeSynthesizer(), delay=0.05)
    cache = CachedSynthesizer(counting)
    results = await asyncio.gather(*(cache.synthesize("请稍候", 8000) for _ in range(10)))
    assert len(set(results)) == 1
    assert counting.calls == [("请稍候", 8000)]


async def test_a_cancelled_caller_does_not_cancel_the_shared_synthesis() -> None:
    counting = CountingSynthesizer(FakeSynthesizer(), delay=0.05)
    cache = CachedSynthesizer(counting)
    leaver = asyncio.create_task(cache.synthesize("请稍候", 8000))
    stayer = asyncio.create_task(cache.synthesize("请稍候", 8000))
    await asyncio.sleep(0.01)
    leaver.cancel()
    assert await stayer == await FakeSynthesizer().synthesize("请稍候", 8000)
    assert len(counting.calls) == 1


async def test_failures_are_not_cached() -> None:
    failing = FakeSynthesizer(fail=True)
    cache = CachedSynthesizer(failing)
    with pytest.raises(SynthesisError):
        await cache.synthesize("hello", 8000)
    failing.fail = False
    assert await cache.synthesize("hello", 8000)


async def test_least_recently_used_entry_is_evicted() -> None:
    counting = CountingSynthesizer(FakeSynthesizer())
    cache = CachedSynthesizer(counting, max_entries=2)
    await cache.synthesize("a", 8000)
    await cache.synthesize("b", 8000)
    await cache.synthesize("a", 8000)  # a is now the most recent
    await cache.synthesize("c", 8000)  # evicts b
    await cache.synthesize("a", 8000)
    await cache.synthesize("b", 8000)
    assert [text for text, _ in counting.calls] == ["a", "b", "c", "b"]


# --- Chunking ---------------------------------------------------------------------------------------------------


def test_chunks_split_by_duration_and_mark_the_last() -> None:
    pcm = bytes(2 * 8000 * 250 // 1000)  # 250 ms at 8 kHz
    parts = list(chunks(pcm, 8000, ms=100))
    assert [len(part.pcm) for part in parts] == [1600, 1600, 800]
    assert [part.last for part in parts] == [False, False, True]
    assert all(part.sample_rate == 8000 for part in parts)
    assert b"".join(part.pcm for part in parts) == pcm


def test_chunks_of_empty_audio_still_mark_the_end() -> None:
    assert list(chunks(b"", 16000)) == [AudioChunk(pcm=b"", sample_rate=16000, last=True)]

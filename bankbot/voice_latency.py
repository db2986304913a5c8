"""End of speech to the first byte of reply audio, over real recognition, a real Rasa turn and real TTS.

The only model here is Korean, so each utterance is real Korean speech recognised by the real recogniser,
and its transcript is then replaced by the Mandarin sentence it stands for ("查一下余额"): recognition,
normalisation, the dialogue turn and synthesis all cost what they cost, only the words are substituted.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.table import Table

from bankbot.voice_bench import CHUNK_MS, console, summary

DEMO_CUSTOMERS = ("C001", "C002", "C003", "C004")
MANDARIN_TURN = "查 一下 余额"
KOREAN_UTTERANCE = "잔액을 확인해 주세요"
RATE = 8000


class TranscriptOverride:
    """A real recognition stream whose final transcripts are replaced by a fixed Mandarin sentence."""

    def __init__(self, stream: Any, text: str) -> None:
        self.stream = stream
        self.text = text

    async def feed(self, pcm: bytes) -> list[Any]:
        from voice.events import Final

        return [self._swap(e) if isinstance(e, Final) else e for e in await self.stream.feed(pcm)]

    async def finish(self) -> Any:
        return self._swap(await self.stream.finish())

    def set_grammar(self, phrases: Sequence[str] | None) -> None:
        self.stream.set_grammar(phrases)

    def close(self) -> None:
        self.stream.close()

    def _swap(self, final: Any) -> Any:
        if not final.text:
            return final
        return replace(final, text=self.text, confidence=0.95, words=())


async def _measure(session: Any, first_audio: list[float], utterance: bytes) -> float:
    # Every measured utterance is an open request, whatever buttons the previous reply offered.
    session.expect_free_speech()
    step = RATE * 2 * CHUNK_MS // 1000
    for offset in range(0, len(utterance), step):
        await session.feed_audio(utterance[offset : offset + step], RATE)
    first_audio.clear()
    started = time.perf_counter()
    await session.end_of_input()
    if not first_audio:
        raise RuntimeError("the turn produced no audio")
    return (first_audio[0] - started) * 1000


async def bench_voice_latency(model_path: Path, *, turns: int, out: Path) -> int:
    import aiohttp

    from bankbot.layout import ProjectLayout
    from bankbot.stack import Stack, bench_env
    from bankbot.training import ensure_trained
    from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
    from bankcore.sandbox import seed_demo_if_empty
    from bankcore.settings import Settings
    from channels.metrics import GatewayMetrics
    from channels.rasa_client import RasaClient
    from channels.turns import TurnContext
    from channels.voice_turns import voice_turn_function
    from voice.asr import AsrEngine, AsrModel
    from voice.audio import silence
    from voice.events import AudioChunk, Reply
    from voice.session import VoiceConfig, VoiceSession
    from voice.tts import EspeakPinyinSynthesizer, EspeakSynthesizer

    layout = ProjectLayout()
    rasa_model = ensure_trained(layout)
    engine = AsrEngine(AsrModel(model_path), workers=2, max_streams=8)
    utterance = await EspeakSynthesizer("ko").synthesize(KOREAN_UTTERANCE, RATE) + silence(0.4, RATE)
    tts = EspeakPinyinSynthesizer()
    first_audio: list[float] = []

    async def on_audio(chunk: AudioChunk) -> None:
        first_audio.append(time.perf_counter())

    def session_for(turn: Any) -> Any:
        return VoiceSession(
            open_stream=lambda: TranscriptOverride(engine.open_stream(RATE, words=True), MANDARIN_TURN),
            synthesizer=tts,
            turn=turn,
            config=VoiceConfig(output_sample_rate=RATE),
            on_audio=on_audio,
        )

    with tempfile.TemporaryDirectory(prefix="bankbot-voice-bench-") as tmp:
        var_dir = Path(tmp)
        env = bench_env(var_dir)
        settings = Settings.from_env(env)
        migrate(settings.database_url)
        factory = make_session_factory(make_engine(settings.database_url))
        with unit_of_work(factory) as db:
            seed_demo_if_empty(db, pin_key=settings.secret_key)
        stack = Stack(layout, env, rasa_model)
        console.print("starting the stack...")
        stack.start()
        try:
            async with aiohttp.ClientSession() as http:
                ctx = TurnContext(
                    settings=settings,
                    rasa=RasaClient(http, settings.rasa_url, settings.rasa_token),
                    session_factory=factory,
                    metrics=GatewayMetrics.create(),
                )
                live = {
                    c: session_for(voice_turn_function(ctx, customer_id=c, channel="voicebench"))
                    for c in DEMO_CUSTOMERS
                }
                replies_seen: list[str] = []
                for customer in DEMO_CUSTOMERS:  # warm-up: first turns load lazily
                    await _measure(live[customer], first_audio, utterance)
                with_rasa = [
                    await _measure(live[DEMO_CUSTOMERS[i % len(DEMO_CUSTOMERS)]], first_audio, utterance)
                    for i in range(turns)
                ]
                reply_text = live["C001"].expectation.reply.text or "您的账户余额为8,000.00元。"
                replies_seen.append(reply_text)

                async def fixed_turn(text: str, metadata: Mapping[str, Any]) -> Sequence[Reply]:
                    return [Reply(reply_text)]

                local = session_for(fixed_turn)
                await _measure(local, first_audio, utterance)
                without_rasa = [await _measure(local, first_audio, utterance) for _ in range(turns)]
        finally:
            stack.stop()
            await engine.aclose()
    results = {"excluding the Rasa turn": summary(without_rasa), "including the Rasa turn": summary(with_rasa)}
    table = Table("end of speech → first reply audio", "turns", "p50 ms", "p95 ms", "mean ms")
    for name, row in results.items():
        table.add_row(name, str(turns), f"{row['p50_ms']:.1f}", f"{row['p95_ms']:.1f}", f"{row['mean_ms']:.1f}")
    console.print(table)
    console.print(f"reply spoken: {replies_seen[0]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"turns": turns, "results": results}, indent=2, ensure_ascii=False), encoding="utf-8")
    console.print(f"report: {out}")
    return 0

"""CLI: `bankbot voice transcribe|talk|serve-asr` and `bankbot models install` (registered by bankbot.cli)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from bankcore.settings import Settings

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

# Audio is fed in chunks of this length, as a phone line or an app would send it.
CHUNK_MS = 100


def register(commands: Any) -> None:
    voice = commands.add_parser("voice", help="speech: transcribe a recording, talk to the assistant by voice")
    group = voice.add_subparsers(dest="voice_command", required=True)

    transcribe = group.add_parser("transcribe", help="recognise a WAV file (16-bit mono, 8 or 16 kHz)")
    transcribe.add_argument("wav", type=Path)
    transcribe.add_argument("--model", type=Path, help="Vosk model directory (default: BANKBOT_VOSK_MODEL)")
    transcribe.add_argument("--grammar", help="closed answers, comma-separated: recognise only these phrases")
    transcribe.add_argument("--alternatives", type=int, default=0, help="n-best alternatives per utterance")
    transcribe.add_argument("--json", action="store_true", help="one JSON object per utterance")
    transcribe.set_defaults(handler=cmd_transcribe)

    talk = group.add_parser(
        "talk",
        help="a voice conversation with the running assistant (make run): speech in, transcripts, replies, audio out",
    )
    talk.add_argument("--customer", required=True, help="demo customer id, e.g. C001")
    talk.add_argument(
        "steps",
        nargs="*",
        help="in order: a WAV file (one utterance), dtmf:DIGITS (keypad, e.g. dtmf:1 or dtmf:2500#), or text:TEXT",
    )
    talk.add_argument("--wav", action="append", default=[], help="a WAV utterance, said before the other steps")
    talk.add_argument("--model", type=Path, help="Vosk model directory (default: BANKBOT_VOSK_MODEL)")
    talk.add_argument("--rate", type=int, default=8000, choices=(8000, 16000), help="reply audio sample rate")
    talk.add_argument("--out", type=Path, default=Path("var/voice-talk"), help="where reply audio is written")
    talk.add_argument("--channel", default="voice", help="channel name sent to Rasa")
    talk.set_defaults(handler=cmd_talk)

    serve = group.add_parser("serve-asr", help="the vosk-server-compatible WebSocket endpoint (default :2700)")
    serve.add_argument("--model", type=Path, help="Vosk model directory (default: BANKBOT_VOSK_MODEL)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(handler=cmd_serve_asr)

    models = commands.add_parser("models", help="speech models").add_subparsers(dest="models_command", required=True)
    install = models.add_parser("install", help="verify and unpack a Vosk model archive (path or URL)")
    install.add_argument("source", help="archive path or http(s) URL (zip or tar.gz)")
    install.add_argument("--sha256", required=True, help="expected SHA-256 of the archive")
    install.add_argument("--name", help="install as this name (default: the model folder's name)")
    install.add_argument("--dest", type=Path, help="models directory (default: BANKBOT_MODELS_DIR, models/)")
    install.set_defaults(handler=cmd_models_install)


def _model_path(args: argparse.Namespace, settings: Settings) -> Path | None:
    path: Path | None = args.model or settings.vosk_model_path
    if path is None:
        errors.print(
            "no Vosk model: pass --model or set BANKBOT_VOSK_MODEL "
            "(install one with `bankbot models install ARCHIVE --sha256 ...`)"
        )
    return path


def cmd_models_install(args: argparse.Namespace) -> int:
    from voice.model_install import ModelInstallError, install_model

    settings = Settings.from_env()
    dest: Path = args.dest or settings.models_dir
    try:
        path = install_model(args.source, dest, sha256=args.sha256, name=args.name)
    except ModelInstallError as error:
        errors.print(f"model not installed: {escape(str(error))}")
        return 1
    console.print(f"installed [bold]{escape(str(path))}[/bold]")
    console.print(f"use it with: export BANKBOT_VOSK_MODEL={escape(str(path))}")
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    model_path = _model_path(args, settings)
    if model_path is None:
        return 2
    grammar = [p.strip() for p in args.grammar.split(",") if p.strip()] if args.grammar else None
    return asyncio.run(_transcribe(model_path, args.wav, grammar, args.alternatives, args.json))


async def _transcribe(
    model_path: Path, wav: Path, grammar: Sequence[str] | None, alternatives: int, as_json: bool
) -> int:
    from voice.asr import AsrEngine, AsrModel
    from voice.audio import read_wav
    from voice.events import Final

    pcm, rate = read_wav(wav)
    loaded = time.perf_counter()
    model = AsrModel(model_path)
    load_seconds = time.perf_counter() - loaded
    engine = AsrEngine(model, workers=1, max_streams=1)
    stream = engine.open_stream(rate, grammar=grammar, words=True, max_alternatives=alternatives)
    step = rate * 2 * CHUNK_MS // 1000
    started = time.perf_counter()
    finals: list[Final] = []
    try:
        for offset in range(0, len(pcm), step):
            finals += [e for e in await stream.feed(pcm[offset : offset + step]) if isinstance(e, Final)]
        last = await stream.finish()
        if last.text or not finals:
            finals.append(last)
    finally:
        stream.close()
        await engine.aclose()
    elapsed = time.perf_counter() - started
    audio_seconds = len(pcm) / 2 / rate
    for final in finals:
        if as_json:
            print(json.dumps(_final_json(final), ensure_ascii=False))
        else:
            console.print(f"[bold]{escape(final.text) or '(nothing)'}[/bold]  confidence {final.confidence:.2f}")
            for alternative in final.alternatives:
                console.print(f"    alt {alternative.confidence:8.2f}  {escape(alternative.text)}")
    if not as_json:
        console.print(
            f"[dim]{audio_seconds:.1f} s of audio at {rate} Hz in {elapsed:.2f} s "
            f"(real-time factor {elapsed / max(audio_seconds, 1e-9):.2f}); model loaded in {load_seconds:.1f} s[/dim]"
        )
    return 0


def _final_json(final: Any) -> dict[str, Any]:
    return {
        "text": final.text,
        "confidence": round(final.confidence, 3),
        "reason": final.reason,
        "words": [
            {"word": w.word, "start": round(w.start, 2), "end": round(w.end, 2), "conf": round(w.conf, 3)}
            for w in final.words
        ],
        "alternatives": [{"text": a.text, "confidence": a.confidence} for a in final.alternatives],
    }


def cmd_talk(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    args.steps = [*args.wav, *args.steps]
    if not args.steps:
        errors.print("nothing to say: give WAV files (--wav or positional), dtmf:DIGITS or text:TEXT steps")
        return 2
    wav_steps = [s for s in args.steps if not s.startswith(("dtmf:", "text:"))]
    model_path = _model_path(args, settings) if wav_steps else None
    if wav_steps and model_path is None:
        return 2
    return asyncio.run(_talk(settings, args, model_path))


async def _talk(settings: Settings, args: argparse.Namespace, model_path: Path | None) -> int:
    import aiohttp

    from bankcore.database import make_engine, make_session_factory
    from channels.metrics import GatewayMetrics
    from channels.rasa_client import RasaClient
    from channels.turns import TurnContext
    from channels.voice_turns import voice_turn_function
    from voice.audio import read_wav, resample, write_wav
    from voice.events import AudioChunk, Final, Handoff, Hangup, Reply
    from voice.session import VoiceConfig, VoiceSession

    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    open_stream, engine = _recognition(model_path, args.rate)
    database = make_engine(settings.database_url)
    async with aiohttp.ClientSession() as http:
        ctx = TurnContext(
            settings=settings,
            rasa=RasaClient(http, settings.rasa_url, settings.rasa_token),
            session_factory=make_session_factory(database),
            metrics=GatewayMetrics.create(),
        )
        session = VoiceSession(
            open_stream=open_stream,
            synthesizer=_synthesizer(settings),
            turn=voice_turn_function(ctx, customer_id=args.customer, channel=args.channel),
            config=VoiceConfig(output_sample_rate=args.rate),
        )
        reply_audio = bytearray()
        reply_number = 0

        def show(events: Sequence[Any]) -> None:
            nonlocal reply_number
            for event in events:
                if isinstance(event, Final):
                    console.print(f"[cyan]heard[/cyan] {escape(event.text)}  ({event.confidence:.2f})")
                elif isinstance(event, Reply):
                    console.print(f"[green]bot[/green]   {escape(event.text)}")
                elif isinstance(event, Handoff):
                    console.print(f"[yellow]handoff[/yellow] {event.reason}")
                elif isinstance(event, Hangup):
                    console.print(f"[yellow]hangup[/yellow] {event.reason}")
                elif isinstance(event, AudioChunk):
                    reply_audio.extend(event.pcm)
                    if event.last:
                        reply_number += 1
                        path = out_dir / f"reply-{reply_number:02d}.wav"
                        write_wav(path, bytes(reply_audio), event.sample_rate)
                        reply_audio.clear()
                        console.print(f"[dim]        audio: {path}[/dim]")

        try:
            for step in args.steps:
                if step.startswith("dtmf:"):
                    console.print(f"[cyan]keys[/cyan]  {'*' * len(step[5:])}")
                    show(await session.dtmf(step[5:]))
                elif step.startswith("text:"):
                    console.print(f"[cyan]typed[/cyan] {escape(step[5:])}")
                    show(await session.text(step[5:]))
                else:
                    pcm, rate = read_wav(step)
                    pcm = resample(pcm, rate, args.rate)
                    chunk = args.rate * 2 * CHUNK_MS // 1000
                    for offset in range(0, len(pcm), chunk):
                        show(await session.feed_audio(pcm[offset : offset + chunk], args.rate))
                    show(await session.end_of_input())
        finally:
            await session.hangup()
            if engine is not None:
                await engine.aclose()
            database.dispose()
    return 0


class _NoRecognition:
    """Stands in for a recogniser when a talk script has only keypad and typed steps."""

    async def feed(self, pcm: bytes) -> list[Any]:
        return []

    async def finish(self) -> Any:
        from voice.events import Final

        return Final(text="")

    def set_grammar(self, phrases: Sequence[str] | None) -> None:
        del phrases

    def close(self) -> None:
        return None


def _recognition(model_path: Path | None, rate: int) -> tuple[Any, Any]:
    """A factory of recognition streams for the session, and the engine behind it (None without a model)."""
    if model_path is None:
        return _NoRecognition, None
    from voice.asr import AsrEngine, AsrModel

    engine = AsrEngine(AsrModel(model_path), workers=1, max_streams=2)
    return (lambda: engine.open_stream(rate, words=True)), engine


def _synthesizer(settings: Settings) -> Any:
    from voice.tts import CachedSynthesizer, EspeakPinyinSynthesizer

    return CachedSynthesizer(EspeakPinyinSynthesizer(settings.tts_voice))


def cmd_serve_asr(args: argparse.Namespace) -> int:
    from voice.asr import AsrEngine, AsrModel
    from voice.asr_server import run_asr_server

    settings = Settings.from_env()
    model_path = _model_path(args, settings)
    if model_path is None:
        return 2
    engine = AsrEngine(AsrModel(model_path), workers=settings.asr_workers, max_streams=settings.asr_max_streams)
    host = args.host or settings.asr_host
    port = args.port or settings.asr_port
    console.print(f"vosk-server-compatible ASR on ws://{host}:{port} (model {escape(str(model_path))})")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_asr_server(engine, host, port, max_session_seconds=settings.asr_max_session_seconds))
    return 0

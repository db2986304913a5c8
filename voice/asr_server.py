"""A vosk-server-compatible WebSocket recognition endpoint (alphacep/vosk-server websocket protocol) on aiohttp.

Protocol: an optional text message {"config": {"sample_rate", "words", "max_alternatives", "phrase_list"}}, then
binary 16-bit PCM chunks, each answered with Vosk's Result() JSON when the recogniser reports an endpoint or its
PartialResult() JSON otherwise, then the text message {"eof" : 1}, answered with FinalResult(); the server then
closes the socket. Beyond vosk-server, bad input gets {"error": "..."} and a close code instead of a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from voice.asr import AsrBusy, AsrEngine, AsrStream

logger = logging.getLogger(__name__)

# vosk-server's own defaults: telephone-rate audio, word timings on, no n-best.
DEFAULT_SAMPLE_RATE = 8000
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB: ~30 s of 16 kHz audio in one message, far above any real chunk
DEFAULT_MAX_SESSION_SECONDS = 600.0
MAX_ALTERNATIVES_LIMIT = 10
MAX_PHRASES = 1000
_RATE_RANGE = (4000, 192000)


@dataclass(frozen=True)
class ServerLimits:
    default_sample_rate: int
    max_message_bytes: int
    max_session_seconds: float


ENGINE_KEY = web.AppKey("asr_engine", AsrEngine)
LIMITS_KEY = web.AppKey("asr_server_limits", ServerLimits)


@dataclass
class _SessionConfig:
    sample_rate: int
    words: bool = True
    max_alternatives: int = 0
    phrase_list: list[str] | None = None


class ProtocolError(Exception):
    """The client broke the protocol; the message goes back to it in an {"error": ...} frame."""

    def __init__(self, message: str, close_code: int = WSCloseCode.INVALID_TEXT) -> None:
        super().__init__(message)
        self.close_code = close_code


def asr_app(
    engine: AsrEngine,
    *,
    default_sample_rate: int = DEFAULT_SAMPLE_RATE,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_session_seconds: float = DEFAULT_MAX_SESSION_SECONDS,
) -> web.Application:
    """The WebSocket endpoint at "/" (where vosk-server's clients connect); the engine stays owned by the caller."""
    app = web.Application()
    app[ENGINE_KEY] = engine
    app[LIMITS_KEY] = ServerLimits(default_sample_rate, max_message_bytes, max_session_seconds)
    app.router.add_get("/", _recognise)
    app.router.add_get("/healthz", _health)
    return app


async def _health(request: web.Request) -> web.Response:
    """Liveness for process supervisors (`bankbot run` waits on it), with the engine's load."""
    stats = request.app[ENGINE_KEY].stats()
    return web.json_response({"status": "ok", "open_streams": stats.open_streams, "busy_workers": stats.busy_workers})


async def run_asr_server(engine: AsrEngine, host: str = "127.0.0.1", port: int = 2700, **options: Any) -> None:
    """Serve `asr_app` until cancelled."""
    runner = web.AppRunner(asr_app(engine, **options))
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        logger.info("vosk-compatible ASR server listening on %s:%d", host, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def _recognise(request: web.Request) -> web.WebSocketResponse:
    engine = request.app[ENGINE_KEY]
    limits = request.app[LIMITS_KEY]
    # aiohttp refuses larger frames itself (close code 1009, message too big).
    socket = web.WebSocketResponse(max_msg_size=limits.max_message_bytes)
    await socket.prepare(request)
    config = _SessionConfig(sample_rate=limits.default_sample_rate)
    stream: AsrStream | None = None
    try:
        async with asyncio.timeout(limits.max_session_seconds):
            async for message in socket:
                if message.type == WSMsgType.BINARY:
                    if stream is None:
                        stream = _open(engine, config)
                    await socket.send_str(await stream.feed_raw(message.data))
                elif message.type == WSMsgType.TEXT:
                    request_data = _parse_text(message.data)
                    if "config" in request_data:
                        if stream is not None:
                            raise ProtocolError("config must come before the audio")
                        _apply_config(config, request_data["config"])
                    else:  # eof (the only other message _parse_text lets through)
                        if stream is None:
                            stream = _open(engine, config)
                        await socket.send_str(await stream.finish_raw())
                        await socket.close()
                        break
                elif message.type == WSMsgType.ERROR:
                    logger.info("ASR WebSocket error: %s", socket.exception())
                    break
    except ProtocolError as error:
        await _refuse(socket, str(error), error.close_code)
    except TimeoutError:
        await _refuse(socket, "session too long", WSCloseCode.POLICY_VIOLATION)
    except (ConnectionResetError, asyncio.CancelledError):
        # The client vanished mid-stream; the finally below frees its recogniser.
        raise
    except Exception:
        logger.exception("ASR WebSocket session failed")
        await _refuse(socket, "internal error", WSCloseCode.INTERNAL_ERROR)
    finally:
        if stream is not None:
            stream.close()
    return socket


def _open(engine: AsrEngine, config: _SessionConfig) -> AsrStream:
    try:
        return engine.open_stream(
            config.sample_rate,
            grammar=config.phrase_list,
            words=config.words,
            max_alternatives=config.max_alternatives,
        )
    except AsrBusy as error:
        raise ProtocolError(str(error), WSCloseCode.TRY_AGAIN_LATER) from error
    except ValueError as error:  # e.g. no phrase of phrase_list is in the model's vocabulary
        raise ProtocolError(str(error), WSCloseCode.POLICY_VIOLATION) from error


def _parse_text(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ProtocolError(f"not JSON: {error.msg}") from error
    if not isinstance(data, dict):
        raise ProtocolError("a text message must be a JSON object")
    if "config" in data:
        if set(data) != {"config"}:
            raise ProtocolError("a config message holds only the config object")
        return data
    if "eof" in data:
        return data
    raise ProtocolError("expected a config or an eof message")


_CONFIG_KEYS = {"sample_rate", "words", "max_alternatives", "phrase_list"}


def _apply_config(config: _SessionConfig, raw: Any) -> None:
    """Validate every key before changing anything, so a bad message leaves the session as it was."""
    if not isinstance(raw, dict):
        raise ProtocolError("config must be a JSON object")
    unknown = sorted(set(raw) - _CONFIG_KEYS)
    if unknown:
        raise ProtocolError(f"unknown config keys: {', '.join(unknown)}")
    sample_rate = raw.get("sample_rate", config.sample_rate)
    # bool is an int in Python; vosk-server clients send numbers (8000 or 8000.0).
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | float) or sample_rate != int(sample_rate):
        raise ProtocolError("sample_rate must be a whole number of hertz")
    if not _RATE_RANGE[0] <= sample_rate <= _RATE_RANGE[1]:
        raise ProtocolError(f"sample_rate must be between {_RATE_RANGE[0]} and {_RATE_RANGE[1]}")
    words = raw.get("words", config.words)
    if not isinstance(words, bool):
        raise ProtocolError("words must be true or false")
    max_alternatives = raw.get("max_alternatives", config.max_alternatives)
    if isinstance(max_alternatives, bool) or not isinstance(max_alternatives, int):
        raise ProtocolError("max_alternatives must be an integer")
    if not 0 <= max_alternatives <= MAX_ALTERNATIVES_LIMIT:
        raise ProtocolError(f"max_alternatives must be between 0 and {MAX_ALTERNATIVES_LIMIT}")
    phrase_list = raw.get("phrase_list", config.phrase_list)
    if phrase_list is not None and (
        not isinstance(phrase_list, list)
        or not all(isinstance(phrase, str) for phrase in phrase_list)
        or len(phrase_list) > MAX_PHRASES
    ):
        raise ProtocolError(f"phrase_list must be a list of at most {MAX_PHRASES} strings")
    config.sample_rate = int(sample_rate)
    config.words = words
    config.max_alternatives = max_alternatives
    # An empty list means free decoding, as in vosk-server.
    config.phrase_list = list(phrase_list) if phrase_list else None


async def _refuse(socket: web.WebSocketResponse, reason: str, close_code: int) -> None:
    if socket.closed:
        return
    with contextlib.suppress(ConnectionError, RuntimeError):
        await socket.send_str(json.dumps({"error": reason}))
        await socket.close(code=close_code, message=reason.encode()[:120])

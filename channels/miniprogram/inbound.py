"""Inbound half of the mini-program adapter: login through code2Session, text and voice messages, subscribe-message
consent, and hold-to-talk streaming over a WebSocket.

The client (channels/miniprogram/client/) logs in with `wx.login`'s code; the gateway exchanges it with WeChat
(the configured API base), keeps WeChat's session_key to itself and returns a signed session token bound to the
openid/unionid. Every later request resolves that identity to a customer, so a user who binds mid-session is
served as the customer from the next message on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web
from sqlalchemy.orm import Session, sessionmaker

from bankcore import channel_messages, subscriptions
from bankcore.database import unit_of_work
from bankcore.sealing import Sealer
from bankcore.settings import Settings
from channels import messages
from channels.binding import ChannelUser, handle_channel_turn, resolve_customer
from channels.http_errors import NO_STORE, dumps_utf8, json_error
from channels.json_replies import MiniProgramOutput
from channels.miniprogram.api import WeChatApi, WeChatApiError
from channels.miniprogram.sessions import MiniProgramTokens, MiniProgramUser
from channels.rasa_client import RasaUnavailable
from channels.rate_limit import RateLimiter
from channels.resources import HTTP_SESSION, METRICS, REDIS, SESSION_FACTORY, TURNS
from channels.signed_tokens import InvalidToken
from channels.voice_messages import (
    DECODED_RATE,
    StreamingTranscription,
    Transcript,
    VoiceMessageError,
    VoiceMessageRecognizer,
    decode_to_pcm,
)
from voice.audio import wav_bytes
from voice.speakable import speakable
from voice.tts import EspeakPinyinSynthesizer, SpeechSynthesizer, SynthesisError

logger = logging.getLogger(__name__)

CHANNEL = "miniprogram"
# A minute of 16 kHz PCM is 1.9 MB, base64 a third more: voice bodies get their own limit.
MAX_VOICE_BODY_BYTES = 3 * 1024 * 1024
_CODE_MAX = 128
# A client message id: what the client generates once per message and sends again with every retry of it.
_MSG_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# How long a retry waits for the first request's turn before answering 409, and how often it looks.
_RETRY_WAIT_S = 20.0
_RETRY_POLL_S = 0.2
# A request whose handler died is taken over by its next retry after this long.
_REQUEST_LEASE = dt.timedelta(seconds=60)
_TEMPLATE_ID_MAX = 128
_SPEECH_RATE = 16000

_VOICE_ERRORS = {
    "too_long": (413, messages.VOICE_TOO_LONG),
    "undecodable": (422, messages.VOICE_BAD_AUDIO),
    "unsupported_format": (422, messages.VOICE_BAD_AUDIO),
    "empty": (422, messages.VOICE_NOT_UNDERSTOOD),
    "nothing_heard": (422, messages.VOICE_NOT_UNDERSTOOD),
    "busy": (503, messages.VOICE_NOT_AVAILABLE),
}

WECHAT_API = web.AppKey("miniprogram_wechat_api", WeChatApi)
RECOGNIZER = web.AppKey("miniprogram_recognizer", VoiceMessageRecognizer)


def channel_user(user: MiniProgramUser) -> ChannelUser:
    also = (("miniprogram_unionid", user.unionid),) if user.unionid else ()
    return ChannelUser(channel=CHANNEL, identity_channel="miniprogram_openid", external_id=user.openid, also_link=also)


class MiniProgramInput:
    channel = CHANNEL

    def __init__(self, settings: Settings, *, synthesizer: SpeechSynthesizer | None = None) -> None:
        self._settings = settings
        self._tokens = MiniProgramTokens(settings.secret_key, settings.miniprogram_session_ttl_seconds)
        self._limiter = RateLimiter(CHANNEL, settings.miniprogram_rate_limit_per_minute, window_s=60.0)
        self._output = MiniProgramOutput()
        self._sealer = Sealer(settings.secret_key)
        self._synthesizer = synthesizer or EspeakPinyinSynthesizer(settings.tts_voice)

    @property
    def tokens(self) -> MiniProgramTokens:
        return self._tokens

    def register(self, app: web.Application) -> None:
        self._limiter.share_through(app.get(REDIS))
        app.router.add_post("/miniprogram/login", self.login)
        app.router.add_post("/miniprogram/messages", self.post_message)
        app.router.add_post("/miniprogram/subscriptions", self.post_subscription)
        app.router.add_get("/miniprogram/voice", self.voice_socket)
        if self._settings.miniprogram_configured:
            app.cleanup_ctx.append(self._runtime)

    async def _runtime(self, app: web.Application) -> AsyncIterator[None]:
        settings = self._settings
        app[WECHAT_API] = WeChatApi(
            app[HTTP_SESSION],
            settings.wechat_api_base,
            settings.miniprogram_app_id,
            settings.miniprogram_app_secret,
            redis=app.get(REDIS),
        )
        recognizer = None
        if settings.vosk_model_path is not None:
            recognizer = await asyncio.to_thread(
                VoiceMessageRecognizer.from_model_path,
                settings.vosk_model_path,
                workers=settings.asr_workers,
                max_streams=settings.asr_max_streams,
                max_seconds=settings.voice_message_max_seconds,
            )
            app[RECOGNIZER] = recognizer
        yield
        if recognizer is not None:
            await recognizer.aclose()

    # -- login ---------------------------------------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.Response:
        if WECHAT_API not in request.app:
            return json_error(503, "channel_not_configured", messages.CHANNEL_NOT_CONFIGURED)
        body = await _json_object(request, self._settings.max_body_bytes)
        if isinstance(body, web.Response):
            return body
        code = body.get("code")
        if not isinstance(code, str) or not code.strip() or len(code) > _CODE_MAX:
            return json_error(400, "invalid_code", messages.INVALID_LOGIN_CODE)
        metrics = request.app[METRICS]
        try:
            session = await request.app[WECHAT_API].code2session(code.strip())
        except WeChatApiError as error:
            metrics.count_inbound(CHANNEL, f"login_errcode_{error.errcode}")
            logger.info("mini-program login refused by WeChat: errcode %s", error.errcode)
            if error.retryable:
                if error.errcode == 45011:
                    return json_error(429, "rate_limited", messages.RATE_LIMITED, headers={"Retry-After": "5"})
                return json_error(503, "wechat_unavailable", messages.WECHAT_UNAVAILABLE, headers={"Retry-After": "5"})
            return json_error(401, "invalid_login_code", messages.INVALID_LOGIN_CODE)
        user = MiniProgramUser(openid=session.openid, unionid=session.unionid)
        customer_id = await resolve_customer(request.app[TURNS], channel_user(user))
        issued = self._tokens.issue(user)
        metrics.count_inbound(CHANNEL, "login")
        logger.info("mini-program session issued", extra={"customer_id": customer_id or "", "channel": CHANNEL})
        return web.json_response(
            {"token": issued.token, "expires_in": issued.expires_in, "bound": customer_id is not None},
            headers=NO_STORE,
            dumps=dumps_utf8,
        )

    # -- messages ------------------------------------------------------------------------------------------------

    def _authenticate(self, request: web.Request, token: str | None = None) -> MiniProgramUser | None:
        if token is None:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                return None
        token = token.strip()
        if not token:
            return None
        try:
            return self._tokens.verify(token)
        except InvalidToken as error:
            logger.info("mini-program token refused: %s", error)
            return None

    async def post_message(self, request: web.Request) -> web.Response:
        user = self._authenticate(request)
        if user is None:
            return json_error(401, "unauthorized", messages.UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
        if not await self._limiter.allow(user.openid):
            return json_error(429, "rate_limited", messages.RATE_LIMITED, headers={"Retry-After": "10"})
        body = await _json_object(request, MAX_VOICE_BODY_BYTES)
        if isinstance(body, web.Response):
            return body
        msg_id = body.get("msg_id")
        if msg_id is None:
            outcome = await self._run_message(request, user, body)
        elif not isinstance(msg_id, str) or not _MSG_ID.fullmatch(msg_id):
            return json_error(400, "invalid_msg_id", messages.BAD_REQUEST)
        else:
            outcome = await self._run_once(request, user, body, msg_id)
        if isinstance(outcome, web.Response):
            return outcome
        rendered, replayed = outcome
        if body.get("speech") is True:
            speech = await self._speech(rendered)
            if speech is not None:
                rendered = {**rendered, "speech": speech}
        headers = {**NO_STORE, "X-Bankbot-Replayed": "1"} if replayed else NO_STORE
        return web.json_response(rendered, headers=headers, dumps=dumps_utf8)

    async def _run_once(
        self, request: web.Request, user: MiniProgramUser, body: dict[str, Any], msg_id: str
    ) -> tuple[dict[str, Any], bool] | web.Response:
        """A message the client may send again (it timed out, the network dropped): the first request runs the
        turn and keeps its reply; a retry gets that reply back, so it never makes a second turn or transfer."""
        ctx = request.app[TURNS]
        factory = request.app[SESSION_FACTORY]
        kind = str(body.get("type", "text"))
        key = f"{user.openid}:{msg_id}"
        started = await asyncio.to_thread(self._begin, factory, key, user.openid, kind, ctx.clock())
        deadline = asyncio.get_running_loop().time() + _RETRY_WAIT_S
        while started.outcome == "in_progress" and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(_RETRY_POLL_S)  # the first request is still running its turn
            started = await asyncio.to_thread(self._begin, factory, key, user.openid, kind, ctx.clock(), False)
        if started.outcome == "replay" and started.reply is not None:
            request.app[METRICS].count_inbound(CHANNEL, "duplicate")
            return started.reply, True
        if started.outcome == "in_progress":
            return json_error(409, "in_progress", messages.REQUEST_IN_PROGRESS, headers={"Retry-After": "2"})
        outcome: tuple[dict[str, Any], bool] | web.Response | None = None
        try:
            outcome = await self._run_message(request, user, body)
        finally:
            if isinstance(outcome, tuple):
                await asyncio.to_thread(self._complete, factory, started.inbox_id, outcome[0], ctx.clock())
            else:
                error = f"status {outcome.status}" if outcome is not None else "the handler raised"
                await asyncio.to_thread(self._abandon, factory, started.inbox_id, error)
        return outcome

    def _begin(
        self,
        factory: sessionmaker[Session],
        key: str,
        openid: str,
        kind: str,
        now: dt.datetime,
        count_duplicate: bool = True,
    ) -> channel_messages.RequestStart:
        with unit_of_work(factory) as session:
            return channel_messages.begin_request(
                session,
                self._sealer,
                channel=CHANNEL,
                request_key=key,
                external_user=openid,
                kind=kind,
                now=now,
                lease=_REQUEST_LEASE,
                count_duplicate=count_duplicate,
            )

    def _complete(
        self, factory: sessionmaker[Session], inbox_id: int, rendered: dict[str, Any], now: dt.datetime
    ) -> None:
        with unit_of_work(factory) as session:
            channel_messages.complete_request(session, self._sealer, inbox_id, reply=rendered, now=now)

    def _abandon(self, factory: sessionmaker[Session], inbox_id: int, error: str) -> None:
        with unit_of_work(factory) as session:
            channel_messages.abandon_request(session, inbox_id, error=error)

    async def _run_message(
        self, request: web.Request, user: MiniProgramUser, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool] | web.Response:
        """One text or voice turn: (the rendered reply, replayed=False), or the error response to send instead."""
        kind = body.get("type", "text")
        ctx = request.app[TURNS]
        extra: dict[str, Any] = {}
        transcript: Transcript | None = None
        if kind == "text":
            text = body.get("text")
            if not isinstance(text, str):
                return json_error(400, "missing_text", messages.MISSING_TEXT)
            if len(json.dumps(body, ensure_ascii=False).encode("utf-8")) > self._settings.max_body_bytes:
                limit = self._settings.max_body_bytes
                return json_error(413, "body_too_large", messages.BODY_TOO_LARGE.format(limit=limit))
        elif kind == "voice":
            outcome = await self._transcribe_upload(request, body)
            if isinstance(outcome, web.Response):
                return outcome
            transcript = outcome
            text = transcript.text
            extra = {"input_mode": "voice", "asr_confidence": round(transcript.confidence, 3)}
        else:
            return json_error(400, "unsupported_type", messages.UNSUPPORTED_MESSAGE)
        try:
            replies = await handle_channel_turn(ctx, channel_user(user), text, extra_metadata=extra)
        except RasaUnavailable:
            return _assistant_unavailable()
        rendered = self._output.render(replies)
        if transcript is not None:
            rendered["transcript"] = transcript.text
        return rendered, False

    async def _transcribe_upload(self, request: web.Request, body: dict[str, Any]) -> Transcript | web.Response:
        recognizer = request.app.get(RECOGNIZER)
        if recognizer is None:
            return json_error(503, "voice_unavailable", messages.VOICE_NOT_AVAILABLE)
        fmt, rate, audio = body.get("format", "pcm"), body.get("sample_rate", DECODED_RATE), body.get("audio")
        if fmt not in {"pcm", "mp3"} or not isinstance(audio, str):
            return json_error(400, "invalid_voice", messages.VOICE_BAD_AUDIO)
        if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 48000:
            return json_error(400, "invalid_sample_rate", messages.VOICE_BAD_AUDIO)
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            return json_error(400, "invalid_voice", messages.VOICE_BAD_AUDIO)
        try:
            pcm = await decode_to_pcm(raw, fmt, sample_rate=rate if fmt == "pcm" else None)
            return await recognizer.transcribe(pcm)
        except VoiceMessageError as error:
            request.app[METRICS].count_turn(CHANNEL, f"voice_{error.code}")
            status, message = _VOICE_ERRORS.get(error.code, (422, messages.VOICE_NOT_UNDERSTOOD))
            return json_error(status, f"voice_{error.code}", message.format(limit=int(recognizer.max_seconds)))

    async def _speech(self, rendered: dict[str, Any]) -> dict[str, str] | None:
        """The rendered reply's texts read aloud, as a WAV."""
        text = "。".join(str(message["text"]) for message in rendered.get("messages", []) if message.get("text"))
        if not text:
            return None
        try:
            pcm = await self._synthesizer.synthesize(speakable(text), _SPEECH_RATE)
        except SynthesisError:
            logger.warning("speech synthesis failed for a mini-program reply")
            return None
        return {"format": "wav", "audio": base64.b64encode(wav_bytes(pcm, _SPEECH_RATE)).decode("ascii")}

    # -- subscribe messages -----------------------------------------------------------------------------------------

    async def post_subscription(self, request: web.Request) -> web.Response:
        user = self._authenticate(request)
        if user is None:
            return json_error(401, "unauthorized", messages.UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
        body = await _json_object(request, self._settings.max_body_bytes)
        if isinstance(body, web.Response):
            return body
        template_id, result = body.get("template_id"), body.get("result")
        if not isinstance(template_id, str) or not template_id or len(template_id) > _TEMPLATE_ID_MAX:
            return json_error(400, "invalid_template_id", messages.BAD_REQUEST)
        if result not in {"accept", "reject", "ban", "filter"}:
            return json_error(400, "invalid_result", messages.BAD_REQUEST)
        ctx = request.app[TURNS]
        customer_id = await resolve_customer(ctx, channel_user(user))

        def store() -> int:
            with unit_of_work(request.app[SESSION_FACTORY]) as session:
                return subscriptions.record(
                    session,
                    openid=user.openid,
                    customer_id=customer_id,
                    template_id=template_id,
                    accepted=result == "accept",
                    now=ctx.clock(),
                )

        remaining = await asyncio.to_thread(store)
        request.app[METRICS].count_inbound(CHANNEL, f"subscription_{result}")
        return web.json_response({"template_id": template_id, "remaining": remaining}, headers=NO_STORE)

    # -- hold-to-talk ------------------------------------------------------------------------------------------------

    async def voice_socket(self, request: web.Request) -> web.StreamResponse:
        user = self._authenticate(request, request.query.get("token", ""))
        if user is None:
            return json_error(401, "unauthorized", messages.UNAUTHORIZED)
        recognizer = request.app.get(RECOGNIZER)
        socket = web.WebSocketResponse(max_msg_size=256 * 1024, heartbeat=30)
        await socket.prepare(request)
        if recognizer is None:
            await _ws_error(socket, "voice_unavailable", messages.VOICE_NOT_AVAILABLE)
            return socket
        stream: StreamingTranscription | None = None
        try:
            async for frame in socket:
                if frame.type == WSMsgType.TEXT:
                    try:
                        command = json.loads(frame.data)
                    except ValueError:
                        await _ws_error(socket, "invalid_json", messages.BAD_REQUEST)
                        break
                    kind = command.get("type") if isinstance(command, dict) else None
                    if kind == "start":
                        rate = command.get("sample_rate", DECODED_RATE)
                        valid_rate = isinstance(rate, int) and 8000 <= rate <= 48000
                        if command.get("format", "pcm") != "pcm" or not valid_rate:
                            await _ws_error(socket, "invalid_voice", messages.VOICE_BAD_AUDIO)
                            break
                        if stream is not None:
                            stream.close()
                        stream = StreamingTranscription(recognizer, rate)
                    elif kind == "end" and stream is not None:
                        transcript = await stream.finish()
                        stream = None
                        await socket.send_json({"type": "final", "text": transcript.text}, dumps=dumps_utf8)
                        await self._socket_turn(request, socket, user, transcript, bool(command.get("speech")))
                    elif kind == "cancel":
                        if stream is not None:
                            stream.close()
                            stream = None
                    else:
                        await _ws_error(socket, "unexpected_frame", messages.BAD_REQUEST)
                elif frame.type == WSMsgType.BINARY:
                    if stream is None:
                        await _ws_error(socket, "not_started", messages.BAD_REQUEST)
                        break
                    partial = await stream.feed(frame.data)
                    if partial:
                        await socket.send_json({"type": "partial", "text": partial}, dumps=dumps_utf8)
                elif frame.type == WSMsgType.ERROR:
                    break
        except VoiceMessageError as error:
            status_message = _VOICE_ERRORS.get(error.code, (422, messages.VOICE_NOT_UNDERSTOOD))[1]
            await _ws_error(socket, f"voice_{error.code}", status_message.format(limit=int(recognizer.max_seconds)))
        finally:
            if stream is not None:
                stream.close()
            if not socket.closed:
                await socket.close()
        return socket

    async def _socket_turn(
        self,
        request: web.Request,
        socket: web.WebSocketResponse,
        user: MiniProgramUser,
        transcript: Transcript,
        speech: bool,
    ) -> None:
        extra = {"input_mode": "voice", "asr_confidence": round(transcript.confidence, 3)}
        try:
            replies = await handle_channel_turn(
                request.app[TURNS], channel_user(user), transcript.text, extra_metadata=extra
            )
        except RasaUnavailable:
            await _ws_error(socket, "assistant_unavailable", messages.ASSISTANT_UNAVAILABLE)
            return
        frame: dict[str, Any] = {"type": "reply", **self._output.render(replies)}
        if speech:
            spoken = await self._speech(frame)
            if spoken is not None:
                frame["speech"] = spoken
        await socket.send_json(frame, dumps=dumps_utf8)


async def _ws_error(socket: web.WebSocketResponse, code: str, message: str) -> None:
    if not socket.closed:
        await socket.send_json({"type": "error", "code": code, "message": message}, dumps=dumps_utf8)


def _assistant_unavailable() -> web.Response:
    return json_error(
        503,
        "assistant_unavailable",
        messages.ASSISTANT_UNAVAILABLE,
        headers={"Retry-After": "5"},
        messages=[{"text": messages.ASSISTANT_UNAVAILABLE, "buttons": []}],
    )


async def _json_object(request: web.Request, max_bytes: int) -> dict[str, Any] | web.Response:
    """The request's JSON object read with its own size limit, or the error response to send instead."""
    if request.content_type != "application/json":
        return json_error(415, "unsupported_media_type", messages.UNSUPPORTED_MEDIA_TYPE)
    if request.content_length is not None and request.content_length > max_bytes:
        return json_error(413, "body_too_large", messages.BODY_TOO_LARGE.format(limit=max_bytes))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            return json_error(413, "body_too_large", messages.BODY_TOO_LARGE.format(limit=max_bytes))
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError):
        return json_error(400, "invalid_json", messages.BAD_REQUEST)
    if not isinstance(body, dict):
        return json_error(400, "invalid_json", messages.BAD_REQUEST)
    return body

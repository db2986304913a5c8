"""Inbound half of the WeCom adapter: callback URL verification and encrypted message callbacks.

`GET /wecom/callback` answers WeCom's URL verification with the decrypted echostr (within its 1 s budget: no
I/O but the crypto). `POST /wecom/callback` verifies the signature, decrypts, checks the receive id (the corp
id), refuses stale timestamps (replay window), stores the message in the durable inbox — a retried MsgId is a
counted duplicate and nothing more — and acknowledges at once with an empty body; the answer follows
asynchronously through `message/send` (channels.wecom.conversation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bankcore import channel_messages
from bankcore.sealing import Sealer
from bankcore.settings import Settings
from channels import messages
from channels.http_errors import json_error
from channels.inbox_writer import InboxEntry, InboxWriter
from channels.metrics import GatewayMetrics
from channels.outbox_worker import OutboxWorker, SendAttempt
from channels.rate_limit import RateLimiter
from channels.resources import HTTP_SESSION, METRICS, REDIS, SESSION_FACTORY, TURNS
from channels.voice_messages import VoiceMessageRecognizer
from channels.wecom.api import WeComApi, WeComApiError
from channels.wecom.conversation import CHANNEL, WeComInboxProcessor
from channels.wecom.crypto import WeComCrypto, WeComCryptoError
from channels.wecom.outbound import WeComOutput
from channels.wecom.xml_messages import WeComMessage, WeComXmlError, parse_envelope, parse_message

logger = logging.getLogger(__name__)

PATH = "/wecom/callback"
# WeCom's callbacks are small; anything near the gateway's general body limit is no genuine callback.
MAX_CALLBACK_BYTES = 64 * 1024
# A user past their rate is told so at most once in this many seconds; further messages are recorded only.
_NOTICE_PERIOD_S = 60.0


@dataclass
class WeComRuntime:
    """What the adapter holds while the gateway runs: the platform API, the inbox processor and the outbox."""

    api: WeComApi
    processor: WeComInboxProcessor
    outbox: OutboxWorker


WECOM_RUNTIME = web.AppKey("wecom_runtime", WeComRuntime)


def message_key(message: WeComMessage) -> str:
    """The dedupe key of a callback: the MsgId, or for events (which have none) user + time + event + key,
    which is what WeCom's documentation says identifies a retried event."""
    if message.msg_id:
        return f"msg:{message.msg_id}"
    return f"event:{message.from_user}:{message.create_time}:{message.event or ''}:{message.event_key or ''}"


def _message_record(message: WeComMessage) -> dict[str, Any]:
    return {
        "msg_type": message.msg_type,
        "content": message.content,
        "media_id": message.media_id,
        "voice_format": message.voice_format,
        "recognition": message.recognition,
        "event": message.event,
        "event_key": message.event_key,
        "task_id": message.task_id,
        "agent_id": message.agent_id,
        "create_time": message.create_time,
    }


class WeComInput:
    """Registers the callback routes and runs the processing of acknowledged messages."""

    channel = CHANNEL

    def __init__(self, settings: Settings, *, process: bool = True) -> None:
        self._settings = settings
        self._crypto: WeComCrypto | None = None
        if settings.wecom_configured:
            self._crypto = WeComCrypto(settings.wecom_token, settings.wecom_encoding_aes_key, settings.wecom_corp_id)
        self._sealer = Sealer(settings.secret_key)
        self._limiter = RateLimiter(CHANNEL, settings.wecom_rate_limit_per_minute, window_s=60.0)
        # The shared limit's answers (admitted, else whether to send the notice), by message key, decided before
        # the write: Redis is asked from the event loop, while admission runs on the writer thread.
        self._shared_admissions: dict[str, tuple[bool, bool]] = {}
        self._process = process
        self._rate_noticed: dict[str, float] = {}
        self._metrics: GatewayMetrics | None = None
        self._writer: InboxWriter | None = None

    def register(self, app: web.Application) -> None:
        self._limiter.share_through(app.get(REDIS))
        app.router.add_get(PATH, self.verify_url)
        app.router.add_post(PATH, self.receive)
        app.on_cleanup.append(self._close_writer)
        if self._crypto is not None and self._process:
            app.cleanup_ctx.append(self._runtime)

    async def _runtime(self, app: web.Application) -> AsyncIterator[None]:
        settings = self._settings
        api = WeComApi(
            app[HTTP_SESSION],
            settings.wecom_api_base,
            settings.wecom_corp_id,
            settings.wecom_secret,
            redis=app.get(REDIS),
        )

        async def send(item: channel_messages.ClaimedOutbox) -> SendAttempt:
            try:
                outcome = await api.send_message(item.body)
            except WeComApiError as error:
                return SendAttempt(ok=False, retryable=error.retryable, error=str(error))
            partial = None
            if outcome.partial_failure:
                partial = (
                    f"invaliduser={'|'.join(outcome.invalid_users)} invalidparty={'|'.join(outcome.invalid_parties)}"
                    f" invalidtag={'|'.join(outcome.invalid_tags)} unlicenseduser={'|'.join(outcome.unlicensed_users)}"
                )
            return SendAttempt(ok=True, platform_msg_id=outcome.msgid, partial_failure=partial)

        outbox = OutboxWorker(CHANNEL, app[SESSION_FACTORY], send, app[METRICS])
        recognizer = None
        if settings.vosk_model_path is not None:
            recognizer = await asyncio.to_thread(
                VoiceMessageRecognizer.from_model_path,
                settings.vosk_model_path,
                workers=settings.asr_workers,
                max_streams=settings.asr_max_streams,
                max_seconds=settings.voice_message_max_seconds,
            )
        processor = WeComInboxProcessor(
            app[TURNS],
            app[SESSION_FACTORY],
            self._sealer,
            api,
            WeComOutput(settings.wecom_agent_id),
            outbox,
            recognizer=recognizer,
            voice_max_seconds=settings.voice_message_max_seconds,
        )
        app[WECOM_RUNTIME] = WeComRuntime(api=api, processor=processor, outbox=outbox)
        outbox.start()
        processor.start()
        yield
        await processor.stop()
        await outbox.stop()
        if recognizer is not None:
            await recognizer.aclose()

    def _check_request(self, request: web.Request) -> tuple[WeComCrypto, str, str, str] | web.Response:
        if self._crypto is None:
            return json_error(503, "channel_not_configured", messages.CHANNEL_NOT_CONFIGURED)
        query = request.query
        signature, timestamp, nonce = query.get("msg_signature"), query.get("timestamp"), query.get("nonce")
        if not signature or not timestamp or not nonce:
            return json_error(400, "missing_parameters", messages.BAD_REQUEST)
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
            return json_error(400, "invalid_timestamp", messages.BAD_REQUEST)
        window = self._settings.wecom_replay_window_seconds
        if window > 0 and abs(time.time() - int(timestamp)) > window:
            request.app[METRICS].count_inbound(CHANNEL, "stale")
            return json_error(403, "stale_timestamp", messages.STALE_REQUEST)
        return self._crypto, signature, timestamp, nonce

    async def verify_url(self, request: web.Request) -> web.StreamResponse:
        checked = self._check_request(request)
        if isinstance(checked, web.Response):
            return checked
        crypto, signature, timestamp, nonce = checked
        echostr = request.query.get("echostr")
        if not echostr:
            return json_error(400, "missing_parameters", messages.BAD_REQUEST)
        # Base64 has no spaces: a '+' sent unescaped arrives as a space after query decoding.
        echostr = echostr.replace(" ", "+")
        try:
            plain = crypto.verify_url(signature, timestamp, nonce, echostr)
        except WeComCryptoError as error:
            request.app[METRICS].count_inbound(CHANNEL, f"refused_{error.code}")
            logger.warning("wecom URL verification refused: %s", error.code)
            return _crypto_refusal(error)
        request.app[METRICS].count_inbound(CHANNEL, "url_verified")
        return web.Response(body=plain, content_type="text/plain")

    async def receive(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        metrics = request.app[METRICS]
        checked = self._check_request(request)
        if isinstance(checked, web.Response):
            return checked
        crypto, signature, timestamp, nonce = checked
        if request.content_length is not None and request.content_length > MAX_CALLBACK_BYTES:
            metrics.count_inbound(CHANNEL, "too_large")
            return json_error(413, "body_too_large", messages.BODY_TOO_LARGE.format(limit=MAX_CALLBACK_BYTES))
        body = await request.read()
        try:
            envelope = parse_envelope(body, max_bytes=MAX_CALLBACK_BYTES)
            plaintext = crypto.decrypt_message(signature, timestamp, nonce, envelope.encrypt)
            message = parse_message(plaintext)
        except WeComCryptoError as error:
            metrics.count_inbound(CHANNEL, f"refused_{error.code}")
            logger.warning("wecom callback refused: %s", error.code)
            return _crypto_refusal(error)
        except WeComXmlError as error:
            metrics.count_inbound(CHANNEL, f"refused_{error.code}")
            status = 413 if error.code == "too_large" else 400
            return json_error(status, error.code, messages.BAD_REQUEST)
        if not message.from_user:
            return json_error(400, "missing_field", messages.BAD_REQUEST)
        entry = InboxEntry(
            platform_msg_id=message_key(message),
            external_user=message.from_user,
            kind=message.msg_type if message.msg_type != "event" else f"event:{message.event or ''}",
            body=_message_record(message),
        )
        received = await self._receive(request.app, entry)
        metrics.count_inbound(CHANNEL, "duplicate" if received.duplicate else "accepted")
        if not received.duplicate and WECOM_RUNTIME in request.app:
            request.app[WECOM_RUNTIME].processor.wake()
        metrics.observe_ack(CHANNEL, time.perf_counter() - started)
        # An empty 200 is WeCom's "received, the answer comes later"; nothing is replied passively.
        return web.Response(text="", content_type="text/plain")

    async def _receive(self, app: web.Application, entry: InboxEntry) -> channel_messages.Received:
        if not self._limiter.shared:
            return await self._writer_for(app).receive(entry)
        # The message key is the window's member, so a retried callback does not count twice. None (Redis
        # unavailable): `_admit` falls back to this process's window.
        allowed = await self._limiter.shared_decision(entry.external_user, event_id=entry.platform_msg_id)
        if allowed is None:
            return await self._writer_for(app).receive(entry)
        notice = False
        if not allowed:
            first = await self._limiter.first_in_period(entry.external_user, _NOTICE_PERIOD_S)
            notice = first if first is not None else self._should_notice(entry.external_user)
        self._shared_admissions[entry.platform_msg_id] = (allowed, notice)
        try:
            return await self._writer_for(app).receive(entry)
        finally:
            self._shared_admissions.pop(entry.platform_msg_id, None)

    def _writer_for(self, app: web.Application) -> InboxWriter:
        if self._writer is None:
            self._metrics = app[METRICS]
            self._writer = InboxWriter(
                app[SESSION_FACTORY], self._sealer, channel=CHANNEL, clock=app[TURNS].clock, admit=self._admit
            )
        return self._writer

    async def _close_writer(self, app: web.Application) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
            self._writer = None

    def _admit(self, entry: InboxEntry) -> InboxEntry:
        """A new message within the user's rate as it is; past it, a marker answered once per minute with a polite
        notice (further ones are recorded, not answered). On the writer thread: retries never get here, so a
        storm of them cannot use up the rate of the messages that follow. With a shared limit the decision was
        taken in `_receive`, where the message key keeps retries from counting twice."""
        shared = self._shared_admissions.get(entry.platform_msg_id)
        if shared is None:
            allowed = self._limiter.allow_in_process(entry.external_user)
            notice = not allowed and self._should_notice(entry.external_user)
        else:
            allowed, notice = shared
        if allowed:
            return entry
        if self._metrics is not None:
            self._metrics.count_inbound(CHANNEL, "rate_limited")
        return entry.replaced(kind="rate_limited", body={"msg_type": "rate_limited", "notice": notice})

    def _should_notice(self, user: str) -> bool:
        now = time.monotonic()
        last = self._rate_noticed.get(user)
        if last is not None and now - last < _NOTICE_PERIOD_S:
            return False
        self._rate_noticed[user] = now
        if len(self._rate_noticed) > 100_000:
            self._rate_noticed = {k: t for k, t in self._rate_noticed.items() if now - t < _NOTICE_PERIOD_S}
        return True


def _crypto_refusal(error: WeComCryptoError) -> web.Response:
    if error.code in {"invalid_signature", "receive_id_mismatch"}:
        return json_error(403, error.code, messages.INVALID_SIGNATURE)
    return json_error(400, error.code, messages.BAD_REQUEST)

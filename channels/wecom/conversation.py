"""What the gateway does with a WeCom message once it has been acknowledged: turn it into a customer turn
(text, a recognised voice message, a menu click, a card button, entering the app) and queue the replies.

Runs beside the HTTP handlers in the gateway process: messages are taken from the durable inbox (so a restart
resumes what was acknowledged but not answered), one user's messages strictly in order, many users at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bankcore import channel_messages
from bankcore.channel_messages import ClaimedInbox
from bankcore.database import unit_of_work
from bankcore.sealing import Sealer
from channels import messages
from channels.binding import ChannelUser, handle_channel_turn, resolve_customer
from channels.conversation_open import open_conversation
from channels.outbox_worker import OutboxWorker
from channels.rasa_client import BotMessage, RasaUnavailable
from channels.turns import CONTACT_IDLE, TurnContext
from channels.voice_messages import VoiceMessageError, VoiceMessageRecognizer, decode_to_pcm
from channels.wecom.api import WeComApi, WeComApiError
from channels.wecom.outbound import WeComOutput

logger = logging.getLogger(__name__)

CHANNEL = "wecom"
# Events that open the app's chat window: the assistant greets (naming the predicted need when confident).
_OPENING_EVENTS = frozenset({"enter_agent", "subscribe"})
# Events the assistant does not answer (WeCom sends many kinds; they are acknowledged and recorded only).
_VOICE_ERROR_REPLY = {
    "too_long": messages.VOICE_TOO_LONG,
    "undecodable": messages.VOICE_BAD_AUDIO,
    "unsupported_format": messages.VOICE_BAD_AUDIO,
    "empty": messages.VOICE_NOT_UNDERSTOOD,
    "nothing_heard": messages.VOICE_NOT_UNDERSTOOD,
}


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class WeComInboxProcessor:
    def __init__(
        self,
        ctx: TurnContext,
        factory: sessionmaker[Session],
        sealer: Sealer,
        api: WeComApi,
        output: WeComOutput,
        outbox: OutboxWorker,
        *,
        recognizer: VoiceMessageRecognizer | None = None,
        voice_max_seconds: float = 60.0,
        concurrency: int = 32,
        lease: dt.timedelta = dt.timedelta(seconds=120),
        max_attempts: int = 4,
        retry_base_s: float = 2.0,
        poll_s: float = 1.0,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.ctx = ctx
        self.factory = factory
        self.sealer = sealer
        self.api = api
        self.output = output
        self.outbox = outbox
        self.recognizer = recognizer
        self.voice_max_seconds = voice_max_seconds
        self.lease = lease
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.poll_s = poll_s
        self.clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._user_locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._claiming = asyncio.Lock()
        self._paused = False
        self.answered = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="wecom-inbox")

    async def pause(self) -> None:
        """Stop taking new messages (they stay durably received); returns once no claim is under way."""
        self._paused = True
        async with self._claiming:
            pass

    def resume(self) -> None:
        self._paused = False
        self.wake()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                claimed = await self.claim()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("wecom inbox: claim failed")
                claimed = 0
            if claimed:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()

    async def claim(self) -> int:
        if self._paused:
            return 0
        free = self._concurrency - len(self._inflight)
        if free <= 0:
            if not self._inflight:
                return 0
            # Every slot is busy: wait for one to finish before taking more work.
            await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
            return 1
        async with self._claiming:
            if self._paused:
                return 0
            return await self._claim_up_to(free)

    async def _claim_up_to(self, free: int) -> int:
        items = await asyncio.to_thread(
            channel_messages.claim_inbox,
            self.factory,
            self.sealer,
            channel=CHANNEL,
            now=self.clock(),
            lease=self.lease,
            limit=free,
        )
        for item in items:
            # Created in id order; each waits for its user's lock, which asyncio grants first come, first served.
            task = asyncio.create_task(self._process_in_order(item))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return len(items)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until everything claimed so far is processed (tests and benches)."""
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=timeout_s)

    async def _process_in_order(self, item: ClaimedInbox) -> None:
        lock = self._user_locks.setdefault(item.external_user, asyncio.Lock())
        try:
            async with lock, self._slots:
                await self._process(item)
        finally:
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._user_locks.pop(item.external_user, None)

    async def _process(self, item: ClaimedInbox) -> None:
        try:
            replies = await self.replies_for(item)
        except RasaUnavailable as error:
            if item.attempt_no < self.max_attempts:
                retry_at = self.clock() + dt.timedelta(seconds=self.retry_base_s * 2 ** (item.attempt_no - 1))
                await asyncio.to_thread(self._fail, item, f"rasa unavailable: {error}", False, retry_at)
                logger.info("wecom inbox %d: assistant unavailable, retry %d", item.id, item.attempt_no)
                return
            replies = [BotMessage(text=messages.ASSISTANT_UNAVAILABLE)]
        except Exception as error:
            logger.exception("wecom inbox %d: processing failed", item.id)
            if item.attempt_no < self.max_attempts:
                retry_at = self.clock() + dt.timedelta(seconds=self.retry_base_s * 2 ** (item.attempt_no - 1))
                await asyncio.to_thread(self._fail, item, type(error).__name__, False, retry_at)
                return
            replies = [BotMessage(text=messages.INTERNAL_ERROR)]
        rendered = self.output.render(item.external_user, replies, task_prefix=f"{CHANNEL}:{item.id}")
        await asyncio.to_thread(self._answer, item, rendered)
        self.answered += 1
        self.outbox.wake()

    def _answer(self, item: ClaimedInbox, rendered: list[channel_messages.OutboundReply]) -> None:
        with unit_of_work(self.factory) as session:
            channel_messages.answer(
                session, item.id, rendered, channel=CHANNEL, external_user=item.external_user, now=self.clock()
            )

    def _fail(self, item: ClaimedInbox, error: str, final: bool, retry_at: dt.datetime | None) -> None:
        with unit_of_work(self.factory) as session:
            channel_messages.fail_inbox(session, item.id, error=error, final=final, retry_at=retry_at)

    async def replies_for(self, item: ClaimedInbox) -> list[BotMessage]:
        """The assistant's answer to one stored message (raises RasaUnavailable when it cannot be had)."""
        body = item.body
        user = ChannelUser(channel=CHANNEL, identity_channel="wecom", external_id=item.external_user)
        msg_type = str(body.get("msg_type") or "")
        # The stored message's id: a re-claimed message (its worker died mid-turn) is answered from the tracker.
        message_id = f"{CHANNEL}-inbox-{item.id}"
        if msg_type == "text":
            return await handle_channel_turn(self.ctx, user, str(body.get("content") or ""), message_id=message_id)
        if msg_type == "voice":
            return await self._voice_turn(user, body, message_id)
        if msg_type == "event":
            return await self._event_turn(user, body, message_id)
        if msg_type == "rate_limited":
            return [BotMessage(text=messages.RATE_LIMITED)] if body.get("notice") else []
        self.ctx.metrics.count_turn(CHANNEL, "unsupported")
        return [BotMessage(text=messages.UNSUPPORTED_MESSAGE)]

    async def _voice_turn(self, user: ChannelUser, body: dict[str, Any], message_id: str) -> list[BotMessage]:
        text: str | None = None
        metadata: dict[str, Any] = {"input_mode": "voice"}
        if self.recognizer is not None and body.get("media_id"):
            try:
                audio, _content_type = await self.api.download_media(str(body["media_id"]))
                pcm = await decode_to_pcm(audio, str(body.get("voice_format") or "amr"))
                transcript = await self.recognizer.transcribe(pcm)
            except WeComApiError as error:
                if error.retryable:
                    raise RasaUnavailable(f"media download: {error}") from error  # retried like any outage
                logger.warning("wecom voice media unavailable: errcode %s", error.errcode)
                return [BotMessage(text=messages.VOICE_BAD_AUDIO)]
            except VoiceMessageError as error:
                self.ctx.metrics.count_turn(CHANNEL, f"voice_{error.code}")
                reply = _VOICE_ERROR_REPLY.get(error.code, messages.VOICE_NOT_UNDERSTOOD)
                return [BotMessage(text=reply.format(limit=int(self.voice_max_seconds)))]
            text = transcript.text
            metadata["asr_confidence"] = round(transcript.confidence, 3)
        elif body.get("recognition"):
            # WeCom's own speech recognition, when the app has it enabled.
            text = str(body["recognition"])
        if not text:
            self.ctx.metrics.count_turn(CHANNEL, "voice_unavailable")
            return [BotMessage(text=messages.VOICE_NOT_AVAILABLE)]
        return await handle_channel_turn(self.ctx, user, text, extra_metadata=metadata, message_id=message_id)

    async def _event_turn(self, user: ChannelUser, body: dict[str, Any], message_id: str) -> list[BotMessage]:
        event = str(body.get("event") or "").lower()
        key = str(body.get("event_key") or "")
        if event in {"click", "template_card_event"} and key:
            # A menu item or a card button: its key is the text (or the /intent payload) it stands for.
            return await handle_channel_turn(self.ctx, user, key, message_id=message_id)
        if event in _OPENING_EVENTS:
            customer_id = await resolve_customer(self.ctx, user)
            if customer_id is None:
                return [BotMessage(text=messages.BIND_WELCOME)]
            last = self.ctx.last_turns.get((CHANNEL, customer_id))
            if last is not None and self.ctx.clock() - last < CONTACT_IDLE:
                return []  # back in the window mid-conversation: no second greeting
            return await open_conversation(self.ctx, customer_id=customer_id, channel=CHANNEL)
        logger.info("wecom event %s acknowledged without a reply", event or "?")
        return []

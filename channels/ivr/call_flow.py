"""The phone call flow: caller ID, greeting, keypad PIN, speech turns through Rasa, transfer to a person, hangup.

One `IvrCall` per call, behind either transport (SIP or AudioSocket). Caller audio and keys go through one queue
to one worker, so a key pressed while the caller speaks is handled in the order it came. The voice session
(`voice.session`) does the speech work; this module decides who the caller is and what they may do:

- a caller ID the bank knows names the customer the call is probably from, and the assistant greets them (with
  the predicted need when the foresight model is confident); account services open only after the customer keys
  their transaction PIN, which is checked here and never reaches Rasa, the logs or any recording;
- an unknown or withheld number is served as a guest (public services, a binding offer, a human);
- "转人工", a handoff the dialogue decided, or repeated failures transfer the call with the handoff's lookup id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bankcore import event_store, phone_login, verification
from bankcore.database import unit_of_work
from bankcore.events import Event
from bankcore.reminders.outcomes import outcome_event
from bankcore.settings import Settings
from channels import messages
from channels.binding import ChannelUser, handle_guest_turn, resolve_customer
from channels.conversation_open import open_conversation
from channels.ivr.media import SAMPLE_RATE, CallControl, CallInfo
from channels.rasa_client import BotMessage, RasaUnavailable
from channels.turns import TurnContext, handle_text_turn
from channels.voice_turns import voice_metadata, voice_replies
from voice.asr import AsrBusy, AsrEngine
from voice.events import AudioChunk, BargeIn, Final, Handoff, Hangup, Prompt, Reply
from voice.session import DialogueUnavailable, RecognitionStream, VoiceConfig, VoiceSession
from voice.speakable import speakable
from voice.tts import SpeechSynthesizer

logger = logging.getLogger(__name__)

CHANNEL = "ivr"
# Caller audio waiting for the worker beyond this (seconds) is dropped oldest first: a dialogue turn that takes
# this long has lost the moment anyway, and memory stays bounded.
_MAX_QUEUED_AUDIO_S = 10.0
_FRAMES_PER_SECOND = 50
_SPOKEN_KEPT = 50
_MENU = {key: intent for key, _title, intent in messages.IVR_MENU_KEYS}


def _menu_prompt() -> str:
    options = "，".join(f"{title}请按{key}" for key, title, _intent in messages.IVR_MENU_KEYS)
    return messages.IVR_MENU.format(options=options)


@dataclass(frozen=True)
class _Typed:
    text: str


class SilentStream:
    """The recogniser of a phone line without a speech model: hears nothing, so callers use the keypad."""

    async def feed(self, pcm: bytes) -> list[Any]:
        return []

    async def finish(self) -> Final:
        return Final(text="", reason="eof")

    def set_grammar(self, phrases: Sequence[str] | None) -> None:
        return None

    def close(self) -> None:
        return None


# The extra of an outbound call that names its `OutboundCall` (the SIP agent sends it as X-Bankbot-Reminder).
OUTBOUND_KEY = "Reminder"


@dataclass(frozen=True)
class OutboundCall:
    """A call the bank places (a reminder): whom it is for and what the assistant says when they answer."""

    customer_id: str
    key: str
    opening: tuple[BotMessage, ...]
    topic: str = ""


@dataclass
class IvrStats:
    calls: int = 0
    active: int = 0
    verified: int = 0
    transferred: int = 0
    audio_dropped: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass
class IvrRuntime:
    """What every call shares: the turn pipeline, the recogniser, the voice, and where agents are."""

    ctx: TurnContext
    synthesizer: SpeechSynthesizer
    asr: AsrEngine | None = None
    voice_config: VoiceConfig = field(default_factory=VoiceConfig)
    transfer_target: str = ""
    stats: IvrStats = field(default_factory=IvrStats)
    calls: set[IvrCall] = field(default_factory=set)
    # Outbound calls being placed, by their key (`OUTBOUND_KEY` in the call's extras): what to say on answer.
    outbound: dict[str, OutboundCall] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    def handler_for(self, info: CallInfo) -> IvrCall:
        outbound = self.outbound.pop(info.extras.get(OUTBOUND_KEY, ""), None) if info.direction == "outbound" else None
        return IvrCall(self, info, outbound=outbound)

    def open_stream(self) -> RecognitionStream:
        if self.asr is None:
            return SilentStream()
        try:
            return self.asr.open_stream(SAMPLE_RATE)
        except AsrBusy:
            # Every recogniser is taken: this caller is served by keypad rather than refused.
            logger.warning("no recognition stream free; the call continues by keypad")
            return SilentStream()


class IvrCall:
    """The call flow of one call (a `CallHandler`)."""

    def __init__(self, runtime: IvrRuntime, info: CallInfo, *, outbound: OutboundCall | None = None) -> None:
        self.runtime = runtime
        self.info = info
        self.outbound = outbound
        # A turn that needed the PIN first (on a call the bank placed): said again once the PIN is verified.
        self.pending_text: str | None = None
        # While the keypad menu was the last thing offered, one key chooses its entry at once.
        self.menu_active = False
        self.control: CallControl | None = None
        self.session: VoiceSession | None = None
        # opening -> pin (customer named by caller ID, PIN awaited) -> customer (verified) | guest
        self.state = "opening"
        self.customer_id: str | None = None
        self.verified = False
        self.resume: Reply | None = None  # the greeting's question, asked again once the PIN is verified
        self.handoff: Mapping[str, Any] | None = None
        self.handoff_requested = False
        self.outcome = "abandoned"
        self.hangup_reason: str | None = None
        self.started = time.monotonic()
        self.inbox: asyncio.Queue[bytes | str | _Typed | None] = asyncio.Queue()
        self.queued_audio = 0
        self.busy = False  # the worker is handling an item (a turn may be in flight)
        # What the caller was told, as text, most recent last (bounded): the call's transcript of our side.
        self.spoken: list[str] = []
        self.worker: asyncio.Task[None] | None = None
        self.user = ChannelUser(
            channel=CHANNEL,
            identity_channel=phone_login.PHONE_IDENTITY,
            external_id=phone_login.normalise_caller(info.caller) if info.caller else f"withheld-{info.call_id}",
        )

    # -- CallHandler ----------------------------------------------------------------------------------------

    async def on_answer(self, control: CallControl) -> None:
        self.control = control
        self.runtime.calls.add(self)
        self.runtime.stats.calls += 1
        self.runtime.stats.active += 1
        self.busy = True  # opening: caller lookup and the greeting
        self.worker = asyncio.create_task(self._run(), name=f"ivr-{self.info.call_id}")

    async def on_audio(self, pcm: bytes) -> None:
        if self.worker is None or self.worker.done():
            return
        if self.queued_audio >= _MAX_QUEUED_AUDIO_S * _FRAMES_PER_SECOND:
            self.runtime.stats.audio_dropped += 1
            return
        self.queued_audio += 1
        self.inbox.put_nowait(pcm)

    async def on_dtmf(self, digit: str) -> None:
        if self.worker is not None and not self.worker.done():
            self.inbox.put_nowait(digit)

    async def on_text(self, text: str) -> None:
        """Text said beside the call (a softphone's chat box; tests scripting a caller): a turn like speech."""
        if self.worker is not None and not self.worker.done():
            self.inbox.put_nowait(_Typed(text))

    async def on_hangup(self, reason: str) -> None:
        self.hangup_reason = reason
        self.inbox.put_nowait(None)
        if self.worker is not None:
            await asyncio.shield(self.worker)

    # -- the worker -----------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            opened = await self._open()
            self.busy = False
            if opened:
                while True:
                    item = await self.inbox.get()
                    if item is None or self.session is None:
                        break
                    self.busy = True
                    if isinstance(item, bytes):
                        self.queued_audio -= 1
                        events = await self.session.feed_audio(item, SAMPLE_RATE)
                    elif isinstance(item, _Typed):
                        events = await self.session.text(item.text)
                    elif (choice := self._menu_choice(item)) is not None:
                        events = await self.session.command(choice)
                    else:
                        events = await self.session.dtmf(item)
                    keep_going = await self._act(events)
                    self.busy = False
                    if not keep_going:
                        break
        except Exception:
            logger.exception("call flow failed", extra={"call_id": self.info.call_id})
            self.outcome = "failed"
            await self._say_and_hang_up(messages.IVR_UNAVAILABLE)
        finally:
            await self._finish()

    async def _open(self) -> bool:
        ctx = self.runtime.ctx
        self.session = VoiceSession(
            open_stream=self.runtime.open_stream,
            synthesizer=self.runtime.synthesizer,
            turn=self._turn,
            config=self.runtime.voice_config,
            on_audio=self._play,
        )
        opening: list[Reply]
        if self.outbound is not None:
            # The bank dialled the customer's own number: the reminder is said at once; account services still
            # wait for the PIN, asked for when a turn needs it.
            self.customer_id = self.outbound.customer_id
            self.state = "customer"
            await asyncio.to_thread(self._record_reached, self.outbound)
            opening = voice_replies(self.outbound.opening) or [Reply(text=messages.IVR_WELCOME)]
            return await self._act(await self.session.start(opening))
        # The caller hears the bank at once; looking them up and the greeting (a Rasa turn with the foresight
        # model's prediction) take a second or more.
        await self._say_now(messages.IVR_HELLO)
        customer_id = await resolve_customer(ctx, self.user) if self.info.caller else None
        if customer_id is None:
            self.state = "guest"
            opening = [Reply(text=messages.IVR_WELCOME_GUEST)]
        else:
            self.customer_id = customer_id
            try:
                greeting = voice_replies(await open_conversation(ctx, customer_id=customer_id, channel=CHANNEL))
            except RasaUnavailable:
                self.outcome = "unavailable"
                await self._say_and_hang_up(messages.IVR_UNAVAILABLE)
                return False
            opening = greeting or [Reply(text=messages.IVR_WELCOME)]
            opening.extend(await self._ask_pin(resume=opening[-1]))
        return await self._act(await self.session.start(opening))

    async def _ask_pin(self, *, resume: Reply | None, prompt: str = messages.IVR_PIN_PROMPT) -> list[Reply]:
        """Open this call's PIN challenge; the replies that ask for it (or say why account services stay shut)."""
        assert self.customer_id is not None
        customer_id = self.customer_id
        opened = await asyncio.to_thread(self._in_bank, phone_login.start, customer_id)
        if not opened:
            self.state = "guest"
            return [Reply(text=messages.IVR_NO_PIN)]
        self.state = "pin"
        self.resume = resume
        return [Reply(text=prompt, expect="pin")]

    def _in_bank(self, work: Any, customer_id: str, *args: Any) -> Any:
        ctx = self.runtime.ctx
        with unit_of_work(ctx.session_factory) as session:
            return work(session, ctx.settings, customer_id, self.info.call_id, *args, ctx.clock())

    def _menu_choice(self, key: str) -> str | None:
        """The intent a key chooses while the menu is on offer (and nothing else is being keyed or expected)."""
        session = self.session
        if not self.menu_active or session is None or session.keypad_buffer:
            return None
        if session.expectation.closed or session.expectation.keypad_only:
            return None
        return _MENU.get(key)

    # -- turns ----------------------------------------------------------------------------------------------

    async def _turn(self, text: str, metadata: Mapping[str, Any]) -> Sequence[Reply]:
        """One turn of the voice session: the PIN here; the rest to Rasa, as the customer or as a guest."""
        self.menu_active = False  # whatever the turn, the menu was passed by
        if self.state == "pin" and metadata.get("input_mode") == "keypad" and not text.startswith("/"):
            return await self._check_pin(text)
        extras = {**voice_metadata(metadata), "caller_verified": "yes" if self.verified else "no"}
        as_customer = self.state == "customer" or (self.outbound is not None and self.state == "pin")
        try:
            if as_customer and self.customer_id is not None:
                bot = await handle_text_turn(
                    self.runtime.ctx, customer_id=self.customer_id, channel=CHANNEL, text=text, extra_metadata=extras
                )
            else:
                bot = await handle_guest_turn(self.runtime.ctx, self.user, text, extra_metadata=extras)
        except RasaUnavailable as error:
            raise DialogueUnavailable(str(error)) from error
        replies = self._phone_replies(bot)
        if any((message.custom or {}).get("needs") == "identity" for message in bot):
            # Rasa's "sign in first" is for chat; on the phone the way in is the PIN (or binding the number).
            replies = await self._identity_needed(text)
        if self.state in ("guest", "pin") and self.customer_id is None and self.info.caller:
            # A guest who has just bound this number is now the customer it names: ask for the PIN.
            bound = await resolve_customer(self.runtime.ctx, self.user)
            if bound is not None:
                self.customer_id = bound
                replies.extend(await self._ask_pin(resume=None))
        return replies

    def _phone_replies(self, bot: Sequence[BotMessage]) -> list[Reply]:
        replies = voice_replies(bot)
        for message in bot:
            custom = message.custom or {}
            handoff = custom.get("handoff")
            if isinstance(handoff, Mapping):
                self.handoff = handoff
        return replies

    async def _identity_needed(self, text: str) -> list[Reply]:
        if self.state == "customer" and not self.verified and self.customer_id is not None:
            self.pending_text = text
            return await self._ask_pin(resume=None, prompt=messages.IVR_NEEDS_PIN)
        if self.state == "pin":
            return [Reply(text=messages.IVR_NEEDS_PIN, expect="pin")]
        if self.customer_id is not None:
            return [Reply(text=messages.IVR_PIN_LOCKED)]
        return [Reply(text=messages.IVR_WELCOME_GUEST)]

    async def _check_pin(self, digits: str) -> list[Reply]:
        assert self.customer_id is not None
        result = await asyncio.to_thread(self._in_bank, phone_login.submit, self.customer_id, digits)
        if result.ok:
            self.state = "customer"
            self.verified = True
            self.runtime.stats.verified += 1
            logger.info("caller verified by PIN", extra={"call_id": self.info.call_id})
            if self.pending_text is not None:
                text, self.pending_text = self.pending_text, None
                return [Reply(text=messages.IVR_PIN_OK), *await self._turn(text, {"input_mode": "voice"})]
            if self.resume is not None and (self.resume.expect != "free" or self.resume.choices):
                return [Reply(text=messages.IVR_PIN_OK), self.resume]
            self.menu_active = True
            return [Reply(text=messages.IVR_PIN_OK + _menu_prompt())]
        logger.info("caller PIN refused", extra={"call_id": self.info.call_id, "outcome": result.outcome})
        if result.outcome == verification.WRONG:
            return [Reply(text=messages.IVR_PIN_WRONG.format(attempts_left=result.attempts_left), expect="pin")]
        if result.outcome == verification.EXPIRED:
            await asyncio.to_thread(self._in_bank, phone_login.start, self.customer_id)
            return [Reply(text=messages.IVR_PIN_EXPIRED, expect="pin")]
        self.state = "guest"
        return [Reply(text=messages.IVR_PIN_LOCKED)]

    # -- what the session asks the call to do ---------------------------------------------------------------

    async def _play(self, chunk: AudioChunk) -> None:
        if self.control is not None:
            self.control.play(chunk.pcm)

    async def _act(self, events: Sequence[Any]) -> bool:
        """Carry out the session's events; False once the call is over."""
        hang_up = False
        for event in events:
            self._note_spoken(event)
            if isinstance(event, BargeIn) and self.control is not None:
                self.control.stop_playback()
            elif isinstance(event, Handoff):
                self.handoff_requested = True
            elif isinstance(event, Hangup):
                hang_up = True
                self.outcome = f"hangup_{event.reason}"
        if (self.handoff is not None or self.handoff_requested) and await self._transfer():
            return False
        if hang_up:
            await self._drain_playback()
            if self.control is not None:
                await self.control.hangup()
            return False
        return True

    def _note_spoken(self, event: object) -> None:
        if isinstance(event, Reply | Prompt) and event.text:
            self.spoken = [*self.spoken[-(_SPOKEN_KEPT - 1) :], event.text]

    async def _transfer(self) -> bool:
        handoff, self.handoff, self.handoff_requested = self.handoff, None, False
        target = self.runtime.transfer_target
        headers = {"X-Bankbot-Call": self.info.call_id}
        if handoff is not None and handoff.get("id") is not None:
            headers["X-Bankbot-Handoff"] = str(handoff["id"])
        if self.customer_id is not None and self.verified:
            headers["X-Bankbot-Customer"] = self.customer_id
        await self._drain_playback()
        accepted = False
        if target and self.control is not None:
            try:
                accepted = await self.control.transfer(target, headers)
            except Exception:
                logger.exception("transfer failed", extra={"call_id": self.info.call_id})
        if accepted:
            self.outcome = "transferred"
            self.runtime.stats.transferred += 1
            logger.info(
                "call transferred", extra={"call_id": self.info.call_id, "handoff": headers.get("X-Bankbot-Handoff")}
            )
            return True
        logger.warning("transfer not possible", extra={"call_id": self.info.call_id, "configured": bool(target)})
        if self.session is not None:
            self.session.expect_free_speech()
            for event in await self.session.start([Reply(text=messages.IVR_TRANSFER_FAILED)]):
                self._note_spoken(event)
        return False

    async def _drain_playback(self, limit_s: float = 20.0) -> None:
        """Let what is being said finish (a goodbye, "transferring you") before the next step."""
        deadline = time.monotonic() + limit_s
        while self.control is not None and self.control.playback_pending() > 0 and time.monotonic() < deadline:
            if self.hangup_reason is not None:
                return
            await asyncio.sleep(0.05)

    async def _say_now(self, text: str) -> None:
        """Play a fixed prompt straight away (outside the dialogue: nothing is expected of the caller)."""
        if self.control is None:
            return
        try:
            self.control.play(await self.runtime.synthesizer.synthesize(speakable(text), SAMPLE_RATE))
            self.spoken = [*self.spoken[-(_SPOKEN_KEPT - 1) :], text]
        except Exception:
            logger.warning("could not say the opening prompt", exc_info=True)

    async def _say_and_hang_up(self, text: str) -> None:
        if self.control is None or self.hangup_reason is not None:
            return
        try:
            pcm = await self.runtime.synthesizer.synthesize(text, SAMPLE_RATE)
            self.control.play(pcm)
            await self._drain_playback()
        except Exception:
            logger.warning("could not say goodbye", exc_info=True)
        await self.control.hangup()

    async def _finish(self) -> None:
        stats = self.runtime.stats
        stats.active -= 1
        self.runtime.calls.discard(self)
        if self.session is not None:
            await self.session.hangup(self.hangup_reason or "bank")
            self.session.stream.close()
        if self.outcome == "abandoned" and self.session is not None and self.session.turns:
            self.outcome = "completed"
        stats.outcomes[self.outcome] = stats.outcomes.get(self.outcome, 0) + 1
        try:
            await asyncio.to_thread(self._record)
        except Exception:
            logger.warning("could not record the call", exc_info=True, extra={"call_id": self.info.call_id})
        logger.info(
            "call ended",
            extra={
                "call_id": self.info.call_id,
                "outcome": self.outcome,
                "reason": self.hangup_reason,
                "seconds": round(time.monotonic() - self.started, 1),
            },
        )

    def _record_reached(self, outbound: OutboundCall) -> None:
        """The customer answered the reminder call: the reminder reached them."""
        ctx = self.runtime.ctx
        try:
            with unit_of_work(ctx.session_factory) as session:
                event = outcome_event(
                    customer_id=outbound.customer_id,
                    channel=CHANNEL,
                    key=outbound.key,
                    topic=outbound.topic,
                    outcome="reached",
                    now=ctx.clock(),
                )
                event_store.store_events(session, [event])
        except Exception:
            logger.warning("could not record the reminder as reached", exc_info=True)

    def _record(self) -> None:
        """The call as a cross-channel event (what the foresight model learns from), and no PIN left pending."""
        if self.customer_id is None:
            return
        ctx = self.runtime.ctx
        now = ctx.clock()
        with unit_of_work(ctx.session_factory) as session:
            if self.state == "pin":
                phone_login.abandon(session, self.customer_id, self.info.call_id, now)
            event_store.store_events(
                session,
                [
                    Event(
                        customer_id=self.customer_id,
                        ts=now,
                        channel=CHANNEL,
                        type="call_ended",
                        attrs={
                            "direction": self.info.direction,
                            "outcome": self.outcome,
                            "verified": self.verified,
                            "turns": self.session.turns if self.session is not None else 0,
                            "seconds": round(time.monotonic() - self.started, 1),
                        },
                        event_id=f"call:{self.info.call_id}",
                    )
                ],
            )

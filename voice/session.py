"""A voice conversation that channels drive: audio and keypad in, dialogue turns, speech out, as typed events.

The session owns what is specific to speech: which grammar the recogniser listens with (free speech, or the
closed answers a reply offers), reprompts on silence and on speech it could not use, amounts heard with low
confidence, secrets taken by keypad only, barge-in, and turning reply text into audio. The dialogue itself is
one injected coroutine (`TurnFunction`): the gateway passes a Rasa turn; tests pass a script.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from voice import prompts
from voice.audio import rms
from voice.events import (
    AsrEvent,
    AudioChunk,
    BargeIn,
    Choice,
    Dtmf,
    Final,
    Handoff,
    Hangup,
    NoInput,
    Partial,
    Prompt,
    Reply,
    SpeechStarted,
)
from voice.grammar import Grammar
from voice.speakable import amount_words, speakable
from voice.spoken_numbers import find_values, normalize_transcript

logger = logging.getLogger(__name__)

SessionEvent = (
    SpeechStarted | Partial | Final | NoInput | BargeIn | Reply | Prompt | AudioChunk | Handoff | Hangup | Dtmf
)

# A turn: the text for the dialogue (already normalised) and metadata (`input_mode`, `asr_confidence`).
TurnFunction = Callable[[str, Mapping[str, Any]], Awaitable[Sequence[Reply]]]


class RecognitionStream(Protocol):
    """The part of `voice.asr.AsrStream` a session uses."""

    async def feed(self, pcm: bytes) -> list[AsrEvent]: ...

    async def finish(self) -> Final: ...

    def set_grammar(self, phrases: Sequence[str] | None) -> None: ...

    def close(self) -> None: ...


class Synthesizer(Protocol):
    """The part of `voice.tts.SpeechSynthesizer` a session uses."""

    async def synthesize(self, text: str, sample_rate: int) -> bytes: ...


class DialogueUnavailable(Exception):
    """Raised by a turn function when the dialogue engine cannot answer; the session apologises."""


@dataclass(frozen=True)
class VoiceConfig:
    # The rate of the audio the session sends back (8000 on the phone, 16000 for apps).
    output_sample_rate: int = 8000
    # Reprompts before the caller is handed to a person, for silence and for unusable speech alike.
    max_reprompts: int = 2
    # Below this mean word confidence, free speech is treated as not understood.
    min_confidence: float = 0.35
    # Below this confidence on the words of an amount, the amount is read back before it is used.
    amount_confidence: float = 0.8
    # Barge-in needs a partial transcript and this much energy (RMS of 16-bit PCM): echo of the
    # assistant's own voice on a phone line is quieter than a caller speaking into the handset.
    barge_in_rms: float = 500.0
    # Seconds of audio without speech after which the session says goodbye and hangs up.
    silence_timeout_s: float = 45.0
    # Synthesised audio is sent in chunks of this length so playback can stop mid-reply.
    chunk_ms: int = 100
    # What the session sends the dialogue to hand over to a person.
    handoff_command: str = "/human_handoff"
    # Keypad answers are at most this long (amounts, codes, PINs).
    max_keypad_digits: int = 12


@dataclass
class _Expectation:
    reply: Reply = field(default_factory=lambda: Reply(text=""))
    # Set while a low-confidence amount is being read back: the turn text waiting for a "yes".
    amount_text: str | None = None

    @property
    def closed(self) -> bool:
        return self.amount_text is not None or (self.reply.expect == "choice" and bool(self.reply.choices))

    @property
    def keypad_only(self) -> bool:
        return self.amount_text is None and self.reply.expect in ("pin", "otp")


_NUMERAL_CHARS = re.compile(r"[0-9零〇一二三四五六七八九十百千万亿两幺点块元角毛分]")


class VoiceSession:
    """One caller's voice conversation; every input method returns the events the channel acts on, in order."""

    def __init__(
        self,
        *,
        open_stream: Callable[[], RecognitionStream],
        synthesizer: Synthesizer,
        turn: TurnFunction,
        config: VoiceConfig | None = None,
        lexicon: prompts.Lexicon = prompts.MANDARIN,
        normalize: Callable[[str], str] = normalize_transcript,
        on_audio: Callable[[AudioChunk], Awaitable[None]] | None = None,
    ) -> None:
        # A stream per stretch of audio: `end_of_input` (a released talk button) closes one and opens the
        # next, so an idle app session holds no recogniser; a phone call keeps one for the whole call.
        self.open_stream = open_stream
        self.stream = open_stream()
        self.synthesizer = synthesizer
        self.turn = turn
        self.config = config or VoiceConfig()
        self.lexicon = lexicon
        self.normalize = normalize
        # With `on_audio`, reply audio is handed over as each sentence is synthesised (a phone line starts
        # playing after the first sentence) instead of being returned with the other events.
        self.on_audio = on_audio
        self.expectation = _Expectation()
        self.reprompts = 0
        self.keypad_buffer = ""
        # Audio time: seconds of caller audio seen so far; playback is assumed to run in real time from the
        # moment a reply is emitted, so `playing_until` tells whether the caller speaks over it.
        self.audio_time = 0.0
        self.playing_until = 0.0
        self.last_speech_at = 0.0
        self.last_chunk_rms = 0.0
        self.ended = False
        self.handed_off = False
        self.turns = 0
        self.heard_since_end_of_input = False

    # -- inputs ---------------------------------------------------------------------------------------------

    async def start(self, opening: Sequence[Reply]) -> list[SessionEvent]:
        """Speak what the assistant says first (a greeting, or the proactive prediction)."""
        return await self._say(opening)

    async def feed_audio(self, pcm: bytes, sample_rate: int | None = None) -> list[SessionEvent]:
        """Caller audio (16-bit PCM at the stream's declared rate); returns what to do about it."""
        if self.ended:
            return []
        rate = sample_rate or self.config.output_sample_rate
        self.audio_time += len(pcm) / 2 / rate
        self.last_chunk_rms = rms(pcm)
        out: list[SessionEvent] = []
        for event in await self.stream.feed(pcm):
            out.extend(await self._on_asr(event))
        if not self.ended and self.audio_time - self.last_speech_at >= self.config.silence_timeout_s:
            out.extend(await self._hang_up_on_silence())
        return out

    async def end_of_input(self) -> list[SessionEvent]:
        """The caller let go of the talk button (or the audio ended): close the utterance and act on it."""
        if self.ended:
            return []
        final = await self.stream.finish()
        self.stream = self.open_stream()
        self._listen()
        heard, self.heard_since_end_of_input = self.heard_since_end_of_input, False
        if not final.text.strip() and heard:
            # The utterance was already closed by the recogniser (endpoint or silence) and acted on.
            return []
        return await self._on_asr(final)

    async def dtmf(self, digits: str) -> list[SessionEvent]:
        """Keypad digits from the phone layer; secrets go to the dialogue as digits and nowhere else."""
        out: list[SessionEvent] = []
        for digit in digits:
            if self.ended:
                break
            out.extend(await self._on_key(digit))
        return out

    async def text(self, text: str) -> list[SessionEvent]:
        """Typed input on a channel that carries both (and scripted tests): straight to the dialogue."""
        if self.ended:
            return []
        return await self._turn(text, {"input_mode": "text"})

    async def command(self, text: str, *, input_mode: str = "keypad") -> list[SessionEvent]:
        """A turn the channel chose for the caller (a keypad menu's shortcut), answered like any other."""
        if self.ended:
            return []
        self.keypad_buffer = ""
        return await self._turn(text, {"input_mode": input_mode})

    def expect_free_speech(self) -> None:
        """Drop what the last reply expected (a channel that moved the conversation on by other means)."""
        self.expectation = _Expectation()
        self.keypad_buffer = ""
        self._listen()

    async def hangup(self, reason: str = "caller") -> list[SessionEvent]:
        if self.ended:
            return []
        self._end()
        return [Hangup(reason)]

    def _end(self) -> None:
        self.ended = True
        self.stream.close()

    # -- recognition ----------------------------------------------------------------------------------------

    async def _on_asr(self, event: AsrEvent) -> list[SessionEvent]:
        keypad_only = self.expectation.keypad_only
        if isinstance(event, SpeechStarted):
            self.last_speech_at = self.audio_time
            return [event]
        if isinstance(event, Partial):
            if event.text:
                self.last_speech_at = self.audio_time
            out: list[SessionEvent] = []
            if self._speaking_over_playback(event):
                self.playing_until = self.audio_time
                out.append(BargeIn(at=self.audio_time))
            # Partials of a secret said aloud are not passed on: the channel might log or display them.
            if not keypad_only:
                out.append(event)
            return out
        if isinstance(event, NoInput):
            return [event, *await self._reprompt(prompts.NO_INPUT[min(self.reprompts, len(prompts.NO_INPUT) - 1)])]
        return await self._on_final(event)

    def _speaking_over_playback(self, partial: Partial) -> bool:
        return (
            bool(partial.text)
            and self.audio_time < self.playing_until
            and self.last_chunk_rms >= self.config.barge_in_rms
        )

    async def _on_final(self, final: Final) -> list[SessionEvent]:
        if final.text:
            self.last_speech_at = self.audio_time
            self.heard_since_end_of_input = True
        if self.expectation.keypad_only:
            # Whatever was said, it is not sent on: a PIN or code is taken by keypad only.
            if not final.text:
                return []
            return await self._prompt(prompts.KEYPAD_ONLY)
        out: list[SessionEvent] = [final]
        if self.expectation.closed:
            out.extend(await self._on_closed_answer(final))
            return out
        if not final.text.strip() or final.confidence < self.config.min_confidence:
            out.extend(await self._reprompt(prompts.NO_MATCH))
            return out
        text = self.normalize(final.text)
        amount = _spoken_amount(final.text)
        if amount is not None and _numeral_confidence(final) < self.config.amount_confidence:
            self.expectation.amount_text = text
            self._listen()
            out.extend(await self._prompt(prompts.CONFIRM_AMOUNT.format(amount=amount_words(amount))))
            return out
        out.extend(await self._turn(text, {"input_mode": "voice", "asr_confidence": round(final.confidence, 3)}))
        return out

    async def _on_closed_answer(self, final: Final) -> list[SessionEvent]:
        match = self._grammar().match(final) if final.text.strip() else None
        if match is None:
            return await self._reprompt(prompts.NO_MATCH)
        metadata = {"input_mode": "voice", "asr_confidence": round(match.score, 3)}
        return await self._choose(match.value, metadata)

    async def _choose(self, value: str, metadata: Mapping[str, Any]) -> list[SessionEvent]:
        """Act on a closed answer: a yes/no for a pending amount, else the chosen option's payload."""
        pending = self.expectation.amount_text
        if pending is not None:
            self.expectation.amount_text = None
            if value == "affirm":
                return await self._turn(pending, metadata)
            self._listen()
            return await self._prompt(prompts.REPEAT_AMOUNT)
        return await self._turn(value, metadata)

    def _grammar(self) -> Grammar:
        """The closed answers expected now: yes/no (with the lexicon's phrases) or the offered choices."""
        if self.expectation.amount_text is not None:
            return Grammar({"affirm": self.lexicon.affirm, "deny": self.lexicon.deny}, fillers=self.lexicon.fillers)
        options: dict[str, list[str]] = {}
        for choice in self.expectation.reply.choices:
            phrases = options.setdefault(choice.payload, [])
            phrases.append(choice.title)
            if _is_affirm(choice):
                phrases.extend(self.lexicon.affirm)
            elif _is_deny(choice):
                phrases.extend(self.lexicon.deny)
        return Grammar(options, fillers=self.lexicon.fillers)

    def _listen(self) -> None:
        """Switch the recogniser to the grammar of the current expectation (or back to free speech)."""
        if not self.expectation.closed:
            self.stream.set_grammar(None)
            return
        grammar = self._grammar()
        try:
            # The answers alone first: a grammar whose answers the model cannot spell would be decoys only,
            # and would turn every answer away.
            self.stream.set_grammar([phrase for phrase in grammar.phrases() if phrase not in grammar.fillers])
            self.stream.set_grammar(grammar.phrases())
        except ValueError:
            # None of the answers is a word the model knows (a model of another language, or titles it
            # cannot spell): listen freely and snap what is heard to the answers instead.
            logger.warning("no answer of the grammar is in the recogniser's vocabulary; listening freely")
            self.stream.set_grammar(None)

    # -- keypad ---------------------------------------------------------------------------------------------

    async def _on_key(self, key: str) -> list[SessionEvent]:
        if self.expectation.closed and key.isdigit():
            return await self._choose_by_key(int(key))
        if key == "*":
            if self.keypad_buffer:
                self.keypad_buffer = ""
                return []
            return await self._prompt(self.expectation.reply.text or prompts.NO_MATCH)
        if key == "#":
            digits, self.keypad_buffer = self.keypad_buffer, ""
            if not digits:
                return []
            return await self._keypad_entry(digits)
        if key.isdigit():
            self.keypad_buffer += key
            if len(self.keypad_buffer) > self.config.max_keypad_digits:
                self.keypad_buffer = ""
                return await self._reprompt(prompts.NO_MATCH)
            # Codes and PINs are six digits: the entry ends by itself, as banks' phone lines do.
            if self.expectation.keypad_only and len(self.keypad_buffer) == 6:
                digits, self.keypad_buffer = self.keypad_buffer, ""
                return await self._keypad_entry(digits)
        return []

    async def _choose_by_key(self, number: int) -> list[SessionEvent]:
        if self.expectation.amount_text is not None:
            if number in (1, 2):
                return await self._choose("affirm" if number == 1 else "deny", {"input_mode": "keypad"})
            return await self._reprompt(prompts.NO_MATCH)
        choices = self.expectation.reply.choices
        if 1 <= number <= len(choices):
            return await self._turn(choices[number - 1].payload, {"input_mode": "keypad"})
        return await self._reprompt(prompts.NO_MATCH)

    async def _keypad_entry(self, digits: str) -> list[SessionEvent]:
        # Keyed digits go to the dialogue as typed text: a code or PIN is diverted to a digest by the gateway
        # like a typed one, and a number answering an open question is an amount ("2500#").
        return await self._turn(digits, {"input_mode": "keypad"})

    # -- dialogue and speech --------------------------------------------------------------------------------

    async def _turn(self, text: str, metadata: Mapping[str, Any]) -> list[SessionEvent]:
        self.turns += 1
        try:
            replies = list(await self.turn(text, metadata))
        except DialogueUnavailable:
            return await self._prompt(prompts.RASA_UNAVAILABLE)
        self.reprompts = 0
        return await self._say(replies)

    async def _say(self, replies: Sequence[Reply]) -> list[SessionEvent]:
        """Adopt what the replies expect, switch the grammar, and speak them."""
        if not replies:
            return []
        expecting = _expectation_of(replies)
        self.expectation = _Expectation(reply=expecting)
        self.keypad_buffer = ""
        self._listen()
        spoken = "".join(reply.text for reply in replies if reply.text)
        out: list[SessionEvent] = list(replies)
        out.extend(await self._speak(spoken))
        return out

    async def _reprompt(self, lead: str) -> list[SessionEvent]:
        self.reprompts += 1
        if self.reprompts > self.config.max_reprompts:
            return await self._hand_off("no_input_or_no_match")
        self._listen()
        hint = self._hint()
        return await self._prompt(lead + hint)

    def _hint(self) -> str:
        expectation = self.expectation
        if expectation.amount_text is not None or _is_yes_no(expectation.reply.choices):
            return prompts.YES_NO_HINT
        if expectation.keypad_only:
            return prompts.KEYPAD_ONLY
        if expectation.closed:
            options = "，".join(f"{choice.title}请按{i}" for i, choice in enumerate(expectation.reply.choices, 1))
            return prompts.CHOICE_HINT.format(options=options)
        return expectation.reply.text

    async def _hand_off(self, reason: str) -> list[SessionEvent]:
        self.handed_off = True
        out: list[SessionEvent] = [Handoff(reason=reason)]
        out.extend(await self._prompt(prompts.OFFER_HUMAN))
        try:
            # The dialogue records the handoff (and its summary for the agent); its reply is not spoken
            # again because the caller has just heard that a person is coming.
            await self.turn(self.config.handoff_command, {"input_mode": "voice", "handoff_reason": reason})
        except DialogueUnavailable:
            logger.warning("handoff could not be recorded: the dialogue is unavailable")
        self.reprompts = 0
        self.expectation = _Expectation()
        self._listen()
        return out

    async def _hang_up_on_silence(self) -> list[SessionEvent]:
        out = await self._prompt(prompts.SILENCE_GOODBYE)
        self._end()
        out.append(Hangup("silence"))
        return out

    async def _prompt(self, text: str) -> list[SessionEvent]:
        """Say something of the voice layer's own: shown as text where the channel shows text, and spoken."""
        return [Prompt(text), *await self._speak(text)]

    async def _speak(self, text: str) -> list[SessionEvent]:
        """Synthesise `text` sentence by sentence, so the first audio is ready after the first sentence."""
        out: list[SessionEvent] = []
        rate = self.config.output_sample_rate
        sentences = [s for s in _SENTENCE_END.split(speakable(text)) if s.strip()]
        bytes_per_chunk = max(2, rate * self.config.chunk_ms // 1000 * 2)
        total = 0.0
        for index, sentence in enumerate(sentences):
            try:
                pcm = await self.synthesizer.synthesize(sentence, rate)
            except Exception:
                # Without audio the channel still has the reply's text (chat channels show it); a phone line
                # hears nothing for this sentence rather than losing the call.
                logger.warning("speech synthesis failed for one sentence", exc_info=True)
                continue
            total += len(pcm) / 2 / rate
            last_sentence = index == len(sentences) - 1
            for start in range(0, len(pcm), bytes_per_chunk):
                piece = pcm[start : start + bytes_per_chunk]
                last = last_sentence and start + bytes_per_chunk >= len(pcm)
                chunk = AudioChunk(piece, rate, last=last)
                if self.on_audio is not None:
                    await self.on_audio(chunk)
                else:
                    out.append(chunk)
        # Silence from the caller while the reply plays is not their silence: timers start after it.
        self.playing_until = self.audio_time + total
        self.last_speech_at = max(self.last_speech_at, self.playing_until)
        return out


# Sentence ends keep their punctuation (TTS pauses on it).
_SENTENCE_END = re.compile(r"(?<=[。！？!?\n])")


def _expectation_of(replies: Sequence[Reply]) -> Reply:
    """The last reply that expects something specific decides; else the answer is free speech."""
    for reply in reversed(replies):
        if reply.expect != "free" or reply.choices:
            expect = reply.expect if reply.expect != "free" else "choice"
            return Reply(text=reply.text, expect=expect, choices=reply.choices)
    return Reply(text=replies[-1].text)


def _is_affirm(choice: Choice) -> bool:
    # Only a bare "/affirm" takes the lexicon's yes-words: an acknowledgement such as
    # `/affirm{"risk_ack": ...}` must be said in its own words ("我已知晓风险"), never a mere "是".
    return choice.payload.strip() == "/affirm"


def _is_deny(choice: Choice) -> bool:
    return choice.payload.startswith("/deny")


def _is_yes_no(choices: Sequence[Choice]) -> bool:
    return any(_is_affirm(c) for c in choices) and any(_is_deny(c) for c in choices)


def _spoken_amount(text: str) -> Decimal | None:
    for value in find_values(text):
        if value.kind == "amount":
            try:
                return Decimal(value.value)
            except InvalidOperation:
                return None
    return None


def _numeral_confidence(final: Final) -> float:
    """The lowest confidence among the words that carry the number (the rest of the sentence may be fine)."""
    confidences = [word.conf for word in final.words if _NUMERAL_CHARS.search(word.word)]
    if not confidences:
        return final.confidence
    return min(confidences)

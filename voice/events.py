"""The typed events a voice turn is made of (after Home Assistant's assist pipeline): stages emit, channels consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Why a recognition result was closed.
EndReason = Literal["endpoint", "silence", "max_utterance", "eof"]


@dataclass(frozen=True)
class Word:
    """One recognised word with its timing (seconds from the start of the stream) and confidence (0..1)."""

    word: str
    start: float
    end: float
    conf: float


@dataclass(frozen=True)
class Alternative:
    """One n-best hypothesis; `confidence` is the recogniser's score (higher is better, not a probability)."""

    text: str
    confidence: float


@dataclass(frozen=True)
class SpeechStarted:
    """The caller started speaking (energy above the threshold or a non-empty partial), at `at` seconds."""

    at: float


@dataclass(frozen=True)
class Partial:
    text: str


@dataclass(frozen=True)
class Final:
    """The end of one utterance.

    `text` is the best hypothesis; `confidence` is the mean word confidence (0..1, 0 when there are no words);
    `alternatives` is filled when n-best was asked for; `reason` says what closed the utterance.
    """

    text: str
    words: tuple[Word, ...] = ()
    alternatives: tuple[Alternative, ...] = ()
    confidence: float = 0.0
    reason: EndReason = "endpoint"
    # Seconds of audio (from the start of the stream) where the utterance ended.
    end: float = 0.0


@dataclass(frozen=True)
class NoInput:
    """Nothing was said within the no-input timeout (audio time)."""

    after_seconds: float


@dataclass(frozen=True)
class Dtmf:
    """Keypad digits (0-9, *, #, A-D) delivered by the phone layer."""

    digits: str


@dataclass(frozen=True)
class Choice:
    """A closed answer the assistant offers (a button): what is said or shown, and what goes back to Rasa."""

    title: str
    payload: str


# What kind of answer a reply waits for: free speech, one of its choices, or keypad-only secrets.
Expectation = Literal["free", "choice", "pin", "otp"]


@dataclass(frozen=True)
class Reply:
    """What the assistant says next, as text, and what kind of answer it expects."""

    text: str
    expect: Expectation = "free"
    choices: tuple[Choice, ...] = ()


@dataclass(frozen=True)
class Prompt:
    """What the voice layer says itself (a reprompt, keypad guidance, an amount check), not the dialogue."""

    text: str


@dataclass(frozen=True)
class BargeIn:
    """The caller spoke over the assistant: the channel stops playing the rest of the reply."""

    at: float


@dataclass(frozen=True)
class AudioChunk:
    """Synthesised speech: signed 16-bit little-endian mono PCM at `sample_rate`."""

    pcm: bytes
    sample_rate: int
    # True for the last chunk of one reply.
    last: bool = False


@dataclass(frozen=True)
class Hangup:
    reason: str = "caller"


@dataclass(frozen=True)
class Handoff:
    """The session hands the caller to a person (repeated no-input or no-match)."""

    reason: str
    details: dict[str, str] = field(default_factory=dict)


AsrEvent = SpeechStarted | Partial | Final | NoInput

"""Voice messages on the chat channels (WeCom AMR, mini-program PCM/MP3): decode with ffmpeg, recognise with the
shared speech engine, normalise spoken numbers, and hand the text to the turn pipeline like a typed message.

Unlike a phone call there is no dialogue over audio: one recording is one utterance, transcribed whole.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from voice.asr import AsrBusy, AsrEngine, AsrError, AsrModel
from voice.audio import duration_seconds
from voice.events import Final, Partial
from voice.spoken_numbers import normalize_transcript

logger = logging.getLogger(__name__)

# What ffmpeg decodes to: the recogniser resamples to its model's rate from this.
DECODED_RATE = 16000
_CHUNK_BYTES = DECODED_RATE * 2 // 5  # 200 ms
FORMATS = frozenset({"amr", "mp3", "pcm", "wav", "silk", "speex"})
_FFMPEG_INPUT = {"amr": "amr", "mp3": "mp3", "wav": "wav"}


class VoiceMessageError(Exception):
    """The recording could not be turned into text; `code` says why (for the polite reply and the metrics)."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


@dataclass(frozen=True)
class Transcript:
    text: str  # normalised for the NLU ("转2500块给张三")
    raw: str  # what the recogniser heard
    confidence: float
    seconds: float


async def decode_to_pcm(data: bytes, fmt: str, *, sample_rate: int | None = None, timeout_s: float = 20.0) -> bytes:
    """16 kHz mono signed 16-bit PCM from a recording; raw PCM at `sample_rate` is resampled by ffmpeg too."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise VoiceMessageError("unsupported_format", fmt)
    if fmt == "pcm" and (sample_rate is None or sample_rate == DECODED_RATE):
        if len(data) % 2:
            data = data[:-1]
        return data
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise VoiceMessageError("no_decoder", "ffmpeg is not installed")
    if fmt == "pcm":
        source = ["-f", "s16le", "-ar", str(sample_rate), "-ac", "1"]
    elif fmt in _FFMPEG_INPUT:
        source = ["-f", _FFMPEG_INPUT[fmt]]
    else:
        raise VoiceMessageError("unsupported_format", fmt)
    process = await asyncio.create_subprocess_exec(
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        *source,
        "-i",
        "pipe:0",
        "-f",
        "s16le",
        "-ac",
        "1",
        "-ar",
        str(DECODED_RATE),
        "pipe:1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(data), timeout_s)
    except TimeoutError as error:
        process.kill()
        await process.wait()
        raise VoiceMessageError("decode_timeout") from error
    if process.returncode != 0 or not out:
        raise VoiceMessageError("undecodable", err.decode("utf-8", "replace")[-200:])
    return out


class VoiceMessageRecognizer:
    """Transcribes whole recordings on a shared engine; built from the configured Vosk model path."""

    def __init__(self, engine: AsrEngine, *, max_seconds: float = 60.0) -> None:
        self.engine = engine
        self.max_seconds = max_seconds

    @classmethod
    def from_model_path(
        cls, path: Path, *, workers: int, max_streams: int, max_seconds: float
    ) -> VoiceMessageRecognizer:
        return cls(AsrEngine(AsrModel(path), workers=workers, max_streams=max_streams), max_seconds=max_seconds)

    async def transcribe(self, pcm: bytes, sample_rate: int = DECODED_RATE) -> Transcript:
        seconds = duration_seconds(pcm, sample_rate)
        if seconds > self.max_seconds:
            raise VoiceMessageError("too_long", f"{seconds:.1f} s")
        if seconds < 0.1:
            raise VoiceMessageError("empty")
        try:
            stream = self.engine.open_stream(sample_rate, words=True)
        except AsrBusy as error:
            raise VoiceMessageError("busy") from error
        texts: list[str] = []
        confidences: list[float] = []
        try:
            for start in range(0, len(pcm), _CHUNK_BYTES):
                for event in await stream.feed(pcm[start : start + _CHUNK_BYTES]):
                    if isinstance(event, Final) and event.text:
                        texts.append(event.text)
                        confidences.append(event.confidence)
            last = await stream.finish()
        except AsrError as error:
            raise VoiceMessageError("recogniser_error", str(error)) from error
        finally:
            stream.close()
        if last.text:
            texts.append(last.text)
            confidences.append(last.confidence)
        raw = " ".join(texts).strip()
        if not raw:
            raise VoiceMessageError("nothing_heard")
        return Transcript(
            text=normalize_transcript(raw),
            raw=raw,
            confidence=sum(confidences) / len(confidences) if confidences else 0.0,
            seconds=seconds,
        )

    async def aclose(self) -> None:
        await self.engine.aclose()


class StreamingTranscription:
    """Hold-to-talk over a socket: PCM chunks fed as they are recorded (partials back), the transcript at the end."""

    def __init__(self, recognizer: VoiceMessageRecognizer, sample_rate: int) -> None:
        self.recognizer = recognizer
        self.sample_rate = sample_rate
        self._bytes = 0
        self._texts: list[str] = []
        self._confidences: list[float] = []
        try:
            self._stream = recognizer.engine.open_stream(sample_rate, words=True)
        except AsrBusy as error:
            raise VoiceMessageError("busy") from error

    @property
    def seconds(self) -> float:
        return self._bytes / (2 * self.sample_rate)

    async def feed(self, pcm: bytes) -> str | None:
        """Feed a chunk; returns the newest partial text when the recogniser has one."""
        self._bytes += len(pcm)
        if self.seconds > self.recognizer.max_seconds:
            raise VoiceMessageError("too_long", f"{self.seconds:.1f} s")
        partial: str | None = None
        try:
            for event in await self._stream.feed(pcm):
                if isinstance(event, Final):
                    if event.text:
                        self._texts.append(event.text)
                        self._confidences.append(event.confidence)
                elif isinstance(event, Partial) and event.text:
                    partial = " ".join([*self._texts, event.text])
        except AsrError as error:
            raise VoiceMessageError("recogniser_error", str(error)) from error
        return partial

    async def finish(self) -> Transcript:
        try:
            last = await self._stream.finish()
        except AsrError as error:
            raise VoiceMessageError("recogniser_error", str(error)) from error
        finally:
            self._stream.close()
        if last.text:
            self._texts.append(last.text)
            self._confidences.append(last.confidence)
        raw = " ".join(self._texts).strip()
        if not raw:
            raise VoiceMessageError("nothing_heard")
        return Transcript(
            text=normalize_transcript(raw),
            raw=raw,
            confidence=sum(self._confidences) / len(self._confidences),
            seconds=self.seconds,
        )

    def close(self) -> None:
        self._stream.close()

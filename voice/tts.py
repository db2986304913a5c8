"""Text to speech behind one interface: espeak-ng synthesizers (Mandarin via pinyin) and a prompt cache."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from pypinyin import Style, lazy_pinyin

from voice.audio import SAMPLE_WIDTH, parse_wav, resample, wav_bytes
from voice.events import AudioChunk

logger = logging.getLogger(__name__)

SUPPORTED_SAMPLE_RATES = (8000, 16000)


class SynthesisError(Exception):
    """Speech could not be produced (engine missing, failed, timed out or said nothing)."""


class SpeechSynthesizer(Protocol):
    """Anything that turns text into mono 16-bit PCM at 8000 or 16000 Hz.

    `name` identifies the voice and its settings: caches key on it, so two synthesizers that sound different
    must not share a name.
    """

    name: str

    async def synthesize(self, text: str, sample_rate: int) -> bytes: ...


def _check_rate(sample_rate: int) -> None:
    if sample_rate not in SUPPORTED_SAMPLE_RATES:
        raise ValueError(f"sample_rate must be one of {SUPPORTED_SAMPLE_RATES}, got {sample_rate}")


# --- Text preparation --------------------------------------------------------------------------------------------

# Full-width and CJK punctuation to the ASCII marks espeak-ng turns into pauses and intonation.
_PUNCTUATION = {
    "，": ",",
    "。": ".",
    "？": "?",
    "！": "!",
    "；": ";",
    "：": ":",
    "、": ",",
    "…": ".",
    "—": ",",
    "～": ",",
    "（": ",",
    "）": ",",
    "《": " ",
    "》": " ",
    "“": " ",
    "”": " ",
    "‘": " ",
    "’": " ",
    "「": " ",
    "」": " ",
}
# Runs of Han characters; everything between them is punctuation, digits, Latin text or spaces.
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_SPACES = re.compile(r"\s+")


def _plain_text(text: str) -> str:
    """Map CJK punctuation to ASCII and full-width letters/digits to ASCII (NFKC), for espeak-ng."""
    mapped = "".join(_PUNCTUATION.get(char, char) for char in text)
    return unicodedata.normalize("NFKC", mapped)


def pinyin_for_espeak(text: str) -> str:
    """Chinese text as tone-numbered pinyin ("余额" -> "yu2 e2", neutral tone 5) for espeak-ng's cmn-latn-pinyin.

    Han runs are converted whole, so pypinyin's phrase dictionary picks the reading of polyphonic characters
    from context (银行 -> yin2 hang2). Punctuation becomes ASCII so espeak-ng pauses on it; digits and Latin
    text pass through for espeak-ng to read.
    """
    pieces: list[str] = []
    position = 0
    for match in _HAN_RUN.finditer(text):
        pieces.append(_plain_text(text[position : match.start()]))
        syllables = lazy_pinyin(match.group(), style=Style.TONE3, neutral_tone_with_five=True)
        pieces.append(" " + " ".join(syllables) + " ")
        position = match.end()
    pieces.append(_plain_text(text[position:]))
    joined = _SPACES.sub(" ", "".join(pieces)).strip()
    # Pauses attach to the preceding word; a space before the mark is harmless but untidy in logs.
    return re.sub(r" ([,.?!;:])", r"\1", joined)


def plain_for_espeak(text: str) -> str:
    """Text for voices that read the script directly (e.g. Korean): only punctuation and spacing are normalised."""
    return _SPACES.sub(" ", _plain_text(text)).strip()


# --- espeak-ng ---------------------------------------------------------------------------------------------------


class EspeakSynthesizer:
    """espeak-ng run as a subprocess per request; the text goes on stdin (no argument-length or option-injection
    issues), the WAV comes back on stdout and is resampled to the requested rate."""

    def __init__(
        self,
        voice: str,
        text_to_espeak: Callable[[str], str] = plain_for_espeak,
        *,
        speed: int = 150,
        pitch: int | None = None,
        executable: str = "espeak-ng",
        timeout: float = 15.0,
        name: str | None = None,
    ) -> None:
        self.voice = voice
        self.text_to_espeak = text_to_espeak
        self.speed = speed
        self.pitch = pitch
        self.executable = executable
        self.timeout = timeout
        self.name = name or f"espeak-ng:{voice}:s{speed}" + (f":p{pitch}" if pitch is not None else "")

    def command(self) -> list[str]:
        command = [self.executable, "-v", self.voice, "-s", str(self.speed), "-b", "1", "--stdin", "--stdout"]
        if self.pitch is not None:
            command += ["-p", str(self.pitch)]
        return command

    async def synthesize(self, text: str, sample_rate: int) -> bytes:
        """PCM for `text` at `sample_rate`; empty bytes for blank text (there is nothing to say)."""
        _check_rate(sample_rate)
        spoken = self.text_to_espeak(text)
        if not spoken.strip():
            return b""
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:  # FileNotFoundError, PermissionError
            raise SynthesisError(f"cannot run {self.executable!r}: {error}") from error
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(spoken.encode("utf-8")), self.timeout)
        except TimeoutError as error:
            raise SynthesisError(f"{self.executable} took longer than {self.timeout} s") from error
        finally:
            # On timeout or cancellation the child must not outlive the request.
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if process.returncode != 0:
            message = stderr.decode("utf-8", "replace").strip()
            raise SynthesisError(f"{self.executable} -v {self.voice} exited with {process.returncode}: {message}")
        try:
            pcm, rate = parse_wav(stdout)
        except ValueError as error:
            raise SynthesisError(f"{self.executable} returned unreadable audio: {error}") from error
        if not pcm:
            raise SynthesisError(f"{self.executable} -v {self.voice} produced no audio for {text!r}")
        # Resampling a few seconds takes milliseconds; not worth a thread hop.
        return resample(pcm, rate, sample_rate)


class EspeakPinyinSynthesizer(EspeakSynthesizer):
    """Mandarin through espeak-ng: Chinese text is converted to tone-numbered pinyin first, because espeak-ng's
    plain `cmn` voice spells most characters as English letter names."""

    def __init__(
        self,
        voice: str = "cmn-latn-pinyin",
        *,
        speed: int = 150,
        pitch: int | None = None,
        executable: str = "espeak-ng",
        timeout: float = 15.0,
        name: str | None = None,
    ) -> None:
        super().__init__(
            voice, pinyin_for_espeak, speed=speed, pitch=pitch, executable=executable, timeout=timeout, name=name
        )


# --- Cache -------------------------------------------------------------------------------------------------------

CacheKey = tuple[str, str, int]


class CachedSynthesizer:
    """An LRU cache in front of a synthesizer, optionally persisted as WAV files so fixed prompts are made once per
    deployment.

    Concurrent requests for the same (voice, text, rate) share one synthesis. The work runs in its own task and
    callers await it shielded, so one caller hanging up does not cancel the audio the others are waiting for.
    `persist_if` chooses which texts may reach the disk: pass one that refuses texts with customer data (amounts,
    names) when `cache_dir` is set, since every cached file is a recording of that text.
    """

    def __init__(
        self,
        inner: SpeechSynthesizer,
        max_entries: int = 256,
        cache_dir: Path | None = None,
        *,
        persist_if: Callable[[str], bool] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.inner = inner
        # The cache is transparent: it sounds exactly like the synthesizer it wraps.
        self.name = inner.name
        self.max_entries = max_entries
        self.cache_dir = cache_dir
        self.persist_if = persist_if
        self._entries: OrderedDict[CacheKey, bytes] = OrderedDict()
        self._in_flight: dict[CacheKey, asyncio.Task[bytes]] = {}
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)

    async def synthesize(self, text: str, sample_rate: int) -> bytes:
        _check_rate(sample_rate)
        key: CacheKey = (self.inner.name, text, sample_rate)
        cached = self._entries.get(key)
        if cached is not None:
            self._entries.move_to_end(key)
            return cached
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._produce(key))
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _finished(self, key: CacheKey, task: asyncio.Task[bytes]) -> None:
        self._in_flight.pop(key, None)
        # Mark a failure as seen even if every caller was cancelled meanwhile (avoids "never retrieved" noise).
        if not task.cancelled():
            task.exception()

    async def _produce(self, key: CacheKey) -> bytes:
        _name, text, sample_rate = key
        path = self._path(key)
        pcm: bytes | None = None
        if path is not None:
            pcm = await asyncio.to_thread(self._load, path, sample_rate)
        if pcm is None:
            pcm = await self.inner.synthesize(text, sample_rate)
            if path is not None and pcm and (self.persist_if is None or self.persist_if(text)):
                await asyncio.to_thread(self._store, path, pcm, sample_rate)
        self._entries[key] = pcm
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return pcm

    def _path(self, key: CacheKey) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(json.dumps(list(key), ensure_ascii=False).encode("utf-8")).hexdigest()
        return self.cache_dir / f"{digest}.wav"

    @staticmethod
    def _load(path: Path, sample_rate: int) -> bytes | None:
        try:
            pcm, rate = parse_wav(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            logger.warning("ignoring unreadable TTS cache file %s: %s", path.name, error)
            return None
        if rate != sample_rate or not pcm:
            logger.warning("ignoring TTS cache file %s: %d Hz, %d bytes", path.name, rate, len(pcm))
            return None
        return pcm

    @staticmethod
    def _store(path: Path, pcm: bytes, sample_rate: int) -> None:
        # Write beside and rename, so a crash or a concurrent process never leaves a half-written prompt.
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".wav")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(wav_bytes(pcm, sample_rate))
            os.replace(temporary, path)
        except OSError as error:
            logger.warning("could not write TTS cache file %s: %s", path.name, error)
            with contextlib.suppress(OSError):
                os.unlink(temporary)


# --- Delivery ----------------------------------------------------------------------------------------------------


def chunks(pcm: bytes, sample_rate: int, ms: int = 100) -> Iterator[AudioChunk]:
    """Split a reply's PCM into `ms`-millisecond AudioChunks; the final one has `last=True`.

    Empty PCM still yields one empty last chunk, so a consumer always sees where the reply ends.
    """
    chunk_bytes = SAMPLE_WIDTH * max(1, sample_rate * ms // 1000)
    usable = len(pcm) - len(pcm) % SAMPLE_WIDTH
    if usable == 0:
        yield AudioChunk(pcm=b"", sample_rate=sample_rate, last=True)
        return
    for start in range(0, usable, chunk_bytes):
        end = min(start + chunk_bytes, usable)
        yield AudioChunk(pcm=pcm[start:end], sample_rate=sample_rate, last=end == usable)

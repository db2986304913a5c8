"""Streaming speech recognition on one shared Vosk model: bounded worker pool, endpointing, grammars, typed events."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import vosk

from voice.audio import SAMPLE_WIDTH, StreamResampler, rms
from voice.events import Alternative, AsrEvent, EndReason, Final, NoInput, Partial, SpeechStarted, Word

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

UNKNOWN_WORD = "[unk]"
# Endpointing and energy are judged on blocks of this many seconds of audio: short enough for the timers to be
# accurate, long enough that the per-call overhead of the recogniser stays negligible.
_BLOCK_SECONDS = 0.1

# Told after each utterance the event API closes: (seconds of audio, seconds spent recognising it). Runs on a
# recognition thread; it must be quick and thread-safe (a metrics histogram is both).
UtteranceTiming = Callable[[float, float], None]


class AsrError(Exception):
    """Base of the recognition errors."""


class AsrModelError(AsrError):
    """The model path is missing or does not hold a Vosk model."""


class AsrBusy(AsrError):
    """Every recognition slot is taken; the caller should refuse the call or try later."""


class AsrStreamClosed(AsrError):
    """The stream was closed (or finished) and cannot take more audio."""


class AsrModel:
    """One loaded Vosk model; share it between every stream (it is read-only once loaded)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise AsrModelError(f"no Vosk model directory at {self.path}")
        if not (self.path / "am").is_dir() and not (self.path / "final.mdl").exists():
            raise AsrModelError(f"{self.path} does not look like a Vosk model (no am/ directory)")
        vosk.SetLogLevel(-1)
        try:
            self.vosk_model = vosk.Model(str(self.path))
        except Exception as error:  # vosk raises a bare Exception when Kaldi cannot read the files
            raise AsrModelError(f"Vosk could not load the model at {self.path}: {error}") from error
        self.sample_rate = _configured_sample_rate(self.path / "conf" / "mfcc.conf")
        self.has_unk = self._find_unk()

    def has_word(self, word: str) -> bool:
        """Whether `word` is in the model's vocabulary (grammar words outside it are silently ignored by Vosk)."""
        return bool(self.vosk_model.vosk_model_find_word(word) >= 0)

    def _find_unk(self) -> bool:
        words_file = self.path / "graph" / "words.txt"
        if words_file.is_file():
            with words_file.open(encoding="utf-8", errors="replace") as lines:
                return any(line.split(" ", 1)[0].strip() == UNKNOWN_WORD for line in lines)
        # Small models ship no words.txt; the word table inside the graph can still be probed.
        return self.has_word(UNKNOWN_WORD)


def _configured_sample_rate(mfcc_conf: Path, default: int = 16000) -> int:
    if not mfcc_conf.is_file():
        return default
    for line in mfcc_conf.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.strip().partition("=")
        if key == "--sample-frequency":
            try:
                return round(float(value))
            except ValueError:
                break
    return default


@dataclass(frozen=True)
class EndpointConfig:
    """When an utterance ends, in seconds of audio (not wall-clock time, so behaviour does not depend on load).

    `speech_rms` is the block level (int16 sample units) above which audio counts as speech.
    """

    no_input_s: float = 5.0
    silence_s: float = 0.8
    max_utterance_s: float = 20.0
    speech_rms: float = 300.0


@dataclass(frozen=True)
class AsrStats:
    open_streams: int
    busy_workers: int
    queued_chunks: int


class AsrEngine:
    """Streams over one model, decoded on a bounded thread pool.

    Back-pressure works at two levels: `open_stream` refuses beyond `max_streams` (admission), and each stream has
    at most one chunk in the pool at a time (its `feed` awaits the result), so the pool queue never holds more than
    one chunk per open stream.
    """

    def __init__(
        self,
        model: AsrModel,
        *,
        workers: int = 2,
        max_streams: int = 64,
        on_utterance: UtteranceTiming | None = None,
    ) -> None:
        if workers < 1 or max_streams < 1:
            raise ValueError("workers and max_streams must be at least 1")
        self.model = model
        self.workers = workers
        self.max_streams = max_streams
        self.on_utterance = on_utterance
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asr")
        self._streams: set[AsrStream] = set()
        self._counter_lock = threading.Lock()
        self._busy = 0
        self._queued = 0
        self._closed = False

    def open_stream(
        self,
        sample_rate: int,
        *,
        grammar: Sequence[str] | None = None,
        words: bool = True,
        max_alternatives: int = 0,
        endpoint: EndpointConfig | None = None,
        partial_words: bool = False,
    ) -> AsrStream:
        if self._closed:
            raise AsrError("the recognition engine is closed")
        if len(self._streams) >= self.max_streams:
            raise AsrBusy(f"all {self.max_streams} recognition streams are in use")
        stream = AsrStream(
            self,
            sample_rate,
            grammar=grammar,
            words=words,
            max_alternatives=max_alternatives,
            endpoint=endpoint or EndpointConfig(),
            partial_words=partial_words,
        )
        self._streams.add(stream)
        return stream

    def stats(self) -> AsrStats:
        with self._counter_lock:
            return AsrStats(open_streams=len(self._streams), busy_workers=self._busy, queued_chunks=self._queued)

    async def aclose(self) -> None:
        self._closed = True
        for stream in list(self._streams):
            stream.close()
        # Waiting for running chunks off the event loop: they hold their recognisers until they return.
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)

    def _release(self, stream: AsrStream) -> None:
        self._streams.discard(stream)

    def _report_utterance(self, audio_seconds: float, processing_seconds: float) -> None:
        if self.on_utterance is None or audio_seconds <= 0:
            return
        try:
            self.on_utterance(audio_seconds, processing_seconds)
        except Exception:
            logger.warning("the utterance timing callback failed", exc_info=True)

    async def _run(self, function: Callable[[], _T]) -> _T:
        with self._counter_lock:
            self._queued += 1

        def job() -> _T:
            with self._counter_lock:
                self._queued -= 1
                self._busy += 1
            try:
                return function()
            finally:
                with self._counter_lock:
                    self._busy -= 1

        try:
            future = asyncio.get_running_loop().run_in_executor(self._pool, job)
        except RuntimeError:  # the pool was shut down
            with self._counter_lock:
                self._queued -= 1
            raise AsrStreamClosed("the recognition engine is closed") from None
        return await future


# Marks "no grammar change pending" (None itself means "switch to free decoding").
_UNCHANGED: Any = object()


class AsrStream:
    """One caller's audio: feed PCM chunks, get SpeechStarted / Partial / Final / NoInput events.

    Use either the event API (`feed`, `finish`) or the raw vosk-server API (`feed_raw`, `finish_raw`) on one
    stream, not both. Word times and `Final.end` are seconds of audio from the start of the stream.
    """

    def __init__(
        self,
        engine: AsrEngine,
        sample_rate: int,
        *,
        grammar: Sequence[str] | None,
        words: bool,
        max_alternatives: int,
        endpoint: EndpointConfig,
        partial_words: bool,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {sample_rate}")
        if max_alternatives < 0:
            raise ValueError("max_alternatives must not be negative")
        self._engine = engine
        self._model = engine.model
        self.sample_rate = sample_rate
        self.model_rate = engine.model.sample_rate
        self.endpoint = endpoint
        self._words = words
        self._partial_words = partial_words
        self._max_alternatives = max_alternatives
        self._resampler = StreamResampler(sample_rate, self.model_rate)
        self._grammar = self._checked_grammar(grammar)
        self._pending_grammar: Any = _UNCHANGED
        self._block_bytes = SAMPLE_WIDTH * max(1, round(self.model_rate * _BLOCK_SECONDS))
        self._buffer = b""
        self._samples = 0  # model-rate samples given to the recogniser so far
        # Built lazily in a pool thread on the first chunk: building one (and a grammar's FST) takes ~0.1 s, too long
        # to block the event loop for.
        self._recognizer: vosk.KaldiRecognizer | None = None
        self._recognizer_offset = 0.0
        # Utterance state (touched only by the one job of this stream that runs at a time).
        self._in_speech = False
        self._speech_start = 0.0
        self._silence_run = 0  # model-rate samples of quiet audio since the last loud block
        self._heard_loud = False
        self._last_partial = ""
        self._no_input_since = 0.0
        # Timing of the current utterance (event API): where its audio started, the recognition time spent on it
        # so far, and when the running job last accounted for its time.
        self._utterance_first_sample = 0
        self._utterance_processing = 0.0
        self._timing_mark = 0.0
        # Chunks of one stream run strictly one after another, even when an awaiting caller is cancelled.
        self._lock = asyncio.Lock()
        self._inflight: asyncio.Future[Any] | None = None
        self.closed = False

    # -- public API ------------------------------------------------------------------------------------------

    @property
    def seconds(self) -> float:
        """Audio received so far (model-rate samples handed to the recogniser), in seconds."""
        return self._samples / self.model_rate

    def set_grammar(self, phrases: Sequence[str] | None) -> None:
        """Listen for `phrases` (or free speech with None) from the next utterance on.

        The switch happens at once when nothing has been heard in the current utterance yet. Phrases with words
        outside the model's vocabulary are dropped with a warning; ValueError when none is left.
        """
        self._pending_grammar = self._checked_grammar(phrases)

    async def feed(self, pcm: bytes) -> list[AsrEvent]:
        return await self._serialised(lambda: self._process(pcm))

    async def finish(self) -> Final:
        """End of input: decode what is left and return the last result (reason "eof"); the stream is closed."""
        try:
            return await self._serialised(self._finish)
        finally:
            self.close()

    async def feed_raw(self, pcm: bytes) -> str:
        """vosk-server semantics: Vosk's own `Result()` JSON when it reports an endpoint, else `PartialResult()`."""
        return await self._serialised(lambda: self._process_raw(pcm))

    async def finish_raw(self) -> str:
        """vosk-server semantics for `{"eof": 1}`: Vosk's `FinalResult()` JSON; the stream is closed."""
        try:
            return await self._serialised(self._finish_raw)
        finally:
            self.close()

    def close(self) -> None:
        """Free the recogniser and the engine slot; safe to call twice.

        A chunk still running in the pool keeps its own reference to the recogniser, so it finishes safely and
        the native object is freed after it.
        """
        if self.closed:
            return
        self.closed = True
        self._recognizer = None
        self._engine._release(self)

    # -- scheduling ------------------------------------------------------------------------------------------

    async def _serialised(self, work: Callable[[], _T]) -> _T:
        if self.closed:
            raise AsrStreamClosed("the recognition stream is closed")
        async with self._lock:
            previous = self._inflight
            if previous is not None and not previous.done():
                # A cancelled caller left its chunk running; the recogniser is not thread-safe, so wait for it.
                await asyncio.wait([previous])
            if self.closed:
                raise AsrStreamClosed("the recognition stream is closed")
            task = asyncio.ensure_future(self._engine._run(work))
            # If the caller is cancelled nobody awaits the task; this keeps its error from being logged as lost.
            task.add_done_callback(_retrieve_exception)
            self._inflight = task
            return await asyncio.shield(task)

    # -- recogniser ------------------------------------------------------------------------------------------

    def _checked_grammar(self, phrases: Sequence[str] | None) -> list[str] | None:
        if phrases is None:
            return None
        if isinstance(phrases, str):
            raise TypeError("a grammar is a sequence of phrases, not one string")
        kept: list[str] = []
        for phrase in phrases:
            words = phrase.split()
            if not words:
                continue
            missing = [word for word in words if not self._model.has_word(word)]
            if missing:
                logger.warning("grammar phrase %r dropped: not in the model's vocabulary: %s", phrase, missing)
                continue
            if phrase not in kept:
                kept.append(phrase)
        if not kept:
            raise ValueError("no phrase of the grammar is in the model's vocabulary")
        if self._model.has_unk and UNKNOWN_WORD not in kept:
            # Lets the recogniser say "something else" instead of forcing any sound onto a grammar word.
            kept.append(UNKNOWN_WORD)
        return kept

    def _new_recognizer(self) -> vosk.KaldiRecognizer:
        model = self._model.vosk_model
        if self._grammar is None:
            recognizer = vosk.KaldiRecognizer(model, self.model_rate)
        else:
            recognizer = vosk.KaldiRecognizer(model, self.model_rate, json.dumps(self._grammar, ensure_ascii=False))
        recognizer.SetWords(self._words)
        recognizer.SetPartialWords(self._partial_words)
        recognizer.SetMaxAlternatives(self._max_alternatives)
        self._recognizer = recognizer
        # A new recogniser counts time from zero; word times are shifted by where it started in the stream.
        self._recognizer_offset = self.seconds
        return recognizer

    def _apply_pending_grammar(self) -> None:
        pending = self._pending_grammar
        if pending is _UNCHANGED:
            return
        self._pending_grammar = _UNCHANGED
        if pending != self._grammar:
            self._grammar = pending
            # The next block builds a recogniser for the new grammar.
            self._recognizer = None

    def _live_recognizer(self) -> vosk.KaldiRecognizer:
        # Checked before every block, so closing a stream also stops a long chunk that is being decoded.
        if self.closed:
            raise AsrStreamClosed("the recognition stream is closed")
        recognizer = self._recognizer
        return recognizer if recognizer is not None else self._new_recognizer()

    # -- event API (runs in a pool thread) -------------------------------------------------------------------

    def _process(self, pcm: bytes) -> list[AsrEvent]:
        self._timing_mark = time.perf_counter()
        try:
            return self._process_timed(pcm)
        finally:
            self._account_time()

    def _process_timed(self, pcm: bytes) -> list[AsrEvent]:
        if not self._in_speech and not self._last_partial:
            self._apply_pending_grammar()
        recognizer = self._live_recognizer()
        self._buffer += self._resampler.process(pcm)
        events: list[AsrEvent] = []
        # Counted in samples, not summed float seconds, so that 8 blocks of 0.1 s reach a 0.8 s timeout exactly.
        silence_limit = round(self.endpoint.silence_s * self.model_rate)
        while len(self._buffer) >= self._block_bytes:
            if not self._in_speech and not self._last_partial:
                # Nothing heard yet in this utterance: a grammar switch may take effect right away.
                self._apply_pending_grammar()
                recognizer = self._live_recognizer()
            block, self._buffer = self._buffer[: self._block_bytes], self._buffer[self._block_bytes :]
            start = self.seconds
            endpoint = recognizer.AcceptWaveform(block)
            block_samples = len(block) // SAMPLE_WIDTH
            self._samples += block_samples
            now = self.seconds
            loud = rms(block) >= self.endpoint.speech_rms
            if loud and not self._in_speech:
                self._start_speech(start, events)
            if self._in_speech:
                self._silence_run = 0 if loud else self._silence_run + block_samples
                self._heard_loud = self._heard_loud or loud
            if endpoint:
                final = self._parse_final(recognizer.Result(), "endpoint")
                if final.text or self._in_speech:
                    events.append(final)
                    self._end_utterance()
                else:
                    # Vosk closes stretches of silence too; that is not an utterance and not the end of no-input.
                    self._last_partial = ""
                    self._close_timing(report=False)
            elif self._in_speech and self._silence_run >= silence_limit:
                events.append(self._parse_final(recognizer.FinalResult(), "silence"))
                self._end_utterance()
            elif self._in_speech and now - self._speech_start >= self.endpoint.max_utterance_s:
                events.append(self._parse_final(recognizer.FinalResult(), "max_utterance"))
                self._end_utterance()
            elif not self._in_speech and now - self._no_input_since >= self.endpoint.no_input_s:
                events.append(NoInput(after_seconds=round(now - self._no_input_since, 3)))
                self._no_input_since = now
                self._close_timing(report=False)
            recognizer = self._live_recognizer()
        # One partial per chunk: asking for it per block would cost decoding time for no added information.
        partial = _partial_text(recognizer.PartialResult())
        if partial and partial != self._last_partial:
            if not self._in_speech:
                self._start_speech(self.seconds, events)
            if not self._heard_loud:
                # Speech too quiet for the level detector: the growing partial is the only sign it goes on.
                # (After loud speech partials lag the audio by a few hundred ms, so they must not reset the timer.)
                self._silence_run = 0
            self._last_partial = partial
            events.append(Partial(partial))
        return events

    def _start_speech(self, at: float, events: list[AsrEvent]) -> None:
        self._in_speech = True
        self._speech_start = at
        self._silence_run = 0
        self._heard_loud = False
        events.append(SpeechStarted(at=round(at, 3)))

    def _end_utterance(self) -> None:
        self._close_timing(report=True)
        self._in_speech = False
        self._silence_run = 0
        self._heard_loud = False
        self._last_partial = ""
        self._no_input_since = self.seconds
        self._apply_pending_grammar()

    def _finish(self) -> Final:
        self._timing_mark = time.perf_counter()
        final = self._finish_timed()
        self._close_timing(report=bool(final.text))
        return final

    def _finish_timed(self) -> Final:
        recognizer = self._live_recognizer()
        tail = self._buffer + self._resampler.flush()
        self._buffer = b""
        endpoint_result: Final | None = None
        if tail:
            if recognizer.AcceptWaveform(tail):
                endpoint_result = self._parse_final(recognizer.Result(), "eof")
            self._samples += len(tail) // SAMPLE_WIDTH
        final = self._parse_final(recognizer.FinalResult(), "eof")
        if endpoint_result is not None and not final.text:
            return endpoint_result
        return final

    def _account_time(self) -> None:
        now = time.perf_counter()
        self._utterance_processing += now - self._timing_mark
        self._timing_mark = now

    def _close_timing(self, *, report: bool) -> None:
        """The current utterance's audio is all in: report its timing (speech) or drop it (silence), start anew."""
        self._account_time()
        audio_seconds = (self._samples - self._utterance_first_sample) / self.model_rate
        if report:
            self._engine._report_utterance(audio_seconds, self._utterance_processing)
        self._utterance_first_sample = self._samples
        self._utterance_processing = 0.0

    def _parse_final(self, result_json: str, reason: EndReason) -> Final:
        return parse_result(result_json, reason=reason, offset=self._recognizer_offset, end=self.seconds)

    # -- raw API (runs in a pool thread) ---------------------------------------------------------------------

    def _process_raw(self, pcm: bytes) -> str:
        recognizer = self._live_recognizer()
        audio = self._resampler.process(pcm)
        self._samples += len(audio) // SAMPLE_WIDTH
        if recognizer.AcceptWaveform(audio):
            return str(recognizer.Result())
        return str(recognizer.PartialResult())

    def _finish_raw(self) -> str:
        recognizer = self._live_recognizer()
        tail = self._resampler.flush()
        if tail:
            self._samples += len(tail) // SAMPLE_WIDTH
            if recognizer.AcceptWaveform(tail):
                return str(recognizer.Result())
        return str(recognizer.FinalResult())


def _retrieve_exception(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _partial_text(partial_json: str) -> str:
    try:
        data = json.loads(partial_json)
    except json.JSONDecodeError:
        return ""
    return str(data.get("partial", "")).strip() if isinstance(data, dict) else ""


def parse_result(result_json: str, *, reason: EndReason = "endpoint", offset: float = 0.0, end: float = 0.0) -> Final:
    """Turn one of Vosk's result JSONs into a Final.

    Two shapes exist: {"result": [{"word", "start", "end", "conf"}...], "text"} and, with max_alternatives set,
    {"alternatives": [{"text", "confidence", "result": [{"word", "start", "end"}...]}...]}. The second carries no
    word confidences, so there `Word.conf` and `Final.confidence` are 0.
    """
    data = json.loads(result_json)
    if not isinstance(data, dict):
        raise ValueError(f"unexpected recogniser result: {result_json!r}")
    alternatives: tuple[Alternative, ...] = ()
    if "alternatives" in data:
        entries = [entry for entry in data["alternatives"] if isinstance(entry, dict)]
        alternatives = tuple(
            Alternative(text=str(entry.get("text", "")).strip(), confidence=float(entry.get("confidence", 0.0)))
            for entry in entries
        )
        best: dict[str, Any] = entries[0] if entries else {}
    else:
        best = data
    words = tuple(
        Word(
            word=str(item["word"]),
            start=round(float(item["start"]) + offset, 3),
            end=round(float(item["end"]) + offset, 3),
            conf=float(item.get("conf", 0.0)),
        )
        for item in best.get("result", [])
    )
    confidences = [word.conf for word in words]
    confidence = math.fsum(confidences) / len(confidences) if confidences and "alternatives" not in data else 0.0
    return Final(
        text=str(best.get("text", "")).strip(),
        words=words,
        alternatives=alternatives,
        confidence=confidence,
        reason=reason,
        end=round(end, 3),
    )

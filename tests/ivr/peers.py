"""Real SIP peers for the phone-line tests: SIPp scenarios, a scripted baresip phone, and an RTP listener.

SIP, control and the test's RTP sockets bind 127.0.0.1; baresip's RTP binds the address of the default route's
interface (a local address, so traffic still stays on the host). Run under `tools/run-in-netns.sh` to be sure
nothing leaves the machine; see that script for the quirk it works around (baresip 1.0.0 needs a
non-loopback address for RTP).

How baresip 1.0.0 (Debian's baresip-core) is driven, as found by trying it:

* config dir via `-f DIR` holding `config` and `accounts`; modules from /usr/lib/baresip/modules.
* `sip_listen 127.0.0.1:P` binds UDP P, TCP P and also TCP P+1 (its TLS port, even without TLS), so P+1
  must be free too.
* control: `ctrl_tcp` (netstring-framed JSON on `ctrl_tcp_listen`), commands are the long names of the
  `menu` module (`dial`, `hangup`, `accept`, `sndcode`, `listcalls` ...), answered with
  `{"response":true,"ok":...,"data":...,"token":...}`; events come unasked as `{"event":true,"type":...}`.
* audio out: `audio_source aufile,FILE.wav` (8 kHz mono S16LE for G.711). The file is read whole at call
  start and baresip *hangs up when it ends*: pad it (`padded_wav`).
* there is no `aufile` player in 1.0.0. Recording is the `sndfile` audio filter: it writes
  `dump-<time>-dec.wav` (what was heard) and `dump-<time>-enc.wav` (what was sent) in `snd_path` for each
  call, the header completed when the call closes. `audio_player aubridge,nil` is a sink that never plays.
* DTMF: `sndcode` with one digit sends an RFC 4733 telephone-event (payload type 101): 9 packets 20 ms apart
  growing to 1440 samples (180 ms), then 3 end packets. 1.0.0 cannot send keys as SIP INFO (it only receives
  them); uac_info_dtmf.xml covers INFO. A callee reports keys it receives as CALL_DTMF_START events.
* its INVITE has an empty `Supported:` header, a Contact user with a `-0x...` suffix (the From user is clean),
  and an SDP `c=` with the default route's interface address, not 127.0.0.1 (198.18.0.1 in the netns).
* sndfile names its files to the second: one call per BaresipCaller, or a second apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
BARESIP_MODULES = Path("/usr/lib/baresip/modules")
# Keys our scenarios use; run_sipp always passes them so a scenario never fails on an unknown keyword.
DEFAULT_SIPP_KEYS = {"caller_number": "13800138000"}
SAMPLE_RATE = 8000


# --------------------------------------------------------------------------------------------------------------
# Isolation


@functools.cache
def netns_available() -> bool:
    """Whether this machine lets us create a network namespace (`unshare -n`)."""
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def in_netns() -> bool:
    """Whether we run inside tools/run-in-netns.sh (it sets BANKBOT_IN_NETNS=1)."""
    return os.environ.get("BANKBOT_IN_NETNS") == "1"


def sipp_available() -> bool:
    return shutil.which("sipp") is not None


def baresip_available() -> bool:
    return shutil.which("baresip") is not None and (BARESIP_MODULES / "ctrl_tcp.so").exists()


# --------------------------------------------------------------------------------------------------------------
# Ports


def _port_free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_udp_port(span: int = 1, *, tcp_too: bool = False) -> int:
    """A port P on 127.0.0.1 with UDP P..P+span-1 free (and TCP too when asked). Racy, as every such probe."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + span > 65535:
            continue
        ports = range(port, port + span)
        if all(_port_free(p, socket.SOCK_DGRAM) for p in ports) and (
            not tcp_too or all(_port_free(p, socket.SOCK_STREAM) for p in ports)
        ):
            return port
    raise RuntimeError("no free port range found on 127.0.0.1")


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_udp_bound(port: int, timeout: float = 5.0) -> None:
    """Wait until some process has bound UDP `port` (our own bind then fails): the peer is listening."""
    deadline = time.monotonic() + timeout
    while _port_free(port, socket.SOCK_DGRAM):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing bound UDP port {port} within {timeout} s")
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------------------------------------------
# Audio helpers


def sine_pcm16(freq_hz: float, seconds: float, amplitude: float = 0.3, rate: int = SAMPLE_RATE) -> bytes:
    """A tone as signed 16-bit little-endian mono PCM."""
    count = round(seconds * rate)
    peak = amplitude * 32767
    return struct.pack(f"<{count}h", *(round(peak * math.sin(2 * math.pi * freq_hz * i / rate)) for i in range(count)))


def padded_wav(pcm16_8k: bytes, path: str | os.PathLike[str], pad_s: float = 30.0) -> Path:
    """Write 8 kHz mono 16-bit PCM as a WAV followed by `pad_s` of silence (baresip hangs up at end of file)."""
    target = Path(path)
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm16_8k + b"\x00\x00" * round(pad_s * SAMPLE_RATE))
    return target


def read_wav_pcm16(path: str | os.PathLike[str]) -> bytes:
    """The frames of an 8 kHz mono 16-bit WAV (what baresip's sndfile writes for G.711 calls)."""
    with wave.open(str(path), "rb") as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            raise ValueError(
                f"{path}: expected 8000 Hz mono 16-bit, got {wav.getframerate()} Hz, "
                f"{wav.getnchannels()} channels, {wav.getsampwidth() * 8}-bit"
            )
        return wav.readframes(wav.getnframes())


def best_correlation(reference: bytes, recording: bytes) -> float:
    """Peak normalised cross-correlation of `reference` against any stretch of `recording` (1.0 = identical).

    Both are 16-bit mono PCM; the recording may start late or carry extra silence. G.711 round trips of a
    clean source land above 0.99.
    """
    import numpy as np

    ref = np.frombuffer(reference, dtype="<i2").astype(np.float64)
    rec = np.frombuffer(recording, dtype="<i2").astype(np.float64)
    if len(ref) == 0 or len(rec) < len(ref):
        return 0.0
    ref = ref - ref.mean()
    ref_norm = np.sqrt((ref * ref).sum())
    if ref_norm == 0:
        return 0.0
    size = 1 << math.ceil(math.log2(len(rec) + len(ref)))
    dots = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref, size)), size)[: len(rec) - len(ref) + 1]
    window = np.ones(len(ref))
    sums = np.convolve(rec, window, "valid")
    squares = np.convolve(rec * rec, window, "valid")
    energy = np.maximum(squares - sums * sums / len(ref), 1e-9)
    return float((dots / (ref_norm * np.sqrt(energy))).max())


def _ulaw_table() -> list[int]:
    table = []
    for byte in range(256):
        value = ~byte & 0xFF
        sign, exponent, mantissa = value & 0x80, (value >> 4) & 0x07, value & 0x0F
        sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
        table.append(-sample if sign else sample)
    return table


def _alaw_table() -> list[int]:
    table = []
    for byte in range(256):
        value = byte ^ 0x55
        sign, exponent, mantissa = value & 0x80, (value >> 4) & 0x07, value & 0x0F
        sample = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
        table.append(sample if sign else -sample)
    return table


_G711 = {0: _ulaw_table(), 8: _alaw_table()}


def g711_to_pcm16(payload: bytes, payload_type: int) -> bytes:
    """Decode PCMU (payload type 0) or PCMA (8) to 16-bit PCM; a test-side decoder independent of our codec."""
    table = _G711[payload_type]
    return struct.pack(f"<{len(payload)}h", *(table[b] for b in payload))


# --------------------------------------------------------------------------------------------------------------
# RTP listener


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    source: tuple[str, int]
    arrived: float


def parse_rtp(data: bytes, source: tuple[str, int] = ("", 0), arrived: float = 0.0) -> RtpPacket | None:
    """An RTP packet (RFC 3550), or None for anything else (RTCP, garbage)."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    payload_type = data[1] & 0x7F
    if 72 <= payload_type <= 76:  # RTCP sender/receiver reports share the port when rtcp-mux is on
        return None
    csrc_count, has_extension, has_padding = data[0] & 0x0F, data[0] & 0x10, data[0] & 0x20
    offset = 12 + 4 * csrc_count
    if has_extension:
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data) - (data[-1] if has_padding else 0)
    if offset > end:
        return None
    sequence, timestamp, ssrc = struct.unpack_from("!HII", data, 2)
    return RtpPacket(payload_type, bool(data[1] & 0x80), sequence, timestamp, ssrc, data[offset:end], source, arrived)


_EVENT_DIGITS = "0123456789*#ABCD"


@dataclass
class TelephoneEvent:
    """One key press carried as RFC 4733 telephone-event packets (all packets share one RTP timestamp)."""

    digit: str
    timestamp: int
    duration: int = 0  # in samples (8 kHz: 800 = 100 ms), the largest reported
    ended: bool = False
    packets: int = 0
    end_packets: int = 0


def telephone_events(packets: Sequence[RtpPacket], payload_type: int = 101) -> list[TelephoneEvent]:
    """Group telephone-event packets into key presses, in the order they started."""
    events: dict[tuple[int, int], TelephoneEvent] = {}
    for packet in packets:
        if packet.payload_type != payload_type or len(packet.payload) < 4:
            continue
        code, flags, duration = packet.payload[0], packet.payload[1], struct.unpack_from("!H", packet.payload, 2)[0]
        digit = _EVENT_DIGITS[code] if code < len(_EVENT_DIGITS) else f"event-{code}"
        event = events.setdefault((packet.ssrc, packet.timestamp), TelephoneEvent(digit, packet.timestamp))
        event.packets += 1
        event.duration = max(event.duration, duration)
        if flags & 0x80:
            event.ended = True
            event.end_packets += 1
    return list(events.values())


class RtpListener(asyncio.DatagramProtocol):
    """Collects every RTP packet sent to one UDP port on 127.0.0.1."""

    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    @classmethod
    async def start(cls, port: int = 0) -> RtpListener:
        loop = asyncio.get_running_loop()
        transport, listener = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", port))
        listener.port = int(transport.get_extra_info("sockname")[1])
        return listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        packet = parse_rtp(data, addr, time.monotonic())
        if packet is not None:
            self.packets.append(packet)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def audio_pcm(self) -> bytes:
        """The G.711 audio received, decoded and in arrival order (no jitter buffer: loopback does not reorder)."""
        return b"".join(g711_to_pcm16(p.payload, p.payload_type) for p in self.packets if p.payload_type in _G711)

    def events(self, payload_type: int = 101) -> list[TelephoneEvent]:
        return telephone_events(self.packets, payload_type)

    def digits(self, payload_type: int = 101) -> str:
        return "".join(event.digit for event in self.events(payload_type))


# --------------------------------------------------------------------------------------------------------------
# SIPp


# SIPp's exit codes (sipp.1): 0 all calls succeeded, 1 at least one failed, 97 exit on an internal command,
# 99 normal exit without calls processed, 255 (-1) fatal error, 254 (-2) fatal error binding a socket.
SIPP_EXIT_MEANINGS = {
    0: "all calls succeeded",
    1: "at least one call failed",
    97: "exit on internal command",
    99: "normal exit without calls processed",
    254: "fatal error binding a socket",
    255: "fatal error",
}


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    stdout: str
    stderr: str
    log_dir: Path
    stat_path: Path
    error_log: Path
    message_log: Path | None
    screen_log: Path
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful > 0 and not self.timed_out

    def describe(self) -> str:
        """What went wrong, for an assertion message: exit code, counts, SIPp's error log and last screen."""
        meaning = SIPP_EXIT_MEANINGS.get(self.returncode, "?")
        parts = [
            f"sipp exit {self.returncode} ({meaning}), {self.successful} successful, {self.failed} failed"
            + (", killed after timeout" if self.timed_out else ""),
            f"logs in {self.log_dir}",
        ]
        for label, path in (("errors", self.error_log), ("screen", self.screen_log)):
            if path.exists():
                parts.append(f"--- {label} ---\n{_tail(path.read_text(errors='replace'), 4000)}")
        if self.stderr.strip():
            parts.append(f"--- stderr ---\n{_tail(self.stderr, 2000)}")
        return "\n".join(parts)

    def messages(self) -> str:
        """The SIP messages SIPp sent and received (empty unless traced)."""
        if self.message_log is None or not self.message_log.exists():
            return ""
        return self.message_log.read_text(errors="replace")


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def scenario_path(scenario: str | os.PathLike[str]) -> Path | None:
    """Our scenario file for a name (`uac_cancel`, `uac_cancel.xml`) or a path; None for a built-in (`uas`)."""
    candidate = Path(scenario)
    if candidate.suffix == ".xml" and candidate.is_absolute():
        return candidate
    for path in (SIPP_DIR / candidate, SIPP_DIR / f"{candidate}.xml", candidate):
        if path.suffix == ".xml" and path.exists():
            return path.resolve()
    if isinstance(scenario, str) and "/" not in scenario and not scenario.endswith(".xml"):
        return None  # one of SIPp's built-in scenarios: uac, uas, uac_pcap, regexp, branchc ...
    raise FileNotFoundError(f"no SIPp scenario {scenario!r} (looked in {SIPP_DIR})")


def _parse_stat_counts(stat_path: Path) -> tuple[int, int] | None:
    """SuccessfulCall(C) and FailedCall(C) from the last row of SIPp's -trace_stat CSV (';'-separated)."""
    if not stat_path.exists():
        return None
    rows = [line.split(";") for line in stat_path.read_text(errors="replace").splitlines() if line.strip()]
    if len(rows) < 2:
        return None
    header, last = rows[0], rows[-1]
    try:
        return int(last[header.index("SuccessfulCall(C)")]), int(last[header.index("FailedCall(C)")])
    except (ValueError, IndexError):
        return None


def _parse_screen_counts(text: str) -> tuple[int, int]:
    """The same counts from the statistics screen, when the CSV is missing."""
    successful = failed = 0
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) == 3 and cells[0] in ("Successful call", "Failed call") and cells[2].isdigit():
            if cells[0] == "Successful call":
                successful = int(cells[2])
            else:
                failed = int(cells[2])
    return successful, failed


class SippProcess:
    """One running SIPp: a UAC placing calls at `target`, or a UAS (no target) waiting on `local_port`."""

    def __init__(
        self,
        scenario: str | os.PathLike[str],
        target: str | None,
        *,
        calls: int = 1,
        rate: float | None = None,
        concurrent: int | None = None,
        extra: Sequence[str] = (),
        timeout: float = 60,
        local_port: int | None = None,
        media_port: int | None = None,
        keys: Mapping[str, str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        trace_messages: bool = True,
    ) -> None:
        self.scenario = scenario
        self.target = target
        self.timeout = timeout
        self.local_port = local_port or free_udp_port()
        # SIPp binds its media port and the three above it (RTP/RTCP, audio and video) for echo and pcap play.
        self.media_port = media_port or free_udp_port(span=4)
        path = scenario_path(scenario)
        name = path.stem if path else str(scenario)
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix=f"sipp-{name}-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{name}-{'uac' if target else 'uas'}-{self.local_port}"
        self.stat_path = self.log_dir / f"{stem}-stat.csv"
        self.error_log = self.log_dir / f"{stem}-errors.log"
        self.screen_log = self.log_dir / f"{stem}-screen.log"
        self.message_log = self.log_dir / f"{stem}-messages.log" if trace_messages else None
        merged_keys = {**DEFAULT_SIPP_KEYS, **(keys or {})}
        argv = ["sipp"]
        if target:
            argv.append(target)
        argv += ["-sf", str(path)] if path else ["-sn", str(scenario)]
        argv += ["-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(self.local_port), "-mp", str(self.media_port)]
        argv += ["-m", str(calls), "-nostdin", "-timeout", f"{timeout:g}s", "-timeout_error"]
        if rate is not None:
            argv += ["-r", f"{rate:g}"]
        if concurrent is not None:
            argv += ["-l", str(concurrent)]
        argv += ["-trace_stat", "-stf", str(self.stat_path), "-trace_err", "-error_file", str(self.error_log)]
        argv += ["-trace_screen", "-screen_file", str(self.screen_log)]
        if self.message_log is not None:
            argv += ["-trace_msg", "-message_file", str(self.message_log)]
        for key, value in merged_keys.items():
            argv += ["-key", key, value]
        argv += list(extra)
        self.argv = argv
        self._process: asyncio.subprocess.Process | None = None
        self._communicate: asyncio.Task[tuple[bytes, bytes]] | None = None

    async def start(self) -> SippProcess:
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.log_dir,
        )
        # Drain both pipes from the start: SIPp redraws its screen on stdout and would block on a full pipe.
        self._communicate = asyncio.ensure_future(self._process.communicate())
        if self.target is None:
            await self._wait_listening()
        return self

    async def _wait_listening(self) -> None:
        deadline = time.monotonic() + 5
        while _port_free(self.local_port, socket.SOCK_DGRAM):
            assert self._communicate is not None
            if self._communicate.done() or time.monotonic() > deadline:
                result = await self.wait(timeout=1)
                raise RuntimeError(f"SIPp UAS did not start listening:\n{result.describe()}")
            await asyncio.sleep(0.02)

    async def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to exit (killing it after `timeout`, default its own -timeout plus 10 s)."""
        assert self._process is not None and self._communicate is not None, "start() first"
        timed_out = False
        try:
            stdout, stderr = await asyncio.wait_for(
                asyncio.shield(self._communicate), timeout if timeout is not None else self.timeout + 10
            )
        except TimeoutError:
            timed_out = True
            self.kill()
            stdout, stderr = await self._communicate
        returncode = self._process.returncode
        assert returncode is not None
        text = stdout.decode(errors="replace")
        counts = _parse_stat_counts(self.stat_path)
        if counts is None:
            screen = self.screen_log.read_text(errors="replace") if self.screen_log.exists() else text
            counts = _parse_screen_counts(screen)
        return SippResult(
            returncode=returncode % 256,
            successful=counts[0],
            failed=counts[1],
            stdout=text,
            stderr=stderr.decode(errors="replace"),
            log_dir=self.log_dir,
            stat_path=self.stat_path,
            error_log=self.error_log,
            message_log=self.message_log,
            screen_log=self.screen_log,
            timed_out=timed_out,
        )

    def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    async def aclose(self) -> None:
        """Stop it if still running (a UAS the test no longer needs) and reap it."""
        if self._process is None:
            return
        if self._process.returncode is None:
            self.kill()
        if self._communicate is not None:
            with contextlib.suppress(Exception):
                await self._communicate


async def start_sipp(scenario: str | os.PathLike[str], target: str | None = None, **options: Any) -> SippProcess:
    """Start SIPp and return at once (a UAS: once its port is bound). Options as for `run_sipp`."""
    return await SippProcess(scenario, target, **options).start()


async def run_sipp(
    scenario: str | Path,
    target: str,
    *,
    calls: int = 1,
    rate: float | None = None,
    concurrent: int | None = None,
    extra: Sequence[str] = (),
    timeout: float = 60,
    local_port: int | None = None,
    media_port: int | None = None,
    keys: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    trace_messages: bool = True,
) -> SippResult:
    """Run a SIPp UAC scenario against `target` ("127.0.0.1:5080") until its `calls` calls are done.

    `scenario` is one of ours by name (`uac_cancel`) or path, or a SIPp built-in (`uac`). `rate` is calls per
    second (-r), `concurrent` the most calls at once (-l), `extra` further SIPp options (`-d 2000`,
    `-s 95588`, `-recv_timeout 5000`). `keys` adds -key values (`caller_number` has a default). SIPp runs in
    the foreground without a terminal (-nostdin) and quits by itself after `timeout` seconds (-timeout,
    counted as failure); the counts come from its -trace_stat CSV.
    """
    process = SippProcess(
        scenario,
        target,
        calls=calls,
        rate=rate,
        concurrent=concurrent,
        extra=extra,
        timeout=timeout,
        local_port=local_port,
        media_port=media_port,
        keys=keys,
        log_dir=log_dir,
        trace_messages=trace_messages,
    )
    await process.start()
    return await process.wait()


# --------------------------------------------------------------------------------------------------------------
# baresip


class BaresipError(RuntimeError):
    pass


@dataclass
class BaresipCaller:
    """A scripted baresip 1.0.0 phone: dials (or, with answer_mode="auto", answers), plays a WAV, presses keys
    as RFC 4733 events, records what it hears, hangs up.

    Use as `async with BaresipCaller(tmp_path, audio=pcm) as phone: await phone.call(uri) ...`.
    """

    workdir: Path
    caller_number: str = "13800138000"
    audio: bytes | None = None  # 8 kHz 16-bit mono PCM to send; padded with silence. None: silence only
    pad_s: float = 30.0
    answer_mode: str = "manual"  # "auto" makes it a callee that answers every call at once
    codecs: Sequence[str] = ("PCMU", "PCMA")  # offer order: the first is preferred
    start_timeout: float = 10.0
    sip_port: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)  # every ctrl_tcp event, as JSON objects
    output: list[str] = field(default_factory=list)  # baresip's stdout/stderr lines

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.config_dir = self.workdir / "config"
        self.record_dir = self.workdir / "recordings"
        self.source_wav = self.workdir / "source.wav"
        self.ctrl_port = 0
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Condition()
        self._token = 0

    # -- lifecycle ----------------------------------------------------------------------------------------------

    @property
    def aor(self) -> str:
        return f"sip:{self.caller_number}@127.0.0.1"

    @property
    def uri(self) -> str:
        """Where to reach this phone (for a callee)."""
        return f"sip:{self.caller_number}@127.0.0.1:{self.sip_port}"

    def _write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.record_dir.mkdir(parents=True, exist_ok=True)
        padded_wav(self.audio or b"", self.source_wav, self.pad_s)
        # sip_listen P also takes TCP P+1 for TLS, hence the span of two.
        self.sip_port = self.sip_port or free_udp_port(span=2, tcp_too=True)
        self.ctrl_port = free_tcp_port()
        config = f"""\
# Written by tests/ivr/peers.py for one test; see its docstring for why each line is here.
poll_method epoll
sip_listen 127.0.0.1:{self.sip_port}
audio_source aufile,{self.source_wav}
audio_player aubridge,nil
audio_alert aubridge,nil
statmode_default off
ringback_disabled yes
menu_bell no
module_path {BARESIP_MODULES}
module g711.so
module aufile.so
module aubridge.so
module sndfile.so
snd_path {self.record_dir}
module_tmp account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}
"""
        (self.config_dir / "config").write_text(config)
        params = ["regint=0", f"answermode={self.answer_mode}", f"audio_codecs={','.join(self.codecs)}"]
        (self.config_dir / "accounts").write_text(f"<{self.aor}>;{';'.join(params)}\n")

    async def start(self) -> BaresipCaller:
        if not baresip_available():
            raise BaresipError("baresip (with /usr/lib/baresip/modules/ctrl_tcp.so) is not installed")
        self._write_config()
        self._process = await asyncio.create_subprocess_exec(
            "baresip",
            "-f",
            str(self.config_dir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.workdir,
        )
        self._tasks.append(asyncio.ensure_future(self._read_output()))
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process.returncode is not None:
                await asyncio.sleep(0.1)  # let the output reader catch up
                raise BaresipError(f"baresip exited with {self._process.returncode}:\n{self.transcript()}")
            try:
                self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    await self.close()
                    raise BaresipError(f"baresip's ctrl_tcp never listened:\n{self.transcript()}") from None
                await asyncio.sleep(0.05)
        self._tasks.append(asyncio.ensure_future(self._read_control()))
        await self._wait_output("baresip is ready.", self.start_timeout)
        return self

    async def __aenter__(self) -> BaresipCaller:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop baresip (SIGTERM ends its calls cleanly; SIGKILL after 3 s)."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()
                await self._process.wait()
        for task in self._tasks:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BaresipError("baresip closed"))
        self._pending.clear()

    # -- reading -----------------------------------------------------------------------------------------------

    async def _read_output(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for raw in self._process.stdout:
            # The menu module redraws a status line with \r; keep what is between the redraws.
            for line in raw.decode(errors="replace").replace("\r", "\n").splitlines():
                if line.strip():
                    self.output.append(line.rstrip())
            async with self._changed:
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def _read_control(self) -> None:
        assert self._reader is not None
        while True:
            try:
                size = int((await self._reader.readuntil(b":"))[:-1])
                frame = await self._reader.readexactly(size + 1)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                break
            if frame[-1:] != b",":
                break
            message = json.loads(frame[:-1])
            if message.get("response"):
                future = self._pending.pop(str(message.get("token")), None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif message.get("event"):
                self.events.append(message)
                async with self._changed:
                    self._changed.notify_all()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BaresipError("baresip closed its control connection"))

    async def _wait_output(self, text: str, timeout: float) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: any(text in line for line in self.output)), timeout
                )
            except TimeoutError:
                raise BaresipError(f"baresip never printed {text!r}:\n{self.transcript()}") from None

    def transcript(self) -> str:
        return "\n".join(self.output[-80:])

    def event_types(self) -> list[str]:
        return [str(event.get("type")) for event in self.events]

    async def wait_event(self, event_type: str, timeout: float = 10.0, *, after: int = 0) -> dict[str, Any]:
        """The first event of `event_type` at index >= `after` in `events`, waiting for it if need be."""

        def found() -> dict[str, Any] | None:
            return next((e for e in self.events[after:] if e.get("type") == event_type), None)

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), timeout)
            except TimeoutError:
                raise BaresipError(
                    f"no {event_type} within {timeout} s; events: {self.event_types()}\n{self.transcript()}"
                ) from None
        event = found()
        assert event is not None
        return event

    # -- commands ----------------------------------------------------------------------------------------------

    async def command(self, name: str, params: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Run one menu command over ctrl_tcp; raises BaresipError when baresip answers ok=false."""
        if self._writer is None:
            raise BaresipError("baresip is not running")
        self._token += 1
        token = str(self._token)
        message: dict[str, Any] = {"command": name, "token": token}
        if params is not None:
            message["params"] = params
        body = json.dumps(message).encode()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        self._writer.write(b"%d:%s," % (len(body), body))
        await self._writer.drain()
        response = await asyncio.wait_for(future, timeout)
        if not response.get("ok"):
            raise BaresipError(f"baresip refused {name} {params or ''}: {response.get('data')!r}")
        return response

    async def call(self, uri: str) -> None:
        """Dial `uri` ("sip:95588@127.0.0.1:5080"); returns once the INVITE is on its way."""
        await self.command("dial", uri)

    async def wait_established(self, timeout: float = 10.0) -> dict[str, Any]:
        return await self.wait_event("CALL_ESTABLISHED", timeout)

    async def send_dtmf(self, digits: str, gap_s: float = 0.3) -> None:
        """Press each key (0-9, *, #) in turn: an RFC 4733 event, press then release, `gap_s` apart."""
        for index, digit in enumerate(digits):
            if digit not in "0123456789*#":
                raise ValueError(f"baresip 1.0.0 cannot send key {digit!r}")
            if index:
                await asyncio.sleep(gap_s)
            await self.command("sndcode", digit)

    async def hangup(self) -> None:
        await self.command("hangup")

    async def wait_closed(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the call to end (CALL_CLOSED; its `param` says why, e.g. "Connection reset by peer")."""
        return await self.wait_event("CALL_CLOSED", timeout)

    # -- recordings --------------------------------------------------------------------------------------------

    def _newest(self, pattern: str) -> Path | None:
        files = sorted(self.record_dir.glob(pattern), key=lambda path: path.stat().st_mtime)
        return files[-1] if files else None

    @property
    def recording_path(self) -> Path | None:
        """The WAV of what this phone heard in its latest call (complete once the call has closed)."""
        return self._newest("dump-*-dec.wav")

    @property
    def sent_audio_path(self) -> Path | None:
        """The WAV of what this phone sent in its latest call."""
        return self._newest("dump-*-enc.wav")

    def recording(self) -> bytes:
        """What this phone heard, as 8 kHz 16-bit PCM."""
        path = self.recording_path
        if path is None:
            raise BaresipError(f"no recording in {self.record_dir}:\n{self.transcript()}")
        return read_wav_pcm16(path)

    def received_digits(self) -> str:
        """The keys this phone received as RFC 4733 events (one CALL_DTMF_START event per press)."""
        return "".join(str(event.get("param", "")) for event in self.events if event.get("type") == "CALL_DTMF_START")

"""The SIP test harness proven against peers that exist: SIPp's own UAS, our UAS scenarios, baresip, an RTP socket.

Each UAC scenario in tests/ivr/sipp runs against a UAS that behaves as the phone line's user agent will, so a
failure later points at the user agent, not at the scenario. Only loopback is used; run under
tools/run-in-netns.sh to enforce it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.ivr.peers import (
    SIPP_DIR,
    BaresipCaller,
    RtpListener,
    SippProcess,
    SippResult,
    baresip_available,
    best_correlation,
    in_netns,
    netns_available,
    padded_wav,
    parse_rtp,
    read_wav_pcm16,
    run_sipp,
    sine_pcm16,
    sipp_available,
    start_sipp,
    telephone_events,
)

pytestmark = pytest.mark.sip

REPO = Path(__file__).resolve().parents[2]
RUN_IN_NETNS = REPO / "tools" / "run-in-netns.sh"

needs_sipp = pytest.mark.skipif(not sipp_available(), reason="SIPp is not installed (apt-get install sip-tester)")
needs_baresip = pytest.mark.skipif(
    not baresip_available(), reason="baresip is not installed (apt-get install baresip-core)"
)
needs_netns = pytest.mark.skipif(not netns_available(), reason="cannot create network namespaces (unshare -n)")


def target(uas: SippProcess) -> str:
    return f"127.0.0.1:{uas.local_port}"


async def run_pair(
    uac_scenario: str,
    uas_scenario: str,
    tmp_path: Path,
    *,
    calls: int = 1,
    uas_keys: dict[str, str] | None = None,
    extra: Sequence[str] = (),
) -> tuple[SippResult, SippResult]:
    """Run a UAC scenario against a UAS scenario (ours by name, or SIPp's built-in `uas`); both results."""
    uas = await start_sipp(uas_scenario, None, calls=calls, timeout=30, keys=uas_keys, log_dir=tmp_path / "uas")
    try:
        uac = await run_sipp(uac_scenario, target(uas), calls=calls, timeout=30, extra=extra, log_dir=tmp_path / "uac")
        return uac, await uas.wait(timeout=15)
    finally:
        await uas.aclose()


def branches(messages: str, first_line: str) -> list[str]:
    """The Via branch of each message in a SIPp message log whose start line begins with `first_line`."""
    found = []
    for block in messages.split("\n\n"):
        lines = block.strip().splitlines()
        if lines and lines[0].startswith(first_line):
            via = next(line for line in lines if line.lower().startswith("via:"))
            match = re.search(r"branch=([^;\s]+)", via)
            assert match, via
            found.append(match.group(1))
    return found


# --------------------------------------------------------------------------------------------------------------
# The namespace script


@needs_netns
def test_run_in_netns_leaves_only_loopback_and_returns_the_commands_status() -> None:
    script = "ip -o link show; echo in_netns=$BANKBOT_IN_NETNS; exit 3"
    done = subprocess.run([str(RUN_IN_NETNS), "sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 3, done.stderr
    links = [line.split(":")[1].strip() for line in done.stdout.splitlines() if re.match(r"\d+:", line)]
    assert links == ["lo"]
    assert "in_netns=1" in done.stdout


@needs_netns
def test_run_in_netns_answers_77_where_namespaces_are_refused() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop to a user that may not unshare")
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(RUN_IN_NETNS), "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 77, (done.stdout, done.stderr)
    assert "network namespace" in done.stderr


def test_in_netns_follows_the_scripts_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANKBOT_IN_NETNS", "1")
    assert in_netns()
    monkeypatch.delenv("BANKBOT_IN_NETNS")
    assert not in_netns()


# --------------------------------------------------------------------------------------------------------------
# Test-side parsers


@given(
    payload_type=st.integers(0, 127).filter(lambda pt: not 72 <= pt <= 76),
    marker=st.booleans(),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    extension=st.one_of(st.none(), st.binary(max_size=12).map(lambda b: b + b"\0" * (-len(b) % 4))),
    padding=st.integers(0, 8),
    payload=st.binary(max_size=200),
)
def test_parse_rtp_recovers_the_payload_whatever_the_header_carries(
    payload_type: int,
    marker: bool,
    sequence: int,
    timestamp: int,
    csrcs: list[int],
    extension: bytes | None,
    padding: int,
    payload: bytes,
) -> None:
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension is not None else 0) | len(csrcs)
    packet = struct.pack("!BBHII", first, (0x80 if marker else 0) | payload_type, sequence, timestamp, 0x1234)
    packet += b"".join(struct.pack("!I", csrc) for csrc in csrcs)
    if extension is not None:
        packet += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    packet += payload + (b"\0" * (padding - 1) + bytes([padding]) if padding else b"")
    parsed = parse_rtp(packet)
    assert parsed is not None
    assert (parsed.payload_type, parsed.marker, parsed.sequence, parsed.timestamp) == (
        payload_type,
        marker,
        sequence,
        timestamp,
    )
    assert parsed.payload == payload


def test_telephone_events_group_packets_into_presses() -> None:
    def event(code: int, end: bool, duration: int, timestamp: int) -> bytes:
        body = struct.pack("!BBH", code, (0x80 if end else 0) | 10, duration)
        return struct.pack("!BBHII", 0x80, 101, 1, timestamp, 7) + body

    raw = [event(1, False, 160, 100), event(1, False, 320, 100), event(1, True, 480, 100), event(1, True, 480, 100)]
    raw += [event(11, False, 160, 900), event(11, True, 320, 900)]
    packets = [p for p in (parse_rtp(data) for data in raw) if p is not None]
    presses = telephone_events(packets)
    assert [(e.digit, e.duration, e.ended, e.end_packets) for e in presses] == [
        ("1", 480, True, 2),
        ("#", 320, True, 1),
    ]


def test_padded_wav_appends_the_silence(tmp_path: Path) -> None:
    tone = sine_pcm16(1000, 0.5)
    pcm = read_wav_pcm16(padded_wav(tone, tmp_path / "tone.wav", pad_s=2.0))
    assert pcm[: len(tone)] == tone
    assert len(pcm) == len(tone) + 2 * 8000 * 2
    assert set(pcm[len(tone) :]) == {0}
    assert best_correlation(tone, b"\0" * 1000 + pcm) > 0.999


# --------------------------------------------------------------------------------------------------------------
# SIPp scenarios against matching UAS


def test_every_scenario_file_is_well_formed_xml() -> None:
    import xml.etree.ElementTree as ElementTree

    scenarios = sorted(SIPP_DIR.glob("*.xml"))
    assert {path.stem for path in scenarios} >= {
        "uac_info_dtmf",
        "uac_cancel",
        "uac_bye_mid_prompt",
        "uac_reinvite_hold",
        "uac_options",
        "uac_load",
        "uac_load_rtp",
    }
    for path in scenarios:
        root = ElementTree.parse(path).getroot()
        assert root.tag == "scenario" and root.get("name") == path.stem, path


@needs_sipp
async def test_options_scenario_gets_its_200(tmp_path: Path) -> None:
    uac, uas = await run_pair("uac_options", "uas_options", tmp_path)
    assert uac.ok, uac.describe()
    assert uas.ok, uas.describe()


@needs_sipp
async def test_info_dtmf_scenario_sends_1_2_3_pound_as_dtmf_relay(tmp_path: Path) -> None:
    uac, uas = await run_pair("uac_info_dtmf", "uas_info_dtmf", tmp_path)
    assert uac.ok, uac.describe()
    assert uas.ok, uas.describe()  # the UAS checked Signal=1, 2, 3 and # in turn
    assert "Content-Type: application/dtmf-relay" in uac.messages()
    assert "Duration=160" in uac.messages()


@needs_sipp
async def test_cancel_scenario_reuses_the_invite_branch_for_cancel_and_ack(tmp_path: Path) -> None:
    uac, uas = await run_pair("uac_cancel", "uas_cancel", tmp_path)
    assert uac.ok, uac.describe()
    assert uas.ok, uas.describe()
    log = uas.messages()
    (invite,) = branches(log, "INVITE ")
    assert branches(log, "CANCEL ") == [invite]
    assert branches(log, "ACK ") == [invite]
    assert "CSeq: 1 CANCEL" in log and "CSeq: 1 ACK" in log and "SIP/2.0 487" in log


@needs_sipp
async def test_reinvite_hold_scenario_accepts_a_recvonly_answer(tmp_path: Path) -> None:
    uac, uas = await run_pair("uac_reinvite_hold", "uas_reinvite_hold", tmp_path, uas_keys={"hold_answer": "recvonly"})
    assert uac.ok, uac.describe()
    assert uas.ok, uas.describe()
    log = uac.messages()
    assert log.count("CSeq: 2 INVITE") >= 1 and log.count("CSeq: 3 INVITE") >= 1
    call_ids = set(re.findall(r"^Call-ID: (.+)$", log, re.MULTILINE))
    assert len(call_ids) == 1  # the re-INVITEs stay in the dialog


@needs_sipp
async def test_reinvite_hold_scenario_fails_when_hold_is_answered_sendrecv(tmp_path: Path) -> None:
    uas = await start_sipp(
        "uas_reinvite_hold", None, timeout=10, keys={"hold_answer": "sendrecv"}, log_dir=tmp_path / "uas"
    )
    try:
        uac = await run_sipp("uac_reinvite_hold", target(uas), timeout=10, log_dir=tmp_path / "uac")
    finally:
        await uas.aclose()
    assert not uac.ok
    assert (uac.returncode, uac.successful, uac.failed) == (1, 0, 1), uac.describe()


@needs_sipp
async def test_bye_mid_prompt_scenario_against_sipps_own_uas(tmp_path: Path) -> None:
    uac, uas = await run_pair("uac_bye_mid_prompt", "uas", tmp_path)
    assert uac.ok, uac.describe()
    assert uas.ok, uas.describe()


@needs_sipp
async def test_load_scenario_places_concurrent_calls_at_a_rate(tmp_path: Path) -> None:
    uas = await start_sipp("uas", None, calls=6, timeout=30, log_dir=tmp_path / "uas")
    try:
        uac = await run_sipp(
            "uac_load", target(uas), calls=6, rate=20, concurrent=3, extra=["-d", "300"], log_dir=tmp_path / "uac"
        )
    finally:
        await uas.aclose()  # SIPp's own UAS lingers 4 s per call (timewait); the UAC's counts are the proof
    assert uac.ok, uac.describe()
    assert uac.successful == 6


@needs_sipp
async def test_load_rtp_scenario_plays_pcma_from_the_pcap(tmp_path: Path) -> None:
    pcap = Path("/usr/share/sip-tester/g711a.pcap")
    if not pcap.exists():
        pytest.skip(f"{pcap} is not installed (Debian's sip-tester ships it)")
    listener = await RtpListener.start()
    try:
        uac, uas = await run_pair(
            "uac_load_rtp", "uas_answer", tmp_path, uas_keys={"rtp_port": str(listener.port)}, extra=["-d", "2000"]
        )
    finally:
        listener.close()
    assert uac.ok, uac.describe()
    assert uas.ok, uas.describe()
    pcma = [packet for packet in listener.packets if packet.payload_type == 8]
    assert len(pcma) >= 50, (
        f"{len(listener.packets)} RTP packets, payload types { ({p.payload_type for p in listener.packets}) }"
    )
    # Debian's recording carries 30 ms packets (240 bytes), whatever a=ptime says: a receiver must cope.
    assert {len(packet.payload) for packet in pcma} == {240}


# --------------------------------------------------------------------------------------------------------------
# baresip


@needs_sipp
@needs_baresip
async def test_baresip_call_to_sipps_own_uas_is_established_and_closed(tmp_path: Path) -> None:
    uas = await start_sipp("uas", None, timeout=30, log_dir=tmp_path / "uas")
    try:
        async with BaresipCaller(tmp_path / "phone") as phone:
            await phone.call(f"sip:95588@{target(uas)}")
            await phone.wait_established()
            await asyncio.sleep(0.3)
            await phone.hangup()
            closed = await phone.wait_closed()
        result = await uas.wait(timeout=15)
    finally:
        await uas.aclose()
    assert result.ok, result.describe()
    assert phone.event_types().index("CALL_ESTABLISHED") < phone.event_types().index("CALL_CLOSED")
    assert closed.get("param") == "Connection reset by user"


@needs_sipp
@needs_baresip
async def test_baresip_keys_arrive_as_rfc4733_events_and_its_audio_as_pcmu(tmp_path: Path) -> None:
    tone = sine_pcm16(1000, 1.0)
    listener = await RtpListener.start()
    uas = await start_sipp(
        "uas_answer", None, timeout=30, keys={"rtp_port": str(listener.port)}, log_dir=tmp_path / "uas"
    )
    try:
        async with BaresipCaller(tmp_path / "phone", audio=tone) as phone:
            await phone.call(f"sip:95588@{target(uas)}")
            await phone.wait_established()
            await asyncio.sleep(1.2)  # the tone has gone out
            await phone.send_dtmf("12#*0", gap_s=0.3)
            await asyncio.sleep(0.4)
            await phone.hangup()
            await phone.wait_closed()
        result = await uas.wait(timeout=15)
    finally:
        await uas.aclose()
        listener.close()
    assert result.ok, result.describe()
    presses = listener.events()
    assert "".join(event.digit for event in presses) == "12#*0"
    for event in presses:
        assert event.ended and event.end_packets >= 1
        assert event.duration >= 800  # at least 100 ms at 8 kHz (baresip 1.0.0 sends 180 ms)
    assert {packet.payload_type for packet in listener.packets} == {0, 101}  # PCMU preferred, then events
    assert best_correlation(tone, listener.audio_pcm()) > 0.99


@needs_baresip
async def test_baresip_callee_records_what_the_caller_plays_and_hears_its_keys(tmp_path: Path) -> None:
    tone = sine_pcm16(1000, 1.0)
    async with (
        BaresipCaller(tmp_path / "callee", caller_number="95588", answer_mode="auto") as callee,
        BaresipCaller(tmp_path / "caller", audio=tone) as caller,
    ):
        await caller.call(callee.uri)
        await caller.wait_established()
        await callee.wait_established()
        await asyncio.sleep(1.2)
        await caller.send_dtmf("123#")
        await asyncio.sleep(0.3)
        await caller.hangup()
        await caller.wait_closed()
        closed = await callee.wait_closed()
        assert closed.get("param") == "Connection reset by peer"
        assert callee.received_digits() == "123#"
        assert callee.recording_path is not None and caller.recording_path is not None
        assert best_correlation(tone, callee.recording()) > 0.99

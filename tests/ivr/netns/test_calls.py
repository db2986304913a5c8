"""Calls from Debian's baresip and SIPp to the whole stack (Rasa, actions, gateway with the phone line)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bankbot.voice_bench import korean_speech
from bankcore.database import unit_of_work
from bankcore.models import CrossChannelEvent
from channels import messages
from channels.binding import ChannelUser, guest_sender_id
from tests.conftest import LiveStack
from tests.ivr.peers import BaresipCaller, best_correlation, run_sipp, start_sipp
from voice.speakable import speakable
from voice.tts import EspeakPinyinSynthesizer

# C003's greeting asks no question of its own (the demo foresight model is not confident for him), so the
# keypad menu follows his PIN: 1 is the balance.
C003_PHONE, C003_PIN = "13700133221", "864209"
C002_PHONE = "13911022334"


def target(stack: LiveStack) -> str:
    return f"127.0.0.1:{stack.settings.sip_port}"


def uri(stack: LiveStack) -> str:
    return f"sip:95588@{target(stack)}"


def first_seconds(pcm: bytes, seconds: float) -> bytes:
    """The first `seconds` of speech in 8 kHz PCM, leading silence skipped (whole samples)."""
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples) > 300)
    start = int(loud[0]) if loud.size else 0
    return samples[start : start + int(8000 * seconds)].tobytes()


def tracker(stack: LiveStack, sender_id: str) -> dict[str, Any]:
    url = f"{stack.rasa_url}/conversations/{sender_id}/tracker?token={stack.rasa_token}"
    with urllib.request.urlopen(url, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def restart(stack: LiveStack, sender_id: str) -> None:
    url = f"{stack.rasa_url}/conversations/{sender_id}/tracker/events?token={stack.rasa_token}"
    body = json.dumps({"event": "restart"}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=30).close()


def ivr_stats(stack: LiveStack) -> dict[str, Any]:
    with urllib.request.urlopen(f"{stack.gateway_url}/ivr/stats", timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


async def until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def bot_texts(stack: LiveStack, sender_id: str) -> list[str]:
    return [e.get("text") or "" for e in tracker(stack, sender_id)["events"] if e.get("event") == "bot"]


def call_event(stack: LiveStack, customer_id: str) -> CrossChannelEvent | None:
    with unit_of_work(stack.db_session_factory) as session:
        return (
            session.query(CrossChannelEvent)
            .filter(CrossChannelEvent.customer_id == customer_id, CrossChannelEvent.type == "call_ended")
            .order_by(CrossChannelEvent.id.desc())
            .first()
        )


async def test_baresip_hears_the_greeting_keys_the_pin_and_checks_the_balance(
    phone_stack: LiveStack, tmp_path: Path
) -> None:
    restart(phone_stack, "ivr:C003")
    async with BaresipCaller(tmp_path / "phone", caller_number=C003_PHONE, pad_s=60.0) as phone:
        await phone.call(uri(phone_stack))
        await phone.wait_established(timeout=15)
        await until(lambda: bot_texts(phone_stack, "ivr:C003"), 30, "the greeting")
        # Keys pressed while the greeting and the PIN prompt play are taken; the prompts play on.
        await phone.send_dtmf(C003_PIN, gap_s=0.25)
        await asyncio.sleep(4.0)
        await phone.send_dtmf("1")  # the menu that follows the PIN: 1 is the balance
        await until(
            lambda: any("余额" in text and "元" in text for text in bot_texts(phone_stack, "ivr:C003")[1:]),
            30,
            "the balance",
        )
        await asyncio.sleep(2.0)
        await phone.hangup()
        await phone.wait_closed(timeout=10)
        heard = phone.recording()

    event = await until(lambda: call_event(phone_stack, "C003"), 15, "the call's event")
    assert event.attrs["verified"] is True, "the six keys arrived exact: the PIN was accepted"
    texts = bot_texts(phone_stack, "ivr:C003")
    assert len(texts) >= 2, texts
    # The PIN went to verification only: not to Rasa's tracker, nor to any service's log.
    assert C003_PIN not in json.dumps(tracker(phone_stack, "ivr:C003"), ensure_ascii=False)
    for log in Path(phone_stack.settings.log_dir).glob("*"):
        assert C003_PIN not in log.read_text(errors="replace"), log.name
    # What the phone heard is the assistant's own speech: the opening prompt and the first sentence of Rasa's
    # greeting, rendered alone by the same voice, are found in the recording.
    synth = EspeakPinyinSynthesizer()
    for text in (messages.IVR_HELLO, texts[0]):
        first = next(part for part in re.split(r"(?<=[。！？!?\n])", speakable(text)) if part.strip())
        rendered = first_seconds(await synth.synthesize(first, 8000), 3.0)
        assert best_correlation(rendered, heard) > 0.9, first


async def test_speech_on_the_call_is_recognised_and_answered(phone_stack: LiveStack, tmp_path: Path) -> None:
    """A guest's spoken turn: the Korean model hears it (the Mandarin tier would understand it)."""
    caller = "13000000009"
    sender_id = guest_sender_id(ChannelUser(channel="ivr", identity_channel="phone", external_id="+86" + caller))
    speech = await korean_speech(8000, 3.0)
    silence = b"\x00\x00" * 8000 * 12  # the welcome is said first
    async with BaresipCaller(tmp_path / "phone", caller_number=caller, audio=silence + speech, pad_s=30.0) as phone:
        await phone.call(uri(phone_stack))
        await phone.wait_established(timeout=15)

        def voice_turn() -> bool:
            try:
                events = tracker(phone_stack, sender_id)["events"]
            except OSError:
                return False
            return any(
                e.get("event") == "user" and (e.get("metadata") or {}).get("input_mode") == "voice" for e in events
            )

        await until(voice_turn, 40, "a recognised voice turn in the guest's conversation")
        await phone.hangup()
        await phone.wait_closed(timeout=10)


async def test_sipp_info_keys_are_answered_200(phone_stack: LiveStack, tmp_path: Path) -> None:
    result = await run_sipp("uac_info_dtmf", target(phone_stack), extra=["-s", "95588"], log_dir=tmp_path, timeout=60)
    assert result.ok, result.describe()


async def test_sipp_cancel_before_answer(phone_stack: LiveStack, tmp_path: Path) -> None:
    result = await run_sipp("uac_cancel", target(phone_stack), extra=["-s", "95588"], log_dir=tmp_path, timeout=30)
    assert result.ok, result.describe()


async def test_sipp_caller_hangs_up_mid_prompt(phone_stack: LiveStack, tmp_path: Path) -> None:
    result = await run_sipp(
        "uac_bye_mid_prompt", target(phone_stack), extra=["-s", "95588"], log_dir=tmp_path, timeout=30
    )
    assert result.ok, result.describe()


async def test_sipp_hold_and_resume(phone_stack: LiveStack, tmp_path: Path) -> None:
    result = await run_sipp(
        "uac_reinvite_hold", target(phone_stack), extra=["-s", "95588"], log_dir=tmp_path, timeout=30
    )
    assert result.ok, result.describe()


async def test_sipp_options(phone_stack: LiveStack, tmp_path: Path) -> None:
    result = await run_sipp("uac_options", target(phone_stack), log_dir=tmp_path, timeout=20)
    assert result.ok, result.describe()


async def test_sipp_load_of_concurrent_calls(phone_stack: LiveStack, tmp_path: Path) -> None:
    result = await run_sipp(
        "uac_load",
        target(phone_stack),
        calls=30,
        rate=10,
        concurrent=10,
        extra=["-s", "95588", "-d", "3000"],
        log_dir=tmp_path,
        timeout=120,
        trace_messages=False,
    )
    assert result.ok and result.successful == 30, result.describe()
    await until(lambda: ivr_stats(phone_stack)["sip"]["active_calls"] == 0, 15, "every call to be over")


@pytest.mark.parametrize(
    ("message", "status"),
    [
        (
            "INVITE sip:95588@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-bad\r\n"
            "From: <sip:x@h>;tag=1\r\nTo: <sip:95588@h>\r\nCall-ID: bad-1\r\nCSeq: one INVITE\r\n"
            "Content-Length: 0\r\n\r\n",
            400,
        ),
        (
            "OPTIONS sip:95588@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-big\r\n"
            "From: <sip:x@h>;tag=1\r\nTo: <sip:95588@h>\r\nCall-ID: big-1\r\nCSeq: 1 OPTIONS\r\n"
            "X-Filler: " + "y" * 30_000 + "\r\nContent-Length: 0\r\n\r\n",
            413,
        ),
    ],
)
def test_malformed_and_oversize_messages_get_errors_not_crashes(
    phone_stack: LiveStack, message: str, status: int
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        sock.sendto(message.format(port=port).encode(), ("127.0.0.1", phone_stack.settings.sip_port))
        answer, _ = sock.recvfrom(65535)
    assert answer.startswith(f"SIP/2.0 {status}".encode()), answer[:80]
    assert ivr_stats(phone_stack)["sip"]["malformed"] >= 1


async def test_a_caller_who_stays_silent_is_transferred_to_an_agent(
    phone_stack: LiveStack, agents_port: int, tmp_path: Path
) -> None:
    agents = await start_sipp("uas", None, local_port=agents_port, timeout=90, log_dir=tmp_path / "agents")
    try:
        restart(phone_stack, "ivr:C002")
        async with BaresipCaller(tmp_path / "phone", caller_number=C002_PHONE, pad_s=90.0) as phone:
            await phone.call(uri(phone_stack))
            await phone.wait_established(timeout=15)
            # No PIN, no word: the reprompts run out and the call is handed to a person (REFER to the agents).
            event = await until(lambda: call_event(phone_stack, "C002"), 75, "the call to end by transfer")
            assert event.attrs["outcome"] == "transferred", event.attrs
            await phone.hangup()
    finally:
        await agents.aclose()
    log = "".join(p.read_text(errors="replace") for p in (tmp_path / "agents").glob("*messages*"))
    assert "INVITE sip:agents@" in log, "baresip followed the REFER to the agents"

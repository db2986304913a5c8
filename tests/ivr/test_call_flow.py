"""The phone call flow against the live stack (real Rasa and action server): caller ID, keypad PIN, transfers."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bankcore import customer_care
from bankcore.database import unit_of_work
from bankcore.models import CrossChannelEvent, VerificationChallenge
from channels import messages
from channels.ivr.call_flow import IvrCall, IvrRuntime
from channels.ivr.media import CallInfo
from channels.metrics import GatewayMetrics
from channels.rasa_client import RasaClient
from channels.turns import TurnContext
from voice.tts import CachedSynthesizer, EspeakPinyinSynthesizer

pytestmark = pytest.mark.rasa

C001_PHONE = "13801012345"  # C001's reserved mobile (demo bank)
C001_PIN = "246810"
# The demo bank's customers with a reserved mobile and a PIN: (customer, phone, PIN).
DEMO_CALLERS = (
    ("C001", C001_PHONE, C001_PIN),
    ("C002", "13911022334", "135790"),
    ("C003", "13700133221", "864209"),
    ("C004", "13600144556", "975310"),
)
AGENTS = "sip:agents@127.0.0.1:5099"


@dataclass
class FakeLine:
    """The transport side of a call, recording what the call flow asked of it."""

    info: CallInfo
    played: list[bytes] = field(default_factory=list)
    transfers: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    accept_transfer: bool = True
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)

    def play(self, pcm: bytes) -> None:
        self.played.append(pcm)

    def stop_playback(self) -> None:
        return None

    def playback_pending(self) -> float:
        return 0.0

    async def transfer(self, target: str, headers: dict[str, str]) -> bool:
        self.transfers.append((target, headers))
        return self.accept_transfer

    async def hangup(self) -> None:
        self.hung_up.set()


@dataclass
class Caller:
    call: IvrCall
    line: FakeLine
    runtime: IvrRuntime

    def said(self) -> list[str]:
        """What the caller was told, as the prompts' text (the session's Reply and Prompt events)."""
        return list(self.call.spoken)

    async def keys(self, digits: str) -> None:
        for digit in digits:
            await self.call.on_dtmf(digit)
        await self.settle()

    async def says(self, text: str) -> None:
        await self.call.on_text(text)
        await self.settle()

    async def settle(self) -> None:
        """Wait until the worker has handled everything queued."""
        for _ in range(600):
            if self.call.inbox.empty() and not self.call.busy:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the call flow did not finish its turn")


@asynccontextmanager
async def phone_call(
    stack: Any, caller: str, *, transfer_target: str = "sip:agents@127.0.0.1:5099"
) -> AsyncIterator[Caller]:
    async with aiohttp.ClientSession() as http:
        ctx = TurnContext(
            settings=stack.settings,
            rasa=RasaClient(http, stack.rasa_url, stack.rasa_token),
            session_factory=stack.db_session_factory,
            metrics=GatewayMetrics.create(),
        )
        runtime = IvrRuntime(
            ctx=ctx, synthesizer=CachedSynthesizer(EspeakPinyinSynthesizer()), transfer_target=transfer_target
        )
        info = CallInfo(call_id=f"test-{caller}-{id(http)}", caller=caller, callee="95588", transport="sip")
        call = runtime.handler_for(info)
        line = FakeLine(info)
        await call.on_answer(line)
        person = Caller(call, line, runtime)
        await person.settle()
        try:
            yield person
        finally:
            if call.worker is not None and not call.worker.done():
                await call.on_hangup("caller")


def _restart(stack: Any, sender_id: str) -> None:
    url = f"{stack.rasa_url}/conversations/{sender_id}/tracker/events?token={stack.rasa_token}"
    body = json.dumps({"event": "restart"}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=30).close()


def _tracker(stack: Any, sender_id: str) -> str:
    url = f"{stack.rasa_url}/conversations/{sender_id}/tracker?token={stack.rasa_token}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


async def test_a_known_caller_is_greeted_asked_for_the_pin_and_served_after_it(live_stack: Any) -> None:
    _restart(live_stack, "ivr:C001")
    async with phone_call(live_stack, C001_PHONE) as caller:
        opening = "\n".join(caller.said())
        assert messages.IVR_PIN_PROMPT in opening
        assert caller.line.played, "the greeting is spoken"
        assert caller.call.state == "pin"

        # Speech cannot open account services before the PIN.
        await caller.says("查询余额")
        assert caller.call.state == "pin"
        assert not any("余额为" in text for text in caller.said())

        await caller.keys("111111")
        assert messages.IVR_PIN_WRONG.format(attempts_left=2) in caller.said()
        await caller.keys(C001_PIN)
        assert caller.call.verified and caller.call.state == "customer"
        # What follows the PIN depends on the greeting (the foresight model's prediction for this contact, which
        # the events earlier tests left may change): its question again, or the keypad menu. Both are tested
        # on their own below; here the caller is served either way.
        assert messages.IVR_PIN_OK in caller.said()[-2] or caller.said()[-1].startswith(messages.IVR_PIN_OK)

        await caller.says("查询余额")
        assert any("余额" in text and "元" in text for text in caller.said()[-3:]), caller.said()[-3:]

    tracker = _tracker(live_stack, "ivr:C001")
    assert C001_PIN not in tracker and "111111" not in tracker
    log_text = "".join(p.read_text(errors="replace") for p in Path(live_stack.settings.log_dir).glob("*"))
    assert C001_PIN not in log_text


async def test_after_the_pin_the_greetings_question_is_asked_again_and_a_key_answers_it(live_stack: Any) -> None:
    for customer_id, phone, pin in DEMO_CALLERS:
        _restart(live_stack, f"ivr:{customer_id}")
        async with phone_call(live_stack, phone) as caller:
            opening = "\n".join(caller.said())
            await caller.keys(pin)
            assert caller.call.verified and caller.call.state == "customer"
            if caller.said()[-1].startswith(messages.IVR_PIN_OK):
                continue  # this customer's greeting asked nothing: the menu followed (tested below)
            assert caller.said()[-2] == messages.IVR_PIN_OK
            # The greeting's question (the predicted need) is asked again, and a key answers it: 1 is "yes".
            question = caller.said()[-1]
            assert question in opening and ("吗" in question or "？" in question), question
            await caller.keys("1")
            assert caller.said()[-1] != question and caller.call.state == "customer"
            return
    raise AssertionError("no demo customer's greeting asked a question: the re-ask was never exercised")


async def test_three_wrong_pins_leave_only_public_services(live_stack: Any) -> None:
    _restart(live_stack, "ivr:C001")
    async with phone_call(live_stack, "+86" + C001_PHONE) as caller:
        await caller.keys("000000")
        await caller.keys("000001")
        await caller.keys("000002")
        assert messages.IVR_PIN_LOCKED in caller.said()
        assert caller.call.state == "guest" and not caller.call.verified
        await caller.says("查询余额")
        assert caller.call.state == "guest"
        assert not any("余额为" in text for text in caller.said())


async def test_an_unknown_caller_is_a_guest_and_a_human_handoff_transfers_the_call(live_stack: Any) -> None:
    async with phone_call(live_stack, "13000000000") as caller:
        assert messages.IVR_WELCOME_GUEST in caller.said()
        await caller.says("转人工")
        await asyncio.wait_for(caller.call.worker, 30)  # type: ignore[arg-type]
        assert caller.line.transfers, caller.said()
        target, headers = caller.line.transfers[0]
        assert target == "sip:agents@127.0.0.1:5099"
        handoff_id = int(headers["X-Bankbot-Handoff"])
        with unit_of_work(live_stack.db_session_factory) as session:
            handoff = customer_care.get_handoff(session, handoff_id)
        assert handoff is not None and handoff.channel == "ivr" and handoff.customer_id is None
        assert "human_handoff" in handoff.summary
        assert caller.call.outcome == "transferred"


async def test_a_refused_transfer_keeps_the_caller_in_the_conversation(live_stack: Any) -> None:
    async with phone_call(live_stack, "13000000001") as caller:
        caller.line.accept_transfer = False
        await caller.says("转人工")
        assert messages.IVR_TRANSFER_FAILED in caller.said()
        assert caller.call.worker is not None and not caller.call.worker.done()


async def test_hanging_up_during_the_pin_closes_it_and_records_the_call(live_stack: Any) -> None:
    _restart(live_stack, "ivr:C001")
    async with phone_call(live_stack, C001_PHONE) as caller:
        call_id = caller.call.info.call_id
        await caller.keys("24")  # two digits of the PIN, then the caller hangs up
        await caller.call.on_hangup("caller")
    with unit_of_work(live_stack.db_session_factory) as session:
        pending = (
            session.query(VerificationChallenge)
            .filter(
                VerificationChallenge.subject_id == f"ivr-login:{call_id}", VerificationChallenge.status == "pending"
            )
            .count()
        )
        event = session.query(CrossChannelEvent).filter(CrossChannelEvent.event_id == f"call:{call_id}").one()
    assert pending == 0
    assert event.channel == "ivr" and event.type == "call_ended"
    assert event.attrs["verified"] is False and event.attrs["direction"] == "inbound"


async def test_without_a_question_to_answer_the_keypad_menu_follows_the_pin(live_stack: Any) -> None:
    for customer_id, phone, pin in DEMO_CALLERS:
        _restart(live_stack, f"ivr:{customer_id}")
        async with phone_call(live_stack, phone) as caller:
            await caller.keys(pin)
            assert caller.call.verified
            if not caller.said()[-1].startswith(messages.IVR_PIN_OK + "请直接说出"):
                continue  # this customer's greeting asked a question of its own
            await caller.keys("1")
            assert any("余额" in text and "元" in text for text in caller.said()[-3:]), caller.said()[-3:]
            before = len(caller.call.spoken)
            await caller.keys("1000#")  # the menu is gone: keys are an answer again, not a shortcut
            answered = caller.call.spoken[before:]
            assert answered and not any("余额" in text for text in answered), answered
            return
    raise AssertionError("every demo customer's greeting asked a question: the menu was never offered")

"""WeChat Work end to end: signed callbacks → gateway → Rasa → action server → sandbox bank, answered through the
WeCom API simulator's message/send, with platform faults (retried callbacks, expired tokens, an outage)."""

from __future__ import annotations

import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from bankcore import accounts, cards
from bankcore.database import unit_of_work
from bankcore.models import ChannelInboxMessage, ChannelOutboxMessage, Transfer
from bankcore.money import format_amount
from channels.platform_simulators.wecom_callbacks import Callback
from tests.channels.wecom_support import callbacks
from tests.conftest import LiveStack, latest_sms_code, restart_conversation
from tests.platform_threads import PlatformSimulators

pytestmark = pytest.mark.rasa

# C001 (王伟) is bound to the WeCom user "wangwei" in the demo bank; C004 (陈静) has no WeCom identity.
BOUND_USER = "wangwei"
C004_PHONE = "13600144556"
REPLY_TIMEOUT_S = 40.0
QUIET_S = 0.7


def platforms_of(stack: LiveStack) -> PlatformSimulators:
    assert stack.platforms is not None, "the live stack runs with the platform simulators"
    return stack.platforms


class WeComUser:
    """One WeCom user talking to the bank's app: callbacks posted to the live gateway, replies read at the
    simulator's message/send. Keeps the last button card so a test can press one of its buttons."""

    def __init__(self, stack: LiveStack, user: str) -> None:
        self.stack = stack
        self.platforms = platforms_of(stack)
        self.user = user.lower()  # WeCom reports userids lowercased
        self.callbacks = callbacks()
        self.card: dict[str, Any] | None = None
        # (what the user typed, the replies' texts joined) for every turn through say().
        self.transcript: list[tuple[str, str]] = []

    def delivered(self) -> list[dict[str, Any]]:
        """Every message/send body delivered to this user so far, oldest first."""
        return [entry["body"] for entry in list(self.platforms.wecom.sent) if self.user in entry["delivered_to"]]

    def post(self, callback: Callback) -> None:
        url = f"{self.stack.gateway_url}/wecom/callback?{urllib.parse.urlencode(callback.query)}"
        request = urllib.request.Request(url, data=callback.body, headers={"Content-Type": "text/xml"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            assert response.read() == b"", "WeCom callbacks are acknowledged with an empty body"

    def post_concurrently(self, callback: Callback, times: int) -> None:
        """The same callback several times at once, as WeCom retries one it thinks went unanswered."""
        with ThreadPoolExecutor(max_workers=times) as pool:
            list(pool.map(lambda _: self.post(callback), range(times)))

    def wait_replies(self, before: int, timeout: float = REPLY_TIMEOUT_S) -> list[str]:
        """Wait for messages after the first `before`, until none more arrive for QUIET_S; their texts."""
        deadline = time.monotonic() + timeout
        count, changed_at = before, time.monotonic()
        while True:
            now = time.monotonic()
            current = len(self.delivered())
            if current != count:
                count, changed_at = current, now
            elif count > before and now - changed_at >= QUIET_S:
                break
            if now > deadline:
                raise AssertionError(f"no reply to {self.user} within {timeout:.0f} s")
            time.sleep(0.05)
        new = self.delivered()[before:]
        cards_sent = [body["template_card"] for body in new if body.get("msgtype") == "template_card"]
        if cards_sent:
            self.card = cards_sent[-1]
        return [body["text"]["content"] for body in new if body.get("msgtype") == "text"]

    def send(self, callback: Callback, *, times: int = 1) -> list[str]:
        before = len(self.delivered())
        if times == 1:
            self.post(callback)
        else:
            self.post_concurrently(callback, times)
        return self.wait_replies(before)

    def say(self, text: str, *, times: int = 1) -> str:
        """Type `text` (the same callback `times` times at once); the reply texts joined."""
        reply = "\n".join(self.send(self.callbacks.text(self.user, text), times=times))
        self.transcript.append((text, reply))
        return reply

    def button(self, title: str) -> Callback:
        """The template_card_event WeCom sends when the user presses `title` on the last card."""
        assert self.card is not None, "no card was sent"
        keys = {b["text"]: b["key"] for b in self.card["button_list"]}
        assert title in keys, (title, keys)
        return self.callbacks.event(self.user, "template_card_event", key=keys[title], task_id=self.card["task_id"])

    def press(self, title: str, *, times: int = 1) -> str:
        return "\n".join(self.send(self.button(title), times=times))


def balance(stack: LiveStack, customer_id: str, account_id: str) -> Decimal:
    with unit_of_work(stack.db_session_factory) as session:
        return accounts.get_account(session, customer_id, account_id).balance


def transfers_of(stack: LiveStack, customer_id: str) -> list[tuple[str, str, Decimal, str]]:
    """(status, channel, amount, idempotency key) of every transfer the customer made."""
    with unit_of_work(stack.db_session_factory) as session:
        rows = session.scalars(select(Transfer).where(Transfer.customer_id == customer_id)).all()
        return [(row.status, row.channel, row.amount, row.idempotency_key) for row in rows]


@pytest.fixture(scope="module")
def newcomer(live_stack: LiveStack) -> WeComUser:
    """A WeCom user the bank does not know, bound to C004 by phone number and SMS code (no Rasa involved)."""
    user = WeComUser(live_stack, f"wx-newcomer-{secrets.token_hex(4)}")
    user.say("查余额")
    user.say("绑定")
    user.say(C004_PHONE)
    user.say(latest_sms_code(live_stack, "C004"))
    return user


@pytest.fixture(autouse=True)
def fresh_conversations(live_stack: LiveStack) -> None:
    for sender in ("wecom:C001", "wecom:C004"):
        restart_conversation(live_stack, sender)


def test_an_unbound_user_binds_by_phone_and_code_then_sees_their_own_balance(
    live_stack: LiveStack, newcomer: WeComUser
) -> None:
    (_, as_guest), (_, ask_phone), (_, code_sent), (_, bound) = newcomer.transcript[:4]
    assert "确认您的身份" in as_guest and "绑定" in as_guest, as_guest
    assert "手机号" in ask_phone, ask_phone
    assert "尾号4556" in code_sent, code_sent
    assert "绑定成功" in bound and "陈" in bound, bound
    reply = newcomer.say("帮我查一下余额")
    assert "1188" in reply and format_amount(balance(live_stack, "C004", "A4001")) in reply, reply
    assert "3821" not in reply, "another customer's account"


def test_a_transfer_is_read_back_confirmed_on_the_card_verified_and_moves_money_once(
    live_stack: LiveStack, newcomer: WeComUser
) -> None:
    before = balance(live_stack, "C004", "A4001")
    transfers_before = len(transfers_of(live_stack, "C004"))
    readback = newcomer.say("给陈明转50元")
    assert "陈明" in readback and "50.00" in readback, readback
    assert newcomer.card is not None and {b["text"] for b in newcomer.card["button_list"]} >= {"确认转账", "取消"}
    prompt = newcomer.press("确认转账")
    assert "验证码已发送" in prompt, prompt
    code = latest_sms_code(live_stack, "C004")
    done = newcomer.say(code)
    assert "转账成功" in done and "陈明" in done, done
    assert balance(live_stack, "C004", "A4001") == before - Decimal("50.00")
    made = transfers_of(live_stack, "C004")[transfers_before:]
    assert [(status, channel, amount) for status, channel, amount, _ in made] == [
        ("completed", "wecom", Decimal("50.00"))
    ]
    # The code again moves nothing.
    assert "转账成功" not in newcomer.say(code)
    assert balance(live_stack, "C004", "A4001") == before - Decimal("50.00")


def test_reporting_a_lost_card_freezes_it(live_stack: LiveStack, restore_card: Callable[[str, str], None]) -> None:
    restore_card("C001", "5512")
    with unit_of_work(live_stack.db_session_factory) as session:
        before = {c.last4: c.status for c in cards.list_cards(session, "C001")}
    customer = WeComUser(live_stack, BOUND_USER)
    reply = customer.say("我的尾号5512的卡丢了")
    assert "冻结" in reply and "5512" in reply, reply
    with unit_of_work(live_stack.db_session_factory) as session:
        status = {c.last4: c.status for c in cards.list_cards(session, "C001")}
    # Only the named card changes (the session's other tests may have frozen the other one).
    assert status["5512"] == "lost" and status["3821"] == before["3821"]
    assert customer.card is not None
    customer.press("暂不需要")


def test_retried_callbacks_during_the_confirmation_give_one_reply_and_one_transfer(
    live_stack: LiveStack, newcomer: WeComUser
) -> None:
    before = balance(live_stack, "C004", "A4001")
    transfers_before = len(transfers_of(live_stack, "C004"))
    assert "陈明" in newcomer.say("给陈明转50元")
    prompts = newcomer.send(newcomer.button("确认转账"), times=3)
    assert len(prompts) == 1 and "验证码已发送" in prompts[0], prompts
    code = latest_sms_code(live_stack, "C004")
    done = newcomer.send(newcomer.callbacks.text(newcomer.user, code), times=3)
    assert len(done) == 1 and "转账成功" in done[0], done
    delivered = len(newcomer.delivered())
    time.sleep(1.5)  # a late duplicate would have been answered by now
    assert len(newcomer.delivered()) == delivered
    made = transfers_of(live_stack, "C004")[transfers_before:]
    assert [(status, amount) for status, _, amount, _ in made] == [("completed", Decimal("50.00"))]
    assert balance(live_stack, "C004", "A4001") == before - Decimal("50.00")
    with unit_of_work(live_stack.db_session_factory) as session:
        duplicates = session.scalars(
            select(ChannelInboxMessage.duplicates).where(ChannelInboxMessage.external_user == newcomer.user)
        ).all()
    assert sum(duplicates) == 4, "two callbacks each retried twice"


def test_an_access_token_expired_mid_conversation_is_renewed_and_the_form_goes_on(live_stack: LiveStack) -> None:
    platforms = platforms_of(live_stack)
    customer = WeComUser(live_stack, BOUND_USER)
    assert "转账给谁" in customer.say("我要转账")
    tokens_before = platforms.wecom_calls("gettoken")
    platforms.expire_wecom_tokens()
    midway = customer.say("我卡里还有多少钱")
    assert "余额" in midway and "转账给谁" in midway, midway
    assert platforms.wecom_calls("gettoken") == tokens_before + 1
    assert "取消" in customer.say("算了不转了")


def test_replies_wait_out_a_platform_outage_and_arrive_once_it_is_back(live_stack: LiveStack) -> None:
    platforms = platforms_of(live_stack)
    customer = WeComUser(live_stack, BOUND_USER)
    before = len(customer.delivered())
    sends_before = platforms.wecom_calls("message/send")
    platforms.set_wecom_down(True)
    try:
        customer.post(customer.callbacks.text(customer.user, "我的信用卡账单多少"))
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while platforms.wecom_calls("message/send") < sends_before + 2:  # answered, tried, retried after 1 s
            assert time.monotonic() < deadline, "the outbox never tried to send the reply"
            time.sleep(0.1)
        assert len(customer.delivered()) == before
    finally:
        platforms.set_wecom_down(False)
    reply = "\n".join(customer.wait_replies(before))
    assert "5512" in reply and "最低还款" in reply, reply
    with unit_of_work(live_stack.db_session_factory) as session:
        rows = session.scalars(
            select(ChannelOutboxMessage)
            .where(ChannelOutboxMessage.external_user == BOUND_USER)
            .order_by(ChannelOutboxMessage.id.desc())
            .limit(1)
        ).all()
    assert rows and rows[0].status == "sent" and rows[0].attempts >= 2, [(r.status, r.attempts) for r in rows]

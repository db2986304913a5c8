"""The WeChat mini-program end to end: login through the WeChat API simulator's code2Session, binding, account
skills and a verified transfer through the live gateway, Rasa and the action server; subscribe-message consent."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bankcore import accounts, cards, customers, subscriptions
from bankcore.database import unit_of_work
from bankcore.models import SubscriptionConsent, Transfer
from bankcore.money import format_amount
from bankcore.reminders import store
from bankcore.reminders.planned import PlannedReminder
from channels.miniprogram.api import WeChatApi
from channels.miniprogram.sessions import MiniProgramTokens
from channels.miniprogram.sessions import MiniProgramUser as TokenSubject
from channels.rasa_client import RasaClient
from channels.scheduler.conversation_sender import ConversationSender
from channels.scheduler.platform_deliverers import miniprogram_deliverer
from channels.scheduler.worker import Dispatcher
from tests.channels.wecom_support import APP_ID, APP_SECRET, TEMPLATE_ID
from tests.conftest import LiveStack, latest_sms_code, restart_conversation
from tests.platform_threads import PlatformSimulators

pytestmark = pytest.mark.rasa

# C003 (张三) has no mini-program identity in the demo bank.
C003_PHONE = "13700133221"


def platforms_of(stack: LiveStack) -> PlatformSimulators:
    assert stack.platforms is not None, "the live stack runs with the platform simulators"
    return stack.platforms


def post(stack: LiveStack, path: str, body: dict[str, Any], token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        stack.gateway_url + path, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


class MiniProgramUser:
    """One user of the bank's mini-program: wx.login's code (from the simulator) exchanged at the gateway."""

    def __init__(self, stack: LiveStack, openid: str) -> None:
        self.stack = stack
        self.openid = openid
        self.token = ""
        self.bound: bool | None = None

    def login(self) -> dict[str, Any]:
        code = platforms_of(self.stack).issue_login_code(self.openid)
        status, body = post(self.stack, "/miniprogram/login", {"code": code})
        assert status == 200, (status, body)
        self.token, self.bound = str(body["token"]), bool(body["bound"])
        return body

    def send(self, text: str, msg_id: str | None = None) -> list[dict[str, Any]]:
        message = {"type": "text", "text": text} | ({"msg_id": msg_id} if msg_id else {})
        status, body = post(self.stack, "/miniprogram/messages", message, self.token)
        assert status == 200, (status, body)
        return list(body["messages"])

    def send_concurrently(self, text: str, msg_id: str, times: int) -> list[list[dict[str, Any]]]:
        """The same message several times at once, as a client retrying after a dropped connection would."""
        with ThreadPoolExecutor(max_workers=times) as pool:
            return list(pool.map(lambda _: self.send(text, msg_id), range(times)))

    def say(self, text: str) -> str:
        return "\n".join(str(m.get("text") or "") for m in self.send(text))


def balance(stack: LiveStack, customer_id: str, account_id: str) -> Decimal:
    with unit_of_work(stack.db_session_factory) as session:
        return accounts.get_account(session, customer_id, account_id).balance


def transfers_of(stack: LiveStack, customer_id: str) -> list[tuple[str, str, Decimal]]:
    with unit_of_work(stack.db_session_factory) as session:
        rows = session.scalars(select(Transfer).where(Transfer.customer_id == customer_id)).all()
        return [(row.status, row.channel, row.amount) for row in rows]


@pytest.fixture(scope="module")
def member(live_stack: LiveStack) -> MiniProgramUser:
    """A new openid, logged in unbound, then bound to C003 through the messages endpoint."""
    user = MiniProgramUser(live_stack, f"o-newcomer-{secrets.token_hex(6)}")
    user.login()
    assert user.bound is False
    assert "确认您的身份" in user.say("查余额")
    assert "手机号" in user.say("绑定")
    assert "尾号3221" in user.say(C003_PHONE)
    assert "绑定成功" in user.say(latest_sms_code(live_stack, "C003"))
    return user


@pytest.fixture(autouse=True)
def fresh_conversation(live_stack: LiveStack) -> None:
    restart_conversation(live_stack, "miniprogram:C003")


def test_a_new_user_logs_in_unbound_binds_and_then_is_served_as_the_customer(
    live_stack: LiveStack, member: MiniProgramUser
) -> None:
    with unit_of_work(live_stack.db_session_factory) as session:
        assert customers.resolve_identity(session, "miniprogram_openid", member.openid) == "C003"
    reply = member.say("帮我查一下余额")
    assert "7730" in reply and format_amount(balance(live_stack, "C003", "A3001")) in reply, reply
    # The next login knows the openid.
    member.login()
    assert member.bound is True


def test_a_transfer_is_read_back_confirmed_by_its_button_verified_and_moves_money_once(
    live_stack: LiveStack, member: MiniProgramUser
) -> None:
    payer_before = balance(live_stack, "C003", "A3001")
    payee_before = balance(live_stack, "C002", "A2001")
    transfers_before = len(transfers_of(live_stack, "C003"))
    readback = member.send("给李娜转三百块")
    text = "\n".join(m["text"] for m in readback)
    assert "李娜" in text and "300.00" in text, readback
    buttons = {b["title"]: b["payload"] for m in readback for b in m["buttons"]}
    assert "确认转账" in buttons, readback
    prompt = member.send(buttons["确认转账"])
    assert any(m.get("input") == "otp" for m in prompt), prompt
    code = latest_sms_code(live_stack, "C003")
    done = member.say(code)
    assert "转账成功" in done, done
    assert balance(live_stack, "C003", "A3001") == payer_before - Decimal("300.00")
    assert balance(live_stack, "C002", "A2001") == payee_before + Decimal("300.00")
    assert transfers_of(live_stack, "C003")[transfers_before:] == [("completed", "miniprogram", Decimal("300.00"))]
    assert "转账成功" not in member.say(code)
    assert balance(live_stack, "C003", "A3001") == payer_before - Decimal("300.00")


def test_reporting_a_lost_card_freezes_it(
    live_stack: LiveStack, member: MiniProgramUser, restore_card: Callable[[str, str], None]
) -> None:
    restore_card("C003", "7730")
    reply = member.send("我的尾号7730的卡丢了")
    assert "冻结" in reply[0]["text"] and "7730" in reply[0]["text"], reply
    with unit_of_work(live_stack.db_session_factory) as session:
        status = {c.last4: c.status for c in cards.list_cards(session, "C003")}
    assert status["7730"] == "lost"
    declines = [b["payload"] for m in reply for b in m["buttons"] if b["title"] == "暂不需要"]
    assert declines, reply
    member.send(declines[0])


def test_a_login_code_works_once(live_stack: LiveStack) -> None:
    code = platforms_of(live_stack).issue_login_code(f"o-once-{secrets.token_hex(6)}")
    first, body = post(live_stack, "/miniprogram/login", {"code": code})
    assert first == 200 and body["bound"] is False
    again, body = post(live_stack, "/miniprogram/login", {"code": code})
    assert again == 401, body
    assert "token" not in body


def test_subscribe_message_consent_is_recorded_for_the_customer(live_stack: LiveStack, member: MiniProgramUser) -> None:
    status, body = post(
        live_stack, "/miniprogram/subscriptions", {"template_id": TEMPLATE_ID, "result": "accept"}, member.token
    )
    assert status == 200 and body == {"template_id": TEMPLATE_ID, "remaining": 1}, body
    with unit_of_work(live_stack.db_session_factory) as session:
        rows = session.scalars(select(SubscriptionConsent).where(SubscriptionConsent.openid == member.openid)).all()
        assert [(r.customer_id, r.template_id, r.remaining) for r in rows] == [("C003", TEMPLATE_ID, 1)]


def test_a_message_retried_during_the_transfer_gives_one_prompt_and_one_transfer(
    live_stack: LiveStack, member: MiniProgramUser
) -> None:
    before = balance(live_stack, "C003", "A3001")
    transfers_before = len(transfers_of(live_stack, "C003"))
    readback = member.send("给李娜转20元")
    confirm = next(b["payload"] for m in readback for b in m["buttons"] if b["title"] == "确认转账")
    prompts = member.send_concurrently(confirm, f"confirm-{secrets.token_hex(4)}", times=3)
    assert all(p == prompts[0] for p in prompts) and any(m.get("input") == "otp" for m in prompts[0]), prompts
    code = latest_sms_code(live_stack, "C003")
    done = member.send_concurrently(code, f"code-{secrets.token_hex(4)}", times=3)
    texts = ["\n".join(m["text"] for m in reply) for reply in done]
    assert all("转账成功" in text for text in texts) and len(set(texts)) == 1, texts
    assert transfers_of(live_stack, "C003")[transfers_before:] == [("completed", "miniprogram", Decimal("20.00"))]
    assert balance(live_stack, "C003", "A3001") == before - Decimal("20.00")


def test_a_session_token_that_expires_mid_transfer_is_renewed_and_the_form_goes_on(
    live_stack: LiveStack, member: MiniProgramUser
) -> None:
    before = balance(live_stack, "C003", "A3001")
    readback = member.send("给李娜转30元")
    confirm = next(b["payload"] for m in readback for b in m["buttons"] if b["title"] == "确认转账")
    # The token the client holds runs out while the customer reads the confirmation.
    ttl = live_stack.settings.miniprogram_session_ttl_seconds
    issuer = MiniProgramTokens(live_stack.settings.secret_key, ttl, clock=lambda: time.time() - ttl - 5)
    member.token = issuer.issue(TokenSubject(openid=member.openid, unionid=None)).token
    status, body = post(live_stack, "/miniprogram/messages", {"type": "text", "text": confirm}, member.token)
    assert status == 401 and body["error"]["code"] == "unauthorized", body
    member.login()  # what the client does on a 401: wx.login again, then resend
    prompt = member.send(confirm)
    assert any(m.get("input") == "otp" for m in prompt), prompt
    assert "转账成功" in member.say(latest_sms_code(live_stack, "C003"))
    assert balance(live_stack, "C003", "A3001") == before - Decimal("30.00")


def test_a_reminder_waits_out_a_wechat_outage_and_is_sent_once_it_is_back(
    live_stack: LiveStack, member: MiniProgramUser
) -> None:
    platforms = platforms_of(live_stack)
    status, _ = post(
        live_stack, "/miniprogram/subscriptions", {"template_id": TEMPLATE_ID, "result": "accept"}, member.token
    )
    assert status == 200
    platforms.thread.call(lambda: platforms.wechat.grant_subscription(member.openid, TEMPLATE_ID, 1))
    sent_before = len(platforms.wechat.subscribe_sent)
    now = dt.datetime.now(dt.UTC)
    key = f"C003:card_expiring:K3001:outage-test:{now.timestamp()}"
    with unit_of_work(live_stack.db_session_factory) as session:
        consent_before = subscriptions.remaining(session, openid=member.openid, template_id=TEMPLATE_ID)
        store.add_planned(
            session,
            [
                PlannedReminder(
                    key=key,
                    customer_id="C003",
                    rule_id="card_expiring",
                    kind="card_expiring",
                    topic="card",
                    item_id="K3001",
                    due_date=(now + dt.timedelta(days=7)).date(),
                    send_after=now - dt.timedelta(seconds=1),
                    channels=("miniprogram",),
                    payload={
                        "salutation": "张先生",
                        "due_date": (now + dt.timedelta(days=7)).date().isoformat(),
                        "days_before": 7,
                        "last4": "7730",
                        "card_kind": "debit",
                    },
                )
            ],
            now,
        )
    clock = [now]

    async def dispatch() -> None:
        async with aiohttp.ClientSession() as http:
            deliver = miniprogram_deliverer(
                live_stack.db_session_factory,
                WeChatApi(http, platforms.wechat_url, APP_ID, APP_SECRET),
                TEMPLATE_ID,
                clock=lambda: clock[0],
            )
            sender = ConversationSender(
                RasaClient(http, live_stack.rasa_url, live_stack.rasa_token), {"miniprogram": deliver}
            )
            dispatcher = Dispatcher(
                live_stack.db_session_factory, sender, worker_id="outage-test", clock=lambda: clock[0]
            )
            for _ in range(3):  # other tests' reminders may share the table
                await dispatcher.run_once()

    platforms.set_wechat_down(True)
    try:
        asyncio.run(dispatch())
    finally:
        platforms.set_wechat_down(False)
    with unit_of_work(live_stack.db_session_factory) as session:
        assert store.statuses_of(session, [key]) == {key: "due"}  # back in line for a retry, not lost
        # The consent the failed send took is given back.
        assert subscriptions.remaining(session, openid=member.openid, template_id=TEMPLATE_ID) == consent_before
    assert len(platforms.wechat.subscribe_sent) == sent_before
    platforms.expire_wechat_tokens()  # and the token the gateway held expired meanwhile
    clock[0] = now + dt.timedelta(hours=2)
    asyncio.run(dispatch())
    with unit_of_work(live_stack.db_session_factory) as session:
        assert store.statuses_of(session, [key]) == {key: "delivered"}
    delivered = platforms.wechat.subscribe_sent[sent_before:]
    assert [m["body"]["touser"] for m in delivered] == [member.openid]
    assert delivered[0]["body"]["page"] == f"pages/chat/chat?reminder={key}"[:128]

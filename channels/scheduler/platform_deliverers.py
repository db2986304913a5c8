"""How a reminder's conversation reaches the customer on WeChat Work and in the mini-program.

WeCom: the reply Rasa gave to the reminder is rendered for `message/send` and queued in the channel outbox under
the reminder's key, so the gateway's outbox loop sends it exactly once (a re-queue after a worker crash is the
same key) with the same retries as any reply; the customer's answer comes back through the callback and
continues the conversation. Mini-program: a subscribe message (订阅消息), which needs the customer's consent
per template: one acceptance is used per message; WeChat's 43101 (no consent) removes our record of it, and the
reminder is retried, when the policy then picks the next channel.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bankcore import channel_messages, subscriptions
from bankcore.database import unit_of_work
from bankcore.models import ChannelIdentity
from bankcore.reminders.messages import TITLES, chinese_day
from bankcore.reminders.store import ClaimedReminder
from channels.miniprogram.api import SubscriptionRefused, WeChatApi, WeChatApiError
from channels.rasa_client import BotMessage
from channels.scheduler.conversation_sender import Deliver
from channels.scheduler.senders import SendResult
from channels.wecom.outbound import WeComOutput

logger = logging.getLogger(__name__)

# The subscribe-message template's fields (as the bank registers it in the WeChat console): what, when, how much,
# and a note. `thing` values are at most 20 characters, `amount` a number with 元.
TEMPLATE_FIELDS = {"title": "thing1", "due": "time2", "amount": "amount3", "note": "thing4"}
NOTE = "点击进入小程序办理"
REMINDER_PAGE = "pages/chat/chat"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _wecom_user(session: Session, customer_id: str) -> str | None:
    return session.scalar(
        select(ChannelIdentity.external_id)
        .where(ChannelIdentity.customer_id == customer_id, ChannelIdentity.channel == "wecom")
        .order_by(ChannelIdentity.created_at.desc(), ChannelIdentity.id.desc())
        .limit(1)
    )


def wecom_deliverer(
    factory: sessionmaker[Session], agent_id: str, *, clock: Callable[[], dt.datetime] = _utc_now
) -> Deliver:
    output = WeComOutput(agent_id)

    def queue(reminder: ClaimedReminder, replies: Sequence[BotMessage], key: str) -> SendResult:
        with unit_of_work(factory) as session:
            user = _wecom_user(session, reminder.customer_id)
            if user is None:
                return SendResult(ok=False, retryable=True, detail="no WeCom identity (the policy picks another)")
            queued = 0
            for reply in output.render(user, replies, task_prefix=f"reminder:{key}"):
                queued += channel_messages.enqueue(
                    session,
                    channel="wecom",
                    idempotency_key=f"reminder:{key}:{reply.key}",
                    external_user=user,
                    body=reply.body,
                    now=clock(),
                )
        return SendResult(ok=True, detail=f"queued {queued}" if queued else "already queued")

    async def deliver(reminder: ClaimedReminder, replies: Sequence[BotMessage], key: str) -> SendResult:
        return await asyncio.to_thread(queue, reminder, replies, key)

    return deliver


def subscribe_data(reminder: ClaimedReminder) -> dict[str, dict[str, str]]:
    """The template's data for a reminder: each value cut to the field's limit (thing: 20 characters)."""
    payload = reminder.payload
    data = {
        TEMPLATE_FIELDS["title"]: {"value": TITLES.get(reminder.kind, "服务提醒")[:20]},
        TEMPLATE_FIELDS["due"]: {"value": chinese_day(reminder.due_date.isoformat())},
        TEMPLATE_FIELDS["note"]: {"value": NOTE[:20]},
    }
    amount = payload.get("amount")
    if amount not in (None, ""):
        data[TEMPLATE_FIELDS["amount"]] = {"value": f"{amount}元"}
    return data


def miniprogram_deliverer(
    factory: sessionmaker[Session],
    api: WeChatApi,
    template_id: str,
    *,
    clock: Callable[[], dt.datetime] = _utc_now,
) -> Deliver:
    def take(customer_id: str) -> str | None:
        with unit_of_work(factory) as session:
            openid = subscriptions.openid_of(session, customer_id)
            if openid is None or not subscriptions.take(session, openid=openid, template_id=template_id, now=clock()):
                return None
            return openid

    def settle(openid: str, *, revoke: bool) -> None:
        with unit_of_work(factory) as session:
            if revoke:
                subscriptions.revoke(session, openid=openid, template_id=template_id, now=clock())
            else:
                subscriptions.give_back(session, openid=openid, template_id=template_id, now=clock())

    async def deliver(reminder: ClaimedReminder, replies: Sequence[BotMessage], key: str) -> SendResult:
        if not template_id:
            return SendResult(ok=False, retryable=False, detail="no subscribe-message template configured")
        openid = await asyncio.to_thread(take, reminder.customer_id)
        if openid is None:
            return SendResult(ok=False, retryable=True, detail="no subscription consent (the policy picks another)")
        try:
            await api.send_subscribe_message(
                touser=openid,
                template_id=template_id,
                data=subscribe_data(reminder),
                page=f"{REMINDER_PAGE}?reminder={key}"[:128],
            )
        except SubscriptionRefused:
            await asyncio.to_thread(settle, openid, revoke=True)
            logger.info("reminder %s: subscription refused (43101); consent removed", key)
            return SendResult(ok=False, retryable=True, detail="subscription refused (43101)")
        except WeChatApiError as error:
            await asyncio.to_thread(settle, openid, revoke=False)
            return SendResult(ok=False, retryable=error.retryable, detail=f"subscribe/send errcode {error.errcode}")
        return SendResult(ok=True, detail="subscribe message sent")

    return deliver

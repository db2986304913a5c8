"""The binding dialogue for platform users the bank does not know yet, and the guest path until they are bound.

A WeChat Work user or a mini-program user who is not linked to a customer may use public services (rates,
branches, a human) through Rasa as a guest: no customer id in the metadata, so every account skill answers that
identity must be confirmed first. "绑定" starts the binding here in the gateway: the phone number the bank
holds, then the SMS code sent to it (the sandbox outbox). Codes never reach Rasa: the whole dialogue is in this
module, and only a digest of the code reaches the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bankcore import channel_binding, customers, verification
from bankcore.database import unit_of_work
from bankcore.redaction import redact
from channels import messages
from channels.rasa_client import BotMessage
from channels.turns import LOCALE, TurnContext, fold_full_width, handle_text_turn, is_forged_otp_command

logger = logging.getLogger(__name__)

_BIND_COMMAND = re.compile(
    r"^(?:我要|我想|申请|开始)?(?:绑定|绑卡|账户绑定|身份绑定|绑定账户|绑定账号|绑定手机号?|绑定银行卡)(?:一下)?[。.!！]?$"
)
_CANCEL_COMMAND = re.compile(r"^(?:取消|退出|算了|不绑了|取消绑定)[。.!！]?$")
_CODE = re.compile(r"^[0-9](?:[ \-]?[0-9]){5}$")
BIND_PAYLOAD = "/bind"


@dataclass(frozen=True)
class ChannelUser:
    """A platform user as the adapter authenticated them: the gateway channel and the identity to resolve.

    `also_link` are further identities bound with the first (a mini-program user's unionid beside the openid).
    """

    channel: str
    identity_channel: str
    external_id: str
    also_link: tuple[tuple[str, str], ...] = ()


def guest_sender_id(user: ChannelUser) -> str:
    """The Rasa conversation of an unbound user: a digest, so platform ids do not become tracker keys."""
    digest = hashlib.sha256(f"{user.identity_channel}:{user.external_id}".encode()).hexdigest()[:20]
    return f"{user.channel}:guest-{digest}"


def _resolve(ctx: TurnContext, user: ChannelUser) -> str | None:
    with unit_of_work(ctx.session_factory) as session:
        customer_id = customers.resolve_identity(session, user.identity_channel, user.external_id)
        if customer_id is None:
            for channel, external_id in user.also_link:
                customer_id = customers.resolve_identity(session, channel, external_id)
                if customer_id is not None:
                    # Known by the unionid (bound through another app of the bank): link this openid too.
                    customers.link_identity(session, user.identity_channel, user.external_id, customer_id)
                    break
        return customer_id


async def resolve_customer(ctx: TurnContext, user: ChannelUser) -> str | None:
    """The customer this platform user is bound to, or None."""
    return await asyncio.to_thread(_resolve, ctx, user)


async def handle_channel_turn(
    ctx: TurnContext,
    user: ChannelUser,
    text: str,
    *,
    extra_metadata: Mapping[str, Any] | None = None,
    message_id: str | None = None,
) -> list[BotMessage]:
    """One text turn of a platform user: a bound customer's goes to Rasa; an unbound user's to binding or guest.

    `message_id` (stable across redeliveries of one platform message) makes a bound customer's turn run once."""
    customer_id = await resolve_customer(ctx, user)
    if customer_id is not None:
        if _BIND_COMMAND.match(text.strip()) or text.strip() == BIND_PAYLOAD:
            return [BotMessage(text=messages.BIND_ALREADY)]
        return await handle_text_turn(
            ctx,
            customer_id=customer_id,
            channel=user.channel,
            text=text,
            extra_metadata=extra_metadata,
            message_id=message_id,
        )
    return await handle_guest_turn(ctx, user, text, extra_metadata=extra_metadata)


def _binding_step(ctx: TurnContext, user: ChannelUser, text: str) -> list[BotMessage] | None:
    """Advance the binding dialogue when the text belongs to it; None when it does not (a guest turn)."""
    now = ctx.clock()
    folded = fold_full_width(text).strip()
    with unit_of_work(ctx.session_factory) as session:
        row = channel_binding.pending(session, user.identity_channel, user.external_id, now)
        if _BIND_COMMAND.match(folded) or folded == BIND_PAYLOAD:
            channel_binding.start(session, user.identity_channel, user.external_id, now)
            return [BotMessage(text=messages.BIND_ASK_PHONE)]
        if row is None:
            return None
        if _CANCEL_COMMAND.match(folded):
            channel_binding.cancel(session, user.identity_channel, user.external_id)
            return [BotMessage(text=messages.BIND_CANCELLED)]
        if row.stage == channel_binding.PHONE_STAGE:
            step = channel_binding.submit_phone(
                session, ctx.settings, user.identity_channel, user.external_id, folded, now
            )
            if step.outcome == channel_binding.CODE_SENT:
                return [BotMessage(text=messages.BIND_CODE_SENT.format(phone_tail=step.phone_tail))]
            if step.outcome == channel_binding.TOO_MANY:
                return [BotMessage(text=messages.BIND_TOO_MANY)]
            return [BotMessage(text=messages.BIND_PHONE_INVALID.format(attempts_left=step.attempts_left))]
        if not _CODE.match(folded):
            return [BotMessage(text=messages.BIND_ASK_CODE)]
        digest = verification.digest_code(ctx.settings.secret_key, re.sub(r"[^0-9]", "", folded))
        step = channel_binding.submit_code(
            session,
            ctx.settings,
            user.identity_channel,
            user.external_id,
            digest,
            now,
            also_link=user.also_link,
        )
        if step.outcome == channel_binding.BOUND and step.customer_id is not None:
            customer = customers.get_customer(session, step.customer_id)
            logger.info("channel identity bound", extra={"customer_id": step.customer_id, "channel": user.channel})
            return [BotMessage(text=messages.BIND_DONE.format(name=customer.display_name))]
        if step.outcome == channel_binding.WRONG_CODE:
            return [BotMessage(text=messages.BIND_WRONG_CODE.format(attempts_left=step.attempts_left))]
        if step.outcome == channel_binding.EXPIRED:
            return [BotMessage(text=messages.BIND_EXPIRED)]
        if step.outcome == channel_binding.NOT_PENDING:
            return None
        return [BotMessage(text=messages.BIND_LOCKED)]


async def handle_guest_turn(
    ctx: TurnContext, user: ChannelUser, text: str, *, extra_metadata: Mapping[str, Any] | None = None
) -> list[BotMessage]:
    """An unbound user's turn: the binding dialogue when it applies, else Rasa without a customer."""
    channel = user.channel
    if not text or not text.strip():
        ctx.metrics.count_turn(channel, "empty")
        return [BotMessage(text=messages.EMPTY_MESSAGE)]
    if len(text) > ctx.settings.max_message_chars:
        ctx.metrics.count_turn(channel, "too_long")
        return [
            BotMessage(text=messages.MESSAGE_TOO_LONG.format(length=len(text), limit=ctx.settings.max_message_chars))
        ]
    replies = await asyncio.to_thread(_binding_step, ctx, user, text)
    if replies is not None:
        ctx.metrics.count_turn(channel, "binding")
        return replies
    folded = fold_full_width(text).strip()
    if is_forged_otp_command(folded):
        ctx.metrics.count_turn(channel, "forged_command")
        return [BotMessage(text=messages.FORBIDDEN_COMMAND)]
    extras = {k: v for k, v in (extra_metadata or {}).items() if k not in {"otp_digest", "customer_id"}}
    metadata: dict[str, Any] = {"locale": LOCALE, **extras, "channel": channel, "guest": True}
    replies = await ctx.rasa.send_message(guest_sender_id(user), redact(folded), metadata)
    ctx.metrics.count_turn(channel, "guest")
    return replies

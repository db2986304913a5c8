"""Consent to mini-program subscribe messages (订阅消息), per user and template.

A one-time subscription allows one message per acceptance, so acceptances are counted and each send uses one;
a rejection does not take back earlier acceptances (WeChat keeps them too); WeChat answering 43101 (no consent)
means our count is wrong, and it is set to nothing.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bankcore.models import ChannelIdentity, SubscriptionConsent

# Acceptances kept per template: the mini-program cannot collect more than a few meaningfully.
MAX_REMAINING = 50


def _row(session: Session, openid: str, template_id: str) -> SubscriptionConsent | None:
    return session.scalar(
        select(SubscriptionConsent)
        .where(SubscriptionConsent.openid == openid, SubscriptionConsent.template_id == template_id)
        .with_for_update()
    )


def record(
    session: Session, *, openid: str, customer_id: str | None, template_id: str, accepted: bool, now: dt.datetime
) -> int:
    """Record the user's answer to wx.requestSubscribeMessage; returns the messages now allowed."""
    row = _row(session, openid, template_id)
    if row is None:
        row = SubscriptionConsent(openid=openid, customer_id=customer_id, template_id=template_id, remaining=0)
        session.add(row)
    if customer_id is not None:
        row.customer_id = customer_id
    if accepted:
        row.remaining = min(MAX_REMAINING, (row.remaining or 0) + 1)
    row.updated_at = now
    session.flush()
    return row.remaining


def take(session: Session, *, openid: str, template_id: str, now: dt.datetime) -> bool:
    """Use one acceptance for a message about to be sent; False when there is none (do not send)."""
    result = session.execute(
        update(SubscriptionConsent)
        .where(
            SubscriptionConsent.openid == openid,
            SubscriptionConsent.template_id == template_id,
            SubscriptionConsent.remaining > 0,
        )
        .values(remaining=SubscriptionConsent.remaining - 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def give_back(session: Session, *, openid: str, template_id: str, now: dt.datetime) -> None:
    """A send that never reached WeChat (network error) did not use the acceptance."""
    session.execute(
        update(SubscriptionConsent)
        .where(SubscriptionConsent.openid == openid, SubscriptionConsent.template_id == template_id)
        .values(remaining=SubscriptionConsent.remaining + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def revoke(session: Session, *, openid: str, template_id: str, now: dt.datetime) -> None:
    """WeChat said 43101: the user has no consent left for this template."""
    session.execute(
        update(SubscriptionConsent)
        .where(SubscriptionConsent.openid == openid, SubscriptionConsent.template_id == template_id)
        .values(remaining=0, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def remaining(session: Session, *, openid: str, template_id: str) -> int:
    value = session.scalar(
        select(SubscriptionConsent.remaining).where(
            SubscriptionConsent.openid == openid, SubscriptionConsent.template_id == template_id
        )
    )
    return int(value or 0)


def openid_of(session: Session, customer_id: str) -> str | None:
    """The customer's mini-program openid (the newest bound one), or None."""
    return session.scalar(
        select(ChannelIdentity.external_id)
        .where(ChannelIdentity.customer_id == customer_id, ChannelIdentity.channel == "miniprogram_openid")
        .order_by(ChannelIdentity.created_at.desc(), ChannelIdentity.id.desc())
        .limit(1)
    )

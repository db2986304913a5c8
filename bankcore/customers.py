"""Customers and their channel identities (WeCom user id, mini-program openid/unionid, phone, web chat)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from bankcore.errors import NotFoundError
from bankcore.models import ChannelIdentity, Customer
from bankcore.settings import Settings

DEFAULT_TIMEZONE = "Asia/Shanghai"
# Channel names used in channel_identities.channel.
IDENTITY_CHANNELS = ("wecom", "miniprogram_openid", "miniprogram_unionid", "phone", "webchat")


@dataclass(frozen=True)
class CustomerView:
    id: str
    name: str
    surname: str
    title: str
    phone: str | None
    timezone: str
    single_transfer_limit: Decimal | None
    daily_transfer_limit: Decimal | None

    @property
    def display_name(self) -> str:
        """How the assistant addresses the customer, e.g. 王先生."""
        return f"{self.surname}{self.title}"


def _view(customer: Customer) -> CustomerView:
    return CustomerView(
        id=customer.id,
        name=customer.name,
        surname=customer.surname,
        title=customer.title,
        phone=customer.phone,
        timezone=customer.timezone or DEFAULT_TIMEZONE,
        single_transfer_limit=customer.single_transfer_limit,
        daily_transfer_limit=customer.daily_transfer_limit,
    )


def find_customer(session: Session, customer_id: str) -> CustomerView | None:
    customer = session.get(Customer, customer_id)
    return _view(customer) if customer else None


def get_customer(session: Session, customer_id: str) -> CustomerView:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFoundError("customer_not_found", customer_id=customer_id)
    return _view(customer)


def list_customers(session: Session) -> list[CustomerView]:
    return [_view(c) for c in session.scalars(select(Customer).order_by(Customer.id))]


def customer_zone(customer: Customer | CustomerView) -> ZoneInfo:
    try:
        return ZoneInfo(customer.timezone or DEFAULT_TIMEZONE)
    except (KeyError, ValueError):
        return ZoneInfo(DEFAULT_TIMEZONE)


def transfer_limits(settings: Settings, customer: Customer | CustomerView) -> tuple[Decimal, Decimal]:
    """(single, daily) limits: the customer's own where set, else the bank-wide ones from settings."""
    single = customer.single_transfer_limit or settings.transfer_single_limit
    daily = customer.daily_transfer_limit or settings.transfer_daily_limit
    return Decimal(single), Decimal(daily)


def resolve_identity(session: Session, channel: str, external_id: str) -> str | None:
    return session.scalar(
        select(ChannelIdentity.customer_id).where(
            ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id
        )
    )


def link_identity(session: Session, channel: str, external_id: str, customer_id: str) -> None:
    """Map a platform identity to a customer; re-linking an identity moves it to the new customer."""
    if session.get(Customer, customer_id) is None:
        raise NotFoundError("customer_not_found", customer_id=customer_id)
    identity = session.scalar(
        select(ChannelIdentity).where(ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id)
    )
    if identity is None:
        session.add(ChannelIdentity(channel=channel, external_id=external_id, customer_id=customer_id))
    else:
        identity.customer_id = customer_id
    session.flush()


def identities(session: Session, customer_id: str) -> list[tuple[str, str]]:
    rows = session.execute(
        select(ChannelIdentity.channel, ChannelIdentity.external_id)
        .where(ChannelIdentity.customer_id == customer_id)
        .order_by(ChannelIdentity.channel, ChannelIdentity.external_id)
    )
    return [(channel, external_id) for channel, external_id in rows]

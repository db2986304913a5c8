"""Card lifecycle: list, report lost (frozen at once), freeze, request a replacement, activate."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bankcore import messages
from bankcore.errors import CardError, NotFoundError
from bankcore.ledger import new_id
from bankcore.models import Account, Card, Customer, SmsOutbox

# Cards a customer still holds (a replaced card no longer exists for them).
LIVE_STATUSES = ("active", "inactive", "frozen", "lost")
REPLACEMENT_VALIDITY_YEARS = 5


@dataclass(frozen=True)
class CardView:
    id: str
    account_id: str
    account_name: str
    last4: str
    kind: str  # debit | credit
    status: str  # active | inactive | frozen | lost | replaced
    expiry: dt.date


def _view(session: Session, card: Card) -> CardView:
    account = session.get(Account, card.account_id)
    return CardView(
        id=card.id,
        account_id=card.account_id,
        account_name=account.name if account else "",
        last4=card.last4,
        kind=card.kind,
        status=card.status,
        expiry=card.expiry,
    )


def list_cards(session: Session, customer_id: str, status: str | None = None) -> list[CardView]:
    query = select(Card).where(Card.customer_id == customer_id)
    query = query.where(Card.status == status) if status else query.where(Card.status.in_(LIVE_STATUSES))
    return [_view(session, c) for c in session.scalars(query.order_by(Card.issued_at, Card.id))]


def _find(session: Session, customer_id: str, last4: str | None, statuses: tuple[str, ...] = LIVE_STATUSES) -> Card:
    """The customer's card by last 4 digits; with no digits, the only card in `statuses`."""
    query = select(Card).where(Card.customer_id == customer_id).order_by(Card.issued_at.desc(), Card.id)
    cards = list(session.scalars(query.with_for_update().execution_options(populate_existing=True)))
    if last4:
        matching = [c for c in cards if c.last4 == last4]
        if not matching:
            raise NotFoundError("card_not_found", last4=last4)
        # A replaced card shares nothing with its successor but the customer may quote either.
        live = [c for c in matching if c.status != "replaced"]
        return (live or matching)[0]
    candidates = [c for c in cards if c.status in statuses]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise NotFoundError("card_not_found")
    raise CardError("card_ambiguous", candidates=[c.last4 for c in candidates])


def _notify(session: Session, customer_id: str, text: str, purpose: str, now: dt.datetime) -> None:
    customer = session.get(Customer, customer_id)
    session.add(
        SmsOutbox(
            customer_id=customer_id,
            phone=customer.phone if customer else None,
            purpose=purpose,
            text=text,
            created_at=now,
        )
    )


def report_lost(session: Session, customer_id: str, last4: str | None, now: dt.datetime | None = None) -> CardView:
    """Block the card immediately (status lost); reporting it again changes nothing."""
    now = now or dt.datetime.now(dt.UTC)
    card = _find(session, customer_id, last4, ("active", "inactive", "frozen"))
    if card.status == "replaced":
        raise CardError("card_already_replaced", last4=card.last4)
    if card.status != "lost":
        card.status = "lost"
        card.status_changed_at = now
        _notify(session, customer_id, messages.card_frozen_sms(card.last4), "card_lost", now)
        session.flush()
    return _view(session, card)


def freeze(session: Session, customer_id: str, last4: str | None, now: dt.datetime | None = None) -> CardView:
    """Freeze a card (fraud); lost or replaced cards are already unusable and stay as they are."""
    now = now or dt.datetime.now(dt.UTC)
    card = _find(session, customer_id, last4, ("active", "inactive"))
    if card.status in ("active", "inactive"):
        card.status = "frozen"
        card.status_changed_at = now
        _notify(session, customer_id, messages.card_frozen_sms(card.last4), "card_frozen", now)
        session.flush()
    return _view(session, card)


def _new_last4(session: Session, customer_id: str, old: str) -> str:
    taken = set(session.scalars(select(Card.last4).where(Card.customer_id == customer_id))) | {old}
    while True:
        candidate = f"{secrets.randbelow(10_000):04d}"
        if candidate not in taken:
            return candidate


def _expiry(now: dt.datetime) -> dt.date:
    today = now.date()
    year = today.year + REPLACEMENT_VALIDITY_YEARS
    next_month = dt.date(year + (today.month == 12), today.month % 12 + 1, 1)
    return next_month - dt.timedelta(days=1)  # cards expire at the end of a month


def request_replacement(
    session: Session, customer_id: str, last4: str | None, now: dt.datetime | None = None
) -> CardView:
    """Issue a new, inactive card on the same account (new last 4 digits); the old one becomes replaced."""
    now = now or dt.datetime.now(dt.UTC)
    old = _find(session, customer_id, last4, ("active", "frozen", "lost"))
    if old.status == "replaced":
        raise CardError("card_already_replaced", last4=old.last4)
    if old.status == "inactive":
        # The customer already holds an unused card; activating it is what they need.
        raise CardError("card_not_activated_yet", last4=old.last4)
    new = Card(
        id=new_id("K"),
        customer_id=customer_id,
        account_id=old.account_id,
        last4=_new_last4(session, customer_id, old.last4),
        kind=old.kind,
        status="inactive",
        expiry=_expiry(now),
        replaces_card_id=old.id,
        issued_at=now,
    )
    old.status = "replaced"
    old.status_changed_at = now
    session.add(new)
    session.flush()
    return _view(session, new)


def activate(session: Session, customer_id: str, last4: str | None, now: dt.datetime | None = None) -> CardView:
    """inactive → active; an unknown last4 is card_not_found, an active card card_already_active."""
    now = now or dt.datetime.now(dt.UTC)
    card = _find(session, customer_id, last4, ("inactive",))
    if card.status == "active":
        raise CardError("card_already_active", last4=card.last4)
    if card.status != "inactive":
        raise CardError("card_not_activatable", last4=card.last4, status=card.status)
    card.status = "active"
    card.status_changed_at = now
    session.flush()
    return _view(session, card)

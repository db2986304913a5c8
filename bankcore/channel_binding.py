"""Binding a platform user (WeCom user, mini-program openid, phone number) to a customer: the phone number the
bank holds, then a one-time code sent to it by SMS.

The dialogue around it lives in the gateway (`channels.binding`); this module keeps its state durable (so any
gateway process can take the next step) and makes the checks. An unknown phone number is answered exactly
like a known one and leads to a binding that can never verify: the flow does not reveal who is a customer.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bankcore import customers, event_store, verification
from bankcore.events import Event, public_channel
from bankcore.models import Customer, PendingBinding
from bankcore.settings import Settings

PHONE_STAGE, CODE_STAGE = "phone", "code"
# How long a started binding waits for its next step.
BINDING_TTL = dt.timedelta(minutes=10)
# Phone numbers typed wrong (format or unknown number with a wrong code) before the binding is dropped.
MAX_PHONE_TRIES = 3

# Mainland mobile numbers, optionally with +86 / 0086 and spaces or hyphens people type.
_MOBILE = re.compile(r"^(?:\+?86|0086)?[\s\-]*(1[3-9][0-9](?:[\s\-]?[0-9]){8})$")

# Outcomes of the steps.
STARTED, ASK_PHONE_AGAIN, CODE_SENT, BOUND, WRONG_CODE, LOCKED, EXPIRED, NOT_PENDING, TOO_MANY = (
    "started",
    "ask_phone_again",
    "code_sent",
    "bound",
    "wrong_code",
    "locked",
    "expired",
    "not_pending",
    "too_many",
)


@dataclass(frozen=True)
class BindingStep:
    outcome: str
    customer_id: str | None = None
    phone_tail: str | None = None
    attempts_left: int = 0


def normalise_mobile(text: str) -> str | None:
    """The 11 digits of a mainland mobile number typed in any usual way, else None."""
    folded = text.strip().translate({ord("０") + i: ord("0") + i for i in range(10)})
    match = _MOBILE.match(folded)
    return re.sub(r"[^0-9]", "", match.group(1)) if match else None


def _subject(channel: str, external_id: str) -> str:
    return f"bind:{channel}:{external_id}"[:64]


def pending(session: Session, channel: str, external_id: str, now: dt.datetime) -> PendingBinding | None:
    row = session.scalar(
        select(PendingBinding).where(PendingBinding.channel == channel, PendingBinding.external_id == external_id)
    )
    if row is not None and row.expires_at <= now:
        session.delete(row)
        session.flush()
        return None
    return row


def start(session: Session, channel: str, external_id: str, now: dt.datetime) -> BindingStep:
    """Begin (or begin again) a binding: the next text is the phone number."""
    cancel(session, channel, external_id)
    session.add(
        PendingBinding(
            channel=channel,
            external_id=external_id,
            stage=PHONE_STAGE,
            attempts=0,
            created_at=now,
            expires_at=now + BINDING_TTL,
        )
    )
    session.flush()
    return BindingStep(STARTED)


def cancel(session: Session, channel: str, external_id: str) -> bool:
    result = session.execute(
        delete(PendingBinding)
        .where(PendingBinding.channel == channel, PendingBinding.external_id == external_id)
        .execution_options(synchronize_session="fetch")
    )
    return bool(getattr(result, "rowcount", 0))


def _customer_by_phone(session: Session, phone: str) -> Customer | None:
    candidates = session.scalars(select(Customer).where(Customer.phone.is_not(None))).all()
    # Phones in the bank's records may carry +86 or separators; compare the 11 digits.
    for customer in candidates:
        if customer.phone and normalise_mobile(customer.phone) == phone:
            return customer
    return None


def submit_phone(
    session: Session, settings: Settings, channel: str, external_id: str, text: str, now: dt.datetime
) -> BindingStep:
    """Take the phone number: a code goes to it when it is a customer's; the answer is the same either way."""
    row = pending(session, channel, external_id, now)
    if row is None or row.stage != PHONE_STAGE:
        return BindingStep(NOT_PENDING)
    phone = normalise_mobile(text)
    if phone is None:
        row.attempts += 1
        if row.attempts >= MAX_PHONE_TRIES:
            session.delete(row)
            session.flush()
            return BindingStep(TOO_MANY)
        session.flush()
        return BindingStep(ASK_PHONE_AGAIN, attempts_left=MAX_PHONE_TRIES - row.attempts)
    customer = _customer_by_phone(session, phone)
    row.stage = CODE_STAGE
    row.attempts = 0
    row.phone_tail = phone[-4:]
    row.expires_at = now + BINDING_TTL
    if customer is not None:
        row.customer_id = customer.id
        verification.issue(session, settings, customer.id, "bind", _subject(channel, external_id), now)
    session.flush()
    return BindingStep(CODE_SENT, phone_tail=phone[-4:])


def submit_code(
    session: Session,
    settings: Settings,
    channel: str,
    external_id: str,
    code_digest: str,
    now: dt.datetime,
    *,
    also_link: tuple[tuple[str, str], ...] = (),
) -> BindingStep:
    """Check the code; on success link the identity (and `also_link` ones, e.g. the unionid) to the customer."""
    row = pending(session, channel, external_id, now)
    if row is None or row.stage != CODE_STAGE:
        return BindingStep(NOT_PENDING)
    if row.customer_id is None:
        # The number was no customer's: count the tries like a real challenge so the two cases look alike.
        row.attempts += 1
        left = settings.otp_max_attempts - row.attempts
        if left <= 0:
            session.delete(row)
            session.flush()
            return BindingStep(LOCKED)
        session.flush()
        return BindingStep(WRONG_CODE, attempts_left=left)
    result = verification.check(session, settings, row.customer_id, _subject(channel, external_id), code_digest, now)
    if result.outcome == verification.VERIFIED and result.challenge_id is not None:
        verification.consume(session, result.challenge_id, now)
        customer_id = row.customer_id
        customers.link_identity(session, channel, external_id, customer_id)
        for other_channel, other_id in also_link:
            customers.link_identity(session, other_channel, other_id, customer_id)
        session.delete(row)
        event_store.store_events(
            session,
            [
                Event(
                    customer_id=customer_id,
                    ts=now,
                    channel=public_channel(channel.split("_", 1)[0]),
                    type="channel_bound",
                    attrs={"identity_channel": channel},
                )
            ],
        )
        session.flush()
        return BindingStep(BOUND, customer_id=customer_id)
    if result.outcome == verification.WRONG:
        return BindingStep(WRONG_CODE, attempts_left=result.attempts_left)
    session.delete(row)
    session.flush()
    if result.outcome == verification.EXPIRED:
        return BindingStep(EXPIRED)
    return BindingStep(LOCKED)

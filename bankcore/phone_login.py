"""Who is calling, and proof that it is them: caller-ID lookup and the keypad PIN that opens account services.

A caller ID is a claim, not proof (it can be spoofed), so a known number only names the customer the call is
probably from; account services need the customer's transaction PIN, keyed on the phone. The PIN is checked as a
challenge of its own (attempts, expiry and lock-out as for one-time codes); only its digest is ever handled here.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from bankcore import customers, verification
from bankcore.errors import NotFoundError
from bankcore.models import Customer
from bankcore.settings import Settings

# The channel of the identities that are phone numbers (E.164, "+8613801012345").
PHONE_IDENTITY = "phone"
_MAINLAND_MOBILE = re.compile(r"^1[3-9][0-9]{9}$")


def normalise_caller(number: str) -> str:
    """A caller ID as E.164 where it is a mainland mobile ("13801012345", "8613801012345", "0086…" → "+86…")."""
    digits = re.sub(r"[^0-9+]", "", number.strip())
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    bare = digits.lstrip("+")
    if _MAINLAND_MOBILE.match(bare):
        return "+86" + bare
    if bare.startswith("86") and _MAINLAND_MOBILE.match(bare[2:]):
        return "+" + bare
    return digits


def customer_for_caller(session: Session, number: str) -> str | None:
    """The customer whose phone identity (or reserved mobile) is this caller ID, or None (withheld, unknown)."""
    if not number:
        return None
    e164 = normalise_caller(number)
    found = customers.resolve_identity(session, PHONE_IDENTITY, e164)
    if found is not None:
        return found
    if e164.startswith("+86"):
        mobile = e164[3:]
        return session.scalar(select(Customer.id).where(Customer.phone == mobile).limit(1))
    return None


def number_for(session: Session, customer_id: str) -> str | None:
    """The number the bank calls the customer on: their reserved mobile."""
    customer = session.get(Customer, customer_id)
    return customer.phone if customer is not None and customer.phone else None


def _subject(call_id: str) -> str:
    return f"ivr-login:{call_id}"[:64]


def has_pin(session: Session, customer_id: str) -> bool:
    customer = session.get(Customer, customer_id)
    return customer is not None and bool(customer.pin_digest)


def start(session: Session, settings: Settings, customer_id: str, call_id: str, now: dt.datetime) -> bool:
    """Open the PIN challenge of this call; False when the customer has no PIN (account services stay closed)."""
    try:
        verification.issue_pin_challenge(session, settings, customer_id, _subject(call_id), now)
    except NotFoundError:
        return False
    return True


def submit(
    session: Session, settings: Settings, customer_id: str, call_id: str, pin: str, now: dt.datetime
) -> verification.CheckResult:
    """Check a keyed PIN against this call's challenge; the clear PIN goes no further than its digest."""
    digest = verification.digest_code(settings.secret_key, verification.normalise_code(pin))
    result = verification.check(session, settings, customer_id, _subject(call_id), digest, now)
    if result.ok and result.challenge_id is not None:
        verification.consume(session, result.challenge_id, now)
    return result


def abandon(session: Session, customer_id: str, call_id: str, now: dt.datetime) -> None:
    """Close a PIN challenge the caller never answered (they hung up), so it no longer counts as pending."""
    verification.expire_subject(session, customer_id, _subject(call_id), now)

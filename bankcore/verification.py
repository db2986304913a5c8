"""Step-up verification with one-time codes sent by SMS; only an HMAC digest of a code is ever stored."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bankcore import messages
from bankcore.errors import NotFoundError
from bankcore.ledger import new_id
from bankcore.models import Customer, SmsOutbox, VerificationChallenge
from bankcore.settings import Settings

CODE_LENGTH = 6
# Outcomes of check(); the action maps each to a Rasa response.
VERIFIED, WRONG, EXPIRED, REUSED, LOCKED, NO_CHALLENGE = (
    "verified",
    "wrong",
    "expired",
    "reused",
    "locked",
    "no_challenge",
)

_FULL_WIDTH_DIGITS = {ord("０") + i: ord("0") + i for i in range(10)}


@dataclass(frozen=True)
class Challenge:
    id: str
    customer_id: str
    purpose: str
    subject_id: str
    expires_at: dt.datetime
    attempts_left: int
    phone_tail: str | None  # last 4 digits of the phone the SMS went to, for "sent to 尾号8888"


@dataclass(frozen=True)
class CheckResult:
    outcome: str  # verified | wrong | expired | reused | locked | no_challenge
    attempts_left: int
    challenge_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == VERIFIED


def normalise_code(text: str) -> str:
    """Fold full-width digits to ASCII and drop whitespace (people type '１２３ ４５６')."""
    return "".join(text.translate(_FULL_WIDTH_DIGITS).split())


def looks_like_code(text: str) -> bool:
    code = normalise_code(text)
    return len(code) == CODE_LENGTH and code.isascii() and code.isdigit()


def digest_code(secret_key: str, code: str) -> str:
    return hmac.new(secret_key.encode("utf-8"), normalise_code(code).encode("utf-8"), hashlib.sha256).hexdigest()


def _view(challenge: VerificationChallenge, phone: str | None) -> Challenge:
    return Challenge(
        id=challenge.id,
        customer_id=challenge.customer_id,
        purpose=challenge.purpose,
        subject_id=challenge.subject_id,
        expires_at=challenge.expires_at,
        attempts_left=max(0, challenge.max_attempts - challenge.attempts),
        phone_tail=phone[-4:] if phone else None,
    )


def _open_challenge(
    session: Session,
    settings: Settings,
    customer_id: str,
    purpose: str,
    subject_id: str,
    code_digest: str,
    now: dt.datetime,
) -> VerificationChallenge:
    """A new pending challenge for the subject; older pending ones for it are superseded (expired)."""
    session.execute(
        update(VerificationChallenge)
        .where(
            VerificationChallenge.customer_id == customer_id,
            VerificationChallenge.subject_id == subject_id,
            VerificationChallenge.status == "pending",
        )
        .values(status="expired", resolved_at=now)
        .execution_options(synchronize_session="fetch")
    )
    challenge = VerificationChallenge(
        id=new_id("V"),
        customer_id=customer_id,
        purpose=purpose,
        subject_id=subject_id,
        code_digest=code_digest,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=settings.otp_ttl_seconds),
        attempts=0,
        max_attempts=settings.otp_max_attempts,
        status="pending",
    )
    session.add(challenge)
    return challenge


def issue(
    session: Session,
    settings: Settings,
    customer_id: str,
    purpose: str,
    subject_id: str,
    now: dt.datetime,
    *,
    detail: str | None = None,
) -> Challenge:
    """Create a challenge, supersede older pending ones for the same subject, and 'send' the SMS.

    `detail` is the SMS description of what the code authorises (e.g. 向张三转账2,500.00元).
    """
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFoundError("customer_not_found", customer_id=customer_id)
    code = f"{secrets.randbelow(10**CODE_LENGTH):0{CODE_LENGTH}d}"
    challenge = _open_challenge(
        session, settings, customer_id, purpose, subject_id, digest_code(settings.secret_key, code), now
    )
    session.add(
        SmsOutbox(
            customer_id=customer_id,
            phone=customer.phone,
            purpose=f"otp:{purpose}",
            text=messages.otp_sms(code, purpose, settings.otp_ttl_seconds, detail),
            created_at=now,
        )
    )
    session.flush()
    return _view(challenge, customer.phone)


def issue_pin_challenge(
    session: Session, settings: Settings, customer_id: str, subject_id: str, now: dt.datetime
) -> Challenge:
    """A challenge answered with the customer's transaction PIN: the same attempts, expiry and lock-out as
    a one-time code, and the gateway keeps the typed PIN out of Rasa the same way (only its digest passes).
    Raises NotFoundError('pin_not_set') when the customer has no PIN."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFoundError("customer_not_found", customer_id=customer_id)
    if not customer.pin_digest:
        raise NotFoundError("pin_not_set", customer_id=customer_id)
    challenge = _open_challenge(session, settings, customer_id, "pin", subject_id, customer.pin_digest, now)
    session.flush()
    return _view(challenge, customer.phone)


def pending_challenge(session: Session, customer_id: str, now: dt.datetime) -> Challenge | None:
    """The newest pending, unexpired challenge: the gateway then treats a typed 6-digit text as a code."""
    challenge = session.scalar(
        select(VerificationChallenge)
        .where(
            VerificationChallenge.customer_id == customer_id,
            VerificationChallenge.status == "pending",
            VerificationChallenge.expires_at > now,
        )
        .order_by(VerificationChallenge.created_at.desc(), VerificationChallenge.id.desc())
        .limit(1)
    )
    if challenge is None:
        return None
    phone = session.scalar(select(Customer.phone).where(Customer.id == customer_id))
    return _view(challenge, phone)


def was_issued_recently(session: Session, customer_id: str, code_digest: str, since: dt.datetime) -> bool:
    """Whether `code_digest` is the digest of a code sent to this customer after `since` (any status).

    The gateway asks this of a typed code when nothing is pending: an expired, used or superseded code must
    be kept out of Rasa too, and matching digests of codes really sent tells it apart from an amount.
    """
    digests = session.scalars(
        select(VerificationChallenge.code_digest)
        .where(VerificationChallenge.customer_id == customer_id, VerificationChallenge.created_at > since)
        .order_by(VerificationChallenge.created_at.desc())
        .limit(50)
    )
    return any(hmac.compare_digest(code_digest, known) for known in digests)


def check(
    session: Session,
    settings: Settings,
    customer_id: str,
    subject_id: str,
    code_digest: str | None,
    now: dt.datetime,
) -> CheckResult:
    """Compare a code digest with the newest challenge for the subject (constant time); count attempts."""
    challenge = session.execute(
        select(VerificationChallenge)
        .where(
            VerificationChallenge.customer_id == customer_id,
            VerificationChallenge.subject_id == subject_id,
        )
        .order_by(VerificationChallenge.created_at.desc(), VerificationChallenge.id.desc())
        .limit(1)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if challenge is None:
        return CheckResult(NO_CHALLENGE, 0)
    left = max(0, challenge.max_attempts - challenge.attempts)
    if challenge.status in ("verified", "consumed"):
        return CheckResult(REUSED, left, challenge.id)
    if challenge.status == "failed":
        return CheckResult(LOCKED, 0, challenge.id)
    if challenge.status == "expired":
        return CheckResult(EXPIRED, left, challenge.id)
    if challenge.expires_at <= now:
        challenge.status = "expired"
        challenge.resolved_at = now
        session.flush()
        return CheckResult(EXPIRED, left, challenge.id)
    if left <= 0:
        challenge.status = "failed"
        challenge.resolved_at = now
        session.flush()
        return CheckResult(LOCKED, 0, challenge.id)
    # compare_digest on equal-length hex strings; a missing digest compares against a dummy.
    if hmac.compare_digest(challenge.code_digest, (code_digest or "").lower().strip() or "x" * 64):
        challenge.status = "verified"
        challenge.resolved_at = now
        session.flush()
        return CheckResult(VERIFIED, left, challenge.id)
    challenge.attempts += 1
    left = max(0, challenge.max_attempts - challenge.attempts)
    if left == 0:
        challenge.status = "failed"
        challenge.resolved_at = now
        session.flush()
        return CheckResult(LOCKED, 0, challenge.id)
    session.flush()
    return CheckResult(WRONG, left, challenge.id)


def consume(session: Session, challenge_id: str, now: dt.datetime) -> None:
    """Mark a verified challenge as spent by the operation it authorised."""
    challenge = session.get(VerificationChallenge, challenge_id)
    if challenge is not None and challenge.status == "verified":
        challenge.status = "consumed"
        challenge.resolved_at = now
        session.flush()


def expire_subject(session: Session, customer_id: str, subject_id: str, now: dt.datetime) -> None:
    """Expire the subject's pending challenges (the operation they guarded was abandoned)."""
    rows = session.scalars(
        select(VerificationChallenge).where(
            VerificationChallenge.customer_id == customer_id,
            VerificationChallenge.subject_id == subject_id,
            VerificationChallenge.status == "pending",
        )
    )
    for challenge in rows:
        challenge.status = "expired"
        challenge.resolved_at = now
    session.flush()

"""Staff accounts of the ops console: argon2 passwords, roles, sessions that expire, and the audit log.

Roles are cumulative: a viewer reads; a tester also runs test stories and saves conversations as stories; ops also
edit the NLU data, train, promote and roll back models, and see the audit log. Session tokens are random and kept
only as digests; each session carries its own CSRF token, which every state-changing request must present.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bankcore.models import OpsAuditEntry, OpsSession, OpsUser

ROLES = ("viewer", "tester", "ops")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD_CHARS = 12
_hasher = PasswordHasher()
# A hash to verify against when the user does not exist, so a wrong name costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class StaffAccountError(ValueError):
    """A staff account that cannot be made as asked (staff-facing: the message says why, in English)."""


@dataclass(frozen=True)
class StaffMember:
    id: int
    username: str
    role: str

    def can(self, role: str) -> bool:
        """Whether this member holds `role` or a higher one."""
        return _RANK[self.role] >= _RANK[role]


@dataclass(frozen=True)
class SignedIn:
    member: StaffMember
    token: str  # for the cookie; never stored
    csrf_token: str
    expires_at: dt.datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_user(session: Session, username: str, password: str, role: str, now: dt.datetime) -> StaffMember:
    """Create a member of staff; StaffAccountError for a taken or malformed name, a short password, a bad role."""
    if role not in ROLES:
        raise StaffAccountError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not _USERNAME.match(username):
        raise StaffAccountError("username: 2-64 of a-z 0-9 . _ - starting with a letter or digit")
    if len(password) < MIN_PASSWORD_CHARS:
        raise StaffAccountError(f"password: at least {MIN_PASSWORD_CHARS} characters")
    if session.scalar(select(OpsUser.id).where(OpsUser.username == username)) is not None:
        raise StaffAccountError(f"username {username!r} is taken")
    user = OpsUser(username=username, password_hash=_hasher.hash(password), role=role, created_at=now)
    session.add(user)
    session.flush()
    return StaffMember(user.id, user.username, user.role)


def sign_in(session: Session, username: str, password: str, now: dt.datetime, *, ttl: dt.timedelta) -> SignedIn | None:
    """A new session for the right password (None otherwise, without saying which part was wrong)."""
    user = session.scalar(select(OpsUser).where(OpsUser.username == username))
    try:
        _hasher.verify(user.password_hash if user is not None else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires = now + ttl
    session.add(
        OpsSession(
            token_digest=_digest(token),
            user_id=user.id,
            csrf_token=csrf,
            created_at=now,
            expires_at=expires,
            last_seen_at=now,
        )
    )
    # Expired sessions are swept as new ones open.
    session.execute(delete(OpsSession).where(OpsSession.expires_at <= now))
    session.flush()
    return SignedIn(StaffMember(user.id, user.username, user.role), token, csrf, expires)


def session_for(session: Session, token: str, now: dt.datetime) -> tuple[StaffMember, str] | None:
    """The member and CSRF token of a live session; None when unknown, expired, or the account is disabled."""
    if not token:
        return None
    row = session.get(OpsSession, _digest(token))
    if row is None or row.expires_at <= now:
        return None
    user = session.get(OpsUser, row.user_id)
    if user is None or user.disabled:
        return None
    row.last_seen_at = now
    return StaffMember(user.id, user.username, user.role), row.csrf_token


def csrf_matches(expected: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(expected.encode(), (presented or "").encode())


def sign_out(session: Session, token: str) -> None:
    session.execute(delete(OpsSession).where(OpsSession.token_digest == _digest(token)))


def audit(session: Session, member: StaffMember, action: str, target: str, diff: str, now: dt.datetime) -> None:
    session.add(OpsAuditEntry(at=now, username=member.username, action=action, target=target[:255], diff=diff))
    session.flush()


@dataclass(frozen=True)
class AuditView:
    at: dt.datetime
    username: str
    action: str
    target: str
    diff: str


def recent_audit(session: Session, limit: int = 100) -> list[AuditView]:
    rows = session.scalars(
        select(OpsAuditEntry).order_by(OpsAuditEntry.at.desc(), OpsAuditEntry.id.desc()).limit(limit)
    )
    return [AuditView(r.at, r.username, r.action, r.target, r.diff) for r in rows]

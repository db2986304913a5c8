"""Claims on customer messages in flight, shared by every gateway process through the database.

A message that carries a client message id is claimed before it goes to Rasa. The claim is a lease the
owner renews while it waits; a retry of the same message (the customer's client resent it, perhaps through
another gateway because the first one died) either waits for the owner or, once the owner is done or its
lease ran out, takes the claim over and must look for the message in the conversation's tracker before
sending it again. See channels/turn_dedupe.py for the protocol and docs/cluster.md for what it guarantees.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bankcore.models import TurnClaim

_CLAIMS: Table = TurnClaim.__table__  # type: ignore[assignment]

MAX_KEY_CHARS = 200


class ClaimState(Enum):
    NEW = "new"  # first sight of this message: nobody can have sent it to Rasa yet
    TAKEN_OVER = "taken_over"  # seen before (answered, or its owner stopped renewing): check the tracker first
    BUSY = "busy"  # another owner holds a live lease: wait for it


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    lease_until: dt.datetime  # ours for NEW/TAKEN_OVER, the holder's for BUSY
    attempts: int


def claim(session: Session, key: str, owner: str, now: dt.datetime, lease: dt.timedelta) -> Claim:
    """Claim `key` for `owner` until now + lease; commits nothing (the caller commits)."""
    if len(key) > MAX_KEY_CHARS:
        raise ValueError("message key too long")
    until = now + lease
    row = {"message_key": key, "owner": owner, "lease_until": until, "attempts": 1, "created_at": now}
    dialect = session.get_bind().dialect.name
    connection = session.connection()
    if dialect in ("sqlite", "postgresql"):
        upsert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(_CLAIMS)
        inserted = connection.execute(
            upsert.values(**row).on_conflict_do_nothing(index_elements=["message_key"]).returning(_CLAIMS.c.owner)
        ).first()
        if inserted is not None:
            return Claim(ClaimState.NEW, until, 1)
    elif connection.execute(select(_CLAIMS.c.owner).where(_CLAIMS.c.message_key == key)).first() is None:
        connection.execute(insert(_CLAIMS).values(**row))
        return Claim(ClaimState.NEW, until, 1)
    taken = connection.execute(
        update(_CLAIMS)
        .where(
            _CLAIMS.c.message_key == key,
            (_CLAIMS.c.done_at.is_not(None)) | (_CLAIMS.c.lease_until < now),
        )
        .values(owner=owner, lease_until=until, attempts=_CLAIMS.c.attempts + 1, done_at=None)
        .returning(_CLAIMS.c.attempts)
    ).first()
    if taken is not None:
        return Claim(ClaimState.TAKEN_OVER, until, int(taken[0]))
    holder = connection.execute(
        select(_CLAIMS.c.lease_until, _CLAIMS.c.attempts).where(_CLAIMS.c.message_key == key)
    ).one()
    return Claim(ClaimState.BUSY, holder[0], int(holder[1]))


def renew(session: Session, key: str, owner: str, until: dt.datetime) -> bool:
    """Extend our lease; False when the claim is no longer ours (it ran out and was taken over)."""
    result = session.execute(
        update(_CLAIMS)
        .where(_CLAIMS.c.message_key == key, _CLAIMS.c.owner == owner, _CLAIMS.c.done_at.is_(None))
        .values(lease_until=until)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def finish(session: Session, key: str, owner: str, now: dt.datetime) -> None:
    """Rasa answered: the message is in the tracker, and a retry will read its replies from there."""
    session.execute(update(_CLAIMS).where(_CLAIMS.c.message_key == key, _CLAIMS.c.owner == owner).values(done_at=now))


def release(session: Session, key: str, owner: str, now: dt.datetime) -> None:
    """We gave up without an answer: end the lease now so a retry takes over at once (and checks the tracker)."""
    session.execute(
        update(_CLAIMS)
        .where(_CLAIMS.c.message_key == key, _CLAIMS.c.owner == owner, _CLAIMS.c.done_at.is_(None))
        .values(lease_until=now)
    )


def status(session: Session, key: str) -> tuple[dt.datetime, dt.datetime | None] | None:
    """(lease_until, done_at) of a claim, None when there is none."""
    row = session.execute(select(_CLAIMS.c.lease_until, _CLAIMS.c.done_at).where(_CLAIMS.c.message_key == key)).first()
    return None if row is None else (row[0], row[1])


def prune(session: Session, before: dt.datetime, batch: int = 5000) -> int:
    """Delete claims created before `before` (a day is plenty: clients retry within minutes)."""
    keys = select(_CLAIMS.c.message_key).where(_CLAIMS.c.created_at < before).limit(batch).scalar_subquery()
    result = session.execute(delete(_CLAIMS).where(_CLAIMS.c.message_key.in_(keys)))
    return int(result.rowcount)  # type: ignore[attr-defined]

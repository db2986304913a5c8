"""Turn claims on SQLite and PostgreSQL: first sight, busy while leased, taken over when done or expired."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session, sessionmaker

from bankcore import turn_claims
from bankcore.turn_claims import ClaimState

T0 = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(seconds=10)


def _claim(factory: sessionmaker[Session], owner: str, now: dt.datetime) -> turn_claims.Claim:
    with factory() as session:
        claim = turn_claims.claim(session, "webchat:C001|m1", owner, now, LEASE)
        session.commit()
        return claim


def test_a_claim_is_new_then_busy_then_taken_over_once_its_lease_ran_out(
    session_factory: sessionmaker[Session],
) -> None:
    assert _claim(session_factory, "gw-1", T0).state is ClaimState.NEW
    busy = _claim(session_factory, "gw-2", T0 + dt.timedelta(seconds=5))
    assert busy.state is ClaimState.BUSY and busy.lease_until == T0 + LEASE
    with session_factory() as session:
        assert turn_claims.renew(session, "webchat:C001|m1", "gw-1", T0 + dt.timedelta(seconds=20))
        assert not turn_claims.renew(session, "webchat:C001|m1", "gw-2", T0 + dt.timedelta(seconds=20))
        session.commit()
    assert _claim(session_factory, "gw-2", T0 + dt.timedelta(seconds=15)).state is ClaimState.BUSY
    taken = _claim(session_factory, "gw-2", T0 + dt.timedelta(seconds=21))
    assert taken.state is ClaimState.TAKEN_OVER and taken.attempts == 2
    # gw-1 woke up late: the claim is no longer its own.
    with session_factory() as session:
        assert not turn_claims.renew(session, "webchat:C001|m1", "gw-1", T0 + dt.timedelta(seconds=40))


def test_a_finished_claim_is_taken_over_at_once_and_a_released_one_too(session_factory: sessionmaker[Session]) -> None:
    _claim(session_factory, "gw-1", T0)
    with session_factory() as session:
        turn_claims.finish(session, "webchat:C001|m1", "gw-1", T0 + dt.timedelta(seconds=1))
        session.commit()
    assert _claim(session_factory, "gw-2", T0 + dt.timedelta(seconds=2)).state is ClaimState.TAKEN_OVER
    with session_factory() as session:
        turn_claims.release(session, "webchat:C001|m1", "gw-2", T0 + dt.timedelta(seconds=3))
        session.commit()
    assert _claim(session_factory, "gw-3", T0 + dt.timedelta(seconds=4)).state is ClaimState.TAKEN_OVER


def test_old_claims_are_pruned(session_factory: sessionmaker[Session]) -> None:
    _claim(session_factory, "gw-1", T0)
    with session_factory() as session:
        assert turn_claims.prune(session, T0 - dt.timedelta(seconds=1)) == 0
        assert turn_claims.prune(session, T0 + dt.timedelta(days=1)) == 1
        session.commit()
        assert turn_claims.status(session, "webchat:C001|m1") is None

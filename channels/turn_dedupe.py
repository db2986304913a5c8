"""Exactly one answer per customer message, across retries and gateway processes.

A client that resends a message it got no answer for (a dropped connection, a gateway killed mid-turn, a 503)
sends the same `message_id`. The gateway that receives it claims the message in the shared database
(bankcore.turn_claims) before sending it to Rasa, with the id in the message metadata, so Rasa records it in
the tracker with the user event:

- first sight → send it;
- another gateway holds a live claim → wait for it (it renews its lease while Rasa works);
- answered before, or the holder stopped renewing (it died) → take the claim over and look the message up in
  the conversation's tracker: found, its replies are read back from there; not found, it never ran → send it.

What is left: a gateway that dies while Rasa is still running the turn, with Rasa taking longer than the lease
(LEASE) to finish, can see the message sent again. Rasa turns take well under a second (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bankcore import turn_claims
from channels.rasa_client import BotMessage, RasaTimedOut, RasaUnavailable

logger = logging.getLogger(__name__)

LEASE = dt.timedelta(seconds=10)
RENEW_EVERY_S = 3.0
# After a Rasa timeout the claim stays leased this long: the server may still finish the turn, and a retry
# must not send it again meanwhile.
TIMED_OUT_HOLD = dt.timedelta(seconds=30)
POLL_S = 0.25
KEEP_CLAIMS = dt.timedelta(days=1)
PRUNE_EVERY = 1000

OWNER = f"{socket.gethostname()[:40]}:{os.getpid()}"

T = TypeVar("T")


class MessageNotRun(RasaUnavailable):
    """The message could not be claimed (database unreachable, or still running elsewhere past the wait):
    the customer is asked to resend it, and the resend is answered once."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TurnDedupe:
    """Runs `send` for a message at most once per `message_id`, as seen by every gateway sharing the database."""

    def __init__(
        self,
        session_factory: Callable[[], Session],
        *,
        owner: str = OWNER,
        wait_limit_s: float = 30.0,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self._sessions = session_factory
        self._owner = owner
        self._wait_limit = wait_limit_s
        self._clock = clock
        self._claims_since_prune = 0

    async def run(
        self,
        conversation_id: str,
        message_id: str,
        send: Callable[[bool], Awaitable[list[BotMessage]]],
    ) -> list[BotMessage]:
        """`send(seen_before)` runs the turn; `seen_before` says the tracker must be checked first."""
        key = f"{conversation_id}|{message_id}"
        claim = await self._claim(key)
        heartbeat = asyncio.create_task(self._renew_while_running(key))
        try:
            replies = await send(claim.state is turn_claims.ClaimState.TAKEN_OVER)
        except RasaTimedOut:
            await self._quietly(turn_claims.renew, key, self._owner, self._clock() + TIMED_OUT_HOLD)
            raise
        except BaseException:
            await self._quietly(turn_claims.release, key, self._owner, self._clock())
            raise
        finally:
            heartbeat.cancel()
        await self._quietly(turn_claims.finish, key, self._owner, self._clock())
        return replies

    async def _claim(self, key: str) -> turn_claims.Claim:
        deadline = time.monotonic() + self._wait_limit
        while True:
            try:
                claim = await self._in_session(turn_claims.claim, key, self._owner, self._clock(), LEASE)
            except SQLAlchemyError as error:
                raise MessageNotRun(f"could not claim the message: {type(error).__name__}") from error
            if claim.state is not turn_claims.ClaimState.BUSY:
                await self._maybe_prune()
                return claim
            if time.monotonic() >= deadline:
                raise MessageNotRun("the message is still being answered elsewhere")
            await asyncio.sleep(POLL_S)

    async def _renew_while_running(self, key: str) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            await self._quietly(turn_claims.renew, key, self._owner, self._clock() + LEASE)

    async def _maybe_prune(self) -> None:
        self._claims_since_prune += 1
        if self._claims_since_prune >= PRUNE_EVERY:
            self._claims_since_prune = 0
            await self._quietly(turn_claims.prune, self._clock() - KEEP_CLAIMS)

    async def _in_session(self, operation: Callable[..., T], *args: object) -> T:
        def work() -> T:
            with self._sessions() as session:
                result = operation(session, *args)
                session.commit()
                return result

        return await asyncio.to_thread(work)

    async def _quietly(self, operation: Callable[..., object], *args: object) -> None:
        # Bookkeeping after the fact: a failure only makes a retry wait for the lease or check the tracker.
        try:
            await self._in_session(operation, *args)
        except SQLAlchemyError:
            logger.warning("turn claim bookkeeping failed", exc_info=True)

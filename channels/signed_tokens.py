"""Stateless signed bearer tokens: a subject and an expiry, HMAC-SHA256 signed with a key derived from the
settings key and a purpose label (web chat sessions, mini-program sessions)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

_VERSION = "v1"
# A purpose label derives a key of its own, so a token signature can never double as an OTP digest, and a
# token of one channel is never accepted by another.
WEBCHAT_PURPOSE = b"bankbot/webchat-token/v1"


class InvalidToken(Exception):
    """The token is malformed, forged or expired (the reason is for logs, never for the customer)."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SignedTokens:
    """Issues and verifies `v1.<subject, base64url>.<expiry, unix s>.<signature, base64url>`."""

    def __init__(
        self, secret_key: str, ttl_seconds: int, purpose: bytes, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = hmac.new(secret_key.encode("utf-8"), purpose, hashlib.sha256).digest()
        self._ttl = ttl_seconds
        self._clock = clock

    def _sign(self, unsigned: str) -> str:
        return _b64encode(hmac.new(self._key, unsigned.encode("ascii"), hashlib.sha256).digest())

    def issue(self, customer_id: str) -> IssuedToken:
        expires_at = int(self._clock()) + self._ttl
        unsigned = f"{_VERSION}.{_b64encode(customer_id.encode('utf-8'))}.{expires_at}"
        return IssuedToken(token=f"{unsigned}.{self._sign(unsigned)}", expires_in=self._ttl)

    def verify(self, token: str) -> str:
        """The customer id the token was issued to; raises InvalidToken otherwise."""
        # compare_digest refuses non-ASCII str, and no genuine token contains any.
        if not token.isascii():
            raise InvalidToken("malformed")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            raise InvalidToken("malformed")
        unsigned, signature = ".".join(parts[:3]), parts[3]
        if not hmac.compare_digest(self._sign(unsigned), signature):
            raise InvalidToken("bad signature")
        try:
            customer_id = _b64decode(parts[1]).decode("utf-8")
            expires_at = int(parts[2])
        except (binascii.Error, UnicodeDecodeError, ValueError) as error:
            raise InvalidToken("malformed payload") from error
        if expires_at <= self._clock():
            raise InvalidToken("expired")
        return customer_id


class WebChatTokens(SignedTokens):
    """Web chat sessions: the subject is the customer id."""

    def __init__(self, secret_key: str, ttl_seconds: int, clock: Callable[[], float] = time.time) -> None:
        super().__init__(secret_key, ttl_seconds, WEBCHAT_PURPOSE, clock)

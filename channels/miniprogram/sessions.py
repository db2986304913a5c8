"""Mini-program session tokens: signed, expiring, bound to the user's openid (and unionid when there is one).

The token never carries WeChat's session_key (which stays on the server side of code2Session and is dropped
here: the assistant decrypts no user data with it), nor the customer id: binding may happen during the session,
so each request resolves the openid to a customer afresh.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from channels.signed_tokens import InvalidToken, IssuedToken, SignedTokens

_PURPOSE = b"bankbot/miniprogram-session/v1"


@dataclass(frozen=True)
class MiniProgramUser:
    openid: str
    unionid: str | None


class MiniProgramTokens:
    def __init__(self, secret_key: str, ttl_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self._tokens = SignedTokens(secret_key, ttl_seconds, _PURPOSE, clock)

    def issue(self, user: MiniProgramUser) -> IssuedToken:
        subject = json.dumps({"o": user.openid, "u": user.unionid}, separators=(",", ":"))
        return self._tokens.issue(subject)

    def verify(self, token: str) -> MiniProgramUser:
        """The user the token was issued to; raises InvalidToken otherwise."""
        subject = self._tokens.verify(token)
        try:
            data = json.loads(subject)
            openid, unionid = data["o"], data.get("u")
        except (ValueError, KeyError, TypeError) as error:
            raise InvalidToken("malformed subject") from error
        if not isinstance(openid, str) or not openid or not (unionid is None or isinstance(unionid, str)):
            raise InvalidToken("malformed subject")
        return MiniProgramUser(openid=openid, unionid=unionid)

"""Local stand-ins for the WeCom and WeChat server APIs, for tests and benches; never a product code path.

A bank deployment points the API base URLs at the real platforms. These simulators implement the documented
success and error bodies (errcode/errmsg) and add fault injection: expired tokens, platform errors, HTTP
errors, an outage, latency and a rate limit. Import them from ``.wecom`` and ``.wechat``; this module holds
what both share.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _Fault:
    remaining: int
    endpoint: str | None
    errcode: int = 0
    errmsg: str | None = None
    status: int = 0


class PlatformSimulator:
    """What both simulators share: token issue and checks, counters and fault injection.

    Endpoints are named by their path without the leading "/cgi-bin/": "gettoken", "message/send",
    "sns/jscode2session", "token"... ``calls`` counts every request per endpoint, injected failures included.
    """

    # errcode → errmsg as the platform spells it; subclasses fill it in.
    ERRMSGS: ClassVar[dict[int, str]] = {}
    UNKNOWN_TOKEN_ERRCODE: ClassVar[int] = 40014
    RATE_LIMIT_ERRCODE: ClassVar[int] = 45009

    def __init__(self, *, token_ttl_s: int, clock: Callable[[], float]) -> None:
        self.token_ttl_s = token_ttl_s
        self.down = False
        self.latency_s = 0.0
        self.rate_limit_per_s: int | None = None
        self.calls: Counter[str] = Counter()
        self._clock = clock
        self._tokens: dict[str, float] = {}
        self._faults: list[_Fault] = []
        self._recent: list[float] = []

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this simulator's state."""
        app = web.Application(middlewares=[self._platform_behaviour])
        app.add_routes(self._routes())
        return app

    def fail_next(self, n: int, errcode: int = -1, errmsg: str | None = None, *, endpoint: str | None = None) -> None:
        """The next ``n`` requests (to ``endpoint``, or to any) answer HTTP 200 with this errcode."""
        if n > 0:
            self._faults.append(_Fault(remaining=n, endpoint=endpoint, errcode=errcode, errmsg=errmsg))

    def fail_next_http(self, n: int, status: int = 502, *, endpoint: str | None = None) -> None:
        """The next ``n`` requests (to ``endpoint``, or to any) answer this HTTP status with a non-JSON body."""
        if n > 0:
            self._faults.append(_Fault(remaining=n, endpoint=endpoint, status=status))

    def expire_all_tokens(self) -> None:
        """Every access token issued so far now answers 42001 (the platform may expire tokens early)."""
        for token in self._tokens:
            self._tokens[token] = float("-inf")

    def revoke_all_tokens(self) -> None:
        """Forget every access token issued so far, as when another server fetched a new one: unknown now."""
        self._tokens.clear()

    @property
    def tokens_issued(self) -> int:
        return len(self._tokens)

    def _routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def _issue_token(self) -> str:
        token = secrets.token_urlsafe(96)
        self._tokens[token] = self._clock() + self.token_ttl_s
        return token

    def _token_error(self, request: web.Request) -> web.Response | None:
        """The error reply for a missing, unknown or expired access_token; None when it is valid."""
        token = request.query.get("access_token")
        if not token:
            return self._error(41001)
        expires_at = self._tokens.get(token)
        if expires_at is None:
            return self._error(self.UNKNOWN_TOKEN_ERRCODE)
        if self._clock() >= expires_at:
            return self._error(42001)
        return None

    def _error(self, errcode: int, errmsg: str | None = None, **extra: Any) -> web.Response:
        message = errmsg if errmsg is not None else self.ERRMSGS.get(errcode, "unknown error")
        return self._reply({"errcode": errcode, "errmsg": self._decorate(errcode, message), **extra})

    def _reply(self, body: dict[str, Any]) -> web.Response:
        return web.json_response(body)

    def _decorate(self, errcode: int, errmsg: str) -> str:
        """The platform appends a request id or hint to errmsg; clients must go by errcode, never errmsg."""
        return errmsg

    @web.middleware
    async def _platform_behaviour(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        endpoint = _endpoint(request.path)
        self.calls[endpoint] += 1
        if self.down:
            return web.Response(status=503, text="503 Service Unavailable")
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        fault = self._take_fault(endpoint)
        if fault is not None:
            if fault.status:
                return web.Response(status=fault.status, text=f"{fault.status} injected failure")
            return self._error(fault.errcode, fault.errmsg)
        if self._rate_limited():
            return self._error(self.RATE_LIMIT_ERRCODE)
        return await handler(request)

    def _take_fault(self, endpoint: str) -> _Fault | None:
        for fault in self._faults:
            if fault.endpoint is None or fault.endpoint == endpoint:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _rate_limited(self) -> bool:
        if self.rate_limit_per_s is None:
            return False
        now = self._clock()
        self._recent = [at for at in self._recent if now - at < 1.0]
        if len(self._recent) >= self.rate_limit_per_s:
            return True
        self._recent.append(now)
        return False


def _endpoint(path: str) -> str:
    name = path.lstrip("/")
    return name.removeprefix("cgi-bin/")

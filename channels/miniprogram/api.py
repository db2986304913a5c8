"""Client for the WeChat mini-program server API: code2Session login, access token and subscribe messages."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from channels.platform_api import (
    HTTP_STATUS_ERROR,
    MALFORMED_REPLY,
    UNREACHABLE,
    CachedAccessToken,
    SharedAccessToken,
)
from channels.redis_state import RedisState

logger = logging.getLogger(__name__)

# The production host; every client takes its base URL as an argument (tests use the simulator).
WECHAT_API_BASE_URL = "https://api.weixin.qq.com"

SYSTEM_BUSY = -1
INVALID_CREDENTIAL = 40001  # wrong AppSecret at cgi-bin/token; elsewhere "access_token is invalid or not latest"
INVALID_OPENID = 40003
INVALID_APP_ID = 40013
INVALID_ACCESS_TOKEN = 40014
INVALID_CODE = 40029
CODE_BEEN_USED = 40163
ACCESS_TOKEN_EXPIRED = 42001
SUBSCRIPTION_REFUSED = 43101
DAILY_QUOTA_REACHED = 45009
MINUTE_QUOTA_REACHED = 45011
ARGUMENT_INVALID = 47003

# On the WeChat platform a token superseded by a newer cgi-bin/token call answers 40001, not 40014.
TOKEN_REJECTED = frozenset({INVALID_CREDENTIAL, INVALID_ACCESS_TOKEN, ACCESS_TOKEN_EXPIRED})
# 45009 here is the daily quota: retrying within the day does not help, so it is not retryable.
_RETRYABLE = frozenset({SYSTEM_BUSY, MINUTE_QUOTA_REACHED, UNREACHABLE})


class WeChatApiError(Exception):
    """WeChat refused a call or could not be reached; ``retryable`` says whether trying again later may help.

    ``errcode`` is the platform's, or a negative local code (shared with channels.wecom.api). Never carries
    the app secret, an access token, a login code or a session_key.
    """

    code = "wechat_api_error"

    def __init__(
        self, errcode: int, errmsg: str, *, retryable: bool | None = None, http_status: int | None = None
    ) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.retryable = errcode in _RETRYABLE if retryable is None else retryable
        self.http_status = http_status
        super().__init__(f"WeChat errcode {errcode}: {errmsg}")


class SubscriptionRefused(WeChatApiError):
    """43101: the user has not consented to (or has used up, or cancelled) this subscribe-message template."""

    code = "subscription_refused"


@dataclass(frozen=True)
class MiniProgramSession:
    """Who logged in (openid, unionid when the app is bound to an Open Platform account) and their session key.

    session_key signs and decrypts the user's data; it stays on the server and out of repr and logs.
    """

    openid: str
    unionid: str | None
    session_key: str = field(repr=False)


class WeChatApi:
    """One mini-program (AppID + AppSecret) over the application's shared ClientSession."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        app_id: str,
        app_secret: str,
        *,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin_s: float = 300.0,
        redis: RedisState | None = None,
    ) -> None:
        self._http = http
        self._base = URL(base_url.rstrip("/"))
        self._app_id = app_id
        self._app_secret = app_secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        # With a Redis, the gateways and the reminder workers share the app's one token.
        shared = SharedAccessToken(redis, "wechat", app_id) if redis is not None else None
        self._token = CachedAccessToken(
            self._fetch_token, clock=clock, refresh_margin_s=refresh_margin_s, shared=shared
        )

    def __repr__(self) -> str:
        return f"<WeChatApi app_id={self._app_id!r} base_url={str(self._base)!r}>"

    async def code2session(self, code: str) -> MiniProgramSession:
        """Exchange a wx.login code (valid once, for 5 minutes) for the user's openid and session key.

        40029 invalid code and 40163 code been used raise WeChatApiError (not retryable); 45011 (minute
        quota) and -1 are retryable.
        """
        params = {
            "appid": self._app_id,
            "secret": self._app_secret,
            "js_code": code,
            "grant_type": "authorization_code",
        }
        reply = await self._request_json("sns/jscode2session", "GET", params)
        errcode = _errcode(reply)
        if errcode != 0:
            raise _platform_error("sns/jscode2session", errcode, reply)
        openid = reply.get("openid")
        session_key = reply.get("session_key")
        if not isinstance(openid, str) or not openid or not isinstance(session_key, str) or not session_key:
            raise _fail("sns/jscode2session", WeChatApiError(MALFORMED_REPLY, "reply lacks openid or session_key"))
        unionid = reply.get("unionid")
        return MiniProgramSession(
            openid=openid,
            unionid=unionid if isinstance(unionid, str) and unionid else None,
            session_key=session_key,
        )

    async def access_token(self) -> str:
        """A valid access token (cgi-bin/token, client_credential): cached, one fetch at a time."""
        return await self._token.get()

    async def invalidate(self, token: str) -> None:
        """Forget the cached (and shared) token if it is ``token``."""
        await self._token.invalidate(token)

    async def send_subscribe_message(
        self,
        *,
        touser: str,
        template_id: str,
        data: Mapping[str, Mapping[str, str]],
        page: str | None = None,
        miniprogram_state: str = "formal",
        lang: str = "zh_CN",
    ) -> None:
        """POST message/subscribe/send; ``data`` is {"thing1": {"value": "..."}, ...}.

        A rejected token is refreshed once and the send retried once. 43101 (no consent left for this
        template) raises SubscriptionRefused; 40003 bad openid, 47003 bad data and the rest WeChatApiError.
        """
        body: dict[str, Any] = {
            "touser": touser,
            "template_id": template_id,
            "data": {key: dict(value) for key, value in data.items()},
            "miniprogram_state": miniprogram_state,
            "lang": lang,
        }
        if page is not None:
            body["page"] = page
        token = await self.access_token()
        reply = await self._request_json("cgi-bin/message/subscribe/send", "POST", {"access_token": token}, body)
        errcode = _errcode(reply)
        if errcode in TOKEN_REJECTED:
            logger.info("WeChat subscribe/send: access token rejected (errcode %s), refreshing once", errcode)
            await self.invalidate(token)
            token = await self.access_token()
            reply = await self._request_json("cgi-bin/message/subscribe/send", "POST", {"access_token": token}, body)
            errcode = _errcode(reply)
        if errcode != 0:
            raise _platform_error("cgi-bin/message/subscribe/send", errcode, reply)

    async def _fetch_token(self) -> tuple[str, float]:
        params = {"grant_type": "client_credential", "appid": self._app_id, "secret": self._app_secret}
        reply = await self._request_json("cgi-bin/token", "GET", params)
        errcode = _errcode(reply)
        if errcode != 0:
            raise _platform_error("cgi-bin/token", errcode, reply)
        token = reply.get("access_token")
        expires_in = reply.get("expires_in")
        if (
            not isinstance(token, str)
            or not token
            or not isinstance(expires_in, int | float)
            or isinstance(expires_in, bool)
        ):
            raise _fail("cgi-bin/token", WeChatApiError(MALFORMED_REPLY, "reply lacks access_token or expires_in"))
        logger.info("WeChat access token refreshed (expires_in %s s)", expires_in)
        return token, float(expires_in)

    async def _request_json(
        self, endpoint: str, method: str, params: Mapping[str, str], body: Any = None
    ) -> dict[str, Any]:
        url = self._base / endpoint
        try:
            async with self._http.request(method, url, params=params, json=body, timeout=self._timeout) as response:
                if response.status >= 300:
                    status = response.status
                    raise _fail(
                        endpoint,
                        WeChatApiError(
                            HTTP_STATUS_ERROR,
                            f"{endpoint} answered HTTP {status}",
                            retryable=status >= 500 or status == 429,
                            http_status=status,
                        ),
                    )
                try:
                    # jscode2session answers with Content-Type text/plain, so do not insist on JSON's.
                    reply = await response.json(content_type=None)
                except ValueError:
                    reply = None
        except (TimeoutError, aiohttp.ClientError) as error:
            # "from None": aiohttp's messages can quote the URL, which holds the secret, a code or the token.
            kind = "timed out" if isinstance(error, TimeoutError) else f"unreachable ({type(error).__name__})"
            raise _fail(endpoint, WeChatApiError(UNREACHABLE, f"{endpoint} {kind}", retryable=True)) from None
        if not isinstance(reply, dict):
            raise _fail(
                endpoint, WeChatApiError(MALFORMED_REPLY, f"{endpoint} answered something other than an object")
            )
        return reply


def _errcode(reply: Mapping[str, Any]) -> int:
    """The reply's errcode; absent means success (jscode2session omits it). Sometimes sent as a string."""
    value = reply.get("errcode", 0)
    if isinstance(value, bool):
        return MALFORMED_REPLY
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdecimal():
        return int(value)
    return MALFORMED_REPLY


def _platform_error(endpoint: str, errcode: int, reply: Mapping[str, Any]) -> WeChatApiError:
    errmsg = str(reply.get("errmsg", ""))
    error_type = SubscriptionRefused if errcode == SUBSCRIPTION_REFUSED else WeChatApiError
    return _fail(endpoint, error_type(errcode, errmsg))


def _fail(endpoint: str, error: WeChatApiError) -> WeChatApiError:
    # errcodes and statuses only: the URL holds credentials, and errmsg is free text from the platform.
    logger.warning(
        "WeChat %s failed: errcode %s%s (retryable: %s)",
        endpoint,
        error.errcode,
        f", HTTP {error.http_status}" if error.http_status is not None else "",
        error.retryable,
    )
    return error

"""Client for the WeChat Work (企业微信) server API: access token, message/send and media/get."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from channels.platform_api import (
    HTTP_STATUS_ERROR,
    MALFORMED_REPLY,
    MEDIA_TOO_LARGE,
    UNREACHABLE,
    CachedAccessToken,
    SharedAccessToken,
)
from channels.redis_state import RedisState

logger = logging.getLogger(__name__)

# The production host; every client takes its base URL as an argument so tests and benches can point it
# at channels.platform_simulators instead.
WECOM_API_BASE_URL = "https://qyapi.weixin.qq.com"

# Platform errcodes this client acts on (the WeCom global error code table).
SYSTEM_BUSY = -1
INVALID_SECRET = 40001
INVALID_MEDIA_ID = 40007
INVALID_CORP_ID = 40013
INVALID_ACCESS_TOKEN = 40014
ACCESS_TOKEN_EXPIRED = 42001
API_FREQUENCY_LIMIT = 45009
ALL_RECIPIENTS_INVALID = 81013


TOKEN_REJECTED = frozenset({INVALID_ACCESS_TOKEN, ACCESS_TOKEN_EXPIRED})
_RETRYABLE = frozenset({SYSTEM_BUSY, API_FREQUENCY_LIMIT, UNREACHABLE})


class WeComApiError(Exception):
    """WeCom refused a call or could not be reached; ``retryable`` says whether trying again later may help.

    ``errcode`` is the platform's, or one of the negative local codes above. Neither the message nor the
    exception chain ever carries the secret or the access token (both travel in request URLs).
    """

    code = "wecom_api_error"

    def __init__(
        self, errcode: int, errmsg: str, *, retryable: bool | None = None, http_status: int | None = None
    ) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.retryable = errcode in _RETRYABLE if retryable is None else retryable
        self.http_status = http_status
        super().__init__(f"WeCom errcode {errcode}: {errmsg}")


@dataclass(frozen=True)
class SendOutcome:
    """What message/send accepted; recipients WeCom could not deliver to are listed, not raised."""

    errcode: int
    errmsg: str
    msgid: str | None
    invalid_users: tuple[str, ...] = ()
    invalid_parties: tuple[str, ...] = ()
    invalid_tags: tuple[str, ...] = ()
    unlicensed_users: tuple[str, ...] = ()
    # Only for interactive template cards (button_interaction, vote_interaction, multiple_interaction):
    # the one-time code, valid 72 hours, for updating the card after the user clicks.
    response_code: str | None = None

    @property
    def partial_failure(self) -> bool:
        """Accepted (errcode 0), but some recipients will not get the message."""
        return bool(self.invalid_users or self.invalid_parties or self.invalid_tags or self.unlicensed_users)


class WeComApi:
    """One WeCom self-built app (corp id + app secret) over the application's shared ClientSession."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        corp_id: str,
        secret: str,
        *,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin_s: float = 300.0,
        redis: RedisState | None = None,
    ) -> None:
        self._http = http
        self._base = URL(base_url.rstrip("/"))
        self._corp_id = corp_id
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        # With a Redis, every process of the deployment shares the app's one token.
        shared = SharedAccessToken(redis, "wecom", corp_id) if redis is not None else None
        self._token = CachedAccessToken(
            self._fetch_token, clock=clock, refresh_margin_s=refresh_margin_s, shared=shared
        )

    def __repr__(self) -> str:
        return f"<WeComApi corp_id={self._corp_id!r} base_url={str(self._base)!r}>"

    async def access_token(self) -> str:
        """A valid access token: cached until expires_in minus the refresh margin, one gettoken at a time."""
        return await self._token.get()

    async def invalidate(self, token: str) -> None:
        """Forget the cached (and shared) token if it is ``token``; the next call fetches a new one."""
        await self._token.invalidate(token)

    async def send_message(self, body: Mapping[str, Any]) -> SendOutcome:
        """POST message/send (text, markdown, template_card...; ``body`` carries agentid and recipients).

        A rejected token (40014/42001) is refreshed once and the send retried once. errcode 0 with invalid
        recipients comes back as an outcome with ``partial_failure``; any other errcode raises WeComApiError.
        A timeout is retryable but the message may have been delivered: set ``enable_duplicate_check`` in
        the body when retrying must not duplicate it.
        """
        payload = dict(body)
        token = await self.access_token()
        reply = await self._request_json("message/send", "POST", {"access_token": token}, payload)
        errcode = _errcode(reply)
        if errcode in TOKEN_REJECTED:
            logger.info("WeCom message/send: access token rejected (errcode %s), refreshing once", errcode)
            await self.invalidate(token)
            token = await self.access_token()
            reply = await self._request_json("message/send", "POST", {"access_token": token}, payload)
            errcode = _errcode(reply)
        if errcode != 0:
            raise _platform_error("message/send", errcode, reply)
        return SendOutcome(
            errcode=0,
            errmsg=str(reply.get("errmsg", "")),
            msgid=_optional_str(reply.get("msgid")),
            invalid_users=_split_ids(reply.get("invaliduser")),
            invalid_parties=_split_ids(reply.get("invalidparty")),
            invalid_tags=_split_ids(reply.get("invalidtag")),
            unlicensed_users=_split_ids(reply.get("unlicenseduser")),
            response_code=_optional_str(reply.get("response_code")),
        )

    async def download_media(self, media_id: str, *, max_bytes: int = 2_000_000) -> tuple[bytes, str]:
        """GET media/get: (content, content type) of a temporary media file (a voice message is AMR).

        A JSON error body raises WeComApiError with the platform's errcode (40007: unknown or expired
        media_id); a file over ``max_bytes`` raises errcode MEDIA_TOO_LARGE without reading it all.
        """
        token = await self.access_token()
        result = await self._download(token, media_id, max_bytes)
        if isinstance(result, dict) and _errcode(result) in TOKEN_REJECTED:
            logger.info("WeCom media/get: access token rejected (errcode %s), refreshing once", _errcode(result))
            await self.invalidate(token)
            token = await self.access_token()
            result = await self._download(token, media_id, max_bytes)
        if isinstance(result, dict):
            errcode = _errcode(result)
            if errcode == 0:
                raise WeComApiError(MALFORMED_REPLY, "media/get answered JSON instead of the media", retryable=False)
            raise _platform_error("media/get", errcode, result)
        return result

    async def _fetch_token(self) -> tuple[str, float]:
        reply = await self._request_json("gettoken", "GET", {"corpid": self._corp_id, "corpsecret": self._secret})
        errcode = _errcode(reply)
        if errcode != 0:
            raise _platform_error("gettoken", errcode, reply)
        token = reply.get("access_token")
        expires_in = reply.get("expires_in")
        if (
            not isinstance(token, str)
            or not token
            or not isinstance(expires_in, int | float)
            or isinstance(expires_in, bool)
        ):
            raise _fail("gettoken", WeComApiError(MALFORMED_REPLY, "gettoken reply lacks access_token or expires_in"))
        logger.info("WeCom access token refreshed (expires_in %s s)", expires_in)
        return token, float(expires_in)

    async def _request_json(
        self, endpoint: str, method: str, params: Mapping[str, str], body: Any = None
    ) -> dict[str, Any]:
        url = self._base / f"cgi-bin/{endpoint}"
        try:
            async with self._http.request(method, url, params=params, json=body, timeout=self._timeout) as response:
                if response.status >= 300:
                    raise _fail(endpoint, _http_status_error(endpoint, response.status))
                try:
                    reply = await response.json(content_type=None)
                except ValueError:
                    reply = None
        except (TimeoutError, aiohttp.ClientError) as error:
            # "from None": aiohttp's messages can quote the request URL, and the URL holds the secret or token.
            raise _fail(endpoint, _unreachable(endpoint, error)) from None
        if not isinstance(reply, dict):
            raise _fail(
                endpoint, WeComApiError(MALFORMED_REPLY, f"{endpoint} answered something other than a JSON object")
            )
        return reply

    async def _download(self, token: str, media_id: str, max_bytes: int) -> tuple[bytes, str] | dict[str, Any]:
        url = self._base / "cgi-bin/media/get"
        params = {"access_token": token, "media_id": media_id}
        try:
            async with self._http.get(url, params=params, timeout=self._timeout) as response:
                if response.status >= 300:
                    raise _fail("media/get", _http_status_error("media/get", response.status))
                content_type = response.content_type
                may_be_error = content_type in ("application/json", "text/plain")
                # An error body is small JSON; allow reading one even when max_bytes is tiny.
                limit = max(max_bytes, 65_536) if may_be_error else max_bytes
                declared = response.content_length
                if declared is not None and declared > limit:
                    raise _fail("media/get", _too_large(max_bytes))
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(65_536):
                    size += len(chunk)
                    if size > limit:
                        raise _fail("media/get", _too_large(max_bytes))
                    chunks.append(chunk)
        except (TimeoutError, aiohttp.ClientError) as error:
            raise _fail("media/get", _unreachable("media/get", error)) from None
        content = b"".join(chunks)
        if may_be_error and content.lstrip().startswith(b"{"):
            try:
                parsed = json.loads(content)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and "errcode" in parsed:
                return parsed
        if len(content) > max_bytes:
            raise _fail("media/get", _too_large(max_bytes))
        return content, content_type


def _errcode(reply: Mapping[str, Any]) -> int:
    """The reply's errcode; absent means success. Some WeChat replies carry it as a string."""
    value = reply.get("errcode", 0)
    if isinstance(value, bool):
        return MALFORMED_REPLY
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdecimal():
        return int(value)
    return MALFORMED_REPLY


def _platform_error(endpoint: str, errcode: int, reply: Mapping[str, Any]) -> WeComApiError:
    return _fail(endpoint, WeComApiError(errcode, str(reply.get("errmsg", ""))))


def _fail(endpoint: str, error: WeComApiError) -> WeComApiError:
    # errcodes and HTTP statuses only: errmsg is the platform's free text, the URL holds credentials.
    logger.warning(
        "WeCom %s failed: errcode %s%s (retryable: %s)",
        endpoint,
        error.errcode,
        f", HTTP {error.http_status}" if error.http_status is not None else "",
        error.retryable,
    )
    return error


def _http_status_error(endpoint: str, status: int) -> WeComApiError:
    return WeComApiError(
        HTTP_STATUS_ERROR,
        f"{endpoint} answered HTTP {status}",
        retryable=status >= 500 or status == 429,
        http_status=status,
    )


def _unreachable(endpoint: str, error: BaseException) -> WeComApiError:
    kind = "timed out" if isinstance(error, TimeoutError) else f"unreachable ({type(error).__name__})"
    return WeComApiError(UNREACHABLE, f"{endpoint} {kind}", retryable=True)


def _too_large(max_bytes: int) -> WeComApiError:
    return WeComApiError(MEDIA_TOO_LARGE, f"media too large (over {max_bytes} bytes)", retryable=False)


def _split_ids(value: Any) -> tuple[str, ...]:
    """WeCom lists ids as one '|'-separated string ("userid1|userid2"); absent or empty means none."""
    if not isinstance(value, str):
        return ()
    return tuple(part.strip() for part in value.split("|") if part.strip())


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None

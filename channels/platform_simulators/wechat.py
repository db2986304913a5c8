"""A local WeChat mini-program server API for tests and benches: jscode2session, token and subscribe/send."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from channels.platform_simulators import PlatformSimulator


@dataclass
class _LoginCode:
    openid: str
    unionid: str | None
    expires_at: float
    used: bool = False


class WeChatSimulator(PlatformSimulator):
    """Plays one mini-program: login codes, access tokens and one-time subscribe-message consent.

    ``issue_login_code`` stands in for wx.login on the phone; ``grant_subscription`` for the user ticking a
    template in wx.requestSubscribeMessage (each grant allows one message). When ``known_openids`` is a set,
    subscribe/send to anyone else answers 40003. ``subscribe_sent`` holds one dict per accepted message:
    received_at (the simulator clock) and body (the request as sent).
    """

    ERRMSGS: ClassVar[dict[int, str]] = {
        -1: "system error",
        40001: "invalid credential, access_token is invalid or not latest",
        40002: "invalid grant_type",
        40003: "invalid openid",
        40013: "invalid appid",
        40014: "invalid access_token",
        40029: "invalid code",
        40037: "invalid template_id",
        40163: "code been used",
        41001: "access_token missing",
        41002: "appid missing",
        41004: "appsecret missing",
        41008: "missing code",
        42001: "access_token expired",
        43101: "user refuse to accept the msg",
        45009: "reach max api daily quota limit",
        45011: "api minute-quota reach limit mustslower retry next minute",
        47001: "data format error",
        47003: "argument invalid!",
    }
    # A well-formed token the platform does not know (or has superseded) answers 40001; a malformed one 40014.
    UNKNOWN_TOKEN_ERRCODE: ClassVar[int] = 40001
    RATE_LIMIT_ERRCODE: ClassVar[int] = 45011

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        token_ttl_s: int = 7200,
        *,
        known_openids: set[str] | None = None,
        login_code_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(token_ttl_s=token_ttl_s, clock=clock)
        self.app_id = app_id
        self.app_secret = app_secret
        self.known_openids = known_openids
        self.login_code_ttl_s = login_code_ttl_s
        self.subscribe_sent: list[dict[str, Any]] = []
        # The session_key each openid was last given, for tests that check what the client received.
        self.session_keys: dict[str, str] = {}
        self._codes: dict[str, _LoginCode] = {}
        self._consents: Counter[tuple[str, str]] = Counter()

    @property
    def token_calls(self) -> int:
        return self.calls["token"]

    @property
    def code2session_calls(self) -> int:
        return self.calls["sns/jscode2session"]

    @property
    def subscribe_calls(self) -> int:
        return self.calls["message/subscribe/send"]

    def issue_login_code(self, openid: str, unionid: str | None = None) -> str:
        """A wx.login code for ``openid``: valid once, for login_code_ttl_s (5 minutes, as on the platform)."""
        code = secrets.token_urlsafe(24)
        self._codes[code] = _LoginCode(openid, unionid, self._clock() + self.login_code_ttl_s)
        if self.known_openids is not None:
            self.known_openids.add(openid)
        return code

    def grant_subscription(self, openid: str, template_id: str, count: int = 1) -> None:
        """The user accepted ``template_id`` ``count`` times (one-time subscription: one message per grant)."""
        self._consents[(openid, template_id)] += count

    def remaining_subscriptions(self, openid: str, template_id: str) -> int:
        return self._consents[(openid, template_id)]

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/sns/jscode2session", self._jscode2session),
            web.get("/cgi-bin/token", self._token),
            web.post("/cgi-bin/message/subscribe/send", self._subscribe_send),
        ]

    def _decorate(self, errcode: int, errmsg: str) -> str:
        if errcode == 0:
            return errmsg
        rid = "-".join(secrets.token_hex(4) for _ in range(3))
        return f"{errmsg} rid: {rid}"

    def _token_error(self, request: web.Request) -> web.Response | None:
        token = request.query.get("access_token")
        if token and token not in self._tokens and len(token) < 32:
            return self._error(40014)
        return super()._token_error(request)

    async def _jscode2session(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("grant_type") != "authorization_code":
            return self._text_error(40002)
        if not query.get("appid"):
            return self._text_error(41002)
        if query.get("appid") != self.app_id:
            return self._text_error(40013)
        if not query.get("secret"):
            return self._text_error(41004)
        if query.get("secret") != self.app_secret:
            return self._text_error(40001)
        code = query.get("js_code")
        if not code:
            return self._text_error(41008)
        login = self._codes.get(code)
        if login is None or self._clock() >= login.expires_at:
            return self._text_error(40029)
        if login.used:
            return self._text_error(40163)
        login.used = True
        session_key = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
        self.session_keys[login.openid] = session_key
        body: dict[str, Any] = {"session_key": session_key, "openid": login.openid}
        if login.unionid is not None:
            body["unionid"] = login.unionid
        return _text_json(body)

    def _text_error(self, errcode: int) -> web.Response:
        message = self._decorate(errcode, self.ERRMSGS.get(errcode, "unknown error"))
        return _text_json({"errcode": errcode, "errmsg": message})

    async def _token(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("grant_type") != "client_credential":
            return self._error(40002)
        if not query.get("appid"):
            return self._error(41002)
        if query.get("appid") != self.app_id:
            return self._error(40013)
        if not query.get("secret"):
            return self._error(41004)
        if query.get("secret") != self.app_secret:
            return self._error(40001, "AppSecret error or AppSecret does not belong to this appid")
        return self._reply({"access_token": self._issue_token(), "expires_in": self.token_ttl_s})

    async def _subscribe_send(self, request: web.Request) -> web.Response:
        received_at = self._clock()
        token_error = self._token_error(request)
        if token_error is not None:
            return token_error
        try:
            body = json.loads(await request.text())
        except ValueError:
            return self._error(47001)
        if not isinstance(body, dict):
            return self._error(47001)
        touser = body.get("touser")
        if not isinstance(touser, str) or not touser:
            return self._error(40003)
        if self.known_openids is not None and touser not in self.known_openids:
            return self._error(40003)
        template_id = body.get("template_id")
        if not isinstance(template_id, str) or not template_id:
            return self._error(40037)
        data_problem = _data_problem(body.get("data"))
        if data_problem is not None:
            return self._error(47003, f"argument invalid! {data_problem}")
        if self._consents[(touser, template_id)] <= 0:
            return self._error(43101)
        self._consents[(touser, template_id)] -= 1
        self.subscribe_sent.append({"received_at": received_at, "body": body})
        return self._reply({"errcode": 0, "errmsg": "ok", "msgid": secrets.randbelow(2**62)})


def _data_problem(data: Any) -> str | None:
    """What is wrong with a subscribe message's data ({"thing1": {"value": "..."}, ...}); None when fine."""
    if not isinstance(data, dict) or not data:
        return "data is empty"
    for key, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), str):
            return f"data.{key}.value invalid"
        if not entry["value"]:
            return f"data.{key}.value is empty"
    return None


def _text_json(body: dict[str, Any]) -> web.Response:
    # jscode2session answers JSON labelled text/plain; clients must not insist on application/json.
    return web.Response(text=json.dumps(body, ensure_ascii=False), content_type="text/plain")

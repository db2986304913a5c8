"""A local WeCom (企业微信) server API for tests and benches: gettoken, message/send and media/get."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from typing import Any, ClassVar

from aiohttp import web

from channels.platform_simulators import PlatformSimulator

# Interactive template cards answer a response_code (used later to update the card after a click).
_INTERACTIVE_CARDS = frozenset({"button_interaction", "vote_interaction", "multiple_interaction"})
_CARD_TYPES = frozenset({"text_notice", "news_notice", *_INTERACTIVE_CARDS})
# Accepted without checking their content; the bot sends text, markdown and template cards.
_OTHER_MSGTYPES = frozenset({"image", "voice", "video", "file", "textcard", "news", "mpnews", "miniprogram_notice"})
_MAX_CONTENT_BYTES = 2048


class WeComSimulator(PlatformSimulator):
    """Plays one WeCom corp and self-built app, recording what it accepted.

    ``users`` is the directory (None: every userid exists); userids compare case-insensitively and come back
    lowercased, as on the platform. There are no departments or tags: any toparty/totag is invalid.
    ``sent`` holds one dict per accepted message: received_at (the simulator clock), msgid, delivered_to
    (userids) and body (the request as sent).
    """

    ERRMSGS: ClassVar[dict[int, str]] = {
        -1: "system busy",
        40001: "invalid credential",
        40007: "invalid media_id",
        40008: "invalid message type",
        40013: "invalid corpid",
        40014: "invalid access_token",
        40056: "invalid agentid",
        40058: "invalid parameter",
        41001: "access_token missing",
        41002: "corpid missing",
        41004: "corpsecret missing",
        41006: "media_id missing",
        41011: "agentid missing",
        42001: "access_token expired",
        44004: "empty content",
        45002: "content size out of limit",
        45009: "api freq out of limit",
        47001: "data format error",
        81013: "user & party & tag all invalid",
    }
    UNKNOWN_TOKEN_ERRCODE: ClassVar[int] = 40014
    RATE_LIMIT_ERRCODE: ClassVar[int] = 45009

    def __init__(
        self,
        corp_id: str,
        secret: str,
        users: set[str] | None = None,
        token_ttl_s: int = 7200,
        *,
        agent_id: int | None = None,
        unlicensed_users: set[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(token_ttl_s=token_ttl_s, clock=clock)
        self.corp_id = corp_id
        self.secret = secret
        self.users = users
        self.agent_id = agent_id
        # In the app's visible range but without a license: reported in unlicenseduser, not delivered.
        self.unlicensed_users = {user.lower() for user in unlicensed_users or ()}
        self.sent: list[dict[str, Any]] = []
        self.media: dict[str, tuple[bytes, str]] = {}

    @property
    def gettoken_calls(self) -> int:
        return self.calls["gettoken"]

    @property
    def send_calls(self) -> int:
        return self.calls["message/send"]

    @property
    def media_calls(self) -> int:
        return self.calls["media/get"]

    def add_media(self, media_id: str, content: bytes, content_type: str = "audio/amr") -> None:
        """Serve ``content`` at media/get?media_id= (what an inbound voice or image message points at)."""
        self.media[media_id] = (content, content_type)

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/cgi-bin/gettoken", self._gettoken),
            web.post("/cgi-bin/message/send", self._send),
            web.get("/cgi-bin/media/get", self._media),
        ]

    def _decorate(self, errcode: int, errmsg: str) -> str:
        if errcode == 0:
            return errmsg
        hint = f"{int(time.time())}_{secrets.token_hex(8)}"
        return f"{errmsg}, hint: [{hint}], more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"

    async def _gettoken(self, request: web.Request) -> web.Response:
        corp_id = request.query.get("corpid")
        secret = request.query.get("corpsecret")
        if not corp_id:
            return self._error(41002)
        if not secret:
            return self._error(41004)
        if corp_id != self.corp_id:
            return self._error(40013)
        if secret != self.secret:
            return self._error(40001)
        token = self._issue_token()
        return self._reply({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": self.token_ttl_s})

    async def _send(self, request: web.Request) -> web.Response:
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
        problem = self._check_body(body)
        if problem is not None:
            return problem

        delivered, invalid_users, unlicensed = self._resolve_users(body.get("touser"))
        invalid_parties = _split(body.get("toparty"))
        invalid_tags = _split(body.get("totag"))
        failures: dict[str, str] = {}
        for key, ids in (
            ("invaliduser", invalid_users),
            ("invalidparty", invalid_parties),
            ("invalidtag", invalid_tags),
            ("unlicenseduser", unlicensed),
        ):
            if ids:
                failures[key] = "|".join(ids)
        if not delivered:
            return self._error(81013, **failures)

        msgid = secrets.token_urlsafe(32)
        self.sent.append({"received_at": received_at, "msgid": msgid, "delivered_to": delivered, "body": body})
        reply: dict[str, Any] = {"errcode": 0, "errmsg": "ok", **failures, "msgid": msgid}
        card = body.get("template_card")
        if (
            body.get("msgtype") == "template_card"
            and isinstance(card, dict)
            and card.get("card_type") in _INTERACTIVE_CARDS
        ):
            reply["response_code"] = secrets.token_urlsafe(32)
        return self._reply(reply)

    def _check_body(self, body: dict[str, Any]) -> web.Response | None:
        agent_id = body.get("agentid")
        if agent_id is None or agent_id == "":
            return self._error(41011)
        if self.agent_id is not None and str(agent_id) != str(self.agent_id):
            return self._error(40056)
        msgtype = body.get("msgtype")
        if msgtype in ("text", "markdown"):
            section = body.get(msgtype)
            content = section.get("content") if isinstance(section, dict) else None
            if not isinstance(content, str) or not content:
                return self._error(44004)
            if len(content.encode("utf-8")) > _MAX_CONTENT_BYTES:
                return self._error(45002)
            return None
        if msgtype == "template_card":
            return self._check_card(body.get("template_card"))
        if msgtype in _OTHER_MSGTYPES:
            return None
        return self._error(40008)

    def _check_card(self, card: Any) -> web.Response | None:
        if not isinstance(card, dict) or card.get("card_type") not in _CARD_TYPES:
            return self._error(40058, "invalid card_type")
        if card["card_type"] != "button_interaction":
            return None
        main_title = card.get("main_title")
        if not isinstance(main_title, dict) or not main_title.get("title"):
            return self._error(40058, "invalid main_title")
        if not isinstance(card.get("task_id"), str) or not re.fullmatch(r"[0-9A-Za-z_\-@]{1,128}", card["task_id"]):
            return self._error(40058, "invalid task_id")
        buttons = card.get("button_list")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 6:
            return self._error(40058, "invalid button_list")
        for button in buttons:
            if not isinstance(button, dict) or not button.get("text") or not button.get("key"):
                return self._error(40058, "invalid button")
        return None

    def _resolve_users(self, touser: Any) -> tuple[list[str], list[str], list[str]]:
        """(delivered, invalid, unlicensed) userids, lowercased."""
        requested = [user.lower() for user in _split(touser)]
        directory = None if self.users is None else {user.lower() for user in self.users}
        if "@all" in requested:
            requested = ["@all"] if directory is None else sorted(directory)
        delivered: list[str] = []
        invalid: list[str] = []
        unlicensed: list[str] = []
        for user in dict.fromkeys(requested):
            if directory is not None and user != "@all" and user not in directory:
                invalid.append(user)
            elif user in self.unlicensed_users:
                unlicensed.append(user)
            else:
                delivered.append(user)
        return delivered, invalid, unlicensed

    async def _media(self, request: web.Request) -> web.Response:
        token_error = self._token_error(request)
        if token_error is not None:
            return token_error
        media_id = request.query.get("media_id")
        if not media_id:
            return self._error(41006)
        stored = self.media.get(media_id)
        if stored is None:
            return self._error(40007)
        content, content_type = stored
        extension = content_type.rsplit("/", 1)[-1]
        filename = re.sub(r"[^0-9A-Za-z_\-]", "_", media_id)
        return web.Response(
            body=content,
            content_type=content_type,
            headers={
                "Content-Disposition": f'attachment; filename="{filename}.{extension}"',
                "Cache-Control": "no-cache, must-revalidate",
            },
        )


def _split(value: Any) -> list[str]:
    if not isinstance(value, str):
        return []
    return [part.strip() for part in value.split("|") if part.strip()]

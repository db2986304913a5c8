"""Inbound half of the web chat adapter: dev login, bearer-token check, JSON decoding, one turn each."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from bankcore import customers
from bankcore.errors import BankError
from bankcore.settings import Settings
from channels import messages
from channels.conversation_open import open_conversation
from channels.http_errors import NO_STORE, dumps_utf8, json_error
from channels.json_replies import WebChatOutput
from channels.rasa_client import RasaUnavailable
from channels.rate_limit import RateLimiter
from channels.resources import REDIS, SESSION_FACTORY, TURNS
from channels.signed_tokens import InvalidToken, WebChatTokens
from channels.turns import handle_text_turn

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
_CUSTOMER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The page's id for one message, the same on every resend: the message is answered once.
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Settings.extra key; 0 disables the limit (the gateway latency benchmark sends 500 turns as one customer).
RATE_LIMIT_SETTING = "BANKBOT_WEBCHAT_RATE_LIMIT_PER_MINUTE"
DEFAULT_RATE_LIMIT_PER_MINUTE = 60

# The page loads nothing from elsewhere and nothing inline, so the strictest policy fits.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _customer_exists(factory: sessionmaker[Session], customer_id: str) -> bool:
    with factory() as session:
        try:
            return customers.get_customer(session, customer_id) is not None
        except BankError:
            return False


class WebChatInput:
    """Registers `/webchat/` (page), `/webchat/session` (dev login only) and `/webchat/messages`."""

    channel = "webchat"

    def __init__(self, settings: Settings, *, rate_limit_per_minute: int | None = None) -> None:
        self._settings = settings
        self._tokens = WebChatTokens(settings.secret_key, settings.webchat_token_ttl_seconds)
        if rate_limit_per_minute is None:
            rate_limit_per_minute = int(settings.extra.get(RATE_LIMIT_SETTING, str(DEFAULT_RATE_LIMIT_PER_MINUTE)))
        self._limiter = RateLimiter(self.channel, rate_limit_per_minute, window_s=60.0)
        self._output = WebChatOutput()

    @property
    def tokens(self) -> WebChatTokens:
        return self._tokens

    def register(self, app: web.Application) -> None:
        self._limiter.share_through(app.get(REDIS))
        if self._settings.dev_login:
            # Without dev login the route does not exist at all: a plain 404, nothing to probe.
            app.router.add_post("/webchat/session", self.create_session)
        app.router.add_post("/webchat/messages", self.post_message)
        app.router.add_post("/webchat/open", self.open_conversation)
        app.router.add_get("/webchat", self._redirect_to_page)
        app.router.add_get("/webchat/", self.page)
        app.router.add_static("/webchat/static/", STATIC_DIR, append_version=False)
        app.on_response_prepare.append(_add_page_headers)

    async def _redirect_to_page(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/webchat/")

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def create_session(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        customer_id = body.get("customer_id")
        if not isinstance(customer_id, str) or not _CUSTOMER_ID.match(customer_id):
            return json_error(400, "invalid_customer_id", messages.INVALID_CUSTOMER_ID)
        exists = await asyncio.to_thread(_customer_exists, request.app[SESSION_FACTORY], customer_id)
        if not exists:
            return json_error(401, "unknown_customer", messages.UNKNOWN_CUSTOMER)
        issued = self._tokens.issue(customer_id)
        logger.info("web chat session issued", extra={"customer_id": customer_id})
        return web.json_response(
            {"token": issued.token, "expires_in": issued.expires_in}, headers=NO_STORE, dumps=dumps_utf8
        )

    async def post_message(self, request: web.Request) -> web.Response:
        customer_id = self._authenticate(request)
        if customer_id is None:
            return json_error(401, "unauthorized", messages.UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
        if not await self._limiter.allow(customer_id):
            return json_error(429, "rate_limited", messages.RATE_LIMITED, headers={"Retry-After": "10"})
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        text = body.get("text")
        if not isinstance(text, str):
            return json_error(400, "missing_text", messages.MISSING_TEXT)
        message_id = body.get("message_id")
        if message_id is not None and (not isinstance(message_id, str) or not _MESSAGE_ID.match(message_id)):
            return json_error(400, "invalid_message_id", messages.BAD_REQUEST)
        try:
            replies = await handle_text_turn(
                request.app[TURNS], customer_id=customer_id, channel=self.channel, text=text, message_id=message_id
            )
        except RasaUnavailable:
            return _assistant_unavailable()
        return web.json_response(self._output.render(replies), headers=NO_STORE, dumps=dumps_utf8)

    async def open_conversation(self, request: web.Request) -> web.Response:
        """The page has opened: the assistant greets first (naming the predicted need when it is confident)."""
        customer_id = self._authenticate(request)
        if customer_id is None:
            return json_error(401, "unauthorized", messages.UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
        if not await self._limiter.allow(customer_id):
            return json_error(429, "rate_limited", messages.RATE_LIMITED, headers={"Retry-After": "10"})
        try:
            replies = await open_conversation(request.app[TURNS], customer_id=customer_id, channel=self.channel)
        except RasaUnavailable:
            return _assistant_unavailable()
        return web.json_response(self._output.render(replies), headers=NO_STORE, dumps=dumps_utf8)

    def _authenticate(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            return self._tokens.verify(token.strip())
        except InvalidToken as error:
            logger.info("web chat token refused: %s", error)
            return None


def _assistant_unavailable() -> web.Response:
    # The page shows `messages` like any reply; `error` tells scripts and monitors what happened.
    return json_error(
        503,
        "assistant_unavailable",
        messages.ASSISTANT_UNAVAILABLE,
        headers={"Retry-After": "5"},
        messages=[{"text": messages.ASSISTANT_UNAVAILABLE, "buttons": []}],
    )


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object, or the error response to send instead."""
    if request.content_type != "application/json":
        return json_error(415, "unsupported_media_type", messages.UNSUPPORTED_MEDIA_TYPE)
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return json_error(400, "invalid_json", messages.BAD_REQUEST)
    if not isinstance(body, dict):
        return json_error(400, "invalid_json", messages.BAD_REQUEST)
    return body


async def _add_page_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/webchat"):
        for name, value in _PAGE_HEADERS.items():
            response.headers.setdefault(name, value)

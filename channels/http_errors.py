"""JSON error bodies `{"error": {"code", "message"}}` for the gateway, and the middleware that makes them."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from channels import messages

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# UTF-8 Chinese instead of \uXXXX escapes: a third of the bytes, and readable in logs and curl.
dumps_utf8 = functools.partial(json.dumps, ensure_ascii=False)

# Headers an API answer never wants cached or sniffed.
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

_DEFAULTS: dict[int, tuple[str, str]] = {
    400: ("bad_request", messages.BAD_REQUEST),
    401: ("unauthorized", messages.UNAUTHORIZED),
    404: ("not_found", messages.NOT_FOUND),
    405: ("method_not_allowed", messages.METHOD_NOT_ALLOWED),
    415: ("unsupported_media_type", messages.UNSUPPORTED_MEDIA_TYPE),
    429: ("rate_limited", messages.RATE_LIMITED),
    503: ("assistant_unavailable", messages.ASSISTANT_UNAVAILABLE),
}


def json_error(
    status: int,
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}, **extra}
    return web.json_response(body, status=status, headers={**NO_STORE, **(headers or {})}, dumps=dumps_utf8)


def error_middleware_for(max_body_bytes: int) -> Middleware:
    """Turns aiohttp's HTTP exceptions and anything unexpected into JSON; no traceback leaves the process."""

    @web.middleware
    async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return json_error(413, "body_too_large", messages.BODY_TOO_LARGE.format(limit=max_body_bytes))
        except web.HTTPException as error:
            if error.status < 400:
                raise
            code, message = _DEFAULTS.get(error.status, ("http_error", messages.BAD_REQUEST))
            headers = {name: value for name, value in error.headers.items() if name.lower() == "allow"}
            return json_error(error.status, code, message, headers=headers)
        except Exception:
            logger.exception("unhandled error on %s %s", request.method, request.path)
            return json_error(500, "internal_error", messages.INTERNAL_ERROR)

    return error_middleware

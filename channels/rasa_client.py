"""The one client the gateway uses to talk to the Rasa server: REST webhook, trigger_intent and status."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

# (endpoint, outcome, seconds); the gateway feeds it into its Prometheus histogram.
LatencyObserver = Callable[[str, str, float], None]


class RasaUnavailable(Exception):
    """Rasa did not answer usefully: connection refused, timeout, non-2xx status or a malformed body."""

    code = "rasa_unavailable"


@dataclass(frozen=True)
class Button:
    """A quick reply: what the customer sees, and the text sent back when it is chosen."""

    title: str
    payload: str


@dataclass(frozen=True)
class BotMessage:
    """One bot utterance in Rasa's output vocabulary: text, buttons, image, custom JSON."""

    text: str | None = None
    buttons: tuple[Button, ...] = ()
    image: str | None = None
    custom: Mapping[str, Any] | None = field(default=None, hash=False)

    @classmethod
    def from_rasa(cls, data: Mapping[str, Any]) -> BotMessage:
        """Decode one item of the REST channel's reply list, ignoring fields of a wrong type."""
        buttons: list[Button] = []
        raw_buttons = data.get("buttons")
        if isinstance(raw_buttons, list):
            for raw in raw_buttons:
                if isinstance(raw, Mapping) and raw.get("payload") is not None:
                    title = raw.get("title")
                    payload = str(raw["payload"])
                    buttons.append(Button(title=str(title) if title is not None else payload, payload=payload))
        text = data.get("text")
        image = data.get("image")
        custom = data.get("custom")
        return cls(
            text=text if isinstance(text, str) else None,
            buttons=tuple(buttons),
            image=image if isinstance(image, str) else None,
            custom=custom if isinstance(custom, Mapping) else None,
        )


def _decode_messages(body: Any) -> list[BotMessage]:
    if not isinstance(body, list):
        raise RasaUnavailable("Rasa replied with something other than a list of messages")
    return [BotMessage.from_rasa(item) for item in body if isinstance(item, Mapping)]


class RasaClient:
    """Talks to one Rasa server over HTTP through a ClientSession owned by the application."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        token: str,
        *,
        message_timeout_s: float = 15.0,
        status_timeout_s: float = 2.0,
        on_latency: LatencyObserver | None = None,
    ) -> None:
        self._http = http
        self._base = URL(base_url.rstrip("/"))
        self._token = token
        # A turn may run several custom actions; Rasa's own action timeout is 10 s, so allow a little more.
        self._message_timeout = aiohttp.ClientTimeout(total=message_timeout_s)
        self._status_timeout = aiohttp.ClientTimeout(total=status_timeout_s)
        self._on_latency = on_latency

    async def send_message(self, sender_id: str, text: str, metadata: Mapping[str, Any]) -> list[BotMessage]:
        """Run one user turn through the REST channel and return the bot's replies."""
        body = {"sender": sender_id, "message": text, "metadata": dict(metadata)}
        reply = await self._request(
            "webhook", "POST", self._base / "webhooks/rest/webhook", self._message_timeout, json=body
        )
        return _decode_messages(reply)

    async def trigger_intent(
        self, conversation_id: str, intent: str, entities: Mapping[str, Any] | None = None
    ) -> list[BotMessage]:
        """Inject an intent (an outbound reminder or call opening) and return the replies it produced."""
        # Sanic does not unquote path parameters, so ':' in "webchat:C001" must stay literal.
        path = "/conversations/" + quote(conversation_id, safe=":@") + "/trigger_intent"
        url = self._base.with_path(self._base.path.rstrip("/") + path, encoded=True).with_query(
            token=self._token, output_channel="latest"
        )
        body = {"name": intent, "entities": dict(entities or {})}
        reply = await self._request("trigger_intent", "POST", url, self._message_timeout, json=body)
        if not isinstance(reply, Mapping):
            raise RasaUnavailable("trigger_intent replied with something other than an object")
        return _decode_messages(reply.get("messages", []))

    async def status(self) -> dict[str, Any]:
        """Rasa's /status (loaded model, training jobs); raises RasaUnavailable when it cannot be had."""
        url = (self._base / "status").with_query(token=self._token)
        reply = await self._request("status", "GET", url, self._status_timeout)
        if not isinstance(reply, dict):
            raise RasaUnavailable("status replied with something other than an object")
        return reply

    async def _request(
        self,
        endpoint: str,
        method: str,
        url: URL,
        timeout: aiohttp.ClientTimeout,
        json: Any = None,
    ) -> Any:
        started = time.perf_counter()
        outcome = "error"
        try:
            async with self._http.request(method, url, json=json, timeout=timeout) as response:
                if response.status >= 300:
                    outcome = f"http_{response.status}"
                    raise RasaUnavailable(f"Rasa {endpoint} answered HTTP {response.status}")
                try:
                    body = await response.json(content_type=None)
                except ValueError as error:
                    raise RasaUnavailable(f"Rasa {endpoint} answered malformed JSON") from error
                outcome = "ok"
                return body
        except (TimeoutError, aiohttp.ClientError) as error:
            outcome = "timeout" if isinstance(error, TimeoutError) else "connection_error"
            raise RasaUnavailable(f"Rasa {endpoint} unreachable: {type(error).__name__}") from error
        finally:
            if self._on_latency is not None:
                self._on_latency(endpoint, outcome, time.perf_counter() - started)


def sender_id_for(channel: str, customer_id: str) -> str:
    """The Rasa conversation id of a customer on a channel; one tracker per (channel, customer)."""
    return f"{channel}:{customer_id}"


def texts(messages: Sequence[BotMessage]) -> list[str]:
    """The text parts of a reply, for logs and tests."""
    return [message.text for message in messages if message.text]

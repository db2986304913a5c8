"""The one client the gateway uses to talk to the Rasa server: REST webhook, trigger_intent and status."""

from __future__ import annotations

import hashlib
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


class RasaNotReached(RasaUnavailable):
    """No connection could be made: the request was certainly not sent, so another server may take it."""


class RasaTimedOut(RasaUnavailable):
    """Rasa took too long: it may still be running the turn, so nobody must send it again yet."""


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
    """Talks to one or several Rasa servers over HTTP through a ClientSession owned by the application.

    Several servers share one tracker store and lock store (the cluster profile), so any of them can run any
    turn. Each conversation prefers one server (rendezvous hashing: stable while the set is unchanged), and a
    message moves to the next server when the first one cannot be reached. When a server failed after the
    message may have reached it (connection dropped, an error status, an empty answer), the message's
    `message_id` (in its metadata) is looked up in the conversation's tracker first: found, its replies are
    read from there instead of running it twice.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str | Sequence[str],
        token: str,
        *,
        message_timeout_s: float = 15.0,
        status_timeout_s: float = 2.0,
        on_latency: LatencyObserver | None = None,
        down_for_s: float = 5.0,
    ) -> None:
        self._http = http
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("at least one Rasa URL is needed")
        self._upstreams = [URL(url.rstrip("/")) for url in urls]
        self._base = self._upstreams[0]
        self._down_until: dict[URL, float] = {}
        self._down_for = down_for_s
        self._token = token
        # A turn may run several custom actions; Rasa's own action timeout is 10 s, so allow a little more.
        self._message_timeout = aiohttp.ClientTimeout(total=message_timeout_s)
        self._status_timeout = aiohttp.ClientTimeout(total=status_timeout_s)
        self._on_latency = on_latency

    @property
    def upstreams(self) -> tuple[str, ...]:
        return tuple(str(url) for url in self._upstreams)

    def servers_for(self, conversation_id: str) -> list[URL]:
        """The servers in the order this conversation tries them: its preferred one first, those recently
        found down last (they may be back)."""
        ranked = sorted(
            self._upstreams,
            key=lambda url: hashlib.blake2b(f"{conversation_id}|{url}".encode(), digest_size=8).digest(),
            reverse=True,
        )
        now = time.monotonic()
        up = [url for url in ranked if self._down_until.get(url, 0.0) <= now]
        return up + [url for url in ranked if url not in up]

    def _mark_down(self, url: URL) -> None:
        self._down_until[url] = time.monotonic() + self._down_for

    async def send_message(
        self, sender_id: str, text: str, metadata: Mapping[str, Any], *, seen_before: bool = False
    ) -> list[BotMessage]:
        """Run one user turn through the REST channel and return the bot's replies.

        `seen_before`: this message (by metadata `message_id`) may already have reached Rasa, so its tracker
        is checked before it is sent. Raises RasaTimedOut without trying another server: a slow server may
        still finish the turn. Raises RasaUnavailable when no server took it.
        """
        message_id = metadata.get("message_id")
        body = {"sender": sender_id, "message": text, "metadata": dict(metadata)}
        uncertain = seen_before and isinstance(message_id, str)
        failure: RasaUnavailable | None = None
        for base in self.servers_for(sender_id):
            try:
                if uncertain and isinstance(message_id, str):
                    found = await self.replies_in_tracker(sender_id, message_id, base=base)
                    if found is not None:
                        return found
                reply = _decode_messages(
                    await self._request(
                        "webhook", "POST", base / "webhooks/rest/webhook", self._message_timeout, json=body
                    )
                )
            except RasaTimedOut:
                raise
            except RasaNotReached as error:
                self._mark_down(base)
                failure = error
                continue
            except RasaUnavailable as error:
                # Dropped mid-request or an error status: the turn may or may not have run there.
                if not isinstance(message_id, str):
                    raise
                self._mark_down(base)
                failure, uncertain = error, True
                continue
            if reply or not isinstance(message_id, str):
                return reply
            # Rasa's REST channel answers 200 with the messages collected so far even when the turn failed
            # (e.g. its lock store was unreachable): an empty answer is checked against the tracker.
            found = await self._replies_in_tracker_or_none(sender_id, message_id, base)
            if found is not None:
                return found
            failure, uncertain = RasaUnavailable("Rasa answered nothing and did not record the message"), True
        assert failure is not None
        raise failure

    async def _replies_in_tracker_or_none(self, sender_id: str, message_id: str, base: URL) -> list[BotMessage] | None:
        try:
            return await self.replies_in_tracker(sender_id, message_id, base=base)
        except RasaUnavailable:
            return None

    async def replies_in_tracker(
        self, sender_id: str, message_id: str, *, base: URL | None = None
    ) -> list[BotMessage] | None:
        """The bot's replies to the user message carrying `message_id`, read from the conversation's tracker;
        None when the tracker holds no such message (it never ran, or did not finish)."""
        base = base or self.servers_for(sender_id)[0]
        path = "/conversations/" + quote(sender_id, safe=":@") + "/tracker"
        url = base.with_path(base.path.rstrip("/") + path, encoded=True).with_query(
            token=self._token, include_events="ALL"
        )
        tracker = await self._request("tracker", "GET", url, self._message_timeout)
        events = tracker.get("events") if isinstance(tracker, Mapping) else None
        if not isinstance(events, list):
            raise RasaUnavailable("tracker replied without a list of events")
        return replies_after_message(events, message_id)

    async def trigger_intent(
        self, conversation_id: str, intent: str, entities: Mapping[str, Any] | None = None
    ) -> list[BotMessage]:
        """Inject an intent (an outbound reminder or call opening) and return the replies it produced."""
        # Sanic does not unquote path parameters, so ':' in "webchat:C001" must stay literal.
        path = "/conversations/" + quote(conversation_id, safe=":@") + "/trigger_intent"
        body = {"name": intent, "entities": dict(entities or {})}
        failure: RasaUnavailable | None = None
        for base in self.servers_for(conversation_id):
            url = base.with_path(base.path.rstrip("/") + path, encoded=True).with_query(
                token=self._token, output_channel="latest"
            )
            try:
                reply = await self._request("trigger_intent", "POST", url, self._message_timeout, json=body)
                break
            except RasaNotReached as error:
                # Only a refused connection moves on: the intent was certainly not injected there.
                self._mark_down(base)
                failure = error
        else:
            assert failure is not None
            raise failure
        if not isinstance(reply, Mapping):
            raise RasaUnavailable("trigger_intent replied with something other than an object")
        return _decode_messages(reply.get("messages", []))

    async def status(self) -> dict[str, Any]:
        """/status (loaded model, training jobs) of the first server that answers; raises RasaUnavailable when
        none does."""
        failure: RasaUnavailable | None = None
        for base in self.servers_for(""):
            try:
                reply = await self._request(
                    "status", "GET", (base / "status").with_query(token=self._token), self._status_timeout
                )
            except RasaUnavailable as error:
                failure = error
                continue
            if not isinstance(reply, dict):
                raise RasaUnavailable("status replied with something other than an object")
            return reply
        assert failure is not None
        raise failure

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
        except TimeoutError as error:
            outcome = "timeout"
            raise RasaTimedOut(f"Rasa {endpoint} timed out") from error
        except aiohttp.ClientConnectorError as error:
            outcome = "connection_error"
            raise RasaNotReached(f"Rasa {endpoint} unreachable: {type(error).__name__}") from error
        except aiohttp.ClientError as error:
            outcome = "connection_error"
            raise RasaUnavailable(f"Rasa {endpoint} failed: {type(error).__name__}") from error
        finally:
            if self._on_latency is not None:
                self._on_latency(endpoint, outcome, time.perf_counter() - started)


def replies_after_message(events: Sequence[Any], message_id: str) -> list[BotMessage] | None:
    """The bot utterances that followed the (last) user event whose metadata carries `message_id`, up to the
    next user event; None when no user event carries it."""
    replies: list[BotMessage] | None = None
    collecting = False
    for event in events:
        if not isinstance(event, Mapping):
            continue
        kind = event.get("event")
        if kind == "user":
            metadata = event.get("metadata")
            if isinstance(metadata, Mapping) and metadata.get("message_id") == message_id:
                replies = []
                collecting = True
            else:
                collecting = False
        elif kind == "bot" and collecting and replies is not None:
            data = event.get("data")
            replies.append(
                BotMessage.from_rasa({"text": event.get("text"), **(data if isinstance(data, Mapping) else {})})
            )
    return replies


def sender_id_for(channel: str, customer_id: str) -> str:
    """The Rasa conversation id of a customer on a channel; one tracker per (channel, customer)."""
    return f"{channel}:{customer_id}"


def texts(messages: Sequence[BotMessage]) -> list[str]:
    """The text parts of a reply, for logs and tests."""
    return [message.text for message in messages if message.text]

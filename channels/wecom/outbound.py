"""Outbound half of the WeCom adapter: the bot's replies as `message/send` bodies (text, and a button card).

Text goes as a text message. Quick replies become a `template_card` of type `button_interaction`: each button's
key is the payload Rasa expects back, and WeCom calls back with a `template_card_event` carrying it, which the
inbound half turns into that payload's turn. A card holds at most six buttons; more options are listed in the
text as well, so none is out of reach.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from bankcore.channel_messages import OutboundReply
from channels.rasa_client import BotMessage

MAX_CARD_BUTTONS = 6
# WeCom limits: text content 2048 bytes; card titles 26 characters, button text 10, key 1024 bytes.
MAX_TEXT_BYTES = 2048
CARD_TITLE = "请选择"
MAX_BUTTON_TEXT = 10
MAX_KEY_BYTES = 1024


def _truncate_bytes(text: str, limit: int) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", "ignore") + "…"


class WeComOutput:
    """Renders replies for one user of one agent; `task_prefix` makes each card's task id unique."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id

    def _base(self, touser: str, msgtype: str) -> dict[str, Any]:
        body: dict[str, Any] = {"touser": touser, "msgtype": msgtype, "safe": 0}
        if self.agent_id:
            body["agentid"] = int(self.agent_id) if self.agent_id.isdecimal() else self.agent_id
        # WeCom drops an identical message to the same user within the interval: a second guard against resends.
        body["enable_duplicate_check"] = 0
        return body

    def text(self, touser: str, content: str) -> dict[str, Any]:
        body = self._base(touser, "text")
        body["text"] = {"content": _truncate_bytes(content, MAX_TEXT_BYTES)}
        return body

    def button_card(self, touser: str, task_id: str, message: BotMessage) -> dict[str, Any]:
        body = self._base(touser, "template_card")
        buttons = [
            {"text": button.title[:MAX_BUTTON_TEXT], "style": 1, "key": button.payload}
            for button in message.buttons[:MAX_CARD_BUTTONS]
            if len(button.payload.encode("utf-8")) <= MAX_KEY_BYTES
        ]
        body["template_card"] = {
            "card_type": "button_interaction",
            "main_title": {"title": CARD_TITLE},
            "task_id": task_id,
            "button_list": buttons,
        }
        return body

    def render(self, touser: str, replies: Sequence[BotMessage], *, task_prefix: str) -> list[OutboundReply]:
        rendered: list[OutboundReply] = []
        for index, message in enumerate(replies):
            text = message.text or ""
            if len(message.buttons) > MAX_CARD_BUTTONS:
                options = "\n".join(f"· {b.title}" for b in message.buttons)
                text = f"{text}\n{options}" if text else options
            if text:
                rendered.append(OutboundReply(key=f"{index}:text", body=self.text(touser, text)))
            if message.image:
                rendered.append(OutboundReply(key=f"{index}:image", body=self.text(touser, message.image)))
            if message.buttons:
                task_id = task_id_for(task_prefix, index)
                rendered.append(OutboundReply(key=f"{index}:card", body=self.button_card(touser, task_id, message)))
        return rendered


def task_id_for(prefix: str, index: int) -> str:
    """A card's task id: unique per answer and reply, only the characters WeCom allows, at most 128 long."""
    digest = hashlib.sha256(f"{prefix}:{index}".encode()).hexdigest()[:24]
    return f"bb-{digest}-{index}"

"""WeCom's push side, played for tests and benches: builds encrypted, signed callbacks the way the platform does.

`WeComCallbacks.message(...)` gives the query string and the XML body of one callback; posting them (and
posting them again, as WeCom retries an unanswered callback) is the caller's business.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from channels.wecom.crypto import WeComCrypto
from channels.wecom.xml_messages import message_xml


@dataclass(frozen=True)
class Callback:
    query: dict[str, str]
    body: bytes


class WeComCallbacks:
    def __init__(self, token: str, encoding_aes_key: str, corp_id: str, *, agent_id: str = "1000002") -> None:
        self.crypto = WeComCrypto(token, encoding_aes_key, corp_id)
        self.corp_id = corp_id
        self.agent_id = agent_id
        self._ids = itertools.count(int(time.time() * 1000) * 1000)

    def next_msg_id(self) -> str:
        return str(next(self._ids))

    def wrap(self, fields: Mapping[str, str | int], *, timestamp: int | None = None) -> Callback:
        plaintext = message_xml(fields)
        encrypted = self.crypto.encrypt(plaintext)
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = str(secrets.randbelow(10**9))
        body = (
            f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
            f"<AgentID><![CDATA[{self.agent_id}]]></AgentID>"
            f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        ).encode()
        query = {"msg_signature": self.crypto.signature(ts, nonce, encrypted), "timestamp": ts, "nonce": nonce}
        return Callback(query=query, body=body)

    def _base(self, user: str, msg_type: str) -> dict[str, str | int]:
        return {
            "ToUserName": self.corp_id,
            "FromUserName": user,
            "CreateTime": int(time.time()),
            "MsgType": msg_type,
            "AgentID": int(self.agent_id) if self.agent_id.isdecimal() else self.agent_id,
        }

    def text(self, user: str, content: str, *, msg_id: str | None = None) -> Callback:
        fields = self._base(user, "text")
        fields.update(Content=content, MsgId=msg_id or self.next_msg_id())
        return self.wrap(fields)

    def voice(self, user: str, media_id: str, *, fmt: str = "amr", msg_id: str | None = None) -> Callback:
        fields = self._base(user, "voice")
        fields.update(MediaId=media_id, Format=fmt, MsgId=msg_id or self.next_msg_id())
        return self.wrap(fields)

    def event(self, user: str, event: str, *, key: str | None = None, task_id: str | None = None) -> Callback:
        fields = self._base(user, "event")
        fields["Event"] = event
        if key is not None:
            fields["EventKey"] = key
        if task_id is not None:
            fields["TaskId"] = task_id
        return self.wrap(fields)

    def url_verification(self, echo: str) -> dict[str, str]:
        encrypted = self.crypto.encrypt(echo.encode())
        ts = str(int(time.time()))
        nonce = str(secrets.randbelow(10**9))
        return {
            "msg_signature": self.crypto.signature(ts, nonce, encrypted),
            "timestamp": ts,
            "nonce": nonce,
            "echostr": encrypted,
        }

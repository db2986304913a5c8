"""Safe parsing and building of WeCom's callback XML: the encrypted envelope and the decrypted message."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

DEFAULT_MAX_BYTES: Final = 65536

ERROR_CODES: Final = frozenset({"malformed_xml", "forbidden_xml", "too_large", "missing_field"})

# Characters XML 1.0 can carry at all; anything else has no representation, not even as a character reference.
_NOT_XML_CHAR: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_FIELD_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_INTEGER: Final = re.compile(r"[0-9]{1,20}")
_DECLARED_ENCODING: Final = re.compile(r"""\bencoding\s*=\s*["']([^"']*)["']""")


class WeComXmlError(ValueError):
    """A callback body is not the small, flat, UTF-8 XML WeCom sends; `code` is stable and safe to log."""

    def __init__(self, code: str, detail: str = "") -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown WeComXmlError code {code!r}")
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Envelope:
    """The outer callback body: who it is for and the ciphertext (`Encrypt`)."""

    to_user: str
    agent_id: str
    encrypt: str


@dataclass(frozen=True)
class WeComMessage:
    """A decrypted message or event callback; fields a message type lacks are None, `raw` holds every field."""

    to_user: str
    from_user: str
    create_time: int
    msg_type: str
    msg_id: str | None = None
    agent_id: str | None = None
    content: str | None = None
    media_id: str | None = None
    voice_format: str | None = None
    recognition: str | None = None
    pic_url: str | None = None
    event: str | None = None
    event_key: str | None = None
    task_id: str | None = None
    change_type: str | None = None
    external_user_id: str | None = None
    welcome_code: str | None = None
    raw: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)


def parse_envelope(body: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Envelope:
    """The envelope of a message callback; `Encrypt` must be present and non-empty."""
    fields = _parse_flat(body, max_bytes)
    encrypt = fields.get("Encrypt", "").strip()
    if not encrypt:
        raise WeComXmlError("missing_field", "Encrypt")
    return Envelope(
        to_user=fields.get("ToUserName", ""),
        agent_id=fields.get("AgentID", "").strip(),
        encrypt=encrypt,
    )


def parse_message(plaintext: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> WeComMessage:
    """A decrypted callback: text, image, voice or other messages, and events (click, enter_agent, ...)."""
    fields = _parse_flat(plaintext, max_bytes)
    for required in ("ToUserName", "FromUserName", "CreateTime", "MsgType"):
        if required not in fields:
            raise WeComXmlError("missing_field", required)
    create_time = fields["CreateTime"].strip()
    if not _INTEGER.fullmatch(create_time):
        raise WeComXmlError("malformed_xml", "CreateTime is not an integer")
    msg_type = fields["MsgType"].strip()
    if msg_type == "event" and "Event" not in fields:
        raise WeComXmlError("missing_field", "Event")

    def optional(name: str, *, strip: bool = False) -> str | None:
        value = fields.get(name)
        return value.strip() if value is not None and strip else value

    return WeComMessage(
        to_user=fields["ToUserName"],
        from_user=fields["FromUserName"],
        create_time=int(create_time),
        msg_type=msg_type,
        msg_id=optional("MsgId", strip=True),
        agent_id=optional("AgentID", strip=True),
        content=optional("Content"),
        media_id=optional("MediaId"),
        voice_format=optional("Format", strip=True),
        recognition=optional("Recognition"),
        pic_url=optional("PicUrl"),
        event=optional("Event", strip=True),
        event_key=optional("EventKey"),
        task_id=optional("TaskId"),
        change_type=optional("ChangeType", strip=True),
        external_user_id=optional("ExternalUserID"),
        welcome_code=optional("WelcomeCode"),
        raw=MappingProxyType(fields),
    )


def cdata(text: str) -> str:
    """`text` as XML content in CDATA sections that parse back to exactly `text`.

    `]]>` is split across two sections, and carriage returns (which parsers normalise to newlines even inside
    CDATA) travel as character references between sections.
    """
    bad = _NOT_XML_CHAR.search(text)
    if bad:
        raise ValueError(f"character U+{ord(bad.group()):04X} cannot be carried by XML")
    if not text:
        return "<![CDATA[]]>"
    parts: list[str] = []
    for index, segment in enumerate(text.split("\r")):
        if index:
            parts.append("&#13;")
        if segment:
            parts.append("<![CDATA[" + segment.replace("]]>", "]]]]><![CDATA[>") + "]]>")
    return "".join(parts)


def message_xml(fields: Mapping[str, str | int]) -> bytes:
    """A plaintext callback message (strings as CDATA, integers plain), as simulators and tests send them."""
    parts = ["<xml>"]
    for name, value in fields.items():
        if not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a usable element name")
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"{name}: only str and int values are supported")
        rendered = str(value) if isinstance(value, int) else cdata(value)
        parts.append(f"<{name}>{rendered}</{name}>")
    parts.append("</xml>")
    return "".join(parts).encode("utf-8")


def _parse_flat(body: bytes, max_bytes: int) -> dict[str, str]:
    """The child elements of a flat `<xml>` root as a name → text mapping."""
    if len(body) > max_bytes:
        raise WeComXmlError("too_large", f"{len(body)} bytes, limit {max_bytes}")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as error:
        raise WeComXmlError("malformed_xml", "not UTF-8") from error
    _check_declared_encoding(text.removeprefix("\ufeff"))
    # The encoding override makes expat read UTF-8 whatever the declaration says (it was checked above).
    parser = DefusedXMLParser(
        target=ET.TreeBuilder(), encoding="utf-8", forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    try:
        parser.feed(bytes(body))
        root = parser.close()
    except DefusedXmlException as error:
        raise WeComXmlError("forbidden_xml", type(error).__name__) from error
    except ET.ParseError as error:
        raise WeComXmlError("malformed_xml", str(error)) from error
    if root.tag != "xml" or root.attrib or (root.text or "").strip():
        raise WeComXmlError("malformed_xml", "the root must be a bare <xml> element holding only elements")
    fields: dict[str, str] = {}
    for child in root:
        if len(child) or child.attrib or not _FIELD_NAME.fullmatch(child.tag):
            raise WeComXmlError("malformed_xml", f"<{child.tag}> is not a flat field")
        if (child.tail or "").strip():
            raise WeComXmlError("malformed_xml", "text between fields")
        if child.tag in fields:
            # Two values for one field would let a sender smuggle a second reading past a check.
            raise WeComXmlError("malformed_xml", f"<{child.tag}> appears twice")
        fields[child.tag] = child.text or ""
    return fields


def _check_declared_encoding(text: str) -> None:
    if not text.startswith("<?xml"):
        return
    end = text.find("?>")
    declared = _DECLARED_ENCODING.search(text, 0, end if end >= 0 else len(text))
    if declared and declared.group(1).lower().replace("_", "-") not in {"utf-8", "utf8"}:
        raise WeComXmlError("malformed_xml", f"declared encoding {declared.group(1)!r}; only UTF-8 is accepted")

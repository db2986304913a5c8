"""RFC 3261 message syntax: parse and build SIP requests and responses, and their URI, address, Via and CSeq values."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

# The largest UDP payload over IPv4: nothing bigger arrives in one datagram, so the user agent refuses it too.
MAX_MESSAGE_BYTES = 65_507
SIP_VERSION = "SIP/2.0"

# RFC 3261 7.3.3 (and the RFCs that added Event, Refer-To, ...): one-letter names that peers may send.
COMPACT_FORMS: dict[str, str] = {
    "v": "Via", "f": "From", "t": "To", "i": "Call-ID", "m": "Contact", "l": "Content-Length", "c": "Content-Type",
    "k": "Supported", "s": "Subject", "e": "Content-Encoding", "o": "Event", "r": "Refer-To", "b": "Referred-By",
    "x": "Session-Expires", "u": "Allow-Events",
}  # fmt: skip
_OTHER_KNOWN_NAMES = (
    "CSeq", "Max-Forwards", "Route", "Record-Route", "Allow", "Require", "Proxy-Require", "Unsupported",
    "User-Agent", "Server", "Expires", "Min-Expires", "WWW-Authenticate", "Authorization", "Proxy-Authenticate",
    "Proxy-Authorization", "Date", "Accept", "Accept-Encoding", "Accept-Language", "Warning", "Retry-After",
    "Timestamp", "Organization", "Priority", "Reason", "RSeq", "RAck", "Min-SE", "Subscription-State",
    "Content-Disposition", "Content-Language", "Call-Info", "Alert-Info", "Error-Info", "Reply-To", "In-Reply-To",
    "MIME-Version", "Privacy", "P-Asserted-Identity", "P-Preferred-Identity", "Diversion", "Replaces",
)  # fmt: skip
# Lower-case name -> the spelling we store, so that lookups and encoding agree whatever case the peer used.
_CANONICAL = {name.lower(): name for name in (*COMPACT_FORMS.values(), *_OTHER_KNOWN_NAMES)}

# Headers that hold one value, or whose values contain unquoted commas (dates, credentials, free text):
# header_values() never splits these at commas. Every other header is treated as a comma-separated list.
_NOT_SPLIT = frozenset(
    name.lower()
    for name in (
        "WWW-Authenticate", "Authorization", "Proxy-Authenticate", "Proxy-Authorization", "Date", "Subject",
        "User-Agent", "Server", "Organization", "Call-ID", "CSeq", "From", "To", "Content-Type", "Content-Length",
        "Content-Disposition", "Max-Forwards", "Expires", "Min-Expires", "Retry-After", "Timestamp",
        "Session-Expires", "Min-SE", "Refer-To", "Referred-By", "Replaces", "Event", "Subscription-State", "Priority",
        "RSeq", "RAck", "MIME-Version",
    )
)  # fmt: skip
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Request Entity Too Large",
    415: "Unsupported Media Type", 420: "Bad Extension", 481: "Call/Transaction Does Not Exist", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "Version Not Supported", 603: "Decline",
}  # fmt: skip
# For codes outside the table a generic phrase per class keeps the status line well-formed.
_CLASS_PHRASES = {1: "Session Progress", 2: "OK", 3: "Redirection", 4: "Request Failure", 5: "Server Failure",
                  6: "Global Failure"}  # fmt: skip

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")  # RFC 3261 25.1 token: methods, header and parameter names
_HOST = re.compile(r"[A-Za-z0-9\-._]+|\[[0-9A-Fa-f:.]+\]")  # hostname, IPv4, or bracketed IPv6 reference
# re.ASCII: with IGNORECASE alone, "[A-Za-z]" would also match the Kelvin sign and the long s.
_VIA_HEAD = re.compile(r"SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+(\S+)", re.I | re.ASCII)
_BLANKS = re.compile(r"[ \t]+")
_WS = " \t"


class SipParseError(ValueError):
    """Text that breaks SIP syntax; `status` is what a server answers it with (400, 413 or 505)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def canonical_name(name: str) -> str:
    """The header name as messages store it: compact forms expanded, well-known names in their usual spelling."""
    if len(name) == 1:
        name = COMPACT_FORMS.get(name.lower(), name)
    return _CANONICAL.get(name.lower(), name)


def _number(text: str, what: str, maximum: int) -> int:
    # int() alone would accept " 7", "1_000" and non-ASCII digits, and raise ValueError on thousands of digits.
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > maximum:
        raise SipParseError(f"bad {what}: {text[:40]!r}")
    return int(text)


def _split_outside(text: str, separator: str) -> list[str]:
    """Split at `separator` except inside a quoted string or a <...> URI (where commas and semicolons are data)."""
    parts: list[str] = []
    start = 0
    in_quotes = escaped = in_angle = False
    for index, char in enumerate(text):
        if in_quotes:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == separator and not in_angle:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _parse_params(text: str) -> dict[str, str | None]:
    """`;name=value;flag` -> {name: value, flag: None}; names are case-insensitive, so they are lower-cased."""
    params: dict[str, str | None] = {}
    for chunk in _split_outside(text, ";"):
        chunk = chunk.strip(_WS)
        if not chunk:
            continue
        name, equals, value = chunk.partition("=")
        name = name.strip(_WS)
        if not _TOKEN.fullmatch(name):
            raise SipParseError(f"bad parameter: {chunk[:40]!r}")
        params[name.lower()] = value.strip(_WS) if equals else None
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params.items())


def _parse_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, bracket, rest = text.partition("]")
        host += "]"
        if not bracket or (rest and not rest.startswith(":")):
            raise SipParseError(f"bad host: {text[:60]!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_or_empty = text.partition(":")
        port_text = port_text_or_empty if colon else None
    if not _HOST.fullmatch(host):
        raise SipParseError(f"bad host: {text[:60]!r}")
    return host, None if port_text is None else _number(port_text, "port", 65535)


@dataclass(frozen=True)
class SipUri:
    """A sip:, sips: or tel: URI; for tel: the number is in `user` and `host` is empty."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict, hash=False)
    headers: dict[str, str] = field(default_factory=dict, hash=False)

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{_format_params(self.params)}"
        user = f"{self.user}@" if self.user is not None else ""
        port = f":{self.port}" if self.port is not None else ""
        headers = "?" + "&".join(f"{name}={value}" for name, value in self.headers.items()) if self.headers else ""
        return f"{self.scheme}:{user}{self.host}{port}{_format_params(self.params)}{headers}"


def parse_uri(text: str) -> SipUri:
    text = text.strip(_WS)
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("sip", "sips", "tel"):
        raise SipParseError(f"not a sip, sips or tel URI: {text[:60]!r}")
    if not rest or any(char in rest for char in ' \t<>"'):
        raise SipParseError(f"bad URI: {text[:60]!r}")
    if scheme == "tel":
        number, _, param_text = rest.partition(";")
        if not number:
            raise SipParseError(f"tel URI without a number: {text[:60]!r}")
        return SipUri("tel", number, "", None, _parse_params(param_text))
    # The user part may hold ';' (sip:+86123;phone-context=x@host) but never a bare '@', and '?' starts the
    # headers, so the userinfo ends at the first '@' before any '?'.
    at = rest.split("?", 1)[0].find("@")
    user = rest[:at] if at >= 0 else None
    if user == "":
        raise SipParseError(f"empty user part: {text[:60]!r}")
    rest = rest[at + 1 :]
    rest, question, header_text = rest.partition("?")
    hostport, _, param_text = rest.partition(";")
    host, port = _parse_hostport(hostport)
    headers: dict[str, str] = {}
    for item in header_text.split("&") if question and header_text else ():
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise SipParseError(f"bad URI header: {item[:40]!r}")
        headers[name] = value
    return SipUri(scheme, user, host, port, _parse_params(param_text), headers)


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@dataclass(frozen=True)
class NameAddr:
    """From, To, Contact, Route and similar values: an optional display name, a URI, and header parameters."""

    display: str | None
    uri: SipUri
    params: dict[str, str | None] = field(default_factory=dict, hash=False)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        if self.display is None:
            display = ""
        else:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        return f"{display}<{self.uri}>{_format_params(self.params)}"


def parse_name_addr(text: str) -> NameAddr:
    text = text.strip(_WS)
    display: str | None = None
    rest = text
    if text.startswith('"'):
        match = re.match(r'"((?:[^"\\]|\\.)*)"', text)
        if match is None:
            raise SipParseError(f"unterminated display name: {text[:60]!r}")
        display = _unquote(match.group(1))
        rest = text[match.end() :].lstrip(_WS)
        if not rest.startswith("<"):
            raise SipParseError(f"display name without <URI>: {text[:60]!r}")
    elif "<" in text:
        index = text.index("<")
        display = text[:index].strip(_WS) or None
        rest = text[index:]
    if rest.startswith("<"):
        close = rest.find(">")
        if close < 0:
            raise SipParseError(f"unterminated <URI>: {text[:60]!r}")
        after = rest[close + 1 :].strip(_WS)
        if after and not after.startswith(";"):
            raise SipParseError(f"junk after <URI>: {text[:60]!r}")
        return NameAddr(display, parse_uri(rest[1:close]), _parse_params(after))
    # RFC 3261 20.10: without <...>, every parameter after the URI belongs to the header, not to the URI.
    uri_text, _, param_text = text.partition(";")
    return NameAddr(None, parse_uri(uri_text), _parse_params(param_text))


@dataclass(frozen=True)
class Via:
    """One Via value: the transport and sent-by address of one hop, with branch, received, rport and so on."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict, hash=False)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{SIP_VERSION}/{self.transport} {self.host}{port}{_format_params(self.params)}"


def parse_via(text: str) -> Via:
    head, _, param_text = text.strip(_WS).partition(";")
    match = _VIA_HEAD.fullmatch(head.strip(_WS))
    if match is None:
        raise SipParseError(f"bad Via: {text[:80]!r}")
    host, port = _parse_hostport(match.group(2))
    return Via(match.group(1).upper(), host, port, _parse_params(param_text))


def parse_cseq(text: str) -> tuple[int, str]:
    parts = _BLANKS.split(text.strip(_WS))
    if len(parts) != 2 or not _TOKEN.fullmatch(parts[1]):
        raise SipParseError(f"bad CSeq: {text[:40]!r}")
    return _number(parts[0], "CSeq number", 2**31 - 1), parts[1]


def new_branch() -> str:
    """A Via branch with RFC 3261's magic cookie, so peers know it is unique per transaction."""
    return "z9hG4bK" + secrets.token_hex(10)


def new_tag() -> str:
    return secrets.token_hex(8)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


def _split_list(value: str) -> list[str]:
    return [item for item in (part.strip(_WS) for part in _split_outside(value, ",")) if item]


@dataclass
class SipMessage:
    """A request (method and uri set) or a response (status and reason set), headers in wire order."""

    method: str | None
    uri: str | None
    status: int | None
    reason: str | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def header(self, name: str) -> str | None:
        """The first value of a header (for list headers such as Via, the first item), or None if absent."""
        key = canonical_name(name).lower()
        for header_name, value in self.headers:
            if header_name.lower() == key:
                items = [] if key in _NOT_SPLIT else _split_list(value)
                return items[0] if items else value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, across lines and, for list headers, across commas (in order)."""
        key = canonical_name(name).lower()
        values: list[str] = []
        for header_name, value in self.headers:
            if header_name.lower() == key:
                values.extend([value] if key in _NOT_SPLIT else _split_list(value))
        return values

    def set_header(self, name: str, value: str) -> None:
        """Replace every line of that header with one, where the first was (appended if there was none)."""
        name = canonical_name(name)
        key = name.lower()
        index = next((i for i, (other, _) in enumerate(self.headers) if other.lower() == key), len(self.headers))
        self.remove_header(name)
        self.headers.insert(index, (name, value))

    def add_header(self, name: str, value: str) -> None:
        self.headers.append((canonical_name(name), value))

    def remove_header(self, name: str) -> None:
        key = canonical_name(name).lower()
        self.headers[:] = [(other, value) for other, value in self.headers if other.lower() != key]

    @property
    def call_id(self) -> str:
        value = self.header("Call-ID")
        if not value:
            raise SipParseError("missing Call-ID")
        return value

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.header("CSeq") or "")

    def encode(self) -> bytes:
        """The wire form; Content-Length always states len(body), whatever the headers said."""
        if self.method is not None:
            if not self.uri:
                raise ValueError("a request needs a URI")
            lines = [f"{self.method} {self.uri} {SIP_VERSION}"]
        elif self.status is not None:
            lines = [f"{SIP_VERSION} {self.status} {self.reason or ''}"]
        else:
            raise ValueError("a message needs a method or a status")
        length = str(len(self.body))
        wrote_length = False
        for name, value in self.headers:
            # A CR or LF in a value would let it smuggle in headers of its own.
            if any(char in name + value for char in "\r\n"):
                raise ValueError(f"line break in header {name!r}")
            if name.lower() == "content-length":
                if wrote_length:
                    continue
                value, wrote_length = length, True
            lines.append(f"{name}: {value}" if value else f"{name}:")
        if not wrote_length:
            lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


def _split_head(data: bytes) -> tuple[list[str], bytes]:
    """The start and header lines (CRLF or bare LF endings), and the bytes after the blank line."""
    position = 0
    # RFC 3261 7.5: blank lines before the start line are ignored (keep-alive CRLFs arrive that way).
    while data.startswith(b"\n", position) or data.startswith(b"\r\n", position):
        position = data.index(b"\n", position) + 1
    lines: list[bytes] = []
    while position < len(data):
        end = data.find(b"\n", position)
        if end < 0:  # no blank line: the headers run to the end and there is no body
            end = len(data)
        line = data[position:end].removesuffix(b"\r")
        position = end + 1
        if not line:
            break
        lines.append(line)
    return [line.decode("utf-8", "replace") for line in lines], data[position:]


def _check_version(version: str) -> None:
    if version.isascii() and version.upper() == SIP_VERSION:
        return
    if re.fullmatch(r"SIP/\d+\.\d+", version, re.IGNORECASE | re.ASCII):
        raise SipParseError(f"unsupported SIP version {version!r}", 505)
    raise SipParseError(f"not a SIP version: {version[:20]!r}")


def parse_message(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> SipMessage:
    """Parse one datagram; raises SipParseError (and nothing else) on anything malformed."""
    if len(data) > max_bytes:
        raise SipParseError(f"message of {len(data)} bytes is larger than {max_bytes}", 413)
    lines, rest = _split_head(data)
    if not lines:
        raise SipParseError("no start line")
    if any("\r" in line for line in lines):
        raise SipParseError("bare CR inside a header line")
    start = lines[0].strip(_WS)
    method: str | None = None
    uri: str | None = None
    status: int | None = None
    reason: str | None = None
    if start[:4].isascii() and start[:4].upper() == "SIP/":
        parts = _BLANKS.split(start, maxsplit=2)
        _check_version(parts[0])
        if len(parts) < 2 or len(parts[1]) != 3 or _number(parts[1], "status code", 699) < 100:
            raise SipParseError(f"bad status line: {start[:80]!r}")
        status, reason = int(parts[1]), (parts[2] if len(parts) > 2 else "")
    else:
        parts = _BLANKS.split(start)
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
            raise SipParseError(f"bad request line: {start[:80]!r}")
        _check_version(parts[2])
        if ":" not in parts[1]:
            raise SipParseError(f"bad request URI: {parts[1][:80]!r}")
        method, uri = parts[0], parts[1]

    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[0] in _WS:  # RFC 3261 7.3.1 folding: a continuation joins the previous value with one space
            if not headers:
                raise SipParseError("continuation line before any header")
            name, value = headers[-1]
            headers[-1] = (name, " ".join(part for part in (value, line.strip(_WS)) if part))
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(_WS)
        if not colon or not _TOKEN.fullmatch(name):
            raise SipParseError(f"bad header line: {line[:80]!r}")
        headers.append((canonical_name(name), value.strip(_WS)))

    message = SipMessage(method, uri, status, reason, headers)
    present = {name.lower() for name, _ in headers}
    missing = [name for name in _MANDATORY if name.lower() not in present]
    if missing:
        raise SipParseError(f"missing mandatory header(s): {', '.join(missing)}")
    _ = message.call_id  # present but empty is as bad as missing
    _, cseq_method = message.cseq
    if method is not None and cseq_method != method:
        raise SipParseError(f"CSeq method {cseq_method!r} does not match the request method {method!r}")

    length_text = message.header("Content-Length")
    if length_text is None:
        message.body = rest  # over UDP a missing Content-Length means the rest of the datagram (RFC 3261 18.3)
    else:
        length = _number(length_text, "Content-Length", 2**31 - 1)
        if length > len(rest):
            raise SipParseError(f"truncated body: Content-Length {length} but {len(rest)} bytes follow")
        message.body = rest[:length]  # bytes past Content-Length are discarded (RFC 3261 18.3)
    return message


def build_request(
    method: str, uri: str, *, via: Via | str, from_: str, to: str, call_id: str, cseq: int,
    contact: str | None = None, headers: Sequence[tuple[str, str]] = (), body: bytes = b"",
    content_type: str | None = None, max_forwards: int = 70,
) -> SipMessage:  # fmt: skip
    """A request with the mandatory headers in the customary order; Content-Type defaults to SDP for a body."""
    lines = [("Via", str(via)), ("Max-Forwards", str(max_forwards)), ("From", from_), ("To", to),
             ("Call-ID", call_id), ("CSeq", f"{cseq} {method}")]  # fmt: skip
    if contact is not None:
        lines.append(("Contact", contact))
    message = SipMessage(method, uri, None, None, lines, body)
    _add_extra(message, headers, body, content_type)
    return message


def build_response(
    request: SipMessage, status: int, reason: str | None = None, *, to_tag: str | None = None,
    headers: Sequence[tuple[str, str]] = (), body: bytes = b"", content_type: str | None = None,
) -> SipMessage:  # fmt: skip
    """A response to `request` per RFC 3261 8.2.6.2: Via, From, To, Call-ID and CSeq copied, To tagged if asked."""
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} outside 100-699")
    if reason is None:
        reason = REASON_PHRASES.get(status, _CLASS_PHRASES[status // 100])

    def copied(name: str, first_only: bool = False) -> list[tuple[str, str]]:
        lines = [(name, value) for other, value in request.headers if other.lower() == name.lower()]
        return lines[:1] if first_only else lines

    lines = copied("Via")
    for name in ("From", "To", "Call-ID", "CSeq"):
        lines += copied(name, first_only=True)
    if to_tag is not None:
        lines = [(name, _with_tag(value, to_tag) if name == "To" else value) for name, value in lines]
    # RFC 3261 12.1.1: a response that can create a dialog echoes Record-Route so both ends agree on the route.
    if 101 <= status < 300:
        lines += copied("Record-Route")
    if status == 100:  # RFC 3261 8.2.6.1: a 100 echoes Timestamp
        lines += copied("Timestamp")
    message = SipMessage(None, None, status, reason, lines, body)
    _add_extra(message, headers, body, content_type)
    return message


def _with_tag(to_value: str, tag: str) -> str:
    try:
        has_tag = parse_name_addr(to_value).tag is not None
    except SipParseError:
        has_tag = ";tag=" in to_value.lower()
    # Appending works for both <URI> and bare-URI forms: parameters after either belong to the header.
    return to_value if has_tag else f"{to_value};tag={tag}"


def _add_extra(message: SipMessage, headers: Sequence[tuple[str, str]], body: bytes, content_type: str | None) -> None:
    for name, value in headers:
        message.add_header(name, value)
    if content_type is not None:
        message.set_header("Content-Type", content_type)
    elif body and message.header("Content-Type") is None:
        message.add_header("Content-Type", "application/sdp")

"""SIP message syntax: real peers' messages parse, malformed ones get the right status, round trips hold."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.ivr.sip_message import (
    MAX_MESSAGE_BYTES,
    REASON_PHRASES,
    NameAddr,
    SipMessage,
    SipParseError,
    SipUri,
    Via,
    build_request,
    build_response,
    canonical_name,
    new_branch,
    new_call_id,
    new_tag,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
)


def wire(head: str, body: bytes = b"", *, newline: str = "\r\n") -> bytes:
    """A message from readable text: `{length}` becomes len(body), lines end with `newline`."""
    lines = head.strip("\n").split("\n")
    text = newline.join(lines).replace("{length}", str(len(body)))
    return (text + newline + newline).encode("utf-8") + body


BARESIP_SDP = (
    b"v=0\r\no=- 1405117498 2174376012 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\n"
    b"m=audio 10850 RTP/AVP 96 9 0 8 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\na=sendrecv\r\n"
)
# baresip 3.x: empty Supported, an Allow list without spaces, quoted display name, Contact with transport.
BARESIP_INVITE = wire(
    """
INVITE sip:1000@192.168.1.10 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK8c2f0c9b6a2e1d3f;rport
Contact: "Alice" <sip:alice-0x55d1c3a8@192.168.1.20:5060;transport=udp>
Max-Forwards: 70
To: <sip:1000@192.168.1.10>
From: "Alice" <sip:alice@192.168.1.10>;tag=3c1a4e5b2d6f7081
Call-ID: 9f0b1c2d3e4f5a6b
CSeq: 28745 INVITE
User-Agent: baresip v3.10.1 (x86_64/linux)
Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,REFER
Supported:
Content-Type: application/sdp
Content-Length: {length}
""",
    BARESIP_SDP,
)
SIPP_SDP = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.1.1\r\ns=-\r\nc=IN IP4 127.0.1.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\n"
)
# SIPp's built-in uac scenario: unquoted display names, a bare Contact URI, padded Content-Length.
SIPP_INVITE = wire(
    """
INVITE sip:service@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.1.1:5061;branch=z9hG4bK-12345-1-0
From: sipp <sip:sipp@127.0.1.1:5061>;tag=12345SIPpTag001
To: service <sip:service@127.0.0.1:5060>
Call-ID: 1-12345@127.0.1.1
CSeq: 1 INVITE
Contact: sip:sipp@127.0.1.1:5061
Max-Forwards: 70
Subject: Performance Test
Content-Type: application/sdp
Content-Length:   {length}
""",
    SIPP_SDP,
)
DTMF_BODY = b"Signal=5\r\nDuration=160\r\n"
SIPP_INFO = wire(
    """
INFO sip:service@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.1.1:5061;branch=z9hG4bK-12345-1-5
From: sipp <sip:sipp@127.0.1.1:5061>;tag=12345SIPpTag001
To: service <sip:service@127.0.0.1:5060>;tag=7f3a91c2
Call-ID: 1-12345@127.0.1.1
CSeq: 2 INFO
Contact: sip:sipp@127.0.1.1:5061
Max-Forwards: 70
Content-Type: application/dtmf-relay
Content-Length: {length}
""",
    DTMF_BODY,
)
# A 200 that came back through two proxies: Via on separate lines and comma-joined, two Record-Route values.
PROXIED_200 = wire(
    """
SIP/2.0 200 OK
Via: SIP/2.0/UDP proxy2.example.com:5060;branch=z9hG4bK2d4790.1;received=192.0.2.3,
 SIP/2.0/UDP proxy1.example.com:5060;branch=z9hG4bK721e418c4.1
Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds8;rport=5060;received=192.0.2.4
Record-Route: <sip:proxy2.example.com;lr>, <sip:proxy1.example.com;lr>
From: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf
To: Alice <sip:alice@atlanta.example.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.example.com
CSeq: 314159 INVITE
Contact: <sip:alice@192.0.2.1>
Content-Length: 0
"""
)
# Compact forms, lower-case and upper-case names, as some stacks send to stay under the UDP MTU.
COMPACT_BYE = wire(
    """
BYE sip:alice@192.0.2.1 SIP/2.0
v: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKkjshdyff
F: "Bob" <sip:bob@biloxi.example.com>;tag=8321234356
t: <sip:alice@atlanta.example.com>;tag=9fxced76sl
i: 3848276298220188511@atlanta.example.com
cseq: 1 BYE
MAX-FORWARDS: 69
k: timer, 100rel
m: <sip:bob@192.0.2.4>
s: Bye now
l: 0
"""
)
FOLDED_OPTIONS = wire(
    """
OPTIONS sip:ivr@bank.example.com SIP/2.0
Via: SIP/2.0/UDP 10.0.0.8:5060
 ;branch=z9hG4bKfolded1
From: <sip:monitor@10.0.0.8>;tag=88
To: <sip:ivr@bank.example.com>
Call-ID: folded-1@10.0.0.8
CSeq: 7 OPTIONS
Subject: the first line
\tand the second line
Accept: application/sdp,
  text/plain
Content-Length: 0
"""
)
FIXTURES = [BARESIP_INVITE, SIPP_INVITE, SIPP_INFO, PROXIED_200, COMPACT_BYE, FOLDED_OPTIONS]


def without_length(message: SipMessage) -> SipMessage:
    headers = [(name, value) for name, value in message.headers if name != "Content-Length"]
    return SipMessage(message.method, message.uri, message.status, message.reason, headers, message.body)


# --- real peers' messages --------------------------------------------------------------------------------------


def test_baresip_invite_with_empty_supported_and_allow_list() -> None:
    message = parse_message(BARESIP_INVITE)
    assert message.is_request and message.method == "INVITE" and message.uri == "sip:1000@192.168.1.10"
    assert message.status is None and message.reason is None
    assert message.header("Supported") == "" and message.header_values("Supported") == []
    assert message.header_values("Allow")[:3] == ["INVITE", "ACK", "BYE"] and len(message.header_values("Allow")) == 11
    assert message.header("User-Agent") == "baresip v3.10.1 (x86_64/linux)"
    assert message.body == BARESIP_SDP
    assert message.call_id == "9f0b1c2d3e4f5a6b" and message.cseq == (28745, "INVITE")
    caller = parse_name_addr(message.header("From") or "")
    assert caller.display == "Alice" and caller.tag == "3c1a4e5b2d6f7081" and caller.uri.user == "alice"
    contact = parse_name_addr(message.header("Contact") or "")
    assert contact.uri.params == {"transport": "udp"} and contact.uri.port == 5060
    via = parse_via(message.header_values("Via")[0])
    assert via.branch == "z9hG4bK8c2f0c9b6a2e1d3f" and via.params["rport"] is None and via.transport == "UDP"


def test_sipp_invite_with_token_display_names_and_bare_contact() -> None:
    message = parse_message(SIPP_INVITE)
    assert parse_name_addr(message.header("From") or "").display == "sipp"
    assert parse_name_addr(message.header("To") or "").tag is None
    assert str(parse_name_addr(message.header("Contact") or "").uri) == "sip:sipp@127.0.1.1:5061"
    assert message.header("Content-Length") == str(len(SIPP_SDP)) and message.body == SIPP_SDP
    assert message.header("subject") == "Performance Test"


def test_sipp_info_carries_dtmf_relay_body() -> None:
    message = parse_message(SIPP_INFO)
    assert message.method == "INFO" and message.cseq == (2, "INFO")
    assert message.header("Content-Type") == "application/dtmf-relay"
    assert message.body == b"Signal=5\r\nDuration=160\r\n"


def test_response_with_via_on_separate_lines_and_comma_joined() -> None:
    message = parse_message(PROXIED_200)
    assert not message.is_request and message.status == 200 and message.reason == "OK"
    vias = [parse_via(value) for value in message.header_values("Via")]
    assert [via.host for via in vias] == ["proxy2.example.com", "proxy1.example.com", "192.0.2.4"]
    assert vias[0].params["received"] == "192.0.2.3" and vias[2].params["rport"] == "5060"
    assert message.header("Via") == message.header_values("Via")[0]  # the first value, not the whole line
    assert message.header_values("Record-Route") == ["<sip:proxy2.example.com;lr>", "<sip:proxy1.example.com;lr>"]
    assert message.body == b""


def test_compact_forms_and_any_name_case_become_canonical_names() -> None:
    message = parse_message(COMPACT_BYE)
    names = [name for name, _ in message.headers]
    assert names == ["Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Supported", "Contact", "Subject",
                     "Content-Length"]  # fmt: skip
    assert message.header("v") == message.header("VIA") == "SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKkjshdyff"
    assert message.header_values("k") == ["timer", "100rel"]
    assert message.header("i") == "3848276298220188511@atlanta.example.com"
    assert canonical_name("l") == "Content-Length" and canonical_name("x-custom") == "x-custom"


def test_folded_headers_are_joined_with_one_space() -> None:
    message = parse_message(FOLDED_OPTIONS)
    assert message.header("Via") == "SIP/2.0/UDP 10.0.0.8:5060 ;branch=z9hG4bKfolded1"
    assert parse_via(message.header("Via") or "").branch == "z9hG4bKfolded1"
    assert message.header("Subject") == "the first line and the second line"
    assert message.header_values("Accept") == ["application/sdp", "text/plain"]


def test_bare_lf_line_endings_parse_like_crlf() -> None:
    lf = BARESIP_INVITE.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n") + b"\n\n" + BARESIP_SDP
    assert parse_message(lf) == parse_message(BARESIP_INVITE)


def test_blank_lines_before_the_start_line_are_ignored() -> None:
    assert parse_message(b"\r\n\r\n" + SIPP_INFO) == parse_message(SIPP_INFO)


def test_body_longer_than_content_length_is_cut() -> None:
    assert parse_message(SIPP_INFO + b"trailing junk").body == DTMF_BODY


def test_without_content_length_the_body_is_the_rest_of_the_datagram() -> None:
    data = SIPP_INFO.replace(f"Content-Length: {len(DTMF_BODY)}\r\n".encode(), b"")
    message = parse_message(data)
    assert message.header("Content-Length") is None and message.body == DTMF_BODY


def test_headers_without_a_blank_line_end_at_the_end_of_the_datagram() -> None:
    data = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:x@y>\r\nTo: <sip:a@b>\r\nCall-ID: 1\r\n"
    data += b"CSeq: 1 OPTIONS"
    message = parse_message(data)
    assert message.cseq == (1, "OPTIONS") and message.body == b""


def test_non_utf8_header_bytes_are_replaced_not_fatal() -> None:
    data = SIPP_INFO.replace(b"Max-Forwards: 70", b"Subject: caf\xe9\xff")
    message = parse_message(data)
    assert message.header("Subject") == "caf\ufffd\ufffd"
    assert parse_message(message.encode()).header("Subject") == "caf\ufffd\ufffd"


def test_list_values_split_respecting_quotes_and_angle_brackets() -> None:
    message = parse_message(SIPP_INFO)
    message.set_header("Contact", '"Doe, John" <sip:j@h;x=a,b>;q=0.5, <sip:k@h>')
    assert message.header_values("Contact") == ['"Doe, John" <sip:j@h;x=a,b>;q=0.5', "<sip:k@h>"]
    assert message.header("m") == '"Doe, John" <sip:j@h;x=a,b>;q=0.5'


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WWW-Authenticate", 'Digest realm="bank", nonce="abc", algorithm=MD5, qop="auth"'),
        ("Authorization", 'Digest username="ivr", realm="bank", uri="sip:bank", response="0f"'),
        ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
        ("User-Agent", "Phone, model 7"),
    ],
)
def test_credentials_dates_and_free_text_are_never_split(name: str, value: str) -> None:
    message = parse_message(SIPP_INFO)
    message.add_header(name, value)
    assert message.header_values(name) == [value] and message.header(name) == value


def test_set_add_and_remove_headers() -> None:
    message = parse_message(COMPACT_BYE)
    message.add_header("Via", "SIP/2.0/UDP extra;branch=z9hG4bKx")
    assert len(message.header_values("v")) == 2
    message.set_header("v", "SIP/2.0/UDP only;branch=z9hG4bKy")
    assert message.header_values("Via") == ["SIP/2.0/UDP only;branch=z9hG4bKy"]
    assert message.headers[0] == ("Via", "SIP/2.0/UDP only;branch=z9hG4bKy")  # kept where the first one was
    message.set_header("X-Call-Reason", "reminder")
    assert message.headers[-1] == ("X-Call-Reason", "reminder")
    message.remove_header("x-call-reason")
    message.remove_header("Not-There")
    assert message.header("X-Call-Reason") is None


def test_call_id_and_cseq_properties_refuse_bad_values() -> None:
    message = parse_message(SIPP_INFO)
    message.set_header("CSeq", "two INFO")
    with pytest.raises(SipParseError):
        _ = message.cseq
    message.remove_header("Call-ID")
    with pytest.raises(SipParseError):
        _ = message.call_id


# --- refusals ----------------------------------------------------------------------------------------------------


def replaced(old: bytes, new: bytes, message: bytes = SIPP_INFO) -> bytes:
    assert old in message
    return message.replace(old, new, 1)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"\r\n\r\n", 400),
        (replaced(b"INFO sip:service@127.0.0.1:5060 SIP/2.0", b"INFO sip:service@127.0.0.1:5060"), 400),
        (replaced(b"INFO sip:service@127.0.0.1:5060 SIP/2.0", b"HELLO"), 400),
        (replaced(b"INFO sip:service@127.0.0.1:5060 SIP/2.0", b"INFO service SIP/2.0"), 400),
        (replaced(b"INFO sip:service@127.0.0.1:5060 SIP/2.0", b"IN(FO sip:s@h SIP/2.0"), 400),
        (replaced(b"INFO sip:service@127.0.0.1:5060 SIP/2.0", b"GET / HTTP/1.1"), 400),
        (replaced(b"INFO sip:service@127.0.0.1:5060 SIP/2.0", b"INFO sip:s@h SIP/3.0"), 505),
        (replaced(b"INFO sip:service@127.0.0.1:5060 SIP/2.0", b"INFO sip:s@h SIP/2.0 extra"), 400),
        (replaced(b"INFO sip:service@127.0.0.1:5060 SIP/2.0", b"SIP/3.0 200 OK"), 505),
        (replaced(b"INFO sip:service@127.0.0.1:5060 SIP/2.0", b"SIP/2.0 2xx OK"), 400),
        (replaced(b"INFO sip:service@127.0.0.1:5060 SIP/2.0", b"SIP/2.0 099 Too Low"), 400),
        (replaced(b"INFO sip:service@127.0.0.1:5060 SIP/2.0", b"SIP/2.0 700 Too High"), 400),
        (replaced(b"INFO sip:service@127.0.0.1:5060 SIP/2.0", b"SIP/2.0 2000 OK"), 400),
        (replaced(b"INFO sip:service@127.0.0.1:5060 SIP/2.0", b"SIP/2.0"), 400),
        (replaced(b"CSeq: 2 INFO", b"CSeq: 2 INVITE"), 400),
        (replaced(b"CSeq: 2 INFO", b"CSeq: two INFO"), 400),
        (replaced(b"CSeq: 2 INFO", b"CSeq: 2147483648 INFO"), 400),
        (replaced(b"CSeq: 2 INFO", b"CSeq: 2"), 400),
        (replaced(b"Call-ID: 1-12345@127.0.1.1", b"Call-ID:"), 400),
        (replaced(b"Content-Length: 24", b"Content-Length: 25"), 400),
        (replaced(b"Content-Length: 24", b"Content-Length: twenty"), 400),
        (replaced(b"Content-Length: 24", b"Content-Length: -1"), 400),
        (replaced(b"Content-Length: 24", b"Content-Length: " + b"9" * 5000), 400),
        (replaced(b"Max-Forwards: 70", b"Max-Forwards 70"), 400),
        (replaced(b"Max-Forwards: 70", b"Bad Name: 70"), 400),
        (replaced(b"Max-Forwards: 70", b"Max-Forwards: 7\r0"), 400),
        (replaced(b"\r\nVia:", b"\r\n Via:"), 400),  # a continuation line with no header before it
    ],
)
def test_malformed_messages_are_refused_with_the_right_status(data: bytes, status: int) -> None:
    with pytest.raises(SipParseError) as raised:
        parse_message(data)
    assert raised.value.status == status and str(raised.value)


@pytest.mark.parametrize("name", ["Via", "From", "To", "Call-ID", "CSeq"])
@pytest.mark.parametrize("fixture", [SIPP_INFO, PROXIED_200])
def test_every_mandatory_header_is_required(name: str, fixture: bytes) -> None:
    message = parse_message(fixture)
    message.remove_header(name)
    with pytest.raises(SipParseError, match="mandatory") as raised:
        parse_message(message.encode())
    assert raised.value.status == 400


def test_largest_cseq_number_is_accepted() -> None:
    assert parse_message(replaced(b"CSeq: 2 INFO", b"CSeq: 2147483647 INFO")).cseq == (2**31 - 1, "INFO")


def test_oversized_messages_are_refused_with_413() -> None:
    padded = replaced(b"Max-Forwards: 70", b"X-Padding: " + b"a" * MAX_MESSAGE_BYTES)
    with pytest.raises(SipParseError) as raised:
        parse_message(padded)
    assert raised.value.status == 413
    with pytest.raises(SipParseError) as raised:
        parse_message(SIPP_INFO, max_bytes=len(SIPP_INFO) - 1)
    assert raised.value.status == 413
    assert parse_message(SIPP_INFO, max_bytes=len(SIPP_INFO)).body == DTMF_BODY


def test_sip_version_is_case_insensitive_but_ascii_only() -> None:
    assert parse_message(replaced(b"SIP/2.0\r\n", b"sip/2.0\r\n")).method == "INFO"
    with pytest.raises(SipParseError):
        parse_message(replaced(b"SIP/2.0\r\n", "ſIP/2.0\r\n".encode()))


# --- encoding and round trips --------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", FIXTURES)
def test_parse_encode_parse_round_trip(data: bytes) -> None:
    first = parse_message(data)
    encoded = first.encode()
    second = parse_message(encoded)
    assert without_length(second) == without_length(first)
    assert second.header("Content-Length") == str(len(first.body))
    assert second.encode() == encoded


def test_encode_always_states_the_real_body_length() -> None:
    message = parse_message(SIPP_INFO)
    message.body = b"Signal=#\r\nDuration=100\r\n"
    message.add_header("Content-Length", "999")
    encoded = message.encode()
    assert encoded.count(b"Content-Length") == 1 and f"Content-Length: {len(message.body)}".encode() in encoded
    message.remove_header("l")
    assert message.encode().endswith(f"Content-Length: {len(message.body)}\r\n\r\n".encode() + message.body)


def test_encode_writes_empty_headers_and_crlf_lines() -> None:
    encoded = parse_message(BARESIP_INVITE).encode()
    assert encoded.startswith(b"INVITE sip:1000@192.168.1.10 SIP/2.0\r\n") and b"\r\nSupported:\r\n" in encoded
    assert b"\n" not in encoded.replace(b"\r\n", b"")[: encoded.index(b"\r\n\r\n")]


def test_encode_refuses_header_injection_and_half_built_messages() -> None:
    message = parse_message(SIPP_INFO)
    message.add_header("Subject", "hi\r\nVia: SIP/2.0/UDP evil")
    with pytest.raises(ValueError, match="line break"):
        message.encode()
    with pytest.raises(ValueError):
        SipMessage(None, None, None, None, []).encode()
    with pytest.raises(ValueError):
        SipMessage("INVITE", None, None, None, []).encode()


# --- URIs, addresses, Via, CSeq --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:alice@example.com", SipUri("sip", "alice", "example.com")),
        ("SIPS:bob@Example.com:5061", SipUri("sips", "bob", "Example.com", 5061)),
        ("sip:proxy.example.com;lr", SipUri("sip", None, "proxy.example.com", None, {"lr": None})),
        ("sip:alice:secret@10.0.0.1:5070;transport=UDP;Maddr=10.0.0.2",
         SipUri("sip", "alice:secret", "10.0.0.1", 5070, {"transport": "UDP", "maddr": "10.0.0.2"})),
        ("sip:+8613800000000;phone-context=bank.example@gw.example;user=phone",
         SipUri("sip", "+8613800000000;phone-context=bank.example", "gw.example", None, {"user": "phone"})),
        ("sip:[2001:db8::1]:5060", SipUri("sip", None, "[2001:db8::1]", 5060)),
        ("sip:ivr@bank.example?subject=callback&priority=urgent",
         SipUri("sip", "ivr", "bank.example", None, {}, {"subject": "callback", "priority": "urgent"})),
        ("tel:+86-10-1234-5678;phone-context=+86",
         SipUri("tel", "+86-10-1234-5678", "", None, {"phone-context": "+86"})),
    ],
)  # fmt: skip
def test_parse_uri(text: str, expected: SipUri) -> None:
    uri = parse_uri(text)
    assert uri == expected
    assert parse_uri(str(uri)) == uri


@pytest.mark.parametrize(
    "text",
    ["", "http://example.com", "sip:", "sip:@host", "sip:host:", "sip:host:70000", "sip:host:5o60", "sip:[::1",
     "sip:[::1]x", "sip:a b@c", "sip:<a@b>", "tel:", "tel:;x=1", "sip:a@b;=x", "sip:a@b?noequals", "sip:a@b:1:2",
     "sip:a@ho/st", "mailto:a@b"],
)  # fmt: skip
def test_parse_uri_refuses_malformed(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_parse_name_addr_forms() -> None:
    quoted = parse_name_addr('"Name" <sip:u@h;lr>;tag=x')
    assert quoted == NameAddr("Name", SipUri("sip", "u", "h", None, {"lr": None}), {"tag": "x"})
    assert quoted.tag == "x" and str(quoted) == '"Name" <sip:u@h;lr>;tag=x'
    plain = parse_name_addr("<sip:u@h>")
    assert plain.display is None and plain.tag is None and str(plain) == "<sip:u@h>"
    bare = parse_name_addr("sip:u@h;tag=x")  # RFC 3261 20.10: the parameter belongs to the header
    assert bare.uri.params == {} and bare.tag == "x" and str(bare) == "<sip:u@h>;tag=x"
    escaped = parse_name_addr(r'"Doe, \"JD\" John" <sip:j@h>')
    assert escaped.display == 'Doe, "JD" John' and parse_name_addr(str(escaped)) == escaped
    token = parse_name_addr("Bank IVR <sip:ivr@bank.example> ; tag=1")
    assert token.display == "Bank IVR" and token.tag == "1"
    contact = parse_name_addr('<sip:alice@192.0.2.1>;expires=3600;+sip.instance="<urn:uuid:f81d4fae>"')
    assert contact.params == {"expires": "3600", "+sip.instance": '"<urn:uuid:f81d4fae>"'}
    assert parse_name_addr(str(contact)) == contact


@pytest.mark.parametrize(
    "text", ['"unterminated <sip:a@b>', '"Name" sip:a@b', "<sip:a@b", "<sip:a@b> junk", "Name <http://a>", "*", ""]
)
def test_parse_name_addr_refuses_malformed(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(text)


def test_parse_via() -> None:
    via = parse_via("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776;rport;received=192.0.2.9")
    assert via == Via("UDP", "10.0.0.1", 5060, {"branch": "z9hG4bK776", "rport": None, "received": "192.0.2.9"})
    assert via.branch == "z9hG4bK776" and parse_via(str(via)) == via
    spaced = parse_via("SIP / 2.0 / tcp [2001:db8::9]")
    assert spaced == Via("TCP", "[2001:db8::9]", None) and str(spaced) == "SIP/2.0/TCP [2001:db8::9]"
    assert parse_via("SIP/2.0/UDP host").branch is None


@pytest.mark.parametrize("text", ["", "SIP/2.0 host", "SIP/1.0/UDP host", "SIP/2.0/UDP", "SIP/2.0/UDP host:x", "x y"])
def test_parse_via_refuses_malformed(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(text)


def test_parse_cseq() -> None:
    assert parse_cseq("314159 INVITE") == (314159, "INVITE")
    assert parse_cseq("  1 \t ACK ") == (1, "ACK")
    for bad in ["INVITE", "1", "-1 INVITE", "1 INVITE extra", "2147483648 INVITE", "١ INVITE", "1_0 INVITE", ""]:
        with pytest.raises(SipParseError):
            parse_cseq(bad)


def test_new_identifiers_are_fresh() -> None:
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100 and all(branch.startswith("z9hG4bK") for branch in branches)
    assert new_tag() != new_tag()
    call_id = new_call_id("10.0.0.5")
    assert call_id.endswith("@10.0.0.5") and call_id != new_call_id("10.0.0.5")


# --- building responses and requests ---------------------------------------------------------------------------


def proxied_invite() -> SipMessage:
    message = parse_message(BARESIP_INVITE)
    message.headers[0:0] = [("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1")]
    message.add_header("Record-Route", "<sip:proxy.example.com;lr>")
    message.add_header("Timestamp", "54")
    return message


def test_ringing_copies_the_request_headers_and_tags_to() -> None:
    invite = proxied_invite()
    ringing = parse_message(build_response(invite, 180, to_tag="ivr1").encode())
    assert ringing.status == 180 and ringing.reason == "Ringing"
    assert ringing.header_values("Via") == invite.header_values("Via")
    assert ringing.header("From") == invite.header("From") and ringing.call_id == invite.call_id
    assert ringing.cseq == (28745, "INVITE")
    assert parse_name_addr(ringing.header("To") or "").tag == "ivr1"
    assert ringing.header_values("Record-Route") == ["<sip:proxy.example.com;lr>"]
    assert ringing.header("Timestamp") is None and ringing.body == b""


def test_existing_to_tag_is_kept() -> None:
    info = parse_message(SIPP_INFO)
    response = build_response(info, 200, to_tag="other")
    assert response.header("To") == "service <sip:service@127.0.0.1:5060>;tag=7f3a91c2"
    bare = parse_message(SIPP_INFO)
    bare.set_header("To", "sip:service@127.0.0.1")
    assert build_response(bare, 200, to_tag="t9").header("To") == "sip:service@127.0.0.1;tag=t9"


def test_trying_echoes_timestamp_and_failures_drop_record_route() -> None:
    invite = proxied_invite()
    trying = build_response(invite, 100)
    assert trying.reason == "Trying" and trying.header("Timestamp") == "54" and trying.header("Record-Route") is None
    busy = build_response(invite, 486, to_tag="x")
    assert busy.reason == "Busy Here" and busy.header("Record-Route") is None


def test_answer_with_body_and_extra_headers() -> None:
    sdp = b"v=0\r\n"
    ok = build_response(parse_message(SIPP_INVITE), 200, to_tag="a", headers=[("Contact", "<sip:ivr@10.0.0.2>")],
                        body=sdp)  # fmt: skip
    reparsed = parse_message(ok.encode())
    assert reparsed.header("Content-Type") == "application/sdp" and reparsed.body == sdp
    assert reparsed.header("Contact") == "<sip:ivr@10.0.0.2>" and reparsed.header("Content-Length") == "5"
    custom = build_response(parse_message(SIPP_INVITE), 200, "Fine", body=b"x", content_type="text/plain")
    assert custom.reason == "Fine" and custom.header("Content-Type") == "text/plain"


@pytest.mark.parametrize(("status", "reason"), sorted(REASON_PHRASES.items()))
def test_default_reason_phrases(status: int, reason: str) -> None:
    assert build_response(parse_message(SIPP_INFO), status).reason == reason


def test_reason_for_codes_outside_the_table_and_bad_codes() -> None:
    assert build_response(parse_message(SIPP_INFO), 299).reason == "OK"
    assert build_response(parse_message(SIPP_INFO), 599).reason
    for status in (99, 700):
        with pytest.raises(ValueError):
            build_response(parse_message(SIPP_INFO), status)


def test_build_request_round_trips() -> None:
    via = Via("UDP", "10.0.0.2", 5060, {"branch": new_branch(), "rport": None})
    invite = build_request(
        "INVITE", "sip:13800000000@gw.example", via=via, from_="<sip:ivr@bank.example>;tag=abc",
        to="<sip:13800000000@gw.example>", call_id="c1@10.0.0.2", cseq=1, contact="<sip:ivr@10.0.0.2:5060>",
        headers=[("Allow", "INVITE, ACK, BYE")], body=SIPP_SDP,
    )  # fmt: skip
    reparsed = parse_message(invite.encode())
    assert reparsed.method == "INVITE" and reparsed.cseq == (1, "INVITE") and reparsed.header("Max-Forwards") == "70"
    assert parse_via(reparsed.header("Via") or "") == via and reparsed.body == SIPP_SDP
    assert reparsed.header("Content-Type") == "application/sdp" and reparsed.header_values("Allow")[2] == "BYE"
    bye = build_request("BYE", "sip:a@b", via="SIP/2.0/UDP h;branch=z9hG4bK1", from_="<sip:x@y>;tag=1",
                        to="<sip:a@b>;tag=2", call_id="c", cseq=2, max_forwards=10)  # fmt: skip
    encoded = bye.encode()
    assert b"Content-Length: 0\r\n\r\n" in encoded and b"Content-Type" not in encoded and b"Contact" not in encoded
    assert parse_message(encoded).header("Max-Forwards") == "10"


# --- properties -------------------------------------------------------------------------------------------------------


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "duplicate-line", "swap-case"]))
    position = draw(st.integers(0, len(data)))
    if kind == "delete":
        return data[:position] + data[position + draw(st.integers(1, 40)) :]
    if kind == "insert":
        syntax = st.sampled_from([b"\r\n", b"\n", b" ", b":", b";", b",", b"<", b'"', b"\r", b"\t", b"\xff"])
        chunk = draw(st.binary(min_size=1, max_size=20) | syntax)
        return data[:position] + chunk + data[position:]
    if kind == "replace" and position < len(data):
        return data[:position] + bytes([draw(st.integers(0, 255))]) + data[position + 1 :]
    if kind == "truncate":
        return data[:position]
    if kind == "duplicate-line":
        lines = data.split(b"\r\n")
        index = draw(st.integers(0, len(lines) - 1))
        return b"\r\n".join([*lines[: index + 1], lines[index], *lines[index + 1 :]])
    return data.swapcase()[:position] + data[position:]


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(FIXTURES))
    for _ in range(draw(st.integers(1, 4))):
        data = _mutate(data, draw)
    return data


def _parse_or_none(data: bytes) -> SipMessage | None:
    try:
        return parse_message(data)
    except SipParseError as error:
        assert error.status in (400, 413, 505) and str(error)
        return None


@given(st.binary(max_size=3000))
@settings(max_examples=500)
def test_random_bytes_only_ever_raise_sip_parse_error(data: bytes) -> None:
    _parse_or_none(data)


@given(mutated_messages())
@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_messages_parse_or_raise_sip_parse_error_and_round_trip(data: bytes) -> None:
    message = _parse_or_none(data)
    if message is not None:  # whatever we accept, we can encode, and it reads back the same
        again = parse_message(message.encode())
        assert without_length(again) == without_length(message)


@given(
    name=st.from_regex(r"[A-Za-z][A-Za-z0-9\-]{0,15}", fullmatch=True),
    value=st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=60),
    body=st.binary(max_size=100),
)
@settings(max_examples=300)
def test_any_extra_header_and_body_round_trip(name: str, value: str, body: bytes) -> None:
    message = parse_message(SIPP_INFO)
    message.add_header(name, value.strip(" \t"))  # the parser trims values, so only trimmed ones can come back
    message.body = body
    assert without_length(parse_message(message.encode())) == without_length(message)


_SIP_TEXT = st.text(st.sampled_from('sip:tel@[]<>;=,?&"\\ \t.-_+:0123456789abcdefzSIP/UDP2'), max_size=60)


@given(_SIP_TEXT)
@settings(max_examples=500)
def test_value_parsers_only_raise_sip_parse_error_and_reparse_their_own_text(text: str) -> None:
    for parse in (parse_uri, parse_name_addr, parse_via):
        try:
            value = parse(text)
        except SipParseError:
            continue
        assert parse(str(value)) == value
    with contextlib.suppress(SipParseError):
        parse_cseq(text)

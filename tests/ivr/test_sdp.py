"""SDP offer/answer: real peers' offers negotiate to G.711 and telephone-event, bad SDP is refused the right way."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.ivr.sdp import (
    AudioOffer,
    Negotiated,
    SdpError,
    SdpNegotiationError,
    build_answer,
    build_offer,
    negotiate,
    parse_answer,
    parse_offer,
)


def sdp(text: str) -> bytes:
    """SDP from readable text: one line per line, CRLF endings as on the wire."""
    return ("\r\n".join(line.strip() for line in text.strip().splitlines()) + "\r\n").encode()


# baresip 3.x with its default codec modules: opus, G.722 and G.711, telephone-event on a dynamic type.
BARESIP = sdp("""
    v=0
    o=- 1405117498 2174376012 IN IP4 192.168.1.20
    s=-
    c=IN IP4 192.168.1.20
    t=0 0
    a=tool:baresip 3.10.1
    m=audio 10850 RTP/AVP 96 9 0 8 101
    b=AS:64
    a=rtpmap:96 opus/48000/2
    a=fmtp:96 stereo=1;sprop-stereo=1
    a=rtpmap:9 G722/8000
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=rtcp-rsize
    a=ptime:20
    a=sendrecv
    a=label:1
""")
# SIPp's default uac scenario: the static PCMU type alone, no rtpmap line.
SIPP = sdp("""
    v=0
    o=user1 53655765 2353687637 IN IP4 127.0.1.1
    s=-
    c=IN IP4 127.0.1.1
    t=0 0
    m=audio 6000 RTP/AVP 0
""")
# A carrier gateway that only does A-law, with the address at media level.
PCMA_ONLY = sdp("""
    v=0
    o=GW 1000 1001 IN IP4 203.0.113.7
    s=SIP Call
    t=0 0
    m=audio 30000 RTP/AVP 8 101
    c=IN IP4 203.0.113.8
    a=rtpmap:8 PCMA/8000
    a=rtpmap:101 telephone-event/8000
    a=fmtp:101 0-15
    a=ptime:20
""")
HOLD_SENDONLY = BARESIP.replace(b"2174376012", b"2174376013").replace(b"a=sendrecv", b"a=sendonly")
HOLD_ZERO_ADDRESS = SIPP.replace(b"c=IN IP4 127.0.1.1", b"c=IN IP4 0.0.0.0")
INACTIVE = SIPP + b"a=inactive\r\n"
WITH_VIDEO = sdp("""
    v=0
    o=- 1 1 IN IP4 192.168.1.20
    s=-
    c=IN IP4 192.168.1.20
    t=0 0
    m=video 10852 RTP/AVP 100
    a=rtpmap:100 VP8/90000
    m=audio 10850 RTP/AVP 0 101
    a=rtpmap:101 telephone-event/8000
""")
FIXTURES = [BARESIP, SIPP, PCMA_ONLY, HOLD_SENDONLY, HOLD_ZERO_ADDRESS, INACTIVE, WITH_VIDEO]


# --- parsing offers ------------------------------------------------------------------------------------------------


def test_baresip_offer() -> None:
    offer = parse_offer(BARESIP)
    assert offer.connection_address == "192.168.1.20" and offer.port == 10850
    assert offer.payload_types == (96, 9, 0, 8, 101)
    assert offer.rtpmap == {96: ("OPUS", 48000), 9: ("G722", 8000), 0: ("PCMU", 8000), 8: ("PCMA", 8000),
                            101: ("TELEPHONE-EVENT", 8000)}  # fmt: skip
    assert offer.fmtp == {96: "stereo=1;sprop-stereo=1", 101: "0-15"}
    assert offer.direction == "sendrecv" and offer.ptime == 20 and not offer.on_hold
    assert offer.session_id == "1405117498" and offer.session_version == 2174376012
    negotiated = negotiate(offer)
    assert (negotiated.codec_pt, negotiated.codec, negotiated.dtmf_pt) == (0, "PCMU", 101)
    assert (negotiated.remote_address, negotiated.remote_port, negotiated.direction) == ("192.168.1.20", 10850,
                                                                                         "sendrecv")  # fmt: skip


def test_the_offers_order_decides_not_ours() -> None:
    offer = parse_offer(BARESIP.replace(b"RTP/AVP 96 9 0 8 101", b"RTP/AVP 96 9 8 0 101"))
    assert negotiate(offer, ("PCMU", "PCMA")).codec == "PCMA"
    assert negotiate(parse_offer(BARESIP), ("pcma",)).codec_pt == 8


def test_sipp_offer_with_static_pcmu_and_no_rtpmap() -> None:
    offer = parse_offer(SIPP)
    assert offer.payload_types == (0,) and offer.rtpmap == {0: ("PCMU", 8000)} and offer.fmtp == {}
    assert offer.ptime is None and offer.session_id == "53655765"
    negotiated = negotiate(offer)
    assert negotiated.codec == "PCMU" and negotiated.dtmf_pt is None and negotiated.remote_port == 6000


def test_pcma_only_offer_with_media_level_connection() -> None:
    offer = parse_offer(PCMA_ONLY)
    assert offer.connection_address == "203.0.113.8"
    negotiated = negotiate(offer)
    assert (negotiated.codec_pt, negotiated.codec, negotiated.dtmf_pt) == (8, "PCMA", 101)
    with pytest.raises(SdpNegotiationError, match="no common codec"):
        negotiate(offer, ("PCMU",))


def test_media_level_connection_and_direction_override_session_level() -> None:
    body = SIPP.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n") + b"c=IN IP4 10.1.1.1\r\na=recvonly\r\n"
    offer = parse_offer(body)
    assert offer.connection_address == "10.1.1.1" and offer.direction == "recvonly"
    assert negotiate(offer).direction == "sendonly"
    assert parse_offer(SIPP.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")).direction == "sendonly"


def test_hold_with_sendonly() -> None:
    offer = parse_offer(HOLD_SENDONLY)
    assert offer.on_hold and offer.direction == "sendonly" and offer.session_version == 2174376013
    assert negotiate(offer).direction == "recvonly"


def test_old_style_hold_with_zero_address() -> None:
    offer = parse_offer(HOLD_ZERO_ADDRESS)
    assert offer.on_hold and offer.direction == "sendrecv" and offer.connection_address == "0.0.0.0"
    negotiated = negotiate(offer)
    assert negotiated.direction == "recvonly"  # there is nowhere to send to
    assert negotiate(parse_offer(HOLD_ZERO_ADDRESS + b"a=recvonly\r\n")).direction == "inactive"
    assert negotiate(parse_offer(HOLD_ZERO_ADDRESS + b"a=sendonly\r\n")).direction == "recvonly"


def test_inactive_offer() -> None:
    offer = parse_offer(INACTIVE)
    assert offer.on_hold and negotiate(offer).direction == "inactive"


def test_telephone_event_only_at_8000() -> None:
    wideband = PCMA_ONLY.replace(b"telephone-event/8000", b"telephone-event/16000")
    assert negotiate(parse_offer(wideband)).dtmf_pt is None
    lower_case = PCMA_ONLY.replace(b"PCMA/8000", b"pcma/8000")
    assert parse_offer(lower_case).rtpmap[8] == ("PCMA", 8000)


def test_g711_at_another_clock_rate_is_not_g711() -> None:
    body = SIPP.replace(b"RTP/AVP 0", b"RTP/AVP 97") + b"a=rtpmap:97 PCMU/16000\r\n"
    with pytest.raises(SdpNegotiationError):
        negotiate(parse_offer(body))


def test_unreadable_ptime_is_ignored() -> None:
    assert parse_offer(SIPP + b"a=ptime:20.5\r\n").ptime is None
    assert parse_offer(SIPP + b"a=ptime:30\r\n").ptime == 30


def test_first_plain_rtp_audio_stream_is_chosen() -> None:
    offer = parse_offer(WITH_VIDEO)
    assert offer.media_index == 1 and offer.port == 10850 and offer.payload_types == (0, 101)
    srtp_then_rtp = sdp("""
        v=0
        o=- 1 1 IN IP4 10.0.0.1
        s=-
        c=IN IP4 10.0.0.1
        t=0 0
        m=audio 4000 RTP/SAVP 0
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2VuZGVyID0
        m=audio 4002 RTP/AVP 8
    """)
    offer = parse_offer(srtp_then_rtp)
    assert offer.media_index == 1 and offer.port == 4002 and negotiate(offer).codec == "PCMA"


def test_disabled_audio_stream_stays_disabled_in_the_answer() -> None:
    offer = parse_offer(SIPP.replace(b"m=audio 6000", b"m=audio 0"))
    assert offer.port == 0
    answer = build_answer("10.0.0.2", 40000, negotiate(offer), session_id="1", session_version=1)
    assert b"m=audio 0 RTP/AVP 0\r\n" in answer


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (SIPP.replace(b"m=audio 6000 RTP/AVP 0", b"m=video 6000 RTP/AVP 31"), "no audio"),
        (SIPP.replace(b"RTP/AVP", b"RTP/SAVP"), "RTP/SAVP"),
        (SIPP.replace(b"RTP/AVP", b"UDP/TLS/RTP/SAVPF"), "UDP/TLS/RTP/SAVPF"),
        (SIPP.replace(b"m=audio 6000 RTP/AVP 0\r\n", b""), "no audio"),
    ],
)
def test_offers_we_cannot_take_raise_negotiation_error(body: bytes, match: str) -> None:
    with pytest.raises(SdpNegotiationError, match=match):
        parse_offer(body)


def test_no_common_codec() -> None:
    body = SIPP.replace(b"RTP/AVP 0", b"RTP/AVP 18 96") + b"a=rtpmap:96 opus/48000/2\r\n"
    with pytest.raises(SdpNegotiationError, match="no common codec"):
        negotiate(parse_offer(body))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n\r\n",
        b"hello world",
        b"\xff\xfe\x00garbage",
        SIPP.replace(b"v=0\r\n", b""),
        SIPP.replace(b"v=0", b"v=1"),
        SIPP.replace(b"c=IN IP4 127.0.1.1\r\n", b""),  # no connection address anywhere
        SIPP.replace(b"c=IN IP4 127.0.1.1", b"c=IN IP4"),
        SIPP.replace(b"c=IN IP4 127.0.1.1", b"c=ATM NSAP 47.0091"),
        SIPP.replace(b"o=user1 53655765 2353687637 IN IP4 127.0.1.1\r\n", b""),
        SIPP.replace(b"2353687637", b"version"),
        SIPP.replace(b"m=audio 6000 RTP/AVP 0", b"m=audio 6000 RTP/AVP"),
        SIPP.replace(b"m=audio 6000", b"m=audio port"),
        SIPP.replace(b"m=audio 6000", b"m=audio 70000"),
        SIPP.replace(b"RTP/AVP 0", b"RTP/AVP PCMU"),
        SIPP.replace(b"RTP/AVP 0", b"RTP/AVP 128"),
        SIPP + b"a=rtpmap:0 PCMU\r\n",
        SIPP + b"a=rtpmap:x PCMU/8000\r\n",
        SIPP + b"a=rtpmap:0 PCMU/fast\r\n",
        SIPP + b"this is not sdp\r\n",
        SIPP + b"A=sendrecv\r\n",
    ],
)
def test_garbage_raises_sdp_error(body: bytes) -> None:
    with pytest.raises(SdpError):
        parse_offer(body)


def test_bare_lf_and_latin1_session_name_are_tolerated() -> None:
    offer = parse_offer(SIPP.replace(b"\r\n", b"\n").replace(b"s=-", b"s=caf\xe9"))
    assert offer.payload_types == (0,)


# --- building and reading back ------------------------------------------------------------------------------------


def test_answer_text_for_baresip() -> None:
    answer = build_answer("10.0.0.2", 40000, negotiate(parse_offer(BARESIP)), session_id="77", session_version=3)
    assert answer == (
        b"v=0\r\no=- 77 3 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def test_answer_refuses_the_streams_it_does_not_take() -> None:
    answer = build_answer("10.0.0.2", 40000, negotiate(parse_offer(WITH_VIDEO)), session_id="1", session_version=1)
    lines = [line for line in answer.decode().split("\r\n") if line.startswith("m=")]
    assert lines == ["m=video 0 RTP/AVP 100", "m=audio 40000 RTP/AVP 0 101"]  # same count and order as the offer


@pytest.mark.parametrize("offer_body", FIXTURES)
def test_answer_reads_back_as_what_was_negotiated(offer_body: bytes) -> None:
    negotiated = negotiate(parse_offer(offer_body))
    answer = build_answer("10.0.0.2", 40000, negotiated, session_id="5", session_version=9)
    read_back = parse_offer(answer)
    assert read_back.payload_types == tuple(pt for pt in (negotiated.codec_pt, negotiated.dtmf_pt) if pt is not None)
    assert read_back.direction == negotiated.direction and read_back.ptime == 20
    assert (read_back.connection_address, read_back.port) == ("10.0.0.2", 40000)
    assert (read_back.session_id, read_back.session_version) == ("5", 9)
    assert len(read_back.media_lines) == len(parse_offer(offer_body).media_lines)
    assert parse_answer(answer) == Negotiated(
        negotiated.codec_pt, negotiated.codec, negotiated.dtmf_pt, "10.0.0.2", 40000,
        {"sendrecv": "sendrecv", "recvonly": "sendonly", "sendonly": "recvonly", "inactive": "inactive"}[
            negotiated.direction], read_back.media_lines, read_back.media_index,
    )  # fmt: skip


def test_ipv6_answer() -> None:
    answer = build_answer("2001:db8::2", 40000, negotiate(parse_offer(SIPP)), session_id="1", session_version=1)
    assert b"o=- 1 1 IN IP6 2001:db8::2\r\n" in answer and b"c=IN IP6 2001:db8::2\r\n" in answer
    assert parse_offer(answer).connection_address == "2001:db8::2"


def test_offer_for_an_outbound_call() -> None:
    body = build_offer("10.0.0.2", 40002, session_id="9", session_version=1)
    assert body.endswith(
        b"m=audio 40002 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )
    offer = parse_offer(body)
    assert offer == AudioOffer("10.0.0.2", 40002, (0, 8, 101),
                               {0: ("PCMU", 8000), 8: ("PCMA", 8000), 101: ("TELEPHONE-EVENT", 8000)},
                               {101: "0-16"}, "sendrecv", 20, "9", 1, ("audio 40002 RTP/AVP 0 8 101",), 0)  # fmt: skip
    alaw = parse_offer(build_offer("10.0.0.2", 40002, session_id="9", session_version=2, codecs=("pcma",),
                                   dtmf_pt=96))  # fmt: skip
    assert alaw.payload_types == (8, 96) and alaw.rtpmap[96] == ("TELEPHONE-EVENT", 8000)
    for codecs in (("OPUS",), ()):
        with pytest.raises(ValueError):
            build_offer("10.0.0.2", 40002, session_id="9", session_version=1, codecs=codecs)


def test_parse_answer_to_our_offer() -> None:
    answer = PCMA_ONLY
    negotiated = parse_answer(answer)
    assert (negotiated.codec, negotiated.dtmf_pt, negotiated.remote_address) == ("PCMA", 101, "203.0.113.8")
    with pytest.raises(SdpNegotiationError, match="no common codec"):
        parse_answer(answer, offered=("PCMU",))
    with pytest.raises(SdpNegotiationError, match="refused"):
        parse_answer(PCMA_ONLY.replace(b"m=audio 30000", b"m=audio 0"))
    with pytest.raises(SdpError):
        parse_answer(b"not sdp")


# --- properties ------------------------------------------------------------------------------------------------------


@st.composite
def mutated_sdp(draw: st.DrawFn) -> bytes:
    body = draw(st.sampled_from(FIXTURES))
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(body)))
        kind = draw(st.sampled_from(["delete", "insert", "replace"]))
        if kind == "delete":
            body = body[:position] + body[position + draw(st.integers(1, 30)) :]
        elif kind == "insert":
            syntax = st.sampled_from([b"\r\n", b" ", b"=", b"/", b":", b"0", b"m=audio 0"])
            chunk = draw(st.binary(max_size=12) | syntax)
            body = body[:position] + chunk + body[position:]
        else:
            body = body[:position] + bytes([draw(st.integers(0, 255))]) + body[position + 1 :]
    return body


def _check_any(body: bytes) -> None:
    try:
        negotiated = negotiate(parse_offer(body))
    except (SdpError, SdpNegotiationError) as error:
        assert str(error)
        return
    answer = build_answer("10.0.0.2", 40000, negotiated, session_id="1", session_version=1)
    assert parse_offer(answer).payload_types[0] == negotiated.codec_pt  # whatever we accept, we answer readably


@given(st.binary(max_size=1500))
@settings(max_examples=500)
def test_random_bytes_only_raise_sdp_errors(body: bytes) -> None:
    _check_any(body)


@given(mutated_sdp())
@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_offers_only_raise_sdp_errors_and_answers_read_back(body: bytes) -> None:
    _check_any(body)

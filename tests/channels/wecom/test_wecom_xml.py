"""Callback XML: real-shaped messages of each type parse; hostile, oversized or mis-encoded XML is refused."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.wecom.xml_messages import WeComXmlError, cdata, message_xml, parse_envelope, parse_message

# Shapes as WeCom documents them (接收消息与事件: 消息格式, 事件格式; 客户联系: 添加企业客户事件), with
# the indentation and newlines of the documentation's samples.
TEXT = b"""<xml>
   <ToUserName><![CDATA[ww0123456789abcdef]]></ToUserName>
   <FromUserName><![CDATA[ZhangSan]]></FromUserName>
   <CreateTime>1348831860</CreateTime>
   <MsgType><![CDATA[text]]></MsgType>
   <Content><![CDATA[\xe6\x9f\xa5\xe8\xaf\xa2\xe4\xbd\x99\xe9\xa2\x9d \xf0\x9f\x92\xb0]]></Content>
   <MsgId>1234567890123456</MsgId>
   <AgentID>1000002</AgentID>
</xml>"""

IMAGE = b"""<xml>
   <ToUserName><![CDATA[ww0123456789abcdef]]></ToUserName>
   <FromUserName><![CDATA[ZhangSan]]></FromUserName>
   <CreateTime>1348831860</CreateTime>
   <MsgType><![CDATA[image]]></MsgType>
   <PicUrl><![CDATA[https://wework.qpic.cn/wwpic/example/0]]></PicUrl>
   <MediaId><![CDATA[media_id_image]]></MediaId>
   <MsgId>1234567890123457</MsgId>
   <AgentID>1000002</AgentID>
</xml>"""

VOICE = b"""<xml>
   <ToUserName><![CDATA[ww0123456789abcdef]]></ToUserName>
   <FromUserName><![CDATA[ZhangSan]]></FromUserName>
   <CreateTime>1357290913</CreateTime>
   <MsgType><![CDATA[voice]]></MsgType>
   <MediaId><![CDATA[media_id_voice]]></MediaId>
   <Format><![CDATA[amr]]></Format>
   <Recognition><![CDATA[\xe8\xbd\xac\xe8\xb4\xa6\xe4\xb8\x80\xe7\x99\xbe\xe5\x85\x83]]></Recognition>
   <MsgId>1234567890123458</MsgId>
   <AgentID>1000002</AgentID>
</xml>"""

CLICK = b"""<xml><ToUserName><![CDATA[ww0123456789abcdef]]></ToUserName>
<FromUserName><![CDATA[ZhangSan]]></FromUserName><CreateTime>1408090651</CreateTime>
<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[click]]></Event>
<EventKey><![CDATA[menu_balance]]></EventKey><AgentID>1000002</AgentID></xml>"""

ENTER_AGENT = b"""<xml><ToUserName><![CDATA[ww0123456789abcdef]]></ToUserName>
<FromUserName><![CDATA[ZhangSan]]></FromUserName><CreateTime>1408091189</CreateTime>
<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[enter_agent]]></Event>
<EventKey><![CDATA[]]></EventKey><AgentID>1000002</AgentID></xml>"""

ADD_EXTERNAL_CONTACT = b"""<xml>
<ToUserName><![CDATA[ww0123456789abcdef]]></ToUserName>
<FromUserName><![CDATA[sys]]></FromUserName>
<CreateTime>1403610513</CreateTime>
<MsgType><![CDATA[event]]></MsgType>
<Event><![CDATA[change_external_contact]]></Event>
<ChangeType><![CDATA[add_external_contact]]></ChangeType>
<UserID><![CDATA[ZhangSan]]></UserID>
<ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA]]></ExternalUserID>
<State><![CDATA[branch_0101]]></State>
<WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode>
</xml>"""

TEMPLATE_CARD_EVENT = b"""<xml>
<ToUserName><![CDATA[ww0123456789abcdef]]></ToUserName>
<FromUserName><![CDATA[ZhangSan]]></FromUserName>
<CreateTime>1700000000</CreateTime>
<MsgType><![CDATA[event]]></MsgType>
<Event><![CDATA[template_card_event]]></Event>
<EventKey><![CDATA[confirm_transfer]]></EventKey>
<TaskId><![CDATA[transfer-20240101-0001]]></TaskId>
<CardType><![CDATA[button_interaction]]></CardType>
<ResponseCode><![CDATA[RESPONSE_CODE]]></ResponseCode>
<AgentID>1000002</AgentID>
</xml>"""

ENVELOPE = b"""<xml>
   <ToUserName><![CDATA[ww0123456789abcdef]]></ToUserName>
   <Encrypt><![CDATA[RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0Q==]]></Encrypt>
   <AgentID><![CDATA[218]]></AgentID>
</xml>"""


def refusal(body: bytes, *, envelope: bool = False, max_bytes: int = 65536) -> str:
    with pytest.raises(WeComXmlError) as error:
        if envelope:
            parse_envelope(body, max_bytes=max_bytes)
        else:
            parse_message(body, max_bytes=max_bytes)
    return error.value.code


def test_an_envelope_gives_the_ciphertext_and_the_application() -> None:
    envelope = parse_envelope(ENVELOPE)
    assert envelope.to_user == "ww0123456789abcdef"
    assert envelope.agent_id == "218"
    assert envelope.encrypt.startswith("RypEvHKD8QQ") and envelope.encrypt.endswith("==")


def test_an_envelope_without_encrypt_is_missing_a_field() -> None:
    assert refusal(b"<xml><ToUserName>a</ToUserName></xml>", envelope=True) == "missing_field"
    assert refusal(b"<xml><Encrypt><![CDATA[  ]]></Encrypt></xml>", envelope=True) == "missing_field"


def test_a_text_message_keeps_chinese_and_emoji() -> None:
    message = parse_message(TEXT)
    assert (message.to_user, message.from_user, message.create_time) == ("ww0123456789abcdef", "ZhangSan", 1348831860)
    assert (message.msg_type, message.content) == ("text", "查询余额 💰")
    assert (message.msg_id, message.agent_id) == ("1234567890123456", "1000002")
    assert message.event is None and message.media_id is None


def test_an_image_message_gives_its_media_and_url() -> None:
    message = parse_message(IMAGE)
    assert (message.msg_type, message.media_id) == ("image", "media_id_image")
    assert message.pic_url == "https://wework.qpic.cn/wwpic/example/0"


def test_a_voice_message_gives_its_media_format_and_recognition() -> None:
    message = parse_message(VOICE)
    assert (message.msg_type, message.media_id, message.voice_format) == ("voice", "media_id_voice", "amr")
    assert message.recognition == "转账一百元"


def test_menu_click_and_enter_agent_events_give_their_keys() -> None:
    click = parse_message(CLICK)
    assert (click.msg_type, click.event, click.event_key, click.msg_id) == ("event", "click", "menu_balance", None)
    enter = parse_message(ENTER_AGENT)
    assert (enter.event, enter.event_key, enter.agent_id) == ("enter_agent", "", "1000002")


def test_an_external_contact_event_gives_the_customer_and_the_welcome_code() -> None:
    message = parse_message(ADD_EXTERNAL_CONTACT)
    assert (message.event, message.change_type) == ("change_external_contact", "add_external_contact")
    assert message.external_user_id == "woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA"
    assert message.welcome_code == "WELCOMECODE"
    assert message.raw["UserID"] == "ZhangSan" and message.raw["State"] == "branch_0101"


def test_a_template_card_event_gives_its_task_and_button() -> None:
    message = parse_message(TEMPLATE_CARD_EVENT)
    assert (message.event, message.event_key, message.task_id) == (
        "template_card_event",
        "confirm_transfer",
        "transfer-20240101-0001",
    )
    assert message.raw["ResponseCode"] == "RESPONSE_CODE" and message.raw["CardType"] == "button_interaction"


def test_raw_is_read_only() -> None:
    raw = parse_message(TEXT).raw
    with pytest.raises(TypeError):
        raw["Content"] = "changed"  # type: ignore[index]


def test_message_xml_round_trips_cdata_terminators_carriage_returns_and_integers() -> None:
    tricky = "a]]>b]]]]>c]]>\r\n]]\r>中文😀"
    body = message_xml(
        {"ToUserName": "ww1", "FromUserName": "u", "CreateTime": 1700000000, "MsgType": "text", "Content": tricky}
    )
    assert b"<CreateTime>1700000000</CreateTime>" in body
    message = parse_message(body)
    assert message.content == tricky and message.create_time == 1700000000


@pytest.mark.parametrize(
    "fields",
    [{"Content": "nul \x00"}, {"Content": "\ufffe"}, {"bad name": "x"}, {"Flag": True}, {"List": [1]}],
)
def test_message_xml_refuses_what_xml_cannot_carry(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        message_xml(fields)  # type: ignore[arg-type]


def test_cdata_of_an_empty_string_is_an_empty_section() -> None:
    assert cdata("") == "<![CDATA[]]>"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE xml [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<xml><Encrypt>&lol9;</Encrypt></xml>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>
<MsgType>text</MsgType><Content>&x;</Content></xml>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE xml SYSTEM "http://127.0.0.1:9/evil.dtd">
<xml><Encrypt>x</Encrypt></xml>"""

PARAMETER_ENTITY = b"""<!DOCTYPE xml [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><xml><Encrypt>x</Encrypt></xml>"""

INTERNAL_DTD = b"""<!DOCTYPE xml [<!ELEMENT xml ANY>]><xml><Encrypt>x</Encrypt></xml>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, PARAMETER_ENTITY, INTERNAL_DTD])
def test_dtds_and_entities_are_forbidden(body: bytes) -> None:
    assert refusal(body, envelope=True) == "forbidden_xml"
    assert refusal(body) == "forbidden_xml"


def test_an_undeclared_entity_reference_is_malformed() -> None:
    assert refusal(b"<xml><Encrypt>&x;</Encrypt></xml>", envelope=True) == "malformed_xml"


def test_a_gbk_declaration_is_refused_even_when_the_bytes_are_valid_gbk() -> None:
    body = '<?xml version="1.0" encoding="GBK"?><xml><Encrypt>中文</Encrypt></xml>'.encode("gbk")
    assert refusal(body, envelope=True) == "malformed_xml"
    ascii_only = b'<?xml version="1.0" encoding="gb2312"?><xml><Encrypt>x</Encrypt></xml>'
    assert refusal(ascii_only, envelope=True) == "malformed_xml"


@pytest.mark.parametrize(
    "body",
    [
        b"<xml><Encrypt>\xff\xfe</Encrypt></xml>",  # invalid UTF-8
        b"<xml><Encrypt>\xe4\xb8</Encrypt></xml>",  # truncated multi-byte sequence
        b"<xml><Encrypt>\xed\xa0\x80</Encrypt></xml>",  # an encoded surrogate
        "<xml><Encrypt>x</Encrypt></xml>".encode("utf-16"),
        b'<?xml version="1.0" encoding="utf-16"?><xml><Encrypt>x</Encrypt></xml>',
        b'<?xml version="1.0" encoding="latin-1"?><xml><Encrypt>caf\xe9</Encrypt></xml>',
    ],
)
def test_anything_but_utf8_is_refused(body: bytes) -> None:
    assert refusal(body, envelope=True) == "malformed_xml"


def test_an_explicit_utf8_declaration_and_a_bom_are_accepted() -> None:
    assert parse_envelope(b'<?xml version="1.0" encoding="UTF-8"?><xml><Encrypt>x</Encrypt></xml>').encrypt == "x"
    assert parse_envelope(b"\xef\xbb\xbf<xml><Encrypt>x</Encrypt></xml>").encrypt == "x"


def test_a_10_mb_field_is_too_large() -> None:
    body = b"<xml><ToUserName>a</ToUserName><Encrypt>" + b"A" * (10 * 1024 * 1024) + b"</Encrypt></xml>"
    assert refusal(body, envelope=True) == "too_large"
    assert refusal(body) == "too_large"


def test_the_size_limit_is_a_parameter() -> None:
    assert refusal(ENVELOPE, envelope=True, max_bytes=len(ENVELOPE) - 1) == "too_large"
    assert parse_envelope(ENVELOPE, max_bytes=len(ENVELOPE)).agent_id == "218"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<xml><Encrypt>x</Encrypt>",  # unclosed
        b"<xml><Encrypt>x</Encrypt></xml><xml/>",  # two roots
        b"<other><Encrypt>x</Encrypt></other>",  # wrong root
        b'<xml a="1"><Encrypt>x</Encrypt></xml>',  # attributes
        b'<xml><Encrypt a="1">x</Encrypt></xml>',
        b"<xml><Encrypt><Inner>x</Inner></Encrypt></xml>",  # nested
        b"<xml><Encrypt>x</Encrypt><Encrypt>y</Encrypt></xml>",  # duplicate field
        b"<xml>loose text<Encrypt>x</Encrypt></xml>",
        b"<xml><Encrypt>x</Encrypt>loose text</xml>",
        b'<xml xmlns:p="urn:x"><p:Encrypt>x</p:Encrypt></xml>',  # namespaced
        b"<xml><Encrypt>\x01</Encrypt></xml>",  # a control character
    ],
)
def test_anything_but_a_flat_xml_root_is_malformed(body: bytes) -> None:
    assert refusal(body, envelope=True) == "malformed_xml"


def test_comments_and_processing_instructions_are_ignored() -> None:
    body = b"<?xml version='1.0'?><!-- c --><xml><?pi x?><Encrypt>x<!-- c --></Encrypt><!-- c --></xml>"
    assert parse_envelope(body).encrypt == "x"


@pytest.mark.parametrize("missing", ["ToUserName", "FromUserName", "CreateTime", "MsgType"])
def test_a_message_without_a_required_field_is_missing_a_field(missing: str) -> None:
    fields: dict[str, str | int] = {"ToUserName": "ww1", "FromUserName": "u", "CreateTime": 1, "MsgType": "text"}
    del fields[missing]
    assert refusal(message_xml(fields)) == "missing_field"


def test_an_event_without_its_event_field_is_missing_a_field() -> None:
    body = message_xml({"ToUserName": "ww1", "FromUserName": "u", "CreateTime": 1, "MsgType": "event"})
    assert refusal(body) == "missing_field"


@pytest.mark.parametrize("create_time", ["", "soon", "-1", "1.5", "１２３", "1" * 21])
def test_a_non_integer_create_time_is_malformed(create_time: str) -> None:
    body = message_xml({"ToUserName": "ww1", "FromUserName": "u", "CreateTime": create_time, "MsgType": "text"})
    assert refusal(body) == "malformed_xml"


# Text XML can carry (everything but the control characters, surrogates and U+FFFE/U+FFFF), with the sequences
# that matter to CDATA and line-end normalisation mixed in.
xml_characters = st.characters(
    exclude_categories=["Cs"],
    exclude_characters=[chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)] + ["\ufffe", "\uffff"],
)
xml_text = st.lists(
    st.text(xml_characters, max_size=8) | st.sampled_from(["]]>", "]]", "]", ">", "<", "&", "\r", "\r\n", "中", "😀"]),
    max_size=25,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(content=xml_text, key=xml_text)
def test_any_text_round_trips_through_message_xml(content: str, key: str) -> None:
    body = message_xml(
        {"ToUserName": "ww1", "FromUserName": "u", "CreateTime": 1, "MsgType": "event", "Event": "click",
         "EventKey": key, "Content": content}
    )  # fmt: skip
    message = parse_message(body)
    assert (message.content, message.event_key) == (content, key)


SEEDS = [TEXT, IMAGE, VOICE, CLICK, ENTER_AGENT, ADD_EXTERNAL_CONTACT, TEMPLATE_CARD_EVENT, ENVELOPE]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real-shaped callback with a few bytes replaced, inserted or deleted, or hostile fragments spliced in."""
    body = bytearray(draw(st.sampled_from(SEEDS)))
    fragments = st.sampled_from(
        [b"<!DOCTYPE xml>", b"<!ENTITY x 'y'>", b"&x;", b"&#0;", b"&#x110000;", b"]]>", b"<![CDATA[", b"<?xml?>",
         b"\xff", b"\xe4\xb8", b"\x00", b"<", b">", b"</xml>", b"<xml>", b'encoding="gbk"', b"<a:b>"]
    )  # fmt: skip
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(body)))
        action = draw(st.sampled_from(["replace", "insert", "delete", "splice"]))
        if action == "replace" and position < len(body):
            body[position] = draw(st.integers(0, 255))
        elif action == "insert":
            body[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del body[position : position + draw(st.integers(1, 8))]
        else:
            body[position:position] = draw(fragments)
    return bytes(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=300) | mutated())
def test_fuzzed_bodies_only_ever_raise_wecom_xml_error(body: bytes) -> None:
    for parse in (parse_envelope, parse_message):
        try:
            parse(body)
        except WeComXmlError as error:
            assert error.code in {"malformed_xml", "forbidden_xml", "too_large", "missing_field"}

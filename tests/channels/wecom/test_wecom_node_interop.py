"""Our WeComCrypto against Tencent's own npm package @wecom/crypto, run by Node in the platform's role."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.wecom.crypto import WeComCrypto, WeComCryptoError
from channels.wecom.xml_messages import message_xml, parse_envelope, parse_message

NODE_DIR = Path(__file__).parent / "node"
REPO_ROOT = Path(__file__).resolve().parents[3]

TOKEN = "QDG6eK"
ENCODING_AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
CORP_ID = "wx5823bf96d3bd56c7"
OFFICIAL_ECHOSTR = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
# The official echostr's random prefix happens to be printable ASCII.
OFFICIAL_ECHOSTR_PREFIX = b"c41b64491c2468d0"

CHINESE_AND_EMOJI = "您好！本月账单 ¥1,234.56 已出，请于 25 日前还款 💳🙏 <&>]]>"


class NodePlatform:
    """A long-lived `node interop.mjs`: one JSON command per line in, one JSON answer per line out."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    def call(self, op: str, **arguments: Any) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        assert line, f"node exited (status {self._process.poll()})"
        answer: dict[str, Any] = json.loads(line)
        assert "error" not in answer, answer["error"]
        return answer


@pytest.fixture(scope="module")
def platform() -> Iterator[NodePlatform]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the @wecom/crypto interoperability tests need Node (20) and npm")
    installed = subprocess.run(
        [str(REPO_ROOT / "tools" / "ensure-node-modules.sh"), str(NODE_DIR)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if installed.returncode != 0:
        pytest.fail(f"tools/ensure-node-modules.sh failed:\n{installed.stdout}{installed.stderr}")
    process = subprocess.Popen(
        [node, "interop.mjs"],
        cwd=NODE_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    try:
        yield NodePlatform(process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def crypto() -> WeComCrypto:
    return WeComCrypto(TOKEN, ENCODING_AES_KEY, CORP_ID)


def platform_config(token: str = TOKEN, key: str = ENCODING_AES_KEY, receive_id: str = CORP_ID) -> dict[str, str]:
    return {"token": token, "key": key, "receive_id": receive_id}


def test_tencent_library_reproduces_the_official_echostr(platform: NodePlatform) -> None:
    answer = platform.call(
        "url_verification",
        **platform_config(),
        echo="1616140317555161061",
        timestamp="1409659589",
        nonce="263014780",
        random=base64.b64encode(OFFICIAL_ECHOSTR_PREFIX).decode(),
    )
    assert answer == {"echostr": OFFICIAL_ECHOSTR, "msg_signature": "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"}


@pytest.mark.parametrize("echo", ["1616140317555161061", "验证串-" + CHINESE_AND_EMOJI, ""])
def test_a_url_verification_made_by_tencent_library_is_verified_and_decrypted(
    platform: NodePlatform, crypto: WeComCrypto, echo: str
) -> None:
    request = platform.call("url_verification", **platform_config(), echo=echo, timestamp="1700000000", nonce="8086")
    assert crypto.verify_url(request["msg_signature"], "1700000000", "8086", request["echostr"]) == echo.encode()


def test_a_url_verification_for_another_token_or_corp_is_refused(platform: NodePlatform, crypto: WeComCrypto) -> None:
    other_token = platform.call(
        "url_verification", **platform_config(token="not-ours"), echo="x", timestamp="1", nonce="2"
    )
    with pytest.raises(WeComCryptoError) as error:
        crypto.verify_url(other_token["msg_signature"], "1", "2", other_token["echostr"])
    assert error.value.code == "invalid_signature"
    other_corp = platform.call(
        "url_verification", **platform_config(receive_id="ww-other-corp"), echo="x", timestamp="1", nonce="2"
    )
    with pytest.raises(WeComCryptoError) as error:
        crypto.verify_url(other_corp["msg_signature"], "1", "2", other_corp["echostr"])
    assert error.value.code == "receive_id_mismatch"


def test_a_message_callback_made_by_tencent_library_parses_with_chinese_and_emoji(
    platform: NodePlatform, crypto: WeComCrypto
) -> None:
    plaintext = message_xml(
        {
            "ToUserName": CORP_ID,
            "FromUserName": "ZhangSan",
            "CreateTime": 1700000000,
            "MsgType": "text",
            "Content": CHINESE_AND_EMOJI,
            "MsgId": "7284567890123456789",
            "AgentID": 1000002,
        }
    )
    callback = platform.call(
        "callback", **platform_config(), message=plaintext.decode(), agent_id="1000002", timestamp="1700000001",
        nonce="1372623149",
    )  # fmt: skip
    envelope = parse_envelope(callback["body"].encode())
    assert (envelope.to_user, envelope.agent_id) == (CORP_ID, "1000002")
    plain = crypto.decrypt_message(callback["msg_signature"], "1700000001", "1372623149", envelope.encrypt)
    message = parse_message(plain)
    assert (message.from_user, message.msg_id) == ("ZhangSan", "7284567890123456789")
    assert message.content == CHINESE_AND_EMOJI


@pytest.mark.parametrize("text", [CHINESE_AND_EMOJI, "", "x" * 2048, "长" * 700])
def test_a_reply_from_us_is_verified_and_decrypted_by_tencent_library(
    platform: NodePlatform, crypto: WeComCrypto, text: str
) -> None:
    reply = crypto.encrypt_reply(text.encode(), "1700000002", "5678")
    opened = platform.call("open_reply", **platform_config(), reply=reply.decode())
    assert opened == {
        "signature_ok": True,
        "timestamp": "1700000002",
        "nonce": "5678",
        "message": text,
        "id": CORP_ID,
    }


def test_tencent_library_notices_a_tampered_reply(platform: NodePlatform, crypto: WeComCrypto) -> None:
    reply = crypto.encrypt_reply(b"ok", "1700000002", "5678").replace(b"5678", b"5679")
    assert platform.call("open_reply", **platform_config(), reply=reply.decode())["signature_ok"] is False


texts = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
        st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
        st.sampled_from("，。？！￥\n\t"),
    ),
    max_size=600,
)
keys = st.binary(min_size=32, max_size=32).map(lambda raw: base64.b64encode(raw).decode()[:43])
receive_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=24).map("ww".__add__)


@settings(max_examples=60, deadline=None)
@given(text=texts, key=keys, receive_id=receive_ids, prefix=st.binary(min_size=16, max_size=16))
def test_both_libraries_produce_identical_ciphertexts_and_read_each_other(
    platform: NodePlatform, text: str, key: str, receive_id: str, prefix: bytes
) -> None:
    ours = WeComCrypto("token", key, receive_id)
    mine = ours.encrypt(text.encode(), random_prefix=prefix)
    theirs = platform.call(
        "encrypt", key=key, receive_id=receive_id, message=text, random=base64.b64encode(prefix).decode()
    )["encrypted"]
    assert mine == theirs
    decrypted = platform.call("decrypt", key=key, encrypted=ours.encrypt(text.encode()))
    assert (decrypted["message"], decrypted["id"]) == (text, receive_id)
    fresh = platform.call("encrypt", key=key, receive_id=receive_id, message=text)["encrypted"]
    assert ours.decrypt(fresh) == text.encode()


@settings(max_examples=60, deadline=None)
@given(
    token=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", min_size=3, max_size=32),
    timestamp=st.integers(0, 2**40).map(str),
    nonce=st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=16),
    encrypted=st.binary(max_size=96).map(lambda raw: base64.b64encode(raw).decode()),
)
def test_both_libraries_compute_the_same_signature(
    platform: NodePlatform, token: str, timestamp: str, nonce: str, encrypted: str
) -> None:
    expected = platform.call("sign", token=token, timestamp=timestamp, nonce=nonce, encrypt=encrypted)["signature"]
    assert WeComCrypto(token, ENCODING_AES_KEY, CORP_ID).signature(timestamp, nonce, encrypted) == expected

"""WXBizMsgCrypt on `cryptography`: Tencent's published vectors, padding edge cases and every refusal code."""

from __future__ import annotations

import base64
import struct
import xml.etree.ElementTree as ET

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.wecom.crypto import WeComCrypto, WeComCryptoError
from channels.wecom.xml_messages import parse_message

# Tencent's sample configuration, published in the WeCom "加解密方案说明" page and every WXBizMsgCrypt sample.
TOKEN = "QDG6eK"
ENCODING_AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
CORP_ID = "wx5823bf96d3bd56c7"

# URL verification (GET) sample.
VERIFY_TIMESTAMP = "1409659589"
VERIFY_NONCE = "263014780"
VERIFY_SIGNATURE = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
VERIFY_ECHOSTR = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="

# Message callback (POST) sample: text "hello" from "mycreate" to application 218.
MESSAGE_TIMESTAMP = "1409659813"
MESSAGE_NONCE = "1372623149"
MESSAGE_SIGNATURE = "477715d11cdb4164915debcba66cb864d751f3e6"
MESSAGE_ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3"
    "TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gs"
    "ijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUa"
    "x5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIG"
    "HBZZIs2pDBS8R07+qN+E7Q=="
)

KEY = base64.b64decode(ENCODING_AES_KEY + "=")


@pytest.fixture
def crypto() -> WeComCrypto:
    return WeComCrypto(TOKEN, ENCODING_AES_KEY, CORP_ID)


def raw_decrypt(encrypted: str) -> bytes:
    """AES-256-CBC without any unpadding or checks: what is really inside a ciphertext."""
    decryptor = Cipher(algorithms.AES(KEY), modes.CBC(KEY[:16])).decryptor()
    return decryptor.update(base64.b64decode(encrypted)) + decryptor.finalize()


def raw_encrypt(plain: bytes) -> str:
    """AES-256-CBC of exactly `plain` (a multiple of 16 bytes), for hand-made malformed plaintexts."""
    encryptor = Cipher(algorithms.AES(KEY), modes.CBC(KEY[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def framed(message: bytes, receive_id: bytes = CORP_ID.encode(), *, length: int | None = None) -> bytes:
    """Random prefix, length field, message and receive id, unpadded."""
    return b"r" * 16 + struct.pack(">I", len(message) if length is None else length) + message + receive_id


def reply_fields(reply: bytes) -> dict[str, str]:
    """The fields of a reply envelope we produced ourselves (trusted, so the plain stdlib parser will do)."""
    return {child.tag: child.text or "" for child in ET.fromstring(reply)}


def code_of(error: pytest.ExceptionInfo[WeComCryptoError]) -> str:
    return error.value.code


def test_official_url_verification_vector_decrypts_to_the_echo(crypto: WeComCrypto) -> None:
    assert crypto.signature(VERIFY_TIMESTAMP, VERIFY_NONCE, VERIFY_ECHOSTR) == VERIFY_SIGNATURE
    assert crypto.verify_url(VERIFY_SIGNATURE, VERIFY_TIMESTAMP, VERIFY_NONCE, VERIFY_ECHOSTR) == b"1616140317555161061"


def test_official_message_vector_decrypts_to_the_documented_text_message(crypto: WeComCrypto) -> None:
    plaintext = crypto.decrypt_message(MESSAGE_SIGNATURE, MESSAGE_TIMESTAMP, MESSAGE_NONCE, MESSAGE_ENCRYPT)
    message = parse_message(plaintext)
    assert (message.to_user, message.from_user, message.msg_type) == (CORP_ID, "mycreate", "text")
    assert (message.content, message.msg_id, message.agent_id) == ("hello", "4561255354251345929", "218")
    assert message.create_time == 1409659813


def test_official_message_vector_has_pad_value_30_which_a_16_byte_unpadder_rejects(crypto: WeComCrypto) -> None:
    padded = raw_decrypt(MESSAGE_ENCRYPT)
    assert padded[-1] == 30 and padded[-30:] == bytes([30]) * 30
    assert crypto.decrypt(MESSAGE_ENCRYPT).startswith(b"<xml><ToUserName>")


@pytest.mark.parametrize("encrypted", [VERIFY_ECHOSTR, MESSAGE_ENCRYPT])
def test_reencrypting_an_official_vector_with_its_random_prefix_gives_the_same_bytes(
    crypto: WeComCrypto, encrypted: str
) -> None:
    prefix = raw_decrypt(encrypted)[:16]
    assert crypto.encrypt(crypto.decrypt(encrypted), random_prefix=prefix) == encrypted


def test_a_plaintext_filling_whole_blocks_gets_a_full_block_of_pad_32(crypto: WeComCrypto) -> None:
    # 16 random + 4 length + message + 18-byte corp id = 64 bytes: no room left, so a whole block of 32s is added.
    message = b"m" * (64 - 16 - 4 - len(CORP_ID))
    encrypted = crypto.encrypt(message)
    padded = raw_decrypt(encrypted)
    assert len(padded) == 96 and padded[-32:] == bytes([32]) * 32
    assert crypto.decrypt(encrypted) == message


def test_encrypt_reply_is_an_envelope_whose_signature_covers_the_ciphertext(crypto: WeComCrypto) -> None:
    reply = crypto.encrypt_reply("收到，谢谢 🙏".encode(), "1409659813", "1372623149")
    assert reply.startswith(b"<xml><Encrypt><![CDATA[") and reply.endswith(b"</Nonce></xml>")
    fields = reply_fields(reply)
    assert fields["TimeStamp"] == "1409659813" and fields["Nonce"] == "1372623149"
    crypto.verify_signature(fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"], fields["Encrypt"])
    assert crypto.decrypt(fields["Encrypt"]).decode() == "收到，谢谢 🙏"


def test_each_encryption_uses_a_fresh_random_prefix(crypto: WeComCrypto) -> None:
    assert crypto.encrypt(b"same") != crypto.encrypt(b"same")


@pytest.mark.parametrize(
    "signature",
    [
        "0" * 40,
        VERIFY_SIGNATURE.upper(),
        VERIFY_SIGNATURE[:-1],
        "",
        "签名" * 20,
        "\udcff" * 40,  # a lone surrogate, as surrogateescape query decoding can produce
    ],
)
def test_a_wrong_signature_is_refused(crypto: WeComCrypto, signature: str) -> None:
    with pytest.raises(WeComCryptoError) as error:
        crypto.verify_url(signature, VERIFY_TIMESTAMP, VERIFY_NONCE, VERIFY_ECHOSTR)
    assert code_of(error) == "invalid_signature"


def test_a_signature_for_other_parameters_is_refused(crypto: WeComCrypto) -> None:
    with pytest.raises(WeComCryptoError) as error:
        crypto.decrypt_message(VERIFY_SIGNATURE, MESSAGE_TIMESTAMP, MESSAGE_NONCE, MESSAGE_ENCRYPT)
    assert code_of(error) == "invalid_signature"
    other_token = WeComCrypto("another-token", ENCODING_AES_KEY, CORP_ID)
    with pytest.raises(WeComCryptoError) as error:
        other_token.verify_url(VERIFY_SIGNATURE, VERIFY_TIMESTAMP, VERIFY_NONCE, VERIFY_ECHOSTR)
    assert code_of(error) == "invalid_signature"


def test_a_message_for_another_corp_is_refused() -> None:
    other_corp = WeComCrypto(TOKEN, ENCODING_AES_KEY, "wx5823bf96d3bd56c8")
    with pytest.raises(WeComCryptoError) as error:
        other_corp.verify_url(VERIFY_SIGNATURE, VERIFY_TIMESTAMP, VERIFY_NONCE, VERIFY_ECHOSTR)
    assert code_of(error) == "receive_id_mismatch"
    prefix_of_corp = WeComCrypto(TOKEN, ENCODING_AES_KEY, CORP_ID[:-1])
    with pytest.raises(WeComCryptoError) as error:
        prefix_of_corp.decrypt(MESSAGE_ENCRYPT)
    assert code_of(error) == "receive_id_mismatch"


@pytest.mark.parametrize(
    ("encrypted", "code"),
    [
        (MESSAGE_ENCRYPT[:-4], "invalid_ciphertext"),  # whole base64 quanta, but no longer whole AES blocks
        (MESSAGE_ENCRYPT[:-3], "invalid_ciphertext"),  # not even base64 any more
        (base64.b64encode(base64.b64decode(MESSAGE_ENCRYPT)[:-16]).decode(), "invalid_ciphertext"),
        ("", "invalid_ciphertext"),
        ("!!!!", "invalid_ciphertext"),
        ("密文" * 22, "invalid_ciphertext"),
        (MESSAGE_ENCRYPT.replace("+", " "), "invalid_ciphertext"),
    ],
)
def test_truncated_or_garbled_ciphertext_is_refused(crypto: WeComCrypto, encrypted: str, code: str) -> None:
    with pytest.raises(WeComCryptoError) as error:
        crypto.decrypt(encrypted)
    assert code_of(error) == code


def test_dropping_a_whole_32_byte_block_breaks_the_padding(crypto: WeComCrypto) -> None:
    with pytest.raises(WeComCryptoError) as error:
        crypto.decrypt(base64.b64encode(base64.b64decode(MESSAGE_ENCRYPT)[:-32]).decode())
    assert code_of(error) == "invalid_padding"


@pytest.mark.parametrize(
    "padding",
    [
        bytes([0]) * 32,  # pad value 0
        b"\x00" * 31 + bytes([33]),  # larger than the block
        b"\x00" * 31 + bytes([255]),
        b"\x00" * 28 + b"\x04\x05\x04\x04",  # inconsistent pad bytes
        b"\x00" * 2 + bytes([30]) * 29 + bytes([31]),  # claims 31, the bytes before it say otherwise
    ],
)
def test_bad_padding_is_refused(crypto: WeComCrypto, padding: bytes) -> None:
    plain = framed(b"hello")
    plain += b"\x00" * (-len(plain) % 32)
    with pytest.raises(WeComCryptoError) as error:
        crypto.decrypt(raw_encrypt(plain + padding))
    assert code_of(error) == "invalid_padding"


def test_a_length_field_beyond_the_plaintext_is_refused(crypto: WeComCrypto) -> None:
    plain = framed(b"hello", length=10_000)
    pad = 32 - len(plain) % 32
    with pytest.raises(WeComCryptoError) as error:
        crypto.decrypt(raw_encrypt(plain + bytes([pad]) * pad))
    assert code_of(error) == "invalid_length"


def test_a_plaintext_too_short_for_its_header_is_refused(crypto: WeComCrypto) -> None:
    plain = b"r" * 16  # random prefix but no length field
    with pytest.raises(WeComCryptoError) as error:
        crypto.decrypt(raw_encrypt(plain + bytes([16]) * 16))
    assert code_of(error) == "invalid_length"


def test_a_hand_framed_plaintext_with_correct_padding_decrypts(crypto: WeComCrypto) -> None:
    plain = framed("中文消息".encode())
    pad = 32 - len(plain) % 32
    assert crypto.decrypt(raw_encrypt(plain + bytes([pad]) * pad)) == "中文消息".encode()


@pytest.mark.parametrize(
    "encoding_aes_key",
    [
        ENCODING_AES_KEY[:-1],  # 42 characters
        ENCODING_AES_KEY + "A",  # 44 characters
        ENCODING_AES_KEY[:-1] + "=",  # padding inside the key
        ENCODING_AES_KEY[:-1] + "-",  # URL-safe alphabet
        ENCODING_AES_KEY[:-1] + "键",
        "",
    ],
)
def test_a_malformed_encoding_aes_key_is_refused(encoding_aes_key: str) -> None:
    with pytest.raises(WeComCryptoError) as error:
        WeComCrypto(TOKEN, encoding_aes_key, CORP_ID)
    assert code_of(error) == "invalid_aes_key"


def test_a_random_prefix_of_the_wrong_size_is_refused(crypto: WeComCrypto) -> None:
    with pytest.raises(WeComCryptoError) as error:
        crypto.encrypt(b"x", random_prefix=b"short")
    assert code_of(error) == "invalid_length"


def test_the_repr_shows_neither_token_nor_key(crypto: WeComCrypto) -> None:
    assert TOKEN not in repr(crypto) and ENCODING_AES_KEY not in repr(crypto)


@settings(max_examples=150, deadline=None)
@given(message=st.binary(max_size=5000), timestamp=st.integers(0, 2**40), nonce=st.text("0123456789abcdef", min_size=1))
def test_random_messages_round_trip_through_a_signed_callback(message: bytes, timestamp: int, nonce: str) -> None:
    crypto = WeComCrypto(TOKEN, ENCODING_AES_KEY, CORP_ID)
    encrypted = crypto.encrypt(message)
    signature = crypto.signature(str(timestamp), nonce, encrypted)
    assert crypto.decrypt_message(signature, str(timestamp), nonce, encrypted) == message


chinese_text = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # CJK unified ideographs
        st.sampled_from("，。？！：；“”（）《》¥ 0123456789abc\n"),
        st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),  # emoji
    ),
    max_size=1600,  # up to ~5000 bytes of UTF-8
)


@settings(max_examples=150, deadline=None)
@given(text=chinese_text)
def test_chinese_text_round_trips_through_an_encrypted_reply(text: str) -> None:
    crypto = WeComCrypto(TOKEN, ENCODING_AES_KEY, CORP_ID)
    fields = reply_fields(crypto.encrypt_reply(text.encode(), "1700000000", "42"))
    assert crypto.decrypt_message(fields["MsgSignature"], "1700000000", "42", fields["Encrypt"]).decode() == text


@settings(max_examples=200, deadline=None)
@given(encrypted=st.text(max_size=200) | st.binary(max_size=150).map(lambda raw: base64.b64encode(raw).decode()))
def test_arbitrary_ciphertext_only_ever_raises_wecom_crypto_error(encrypted: str) -> None:
    crypto = WeComCrypto(TOKEN, ENCODING_AES_KEY, CORP_ID)
    try:
        crypto.verify_url(crypto.signature("1", "2", encrypted), "1", "2", encrypted)
    except WeComCryptoError as error:
        assert error.code in {"invalid_ciphertext", "invalid_padding", "invalid_length", "receive_id_mismatch"}

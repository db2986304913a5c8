"""WeCom callback cryptography (Tencent's WXBizMsgCrypt scheme): SHA-1 signatures and AES-256-CBC envelopes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from channels.wecom.xml_messages import cdata

# The scheme pads to 32-byte blocks (not AES's 16): pad values run 1..32, so a ciphertext is a multiple of 32.
BLOCK_SIZE: Final = 32
RANDOM_PREFIX_SIZE: Final = 16
_HEADER_SIZE: Final = RANDOM_PREFIX_SIZE + 4
_AES_KEY_PATTERN: Final = re.compile(r"[A-Za-z0-9+/]{43}")
_TIMESTAMP_PATTERN: Final = re.compile(r"[0-9]{1,20}")

ERROR_CODES: Final = frozenset(
    {
        "invalid_signature",
        "invalid_aes_key",
        "invalid_ciphertext",
        "invalid_padding",
        "invalid_length",
        "receive_id_mismatch",
    }
)


class WeComCryptoError(Exception):
    """A callback failed verification or decryption; `code` is stable and safe to log, the detail is for logs only."""

    def __init__(self, code: str, detail: str = "") -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown WeComCryptoError code {code!r}")
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


def _utf8(text: str) -> bytes:
    # Query strings may carry lone surrogates (surrogateescape); they must fail verification, not raise.
    return text.encode("utf-8", "surrogatepass")


class WeComCrypto:
    """Verifies, decrypts and encrypts WeCom callbacks for one application (token, EncodingAESKey, receive id).

    The receive id is the corp id for an enterprise's own application (the suite id for a third-party suite).
    """

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        if not isinstance(encoding_aes_key, str) or not _AES_KEY_PATTERN.fullmatch(encoding_aes_key):
            raise WeComCryptoError("invalid_aes_key", "EncodingAESKey must be 43 base64 characters")
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except (binascii.Error, ValueError) as error:
            raise WeComCryptoError("invalid_aes_key", "EncodingAESKey is not base64") from error
        if len(key) != 32:
            raise WeComCryptoError("invalid_aes_key", "EncodingAESKey must decode to 32 bytes")
        self._token = token
        self._key = key
        self._iv = key[:16]
        self._receive_id = _utf8(receive_id)

    def __repr__(self) -> str:
        # Never the token or the key: instances end up in logs and tracebacks.
        return f"<WeComCrypto receive_id={self._receive_id.decode('utf-8', 'replace')!r}>"

    def signature(self, timestamp: str, nonce: str, encrypted: str) -> str:
        """SHA-1 (hex) of token, timestamp, nonce and ciphertext, sorted and concatenated."""
        joined = "".join(sorted([self._token, timestamp, nonce, encrypted]))
        return hashlib.sha1(_utf8(joined)).hexdigest()

    def verify_signature(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str) -> None:
        expected = self.signature(timestamp, nonce, encrypted).encode("ascii")
        if not hmac.compare_digest(expected, _utf8(msg_signature)):
            raise WeComCryptoError("invalid_signature")

    def encrypt(self, message: bytes, *, random_prefix: bytes | None = None) -> str:
        """Base64 of AES-256-CBC(16 random bytes + big-endian length + message + receive id, padded to 32)."""
        prefix = os.urandom(RANDOM_PREFIX_SIZE) if random_prefix is None else random_prefix
        if len(prefix) != RANDOM_PREFIX_SIZE:
            raise WeComCryptoError("invalid_length", f"random_prefix must be {RANDOM_PREFIX_SIZE} bytes")
        if len(message) > 0xFFFFFFFF:
            raise WeComCryptoError("invalid_length", "message longer than a 32-bit length allows")
        plain = b"".join([prefix, struct.pack(">I", len(message)), message, self._receive_id])
        pad = BLOCK_SIZE - len(plain) % BLOCK_SIZE
        encryptor = Cipher(algorithms.AES(self._key), modes.CBC(self._iv)).encryptor()
        ciphertext = encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()
        return base64.b64encode(ciphertext).decode("ascii")

    def decrypt(self, encrypted: str) -> bytes:
        """The message inside a ciphertext, after checking padding, length and receive id."""
        try:
            ciphertext = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError, TypeError) as error:
            raise WeComCryptoError("invalid_ciphertext", "not base64") from error
        # Every encoder of the scheme (Tencent's samples, @wecom/crypto) emits whole 32-byte blocks; anything
        # else was truncated or altered in transit.
        if not ciphertext or len(ciphertext) % BLOCK_SIZE:
            raise WeComCryptoError("invalid_ciphertext", f"{len(ciphertext)} bytes is not a multiple of {BLOCK_SIZE}")
        decryptor = Cipher(algorithms.AES(self._key), modes.CBC(self._iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        plain = _unpad(padded)
        if len(plain) < _HEADER_SIZE:
            raise WeComCryptoError("invalid_length", "shorter than the random prefix and length field")
        (length,) = struct.unpack(">I", plain[RANDOM_PREFIX_SIZE:_HEADER_SIZE])
        if length > len(plain) - _HEADER_SIZE:
            raise WeComCryptoError("invalid_length", "message length exceeds the plaintext")
        message = plain[_HEADER_SIZE : _HEADER_SIZE + length]
        receive_id = plain[_HEADER_SIZE + length :]
        if not hmac.compare_digest(receive_id, self._receive_id):
            raise WeComCryptoError("receive_id_mismatch")
        return message

    def verify_url(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> bytes:
        """Answers WeCom's URL verification: the decrypted echostr, once its signature checks out."""
        self.verify_signature(msg_signature, timestamp, nonce, echostr)
        return self.decrypt(echostr)

    def decrypt_message(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str) -> bytes:
        """The plaintext XML of a message callback whose `Encrypt` field is `encrypted`."""
        self.verify_signature(msg_signature, timestamp, nonce, encrypted)
        return self.decrypt(encrypted)

    def encrypt_reply(self, message: bytes, timestamp: str, nonce: str) -> bytes:
        """The passive-reply envelope WeCom expects: ciphertext, its signature, timestamp and nonce, as XML."""
        if not _TIMESTAMP_PATTERN.fullmatch(timestamp):
            raise ValueError("timestamp must be decimal digits")
        encrypted = self.encrypt(message)
        signature = self.signature(timestamp, nonce, encrypted)
        return (
            f"<xml><Encrypt>{cdata(encrypted)}</Encrypt><MsgSignature>{cdata(signature)}</MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp><Nonce>{cdata(nonce)}</Nonce></xml>"
        ).encode()


def _unpad(padded: bytes) -> bytes:
    pad = padded[-1]
    if not 1 <= pad <= BLOCK_SIZE:
        raise WeComCryptoError("invalid_padding", f"pad value {pad}")
    # Constant time, so that decrypt() alone (without a signature check first) is no padding oracle by timing.
    if not hmac.compare_digest(padded[-pad:], bytes([pad]) * pad):
        raise WeComCryptoError("invalid_padding", "inconsistent pad bytes")
    return padded[:-pad]

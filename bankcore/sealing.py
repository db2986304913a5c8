"""Sealing short-lived records at rest (a platform message not yet answered may hold a one-time code)."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# A purpose label derives a key of its own, so sealing can never double as a code digest or a token key.
_PURPOSE = b"bankbot/sealed-records/v1"


class UnsealError(Exception):
    """The sealed text was not made with this secret key, or was altered."""


class Sealer:
    """Authenticated encryption (Fernet: AES-128-CBC + HMAC-SHA256) of JSON values under the secret key."""

    def __init__(self, secret_key: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(secret_key.encode("utf-8"))
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, value: Any) -> str:
        raw = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return self._fernet.encrypt(raw).decode("ascii")

    def unseal(self, sealed: str) -> Any:
        try:
            return json.loads(self._fernet.decrypt(sealed.encode("ascii")))
        except (InvalidToken, ValueError, UnicodeError) as error:
            raise UnsealError("sealed record cannot be opened") from error

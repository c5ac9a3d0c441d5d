"""Strict decoders for untrusted JOSE text: canonical base64url and JSON objects.

Strict on purpose: a token has exactly one spelling, so no edit to it can verify (see test_token).
"""

from __future__ import annotations

import base64
import json
import string
from typing import NoReturn

from trustauthority.errors import TokenMalformed

_B64URL_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_")


def shown(value: object, limit: int = 48) -> str:
    """An untrusted value for an error message: repr, cut to one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str, what: str) -> bytes:
    """Decode unpadded base64url, refusing any other spelling of the same bytes.

    Padding, characters outside the alphabet and non-zero trailing bits are refused: a lenient
    decoder maps several strings to one value, which lets a token be edited without effect.
    """
    if len(segment) % 4 == 1 or not _B64URL_ALPHABET.issuperset(segment):
        raise TokenMalformed(f"{what} is not unpadded base64url")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if b64url_encode(data) != segment:
        raise TokenMalformed(f"{what} is not canonical base64url (non-zero trailing bits)")
    return data


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for name, value in pairs:
        if name in result:
            # two parsers may keep different copies: the signer meant one of them (RFC 7515 §5.2)
            raise ValueError(f"duplicate member {shown(name)}")
        result[name] = value
    return result


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def json_object(raw: bytes, what: str) -> dict[str, object]:
    """Parse UTF-8 JSON text that must be one object with unique member names."""
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_refuse_duplicates,
                           parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise TokenMalformed(f"{what} is not JSON ({error})") from None
    if not isinstance(value, dict):
        raise TokenMalformed(f"{what} is not a JSON object")
    return value


def canonical_json(value: object) -> bytes:
    """Compact, key-sorted UTF-8 JSON: what we sign."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False,
                      allow_nan=False).encode("utf-8")

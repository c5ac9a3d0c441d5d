"""The wrapped-key blob: a workload's key (KEK) as the workload stores it, beside its data.

Format (ASCII, so it fits in a header, a config file or a JSON field)::

    tak1.<base64url(header JSON)>.<base64url(wrapped)>

The header names the key (its id in our store), the workload it belongs to, the trusted key
provider, and the version of the provider's primary key that wrapped it. `wrapped` is what the
key server's adapter returned (`keyserver.KeyServer.wrap`), and the header is its associated data:
the key server authenticates it with the key, so a blob moved to another workload, relabelled to
another provider or version, or altered anywhere does not open. Parsing is strict and bounded;
anything else is `WrappedKeyInvalid`.

Hand-written: forty lines of framing that no library has a format for.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from trustauthority.errors import WrappedKeyInvalid

PREFIX = "tak1"
#: far more than any header and wrapped key; refuses absurd input before decoding it
MAX_BLOB_CHARS = 4096
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_FIELDS = ("key", "workload", "provider", "version", "kind")
#: primary key versions are stored as 32-bit integers; a larger one names none of ours
MAX_VERSION = 2**31 - 1


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, what: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise WrappedKeyInvalid(f"the blob's {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise WrappedKeyInvalid(f"the blob's {what} is not base64url") from None


@dataclass(frozen=True)
class WrappedKeyBlob:
    key_id: str
    workload: str
    provider_id: str
    primary_version: int
    kind: str  # the key server kind that wrapped it (kmip | pkcs11)
    wrapped: bytes

    def header_text(self) -> str:
        header = {"key": self.key_id, "workload": self.workload, "provider": self.provider_id,
                  "version": self.primary_version, "kind": self.kind}
        return b64url(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())

    @property
    def aad(self) -> bytes:
        """What the key server authenticates with the key: the prefix and the header."""
        return f"{PREFIX}.{self.header_text()}".encode("ascii")

    def encode(self) -> str:
        return f"{PREFIX}.{self.header_text()}.{b64url(self.wrapped)}"


def header_aad(key_id: str, workload: str, provider_id: str, primary_version: int,
               kind: str) -> bytes:
    """The associated data of a blob about to be made (before the key server wraps it)."""
    return WrappedKeyBlob(key_id, workload, provider_id, primary_version, kind, b"").aad


def parse_blob(text: str) -> WrappedKeyBlob:
    """A blob from untrusted hands, parsed; nothing in it is believed until it unwraps."""
    if not isinstance(text, str) or len(text) > MAX_BLOB_CHARS:
        raise WrappedKeyInvalid("not a wrapped-key blob (too long or not text)")
    parts = text.strip().split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise WrappedKeyInvalid(f"not a wrapped-key blob (expected {PREFIX}.<header>.<key>)")
    try:
        header = json.loads(b64url_decode(parts[1], "header"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WrappedKeyInvalid("the blob's header is not JSON") from None
    if not isinstance(header, dict) or sorted(header) != sorted(_FIELDS):
        raise WrappedKeyInvalid(f"the blob's header must have exactly {', '.join(_FIELDS)}")
    texts = [header[name] for name in ("key", "workload", "provider", "kind")]
    version = header["version"]
    if not all(isinstance(value, str) and 0 < len(value) <= 256 for value in texts) \
            or not isinstance(version, int) or isinstance(version, bool) \
            or not 1 <= version <= MAX_VERSION:
        raise WrappedKeyInvalid("the blob's header has a field of the wrong type")
    blob = WrappedKeyBlob(key_id=header["key"], workload=header["workload"],
                          provider_id=header["provider"], primary_version=version,
                          kind=header["kind"], wrapped=b64url_decode(parts[2], "key"))
    if blob.header_text() != parts[1]:
        # one encoding per header: what the key server authenticated is what we re-derive
        raise WrappedKeyInvalid("the blob's header is not in canonical form")
    return blob

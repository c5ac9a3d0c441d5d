"""The service master key: seals secrets at rest (signing keys, key-server credentials).

A `MasterKey` seals bytes for a named purpose (AES-256-GCM, the purpose as associated data, so a
sealed value cannot be moved to another column or row and still open). The default key lives in a
file that only its owner may read; the `MasterKey` protocol is the seam where a KMS or HSM-held
key plugs in later without touching the callers.
"""

from __future__ import annotations

import hashlib
import secrets
import stat
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustauthority.errors import ConfigError
from trustauthority.files import write_private

_VERSION = b"\x01"
_NONCE_BYTES = 12
_KEY_ID_BYTES = 8
KEY_BYTES = 32


class MasterKey(Protocol):
    """Seals and opens secrets; `key_id` names the key so a rotation can tell them apart."""

    @property
    def key_id(self) -> str: ...

    def seal(self, plaintext: bytes, *, purpose: str) -> bytes: ...

    def open(self, sealed: bytes, *, purpose: str) -> bytes: ...


class AesGcmMasterKey:
    """A 256-bit key held in memory: version ‖ key id ‖ nonce ‖ AES-GCM(ciphertext ‖ tag)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"the master key must be {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self._key_id = hashlib.sha256(b"trustauthority master key id\0" + key).digest()[
            :_KEY_ID_BYTES]

    @property
    def key_id(self) -> str:
        return self._key_id.hex()

    def seal(self, plaintext: bytes, *, purpose: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return (_VERSION + self._key_id + nonce
                + self._aead.encrypt(nonce, plaintext, purpose.encode()))

    def open(self, sealed: bytes, *, purpose: str) -> bytes:
        header = 1 + _KEY_ID_BYTES + _NONCE_BYTES
        if len(sealed) < header + 16 or sealed[:1] != _VERSION:
            raise ConfigError(f"sealed {purpose} is not in a format this version knows")
        if sealed[1:1 + _KEY_ID_BYTES] != self._key_id:
            raise ConfigError(f"sealed {purpose} was sealed under another master key "
                              f"({sealed[1:1 + _KEY_ID_BYTES].hex()}, this one is {self.key_id})")
        nonce = sealed[1 + _KEY_ID_BYTES:header]
        try:
            return self._aead.decrypt(nonce, sealed[header:], purpose.encode())
        except InvalidTag:
            raise ConfigError(f"sealed {purpose} does not open: altered, or moved from "
                              "another record") from None


def create_master_key_file(path: Path) -> AesGcmMasterKey:
    """Write a new random key, readable by its owner only; refuse to overwrite one."""
    key = secrets.token_bytes(KEY_BYTES)
    try:
        write_private(path, key, exclusive=True)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; refusing to replace a master key") from None
    return AesGcmMasterKey(key)


def load_master_key_file(path: Path) -> AesGcmMasterKey:
    """Read the key, refusing a file that group or others could read or write."""
    try:
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{path} is accessible to group or others "
                              f"(mode {stat.S_IMODE(info.st_mode):o}); run chmod 600 on it")
        key = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read the master key {path}: {error.strerror}") from None
    return AesGcmMasterKey(key)

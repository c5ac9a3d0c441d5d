"""Encrypted workloads on the host (vTA's scheme): the data is encrypted with a data key (DEK)
that the workload key (KEK) wraps; the KEK comes only from attested key release.

File layout::

    b"TAWL1\\n" | u32 header length (big-endian) | header JSON | body

The header names the workload, carries the KEK's wrapped blob (so the file alone says which key
to ask for) and the DEK wrapped under the KEK with AES key wrap (RFC 3394; its integrity check
fails for any other KEK), the cipher and the plaintext size, and an HMAC-SHA256 over all of it
under a key derived from the DEK, so a header edited to another size or blob is refused.

- ``aes-256-xts`` (disk and volume images): 4 KiB sectors, the sector number as the tweak, as
  dm-crypt does; like every disk cipher it protects confidentiality, not against a block being
  rolled back by someone who can write the file.
- ``aes-256-gcm`` (secrets, small files): one AEAD over the whole body, the header as its
  associated data.

Hand-written because the format is ours; every primitive is `cryptography`'s.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from trustauthority.errors import UsageError, WrappedKeyInvalid
from trustauthority.files import write_private
from trustauthority.keyrelease.blob import parse_blob

MAGIC = b"TAWL1\n"
SECTOR = 4096
MAX_HEADER = 16384
MAX_SECRET = 64 * 1024 * 1024  # GCM: the whole body is decrypted in memory
Cipher_ = Literal["aes-256-xts", "aes-256-gcm"]
_DEK_BYTES: dict[str, int] = {"aes-256-xts": 64, "aes-256-gcm": 32}


@dataclass(frozen=True)
class WorkloadHeader:
    workload: str
    blob: str
    cipher: str
    wrapped_dek: str  # hex
    size: int
    mac: str  # hex HMAC-SHA256 over the other fields

    def fields(self) -> dict[str, object]:
        return {"workload": self.workload, "blob": self.blob, "cipher": self.cipher,
                "wrapped_dek": self.wrapped_dek, "size": self.size}

    def encode(self) -> bytes:
        return json.dumps({**self.fields(), "mac": self.mac}, sort_keys=True).encode()


def _mac_key(dek: bytes) -> bytes:
    return hashlib.sha256(b"trustauthority workload header\x00" + dek).digest()


def _mac(dek: bytes, fields: dict[str, object]) -> str:
    message = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(_mac_key(dek), message, hashlib.sha256).hexdigest()


def read_header(stream: BinaryIO) -> WorkloadHeader:
    """The header of an encrypted workload (not yet authenticated: that needs the DEK)."""
    if stream.read(len(MAGIC)) != MAGIC:
        raise UsageError("not an encrypted workload (no TAWL1 header)")
    raw_length = stream.read(4)
    if len(raw_length) != 4:
        raise UsageError("the workload header is truncated")
    (length,) = struct.unpack(">I", raw_length)
    if length > MAX_HEADER:
        raise UsageError("the workload header is too large")
    try:
        raw = json.loads(stream.read(length))
        header = WorkloadHeader(workload=str(raw["workload"]), blob=str(raw["blob"]),
                                cipher=str(raw["cipher"]), wrapped_dek=str(raw["wrapped_dek"]),
                                size=int(raw["size"]), mac=str(raw["mac"]))
    except (ValueError, KeyError, TypeError):
        raise UsageError("the workload header is not valid") from None
    if header.cipher not in _DEK_BYTES or header.size < 0:
        raise UsageError(f"unknown workload cipher {header.cipher[:32]!r}")
    return header


def _xts(dek: bytes, sector: int, data: bytes, *, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(dek), modes.XTS(sector.to_bytes(16, "little")))
    worker = cipher.encryptor() if encrypt else cipher.decryptor()
    return worker.update(data) + worker.finalize()


def _private_output(path: Path) -> BinaryIO:
    """A new or truncated file only its owner can read, from the first byte on."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    return os.fdopen(descriptor, "wb")


def _sectors(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(SECTOR):
        yield chunk


def encrypt_file(source: Path, target: Path, *, workload: str, blob: str, kek: bytes,
                 cipher: Cipher_ = "aes-256-xts") -> WorkloadHeader:
    """Encrypt `source` into `target` under a fresh DEK wrapped by `kek`."""
    dek = os.urandom(_DEK_BYTES[cipher])
    size = source.stat().st_size
    if cipher == "aes-256-gcm" and size > MAX_SECRET:
        raise UsageError(f"aes-256-gcm is for secrets up to {MAX_SECRET} bytes; use aes-256-xts")
    fields: dict[str, object] = {"workload": workload, "blob": blob, "cipher": cipher,
                                 "wrapped_dek": aes_key_wrap(kek, dek).hex(), "size": size}
    header = WorkloadHeader(workload=workload, blob=blob, cipher=cipher,
                            wrapped_dek=str(fields["wrapped_dek"]), size=size,
                            mac=_mac(dek, fields))
    encoded = header.encode()
    with source.open("rb") as plain, _private_output(target) as out:
        out.write(MAGIC + struct.pack(">I", len(encoded)) + encoded)
        if cipher == "aes-256-gcm":
            nonce = os.urandom(12)
            out.write(nonce + AESGCM(dek).encrypt(nonce, plain.read(), encoded))
        else:
            for number, chunk in enumerate(_sectors(plain)):
                padded = chunk + bytes(-len(chunk) % 16 if len(chunk) >= 16 else 16 - len(chunk))
                out.write(_xts(dek, number, padded, encrypt=True))
    return header


def open_dek(header: WorkloadHeader, kek: bytes) -> bytes:
    """The workload's DEK, if `kek` is its key and the header is as it was written."""
    try:
        dek = aes_key_unwrap(kek, bytes.fromhex(header.wrapped_dek))
    except (InvalidUnwrap, ValueError):
        raise WrappedKeyInvalid("the released key does not open this workload's data key") \
            from None
    if len(dek) != _DEK_BYTES[header.cipher] or not hmac.compare_digest(
            _mac(dek, header.fields()), header.mac):
        raise WrappedKeyInvalid("the workload header was altered")
    return dek


def decrypt_file(source: Path, target: Path, kek_for: Callable[[WorkloadHeader], bytes]
                 ) -> WorkloadHeader:
    """Decrypt `source` into `target` (owner-only); `kek_for` gets the KEK for the header (by
    attested key release) and is called once."""
    with source.open("rb") as stream:
        header = read_header(stream)
        dek = open_dek(header, kek_for(header))
        if header.cipher == "aes-256-gcm":
            body = stream.read(MAX_SECRET + 29)
            if len(body) < 12 + 16:  # the nonce and the tag, at least
                raise UsageError("the encrypted workload is truncated")
            try:
                plain = AESGCM(dek).decrypt(body[:12], body[12:], header.encode())
            except InvalidTag:
                raise WrappedKeyInvalid("the workload's data was altered") from None
            write_private(target, plain)
            return header
        remaining = header.size
        with _private_output(target) as out:
            number = 0
            while remaining > 0:
                want = min(SECTOR, remaining)
                stored = want + (-want % 16 if want >= 16 else 16 - want)
                chunk = stream.read(stored)
                if len(chunk) != stored:
                    raise UsageError("the encrypted workload is truncated")
                out.write(_xts(dek, number, chunk, encrypt=False)[:want])
                remaining -= want
                number += 1
    return header


def rekey_file(source: Path, target: Path, *, kek_for: Callable[[WorkloadHeader], bytes],
               blob: str, new_kek: bytes) -> WorkloadHeader:
    """Deep rekey on the host: open `source` with its current key, encrypt it into `target`
    under a fresh data key wrapped by `new_kek` (the workload's new key, `blob`). The plaintext
    passes through an owner-only file beside `target`, removed whatever happens."""
    scratch = target.with_name(f".{target.name}.rekey")
    try:
        header = decrypt_file(source, scratch, kek_for)
        if parse_blob(blob).workload != header.workload:
            raise UsageError(f"the new key belongs to another workload than "
                             f"{header.workload[:256]}")
        return encrypt_file(scratch, target, workload=header.workload, blob=blob, kek=new_kek,
                            cipher="aes-256-gcm" if header.cipher == "aes-256-gcm"
                            else "aes-256-xts")
    finally:
        scratch.unlink(missing_ok=True)

"""Encrypted workloads on the host: XTS images and GCM secrets round-trip at every awkward size,
and a wrong key, an edited header or a truncated file is refused."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from trustauthority.agent.workload import MAGIC, WorkloadHeader, decrypt_file, encrypt_file
from trustauthority.errors import UsageError, WrappedKeyInvalid

KEK = bytes(range(32))


def _kek(_header: WorkloadHeader) -> bytes:
    return KEK


@pytest.mark.parametrize("cipher", ["aes-256-xts", "aes-256-gcm"])
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4095, 4096, 4097, 3 * 4096 + 5])
def test_round_trip(tmp_path: Path, cipher: str, size: int) -> None:
    plain = os.urandom(size)
    (tmp_path / "in").write_bytes(plain)
    header = encrypt_file(tmp_path / "in", tmp_path / "enc", workload="vm-1", blob="tak1.x.y",
                          kek=KEK, cipher=cipher)  # type: ignore[arg-type]
    encrypted = (tmp_path / "enc").read_bytes()
    assert encrypted.startswith(MAGIC)
    if size >= 16:
        assert plain not in encrypted
    assert (tmp_path / "enc").stat().st_mode & 0o077 == 0
    opened = decrypt_file(tmp_path / "enc", tmp_path / "out", _kek)
    assert opened == header
    assert (tmp_path / "out").read_bytes() == plain


def _encrypted(tmp_path: Path, cipher: str = "aes-256-xts") -> Path:
    (tmp_path / "in").write_bytes(b"data" * 3000)
    encrypt_file(tmp_path / "in", tmp_path / "enc", workload="vm-1", blob="tak1.x.y", kek=KEK,
                 cipher=cipher)  # type: ignore[arg-type]
    return tmp_path / "enc"


def test_another_key_does_not_open_the_data_key(tmp_path: Path) -> None:
    with pytest.raises(WrappedKeyInvalid):
        decrypt_file(_encrypted(tmp_path), tmp_path / "out", lambda _h: bytes(32))


@pytest.mark.parametrize(("field", "value"), [("size", 5), ("workload", "vm-2"),
                                              ("blob", "tak1.other.blob")])
def test_an_edited_header_is_refused(tmp_path: Path, field: str, value: object) -> None:
    path = _encrypted(tmp_path)
    raw = path.read_bytes()
    (length,) = struct.unpack(">I", raw[6:10])
    header = json.loads(raw[10:10 + length])
    header[field] = value
    encoded = json.dumps(header, sort_keys=True).encode()
    path.write_bytes(MAGIC + struct.pack(">I", len(encoded)) + encoded + raw[10 + length:])
    with pytest.raises(WrappedKeyInvalid, match="altered"):
        decrypt_file(path, tmp_path / "out", _kek)


def test_altered_secret_data_is_refused(tmp_path: Path) -> None:
    path = _encrypted(tmp_path, "aes-256-gcm")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(WrappedKeyInvalid):
        decrypt_file(path, tmp_path / "out", _kek)


@pytest.mark.parametrize("cipher", ["aes-256-xts", "aes-256-gcm"])
@pytest.mark.parametrize("damage", ["truncate", "magic", "header", "body"])
def test_damaged_files_are_refused(tmp_path: Path, damage: str, cipher: str) -> None:
    path = _encrypted(tmp_path, cipher)
    raw = path.read_bytes()
    (length,) = struct.unpack(">I", raw[6:10])
    path.write_bytes({"truncate": raw[:-100], "magic": b"XXXXX\n" + raw[6:],
                      "header": raw[:10] + b"{not json" + raw[19:],
                      "body": raw[:10 + length + 5]}[damage])
    # a secret's AEAD notices a shortened body itself; an image has no tag, so the size does
    expected = (WrappedKeyInvalid if (damage, cipher) == ("truncate", "aes-256-gcm")
                else UsageError)
    with pytest.raises(expected):
        decrypt_file(path, tmp_path / "out", _kek)

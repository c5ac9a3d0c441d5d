"""The backup file refuses forged or malformed content with BackupInvalid: a header asking for
more scrypt work than this version makes, and content sealed with the right key but not of the
shape a backup has (a key holder's mistake, or a file from another tool)."""

from __future__ import annotations

import base64
import gzip
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustauthority.errors import BackupInvalid, UsageError
from trustauthority.service import backup
from trustauthority.service.backup import MAGIC, read_backup_key, restore_backup, seal, unseal
from trustauthority.store.db import Database, sqlite_url

KEY = b"k" * 32
FILES = {name: base64.b64encode(b"x").decode()
         for name in ("master.key", "tls/server.pem", "tls/server-key.pem", "tls/ca.pem")}


def _header(sealed: bytes) -> dict[str, object]:
    header: dict[str, object] = json.loads(sealed[len(MAGIC):sealed.index(b"\n", len(MAGIC))])
    return header


def _with_header(sealed: bytes, **changes: object) -> bytes:
    end = sealed.index(b"\n", len(MAGIC))
    header = {**_header(sealed), **changes}
    return MAGIC + json.dumps(header).encode() + sealed[end:]


@pytest.mark.parametrize("changes", [
    {"n": 2**20, "r": 16},  # 2 GiB of scrypt memory
    {"n": 2**16, "r": 16},  # 128 MiB
    {"n": 2**19, "r": 1},  # 64 MiB: more than this version asks for
    {"n": float("inf")},  # JSON's Infinity: not an integer
    {"n": True},
    {"r": "8"},
    {"p": 4},
    {"n": 3**10},  # not a power of two
    {"format": 2},
    {"kdf": "pbkdf2"},
])
def test_a_header_asking_for_other_work_is_refused_before_any(changes: dict[str, object]
                                                               ) -> None:
    sealed = seal(b"{}", KEY, "2026-01-01T00:00:00+00:00")
    with pytest.raises(BackupInvalid, match="does not accept"):
        unseal(_with_header(sealed, **changes), KEY)


@pytest.mark.parametrize("document", [
    [],  # not an object
    {"files": [], "config": {}, "database": {}},
    {"files": FILES, "config": {"listen_port": "not a port"}, "database": {}},
    {"files": FILES, "config": {"database_url": "sqlite:///trustauthority.db",
                                "unknown_setting": 1}, "database": {}},
    {"files": FILES, "config": {"database_url": "sqlite:///trustauthority.db"},
     "database": ["not", "a", "snapshot"]},
    {"files": FILES, "config": {"database_url": "sqlite:///trustauthority.db"},
     "database": {"format": 1, "revision": "x", "tables": []}},
])
def test_content_sealed_with_the_key_but_malformed_is_refused(tmp_path: Path,
                                                              document: object) -> None:
    source = tmp_path / "forged.tab"
    source.write_bytes(seal(json.dumps(document).encode(), KEY, "2026-01-01T00:00:00+00:00"))
    with pytest.raises(BackupInvalid):
        restore_backup(source, tmp_path / "restored", KEY)
    assert not (tmp_path / "restored" / "config.toml").exists()


def test_a_sealed_row_the_schema_refuses_is_invalid_and_leaves_nothing_behind(
        tmp_path: Path) -> None:
    head = Database(sqlite_url(tmp_path / "scratch.db")).schema_head()
    document = {"files": FILES, "config": {"database_url": "sqlite:///trustauthority.db"},
                "database": {"format": 1, "revision": head, "tables": {
                    "settings": {"columns": ["key", "value"], "rows": [["tpm", {"a": 1}]]}}}}
    source = tmp_path / "sealed.tab"
    source.write_bytes(seal(json.dumps(document).encode(), KEY, "2026-01-01T00:00:00+00:00"))
    with pytest.raises(BackupInvalid, match="does not fit this version's schema"):
        restore_backup(source, tmp_path / "restored", KEY)
    assert not (tmp_path / "restored").exists()


def test_devices_are_neither_backups_nor_backup_keys(tmp_path: Path) -> None:
    """Read whole before any check, /dev/zero would fill the memory."""
    with pytest.raises(BackupInvalid, match="not a regular file"):
        restore_backup(Path("/dev/zero"), tmp_path / "restored", KEY)
    with pytest.raises(UsageError, match="not a key file"):
        read_backup_key(Path("/dev/zero"))
    big = tmp_path / "big.key"
    big.write_bytes(b"k" * 5000)
    big.chmod(0o600)
    with pytest.raises(UsageError, match="not a key file"):
        read_backup_key(big)


def test_content_that_would_decompress_beyond_the_limit_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sealed = seal(bytes(4 << 20), KEY, "2026-01-01T00:00:00+00:00")  # 4 MiB of zeros
    assert len(sealed) < 64 << 10  # gzip: a few KiB
    _header_of, payload = unseal(sealed, KEY)
    assert len(payload) == 4 << 20
    monkeypatch.setattr("trustauthority.service.backup.MAX_PAYLOAD", 1 << 20)
    with pytest.raises(BackupInvalid, match="larger than"):
        unseal(sealed, KEY)


def test_trailing_bytes_after_the_compressed_content_are_refused() -> None:
    sealed = seal(b"{}", KEY, "2026-01-01T00:00:00+00:00")
    header = _header(sealed)
    key = backup._derive(KEY, base64.b64decode(str(header["salt"])), int(str(header["n"])),
                         int(str(header["r"])), int(str(header["p"])))
    nonce = os.urandom(12)
    forged_header = {**header, "nonce": base64.b64encode(nonce).decode()}
    aad = MAGIC + json.dumps(forged_header).encode() + b"\n"
    body = gzip.compress(b"{}") + gzip.compress(b"[]")  # a second member: not a backup
    forged = aad + AESGCM(key).encrypt(nonce, body, aad)
    with pytest.raises(BackupInvalid, match="corrupt"):
        unseal(forged, KEY)

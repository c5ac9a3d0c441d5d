"""`backup create` / `backup restore`: a whole service in one encrypted file, and back.

A backup holds what a new data directory needs to be the same service: the configuration, the
master key (it opens the sealed signing keys and key-server credentials), the TLS CA, server
certificate and key (hosts pin the CA), and a consistent snapshot of the store
(`store.snapshot`). Hosts keep their identities, credentials and wrapped keys, so after a
restore they attest and unlock as before. The primary keys stay on the key servers; a backup
never holds a workload key.

The file is sealed with a key the operator supplies (a key file: random bytes or a passphrase):

    TABACKUP1\\n <header JSON>\\n <AES-256-GCM(gzip(JSON payload))>

The header (format, creation time, scrypt parameters and salt, GCM nonce) is the GCM associated
data, so nothing in the file can change unnoticed; scrypt makes a guessed passphrase expensive.
Written here rather than with a JWE library because JOSE's password mode (PBES2) is PBKDF2, far
cheaper to brute-force than scrypt for the same wait.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import os
import shutil
import stat
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import ValidationError

from trustauthority.errors import BackupInvalid, Conflict, UsageError
from trustauthority.files import write_private
from trustauthority.service.config import (
    CONFIG_NAME,
    ServiceConfig,
    TlsConfig,
    load_config,
    write_config,
)
from trustauthority.service.platform import Platform, utc_now
from trustauthority.store.db import Database
from trustauthority.store.masterkey import load_master_key_file
from trustauthority.store.snapshot import load_snapshot, take_snapshot

MAGIC = b"TABACKUP1\n"
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 4096
#: scrypt cost: ~0.1 s and 32 MiB per try (RFC 7914's interactive setting, doubled)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MAX_HEADER = 4096
#: the largest store a backup restores (decompressed; it is parsed in memory): a sealed file
#: cannot expand beyond it, whatever its compression ratio
MAX_PAYLOAD = 4 << 30
#: zlib's window bits for a gzip stream (16 + 15)
_GZIP_WBITS = 31
#: the service's files in a backup, by the name they get in the restored data directory
MASTER_KEY = "master.key"
TLS_FILES = {"certificate": "tls/server.pem", "private_key": "tls/server-key.pem",
             "client_ca": "tls/ca.pem"}


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    created_at: str
    tables: dict[str, int]
    size: int


def new_backup_key(path: Path) -> None:
    """A random backup key (owner-only); an existing file is never replaced."""
    try:
        write_private(path, base64.b64encode(os.urandom(32)) + b"\n", exclusive=True)
    except FileExistsError:
        raise Conflict(f"{path} exists: a backup key is never overwritten") from None
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror}") from None


def read_backup_key(path: Path) -> bytes:
    """The key file's content: a regular owner-only file of 16 bytes to 4 KiB (a trailing
    newline is ignored)."""
    try:
        info = path.stat()
    except OSError as error:
        raise UsageError(f"cannot read the backup key {path}: {error.strerror}; check the path, "
                         "or make a key with `ta backup new-key`") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_KEY_BYTES:
        raise UsageError(f"the backup key {path} is not a key file (a regular file of at most "
                         f"{MAX_KEY_BYTES} bytes): make one with `ta backup new-key FILE`")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"the backup key {path} is readable by others: chmod 600 {path}")
    material = _read(path, "the backup key")[:MAX_KEY_BYTES].rstrip(b"\r\n")
    if len(material) < MIN_KEY_BYTES:
        raise UsageError(f"the backup key {path} holds fewer than {MIN_KEY_BYTES} bytes: make "
                         "one with `ta backup new-key FILE`")
    return material


def _derive(material: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(material)


def seal(payload: bytes, material: bytes, created_at: str) -> bytes:
    salt, nonce = os.urandom(16), os.urandom(12)
    header = json.dumps({"format": 1, "created_at": created_at, "kdf": "scrypt",
                         "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                         "salt": base64.b64encode(salt).decode(),
                         "nonce": base64.b64encode(nonce).decode()}, sort_keys=True).encode()
    key = _derive(material, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    aad = MAGIC + header + b"\n"
    return aad + AESGCM(key).encrypt(nonce, gzip.compress(payload, 6), aad)


def unseal(sealed: bytes, material: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, payload); a file that is not a backup, another key, or any change ->
    BackupInvalid."""
    if not sealed.startswith(MAGIC):
        raise BackupInvalid("not a Trust Authority backup (no TABACKUP1 header)")
    end = sealed.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER)
    if end < 0:
        raise BackupInvalid("the backup's header is cut or malformed")
    raw_header = sealed[len(MAGIC):end]
    try:
        header = json.loads(raw_header)
        salt = base64.b64decode(header["salt"], validate=True)
        nonce = base64.b64decode(header["nonce"], validate=True)
        n, r, p = header["n"], header["r"], header["p"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BackupInvalid("the backup's header is malformed") from None
    # bounded cost (the header is authenticated only after the key is derived): at most the
    # memory (32 MiB) and work this version asks for, never minutes or gigabytes
    if header.get("format") != 1 or header.get("kdf") != "scrypt" or not (
            all(type(value) is int for value in (n, r, p))
            and n >= 2**14 and n & (n - 1) == 0 and r >= 1 and n * r <= SCRYPT_N * SCRYPT_R
            and 1 <= p <= 2 and len(nonce) == 12 and len(salt) >= 16):
        raise BackupInvalid("the backup's header has parameters this version does not accept")
    aad = sealed[:end + 1]
    try:
        key = _derive(material, salt, n, r, p)
    except (ValueError, MemoryError):  # parameters the scrypt implementation refuses
        raise BackupInvalid("the backup's header has parameters this version does not accept"
                            ) from None
    try:
        compressed = AESGCM(key).decrypt(nonce, sealed[end + 1:], aad)
        inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
        payload = inflater.decompress(compressed, MAX_PAYLOAD + 1)
        if len(payload) > MAX_PAYLOAD:
            raise BackupInvalid(f"the backup's content is larger than {MAX_PAYLOAD >> 30} GiB "
                                "once decompressed; this version does not restore it")
        if not inflater.eof or inflater.unused_data:
            raise BackupInvalid("the backup's content is corrupt")
        return header, payload
    except InvalidTag:
        raise BackupInvalid("the backup does not open with this key, or it was altered or "
                            "cut: check the --key-file") from None
    except (OSError, EOFError, zlib.error):
        raise BackupInvalid("the backup's content is corrupt") from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {what} {path}: {error.strerror}") from None


def _read_backup(path: Path) -> bytes:
    """A backup file's bytes, read whole only once it is a regular file that starts like one
    (not a device, a FIFO or something else by mistake)."""
    try:
        with path.open("rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise BackupInvalid(f"{path} is not a regular file")
            start = file.read(len(MAGIC))
            if start != MAGIC:
                raise BackupInvalid("not a Trust Authority backup (no TABACKUP1 header)")
            return start + file.read()
    except OSError as error:
        raise UsageError(f"cannot read the backup {path}: {error.strerror}") from None


def create_backup(data_dir: Path, target: Path, key_material: bytes) -> BackupSummary:
    """Snapshot the service in `data_dir` (it may keep running) into the file `target`."""
    data_dir = data_dir.resolve()
    config = load_config(data_dir)
    db = Database(config.database_for(data_dir))
    try:
        snapshot = take_snapshot(db)
    finally:
        db.dispose()
    files = {MASTER_KEY: _read(config.path(data_dir, config.master_key_file), "the master key")}
    for field, name in TLS_FILES.items():
        files[name] = _read(config.path(data_dir, getattr(config.tls, field)), "TLS file")
    created_at = utc_now().isoformat(timespec="seconds")
    payload = json.dumps({
        "format": 1, "created_at": created_at, "backup_id": str(uuid.uuid4()),
        "config": config.model_dump(exclude_none=True),
        "files": {name: base64.b64encode(content).decode() for name, content in files.items()},
        "database": snapshot}).encode()
    if len(payload) > MAX_PAYLOAD:  # restore would refuse it: say so now, not then
        raise UsageError(f"the store is larger than {MAX_PAYLOAD >> 30} GiB as a backup; "
                         "back up the database with its own tools (pg_dump) instead")
    sealed = seal(payload, key_material, created_at)
    try:
        write_private(target, sealed, exclusive=True)
    except FileExistsError:
        raise Conflict(f"{target} exists: a backup is never overwritten") from None
    except OSError as error:
        raise UsageError(f"cannot write {target}: {error.strerror}") from None
    tables = {name: len(table["rows"]) for name, table in snapshot["tables"].items()}
    return BackupSummary(target, created_at, tables, len(sealed))


def _restored_database(config: dict[str, Any], data_dir: Path, database_url: str | None) -> str:
    if database_url is not None:
        return database_url
    original = str(config.get("database_url", ""))
    if original.startswith("sqlite:///") and not original.startswith("sqlite:////"):
        return original  # relative: a new file in the new data directory
    raise UsageError("the backup's service used another database: give --database URL (an "
                     "empty PostgreSQL database, or sqlite:///trustauthority.db)")


def _load(db: Database, data_dir: Path, header: dict[str, Any], document: dict[str, Any],
          snapshot: dict[str, Any]) -> dict[str, int]:
    """Load the snapshot into the new store and audit the restore there; rows per table."""
    try:
        counts = load_snapshot(db, snapshot)
        platform = Platform(db, load_master_key_file(data_dir / MASTER_KEY))
        with db.session() as session:
            platform.audit.record(
                session, principal="restore", role="system", action="service.restore",
                target=str(data_dir)[:256], outcome="success", request_id="restore",
                details={"backup_created_at": str(header.get("created_at", "")),
                         "backup_id": str(document.get("backup_id", "")),
                         "rows": sum(counts.values())})
    finally:
        db.dispose()
    return counts


def restore_backup(source: Path, data_dir: Path, key_material: bytes,
                   database_url: str | None = None) -> BackupSummary:
    """Restore a backup into a new data directory (and an empty database)."""
    data_dir = data_dir.resolve()
    if (data_dir / CONFIG_NAME).exists():
        raise Conflict(f"{data_dir} is already a service's data directory: restore into a new "
                       "one")
    header, payload = unseal(_read_backup(source), key_material)
    try:
        document = json.loads(payload)
        files = {name: base64.b64decode(content, validate=True)
                 for name, content in document["files"].items()}
        original = dict(document["config"])
        snapshot = document["database"]
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise BackupInvalid("the backup's content is malformed") from None
    if set(files) != {MASTER_KEY, *TLS_FILES.values()}:
        raise BackupInvalid("the backup lacks the master key or TLS files")
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("tables"), dict):
        raise BackupInvalid("the backup's database snapshot is malformed")
    url = _restored_database(original, data_dir, database_url)
    try:
        config = ServiceConfig.model_validate({
            **original, "database_url": url, "master_key_file": MASTER_KEY, "tls": TlsConfig()})
    except ValidationError as error:
        raise BackupInvalid(f"the backup's configuration is malformed: "
                            f"{error.errors()[0]['msg']}") from None

    clashing = sorted(name for name in files if (data_dir / name).exists())
    if clashing:
        raise Conflict(f"{data_dir} already holds {', '.join(clashing)}: restore into a new "
                       "directory")
    created = not data_dir.exists()
    written: list[Path] = []
    db = Database(config.database_for(data_dir))
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (data_dir / "tls").mkdir(exist_ok=True, mode=0o700)
        database_file = db.sqlite_file
        if database_file is not None and not database_file.exists():
            written += [database_file.with_name(database_file.name + suffix)
                        for suffix in ("", "-wal", "-shm")]
        for name, content in files.items():
            write_private(data_dir / name, content)
            written.append(data_dir / name)
        counts = _load(db, data_dir, header, document, snapshot)
        write_config(data_dir, config)
    except BaseException:
        # nothing half-restored is left to be mistaken for a service's data directory (a
        # PostgreSQL database keeps at most the empty schema: a retry restores into it)
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            for path in written:
                path.unlink(missing_ok=True)
        raise
    return BackupSummary(data_dir, str(header.get("created_at", "")), counts,
                         source.stat().st_size)


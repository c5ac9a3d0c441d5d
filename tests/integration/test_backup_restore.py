"""Backup and restore: a service backed up while it runs, restored onto a fresh data dir (and,
from PostgreSQL, into SQLite), serves the same hosts — they attest and unlock their workloads
as before — and a backup opens only with its key and only unaltered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import SwtpmFactory
from tests.integration.test_attestation_e2e import _set_up
from tests.integration.test_key_release_e2e import KeyedFleet, _keyed
from tests.support.service import RunningService
from trustauthority.agent import host as agent
from trustauthority.agent.keys import fetch_key
from trustauthority.agent.swtpm import SoftwareTpmCa
from trustauthority.agent.workload import decrypt_file, encrypt_file
from trustauthority.cli.main import app
from trustauthority.errors import BackupInvalid, Conflict, UsageError
from trustauthority.service.backup import (
    create_backup,
    new_backup_key,
    read_backup_key,
    restore_backup,
)

pytestmark = [pytest.mark.swtpm, pytest.mark.slow]


@pytest.fixture
def keyed(service: RunningService, swtpm_ca: SoftwareTpmCa, swtpm_factory: SwtpmFactory,
          tmp_path: Path) -> Iterator[KeyedFleet]:
    keyed = _keyed(_set_up(service, swtpm_ca, swtpm_factory, tmp_path), "kmip", tmp_path, None)
    yield keyed
    for kms in keyed.kms:
        kms.stop()


def _cli(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(result.output)
    return document


def test_a_restored_service_keeps_its_hosts_attesting_and_unlocking(
        keyed: KeyedFleet, tmp_path: Path) -> None:
    service = keyed.service
    blob = keyed.create_key("vm-1/disk0")
    _tpm, state_dir = keyed.trusted_host("web-1")
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(range(256)) * 64)
    encrypt_file(image, tmp_path / "disk.img.ta", workload="vm-1/disk0", blob=blob,
                 kek=fetch_key(state_dir, blob, "vm-1/disk0"))

    # backed up while the service runs
    key_file = tmp_path / "backup.key"
    _cli("backup", "new-key", str(key_file))
    backup = tmp_path / "ta.tab"
    created = _cli("backup", "create", str(backup), "--data-dir", str(service.data_dir),
                   "--key-file", str(key_file))
    rows = created["rows"]
    assert isinstance(rows, dict)
    assert rows["hosts"] == 1
    assert rows["workload_keys"] == 1
    assert rows["audit_log"] > 10
    secret_material = (service.data_dir / "master.key").read_bytes()
    assert secret_material not in backup.read_bytes()  # sealed, not stored
    service.stop()

    # the old machine is gone; a new data dir (SQLite, whatever the old store was) takes over
    restored_dir = tmp_path / "restored"
    _cli("backup", "restore", str(backup), "--data-dir", str(restored_dir), "--key-file",
         str(key_file), "--database", "sqlite:///trustauthority.db")
    restored = RunningService.existing(restored_dir, port=service.port,
                                       admin_token=service.admin_token).start()
    try:
        # the host, its credential, AK and binding key are known: it attests and unlocks
        assert agent.attest(state_dir).status == "trusted"
        decrypt_file(tmp_path / "disk.img.ta", tmp_path / "opened",
                     lambda header: fetch_key(state_dir, header.blob, header.workload))
        assert (tmp_path / "opened").read_bytes() == image.read_bytes()
        with restored.admin() as admin:
            verification = admin.audit_verify()
            restores = admin.audit_entries(action="service.restore")
        assert verification.ok, verification.detail
        assert len(restores) == 1
        assert restores[0].principal == "restore"
    finally:
        restored.stop()
        restored.platform.db.dispose()

    # a data dir is restored once; an existing one is never overwritten
    with pytest.raises(Conflict, match="already"):
        restore_backup(backup, restored_dir, read_backup_key(key_file))


def test_a_backup_opens_only_with_its_key_and_unaltered(sqlite_service: RunningService,
                                                        tmp_path: Path) -> None:
    key_file, other_key = tmp_path / "k1", tmp_path / "k2"
    new_backup_key(key_file)
    new_backup_key(other_key)
    backup = tmp_path / "ta.tab"
    create_backup(sqlite_service.data_dir, backup, read_backup_key(key_file))
    with pytest.raises(Conflict, match="never overwritten"):
        create_backup(sqlite_service.data_dir, backup, read_backup_key(key_file))

    with pytest.raises(BackupInvalid, match="does not open with this key"):
        restore_backup(backup, tmp_path / "a", read_backup_key(other_key))
    sealed = backup.read_bytes()
    for position in (len(sealed) // 2, len(sealed) - 1, sealed.index(b"salt") + 10):
        altered = bytearray(sealed)
        altered[position] ^= 1
        (tmp_path / "altered.tab").write_bytes(bytes(altered))
        with pytest.raises(BackupInvalid):
            restore_backup(tmp_path / "altered.tab", tmp_path / "b", read_backup_key(key_file))
    (tmp_path / "cut.tab").write_bytes(sealed[: len(sealed) // 2])
    with pytest.raises(BackupInvalid):
        restore_backup(tmp_path / "cut.tab", tmp_path / "c", read_backup_key(key_file))
    (tmp_path / "other.tab").write_bytes(b"PK\x03\x04 not a backup")
    with pytest.raises(BackupInvalid, match="not a Trust Authority backup"):
        restore_backup(tmp_path / "other.tab", tmp_path / "d", read_backup_key(key_file))
    assert not (tmp_path / "a" / "config.toml").exists()

    # the running service's own database is not empty: a restore into it is refused
    database = f"sqlite:///{sqlite_service.data_dir / 'trustauthority.db'}"
    with pytest.raises(Conflict, match="already holds"):
        restore_backup(backup, tmp_path / "e", read_backup_key(key_file), database)

    # a key others can read, or too short, is refused before use
    weak = tmp_path / "weak"
    weak.write_text("short")
    weak.chmod(0o600)
    with pytest.raises(UsageError, match="fewer than 16 bytes"):
        read_backup_key(weak)
    key_file.chmod(0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        read_backup_key(key_file)


def test_backup_errors_in_the_cli_are_one_line(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    new_backup_key(key_file)
    (tmp_path / "junk.tab").write_bytes(b"junk")
    result = CliRunner().invoke(app, ["backup", "restore", str(tmp_path / "junk.tab"),
                                      "--data-dir", str(tmp_path / "new"), "--key-file",
                                      str(key_file)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "not a Trust Authority backup" in result.output
    result = CliRunner().invoke(app, ["backup", "create", str(tmp_path / "x.tab"), "--data-dir",
                                      str(tmp_path / "nothing"), "--key-file", str(key_file)])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "init" in result.output  # says what to do: the data dir is not a service's

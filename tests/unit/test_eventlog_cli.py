"""`trustauthority eventlog show|replay`: output shapes, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustauthority.cli.eventlog import app
from trustauthority.eventlog import parse_event_log, replay

LOG_DIR = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "eventlogs"
ARCH = LOG_DIR / "arch-linux.bin"

runner = CliRunner()


def test_show_table() -> None:
    result = runner.invoke(app, ["show", str(ARCH)])
    assert result.exit_code == 0, result.output
    assert "crypto-agile, 25 events" in result.stdout
    assert "SecureBoot = disabled" in result.stdout
    assert "sha256" in result.stdout


def test_show_table_of_a_sha1_log() -> None:
    result = runner.invoke(app, ["show", str(LOG_DIR / "debian-10.bin")])
    assert result.exit_code == 0, result.output
    assert "sha1" in result.stdout


def test_show_json() -> None:
    result = runner.invoke(app, ["show", str(ARCH), "--json"])
    assert result.exit_code == 0, result.output
    events = json.loads(result.stdout)
    log = parse_event_log(ARCH.read_bytes())
    assert isinstance(events, list)
    assert len(events) == len(log.events)
    first, boot = events[0], events[22]
    assert first["type_name"] == "EV_NO_ACTION"
    assert first["decoded"]["kind"] == "spec_id"
    assert set(boot) == {"index", "offset", "pcr", "type", "type_name", "digests", "data",
                         "decoded"}
    assert boot["type_name"] == "EV_EFI_BOOT_SERVICES_APPLICATION"
    assert boot["digests"] == {name: value.hex() for name, value in log.events[22].digests.items()}
    assert boot["decoded"]["kind"] == "image_load"
    assert boot["decoded"]["device_path"].endswith("\\EFI\\SYSTEMD\\SYSTEMD-BOOTX64.EFI")


def test_replay_json_shape() -> None:
    result = runner.invoke(app, ["replay", str(ARCH), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    expected = {bank: {str(pcr): value.hex() for pcr, value in pcrs.items()}
                for bank, pcrs in replay(parse_event_log(ARCH.read_bytes())).items()}
    assert document == {"banks": expected}
    assert list(document["banks"]) == ["sha1", "sha256"]


def test_replay_table() -> None:
    result = runner.invoke(app, ["replay", str(LOG_DIR / "uefivar.bin")])
    assert result.exit_code == 0, result.output
    assert "e58ada1ba75f2e4722b539824598ad5e10c55f2e4aeab2033f3b0a8ee3f3eca6" in result.stdout


@pytest.mark.parametrize("command", ["show", "replay"])
def test_help_has_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.stdout


def _assert_one_line_error(stderr: str, fragment: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert fragment in lines[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("command", ["show", "replay"])
def test_unreadable_file_exits_2(command: str, tmp_path: Path) -> None:
    result = runner.invoke(app, [command, str(tmp_path / "missing.bin")])
    assert result.exit_code == 2
    _assert_one_line_error(result.stderr, "cannot read event log")


@pytest.mark.parametrize("command", ["show", "replay"])
def test_malformed_log_exits_1_naming_the_offset(command: str, tmp_path: Path) -> None:
    path = tmp_path / "truncated.bin"
    path.write_bytes(ARCH.read_bytes()[:100])
    result = runner.invoke(app, [command, str(path)])
    assert result.exit_code == 1
    _assert_one_line_error(result.stderr, "at byte offset 83")


def test_empty_log_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    result = runner.invoke(app, ["replay", str(path)])
    assert result.exit_code == 1
    _assert_one_line_error(result.stderr, "empty event log at byte offset 0")


def test_malformed_log_json_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.bin"
    path.write_bytes(b"\x00" * 40)
    result = runner.invoke(app, ["show", str(path), "--json"])
    assert result.exit_code == 1
    error = json.loads(result.stdout)
    assert error["ok"] is False
    assert error["error"]["type"] == "malformed_event_log"
    assert "byte offset" in error["error"]["detail"]


def test_log_contents_are_not_rich_markup() -> None:
    result = runner.invoke(app, ["show", str(LOG_DIR / "cos-85-amd-sev.bin")])
    assert result.exit_code == 0, result.output
    assert "grub_cmd: [ 15 -lt 0" in result.stdout

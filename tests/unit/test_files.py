"""Private files are owner-only, whatever mode an existing file had."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from trustauthority.files import write_private


def test_a_new_file_is_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    write_private(target, "secret")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == "secret"


def test_an_existing_readable_file_is_made_owner_only_and_replaced(tmp_path: Path) -> None:
    target = tmp_path / "profiles.toml"
    target.write_text("old and longer content")
    target.chmod(0o644)
    write_private(target, b"new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes() == b"new"


def test_exclusive_refuses_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "master.key"
    target.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        write_private(target, b"other", exclusive=True)
    assert target.read_bytes() == b"keep"

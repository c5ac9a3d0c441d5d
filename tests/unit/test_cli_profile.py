"""CLI profiles: given options win, a credential is taken whole, the file is owner-only."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from trustauthority.cli.profile import PROFILES_FILE, Profile, resolve, save_profile
from trustauthority.errors import UsageError

SAVED = Profile(server="https://ta:8443", ca="/etc/ta/ca.pem", client_cert="/c.pem",
                client_key="/k.pem")


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TA_CONFIG_DIR", str(tmp_path))
    return tmp_path


def test_the_saved_profile_fills_what_is_not_given(config_dir: Path) -> None:
    save_profile("prod", SAVED)
    assert stat.S_IMODE((config_dir / PROFILES_FILE).stat().st_mode) == 0o600
    assert resolve("prod", Profile()) == SAVED
    assert resolve("prod", Profile(server="https://other")).server == "https://other"


def test_a_given_credential_replaces_the_saved_one_whole() -> None:
    save_profile("prod", SAVED)
    resolved = resolve("prod", Profile(token="tat_x"))  # noqa: S106 - a placeholder
    assert (resolved.token, resolved.client_cert, resolved.client_key) == ("tat_x", None, None)
    assert (resolved.server, resolved.ca) == (SAVED.server, SAVED.ca)


def test_no_server_anywhere_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no server URL"):
        resolve("missing", Profile(token="tat_x"))  # noqa: S106 - a placeholder

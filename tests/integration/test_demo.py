"""`ta demo` runs on a fresh software TPM and every step has the outcome it must have."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustauthority.agent.swtpm import swtpm_available
from trustauthority.cli.main import app

pytestmark = pytest.mark.swtpm


def test_demo_walks_through_every_step(tmp_path: Path) -> None:
    if not swtpm_available():
        pytest.skip("swtpm is not installed")
    result = CliRunner().invoke(app, ["demo", "--data-dir", str(tmp_path / "demo")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    output = result.output
    for expected in (
        "EK certificate chains to the trusted TPM CA",
        "the TPM decrypted our MakeCredential challenge",
        "event log replays to the quoted PCRs [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]",
        "refused (nonce_mismatch)",
        "refused (pcr_selection_mismatch)",
        "refused (signature_invalid)",
        "refused (event_log_mismatch)",
        "reboot detected",
        "All steps behaved as they must",
    ):
        assert expected in output, expected
    # the modified kernel shows up as the differing component, in PCR 9 (GRUB) and PCR 4 (EFI)
    assert "PCR 9 /boot/vmlinuz-6.1.0-28-amd64: expected" in output
    # the demo stops the software TPM it started (stop() removes the pid and socket files)
    host = tmp_path / "demo" / "host-1"
    assert (host / "tpm2-00.permall").exists()  # its state is kept for exploring
    assert not (host / "swtpm.pid").exists()
    assert not (host / "swtpm.sock").exists()

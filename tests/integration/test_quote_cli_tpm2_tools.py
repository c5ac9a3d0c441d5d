"""`ta quote verify` on the files tpm2-tools write (tpm2_createak, tpm2_quote) from a swtpm."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from trustauthority.agent.swtpm import SoftwareTpm
from trustauthority.cli.main import app

pytestmark = [pytest.mark.swtpm, pytest.mark.tools]


def _tpm2(tcti: str, workdir: Path, *args: str) -> str:
    env = {**os.environ, "TPM2TOOLS_TCTI": tcti, "TSS2_LOG": "all+none"}
    result = subprocess.run(list(args), cwd=workdir, env=env, capture_output=True, text=True,
                            check=True, timeout=60)
    # swtpm has no resource manager: free the transient slots after every command
    subprocess.run(["tpm2_flushcontext", "-t"], cwd=workdir, env=env, capture_output=True,
                   check=False, timeout=30)
    return result.stdout


def test_verify_files_written_by_tpm2_quote(swtpm: SoftwareTpm, tmp_path: Path) -> None:
    if shutil.which("tpm2_quote") is None:
        pytest.skip("tpm2-tools are not installed")
    tcti = swtpm.tcti
    _tpm2(tcti, tmp_path, "tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
    _tpm2(tcti, tmp_path, "tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc",
          "-g", "sha256", "-s", "ecdsa", "-u", "ak.tss", "-f", "tss", "-n", "ak.name")
    nonce = os.urandom(16).hex()
    quoted = _tpm2(tcti, tmp_path, "tpm2_quote", "-c", "ak.ctx", "-l", "sha256:0,1,2,7",
                   "-q", nonce, "-m", "quote.msg", "-s", "quote.sig", "-o", "quote.pcrs",
                   "-g", "sha256")
    pcrs = yaml.safe_load(quoted)["pcrs"]["sha256"]
    (tmp_path / "pcrs.json").write_text(json.dumps(
        {"sha256": {str(pcr): f"{value:064x}" for pcr, value in pcrs.items()}}))
    args = ["quote", "verify", "--ak", str(tmp_path / "ak.tss"),
            "--attest", str(tmp_path / "quote.msg"), "--signature", str(tmp_path / "quote.sig"),
            "--pcrs", str(tmp_path / "pcrs.json"), "--json"]
    result = CliRunner().invoke(app, [*args, "--nonce", nonce])
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.output)["pcrs"]["sha256"]) == ["0", "1", "2", "7"]
    replayed = CliRunner().invoke(app, [*args, "--nonce", "00" + nonce])
    assert replayed.exit_code == 1
    assert json.loads(replayed.output)["error"]["type"] == "nonce_mismatch"

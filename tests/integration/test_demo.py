"""`ta demo` runs the whole story on real parts and every step has the outcome it must have;
`ta demo --evidence-only` walks through the evidence checks on one software TPM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trustauthority.agent.swtpm import swtpm_available
from trustauthority.cli.main import app
from trustauthority.cli.processes import alive

pytestmark = [pytest.mark.swtpm, pytest.mark.slow]

TA = str(Path(sys.executable).parent / "ta")


@pytest.fixture(autouse=True)
def _needs_swtpm() -> None:
    if not swtpm_available():
        pytest.skip("swtpm is not installed")


def _ta(*args: str, config: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TA_CONFIG_DIR": str(config), "COLUMNS": "200"}
    env.pop("TA_DATA_DIR", None)
    return subprocess.run([TA, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)


def _processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention `path` (the demo's own children)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or not alive(int(proc.name)):
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in command:
            found.append(command)
    return found


def test_the_demo_tells_the_whole_story_and_cleans_up(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    result = _ta("demo", "--data-dir", str(data), config=tmp_path / "config")
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout
    assert "Traceback" not in output + result.stderr

    # the outcome of each step, as recorded by the demo
    summary = json.loads((data / "summary.json").read_text())
    assert summary["hosts"] == {"node-1": "trusted", "node-2": "trusted",
                                "node-3": "untrusted"}
    assert summary["final"]["node-2"] == "untrusted"  # after its reboot into the bad kernel
    assert "boot-applications differs" in summary["reasons"]["node-3"]
    assert summary["releases"] == {
        "node-1": "released",
        "node-3": "KeyReleaseRefused",
        "node-3 with node-1's token": "TokenBindingMismatch",
        "node-2 after reboot": "KeyReleaseRefused",
    }
    assert summary["audit"]["ok"] is True
    assert summary["audit"]["entries"] > 20

    # and as the user reads it
    for expected in (
        "refused (forbidden): alice (trust-admin) may not host:manage",
        "refused (forbidden): bob (infra-admin) may not tpm-trust:manage",
        "key server kms-1 registered (KMIP over mutual TLS): client trusts server, server "
        "trusts client",
        "baseline golden v1 imported from node-1's verified event log",
        "node-3 is untrusted: not trusted: closest baseline golden v1",
        "PCR 9 kernel",
        "refused (token_binding_mismatch)",
        "reboot detected; node-2 is untrusted now",
        "refused (key_release_refused): host node-2 is untrusted now",
        "hash chain intact",
        "Every step behaved as it must",
    ):
        assert expected in output, expected

    # the encrypted image stays, its plaintext does not; no process it started survives
    assert (data / "hosts" / "node-1" / "disk0.img.ta").stat().st_size > 4 * 1024 * 1024
    assert not (data / "hosts" / "node-1" / "disk0.img").exists()
    assert _processes_using(data) == []
    # the service answered every refusal as a 4xx, never with an error of its own
    assert "Traceback" not in (data / "service.log").read_text()


def test_keep_running_leaves_a_service_to_explore_and_stop_ends_it(tmp_path: Path) -> None:
    data, config = tmp_path / "demo", tmp_path / "config"
    # a directory the demo did not make is never wiped
    data.mkdir()
    (data / "precious").write_text("mine")
    refused = _ta("demo", "--data-dir", str(data), config=config, timeout=30)
    assert refused.returncode != 0
    assert "not made by the demo" in refused.stdout + refused.stderr
    assert (data / "precious").read_text() == "mine"

    data = tmp_path / "kept"
    result = _ta("demo", "--data-dir", str(data), "--keep-running", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    pids = json.loads((data / "processes.json").read_text())
    try:
        assert {"service", "kms", "swtpm node-1"} <= set(pids)
        assert all(alive(pid) for pid in pids.values())
        # the saved profiles reach the running service as alice and as bob
        hosts = _ta("--profile", "demo-trust", "host", "list", "--json", config=config)
        assert hosts.returncode == 0, hosts.stderr
        assert sorted(host["state"] for host in json.loads(hosts.stdout)) == [
            "trusted", "untrusted", "untrusted"]
        keys = _ta("--profile", "demo-infra", "key", "list", "--json", config=config)
        assert [key["workload"] for key in json.loads(keys.stdout)] == ["vm-web-01/disk0"]
    finally:
        stopped = _ta("demo", "--stop", "--data-dir", str(data), config=config)
    assert stopped.returncode == 0
    assert "service" in stopped.stdout
    assert not any(alive(pid) for pid in pids.values())
    assert _processes_using(data) == []


def test_evidence_only_walks_through_every_check(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--evidence-only", "--data-dir",
                                      str(tmp_path / "demo")], env={"COLUMNS": "200"})
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

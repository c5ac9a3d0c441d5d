"""`trustauthority demo`: the whole product on real parts, or the evidence checks alone.

`ta demo` starts the service, the embedded KMIP server and three software-TPM hosts and walks
through what a security team and an infrastructure team do (see `demo_fleet`);
`ta demo --evidence-only` shows the quote and event-log checks on one TPM without a service
(see `demo_evidence`). Every step asserts its outcome; a wrong outcome fails the demo.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel

from trustauthority.cli.output import EXIT_UNAVAILABLE, console, fail, fail_with
from trustauthority.errors import TrustAuthorityError

# The demo's parts (service setup, agent, TPM access) are imported when it runs: importing them
# here would slow down every other `ta` command, which all load this module.


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trustauthority" / "demo"


def demo(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", "-d", show_default=False,
        help="Where the demo keeps the service, key server and hosts (default: "
             "~/.local/share/trustauthority/demo; a previous demo's directory is replaced).")]
    = None,
    keep_running: Annotated[bool, typer.Option(
        "--keep-running", help="Leave the service, key server and software TPMs up afterwards "
                               "(`ta demo --stop` ends them).")] = False,
    stop: Annotated[bool, typer.Option(
        "--stop", help="Stop what a `--keep-running` demo left up, then exit.")] = False,
    evidence_only: Annotated[bool, typer.Option(
        "--evidence-only", help="Only the quote and event-log checks, on one software TPM, "
                                "without a service.")] = False,
) -> None:
    """Run the guided demo: two roles, three TPM hosts, attestation and attested key release.

    Everything is real: the service over HTTPS on SQLite, PyKMIP's KMIP server, software TPMs.
    It takes about a minute and leaves its data dir for exploring with the CLI.

    Example: `ta demo` (or `make demo`); `ta demo --keep-running`, later `ta demo --stop`
    """
    from trustauthority.agent.swtpm import swtpm_available
    from trustauthority.cli.demo_fleet import PIDS_FILE
    from trustauthority.cli.processes import stop_recorded

    root = (data_dir or default_data_dir()).resolve()
    if stop:
        stopped = stop_recorded(root / PIDS_FILE)
        console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        return
    if not swtpm_available():
        fail("swtpm is not installed: run scripts/bootstrap (Debian packages swtpm, swtpm-tools)",
             EXIT_UNAVAILABLE)
    if evidence_only:
        _evidence_demo(data_dir)
        return
    _fleet_demo(root, keep_running)


def _fleet_demo(root: Path, keep_running: bool) -> None:
    from trustauthority.cli.demo_fleet import (
        INFRA_PROFILE,
        PIDS_FILE,
        TRUST_PROFILE,
        FleetDemo,
        prepare_data_dir,
    )
    from trustauthority.cli.demo_steps import DemoFailure
    from trustauthority.cli.processes import record_pids

    started = time.monotonic()
    console.print(Panel.fit(
        "[bold]Trust Authority — the demo[/]\n"
        "A security team decides what trusted means; hosts prove it with their TPMs; keys\n"
        "are released only to hosts trusted right now. Real service (HTTPS), real KMIP server,\n"
        "three hosts with software TPMs (swtpm) standing in for TPM 2.0 chips.",
        border_style="cyan"))
    try:
        prepare_data_dir(root)
    except DemoFailure as failure:
        fail(str(failure))
    fleet = FleetDemo(root)
    left_running = False
    try:
        fleet.run()
        summary = fleet.write_summary(time.monotonic() - started)
        if keep_running:
            record_pids(root / PIDS_FILE, fleet.pids())
            left_running = True
    except DemoFailure as failure:
        fail(f"demo step failed: {failure}", 1)
    except TrustAuthorityError as error:
        fail_with(error)
    finally:
        if not left_running:
            fleet.stop()
    elapsed = time.monotonic() - started
    lines = [
        f"[bold green]Every step behaved as it must[/] in {elapsed:.0f} s.",
        "  2 hosts trusted, 1 untrusted with the reason; the key released only to trusted",
        "  hosts; a stolen token and a host that turned untrusted were refused; audit intact.",
        f"Data: {root}  (summary: {summary.name})",
    ]
    if left_running:
        lines += [f"Still running: service {fleet.url}, KMIP server :{fleet.kms_port}, "
                  f"{len(fleet.hosts)} software TPMs.",
                  f"Explore: ta --profile {TRUST_PROFILE} host list   "
                  f"(bob: --profile {INFRA_PROFILE})",
                  f"Stop:    ta demo --stop --data-dir {root}"]
    else:
        lines += ["Everything it started is stopped. To explore, start the service again:",
                  f"  ta serve --data-dir {root / 'service'} &",
                  f"  ta --profile {TRUST_PROFILE} host list      (alice, trust-admin)",
                  f"  ta --profile {INFRA_PROFILE} key list       (bob, infra-admin)",
                  f"  ta --profile {TRUST_PROFILE} audit list"]
    console.print(Panel.fit("\n".join(lines), border_style="green"), highlight=False)


def _evidence_demo(data_dir: Path | None) -> None:
    from trustauthority.agent.swtpm import SoftwareTpm, SoftwareTpmCa
    from trustauthority.cli.demo_evidence import run_evidence_demo
    from trustauthority.cli.demo_steps import DemoFailure

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="ta-demo-")) if data_dir is None else data_dir
    workdir.mkdir(parents=True, exist_ok=True)
    console.print(Panel.fit(
        "[bold]Trust Authority — evidence demo[/]\n"
        "A software TPM (swtpm) stands in for a host's TPM 2.0; everything else is real.",
        border_style="cyan"))
    tpm = SoftwareTpm(workdir / "host-1", SoftwareTpmCa(workdir / "tpm-ca"))
    try:
        run_evidence_demo(tpm)
    except DemoFailure as failure:
        fail(f"demo step failed: {failure}", 1)
    except TrustAuthorityError as error:
        fail_with(error)
    finally:
        tpm.stop()
        if data_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    console.print(Panel.fit(
        f"[bold green]All steps behaved as they must[/] in {time.monotonic() - started:.1f} s.\n"
        "Next: `ta eventlog show FILE`, `ta eventlog replay FILE --json`, "
        "`ta quote verify --help`.", border_style="green"))


__all__ = ["demo"]

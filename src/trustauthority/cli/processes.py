"""Background processes the demo starts (`ta serve`, `ta kms serve`) and stops by pid.

Each runs in its own session so that stopping it (SIGTERM, then SIGKILL to the process group)
also ends any helper it forked (PyKMIP's server forks). Their pids are recorded in a JSON file
in the demo's data dir, so `ta demo --stop` can end a run left up with `--keep-running`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from trustauthority.errors import BackendUnavailable

#: the console script beside this interpreter: the same installation as the running CLI
TRUSTAUTHORITY = str(Path(sys.executable).parent / "trustauthority")
STOP_TIMEOUT = 10.0


class BackgroundProcess:
    """One long-running command; its output goes to `log_path`."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        """Start and wait until `ready()` is true; a process that exits or never gets ready is
        stopped and reported with the end of its log."""
        with self.log_path.open("ab") as sink:
            self._process = subprocess.Popen(self.argv, stdout=sink, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not ready():
            if self._process.poll() is not None:
                self._fail(f"exited with code {self._process.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"was not ready within {timeout:g} s")
            time.sleep(0.1)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            stop_pid(process.pid)
            process.wait(STOP_TIMEOUT)

    def _fail(self, why: str) -> None:
        self.stop()
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise BackendUnavailable(f"{self.name} {why}: {' | '.join(tail) or 'no output'} "
                                 f"(log: {self.log_path})")


def free_port() -> int:
    """A loopback port free right now (the kernel's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stop_pid(pid: int) -> None:
    """SIGTERM, then SIGKILL to the process group (its own session) if it lingers."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Running (not a zombie). Reaps it first when it is our own child."""
    try:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    except ChildProcessError:
        pass  # not our child: ask the kernel
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[-1].split()[0] != "Z"


def record_pids(path: Path, pids: dict[str, int]) -> None:
    path.write_text(json.dumps(pids, indent=2) + "\n")


def stop_recorded(path: Path) -> list[str]:
    """Stop the processes listed in `path` that still run a Trust Authority or swtpm command
    (a recycled pid is left alone); returns the names stopped."""
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    stopped = []
    for name, pid in pids.items() if isinstance(pids, dict) else ():
        if isinstance(pid, int) and _ours(pid):
            stop_pid(pid)
            stopped.append(str(name))
    path.unlink(missing_ok=True)
    return stopped


def _ours(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"trustauthority" in command or b"swtpm" in command

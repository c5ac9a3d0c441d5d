"""Software TPM 2.0 (swtpm) lifecycle: a local EK-certificate CA, provisioning, start/stop, reboot.

Used by the integration tests and by the product's demo; it drives Debian's swtpm tools only.

A `SoftwareTpmCa` directory holds one root and one intermediate CA (created once, shared by every
TPM provisioned from it); a `SoftwareTpm` is a provisioned state directory plus, while running,
an `swtpm socket` daemon listening on a unix socket (no TCP port clashes). Its TCTI string for
tpm2-tss/tpm2-pytss is ``swtpm:path=<socket>``; the control channel is ``<socket>.ctrl``, the name
tpm2-tss's swtpm TCTI derives from that path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from trustauthority.errors import BackendUnavailable, UsageError

__all__ = ["SoftwareTpm", "SoftwareTpmCa", "swtpm_available"]

_SETUP_TIMEOUT_S = 60.0
_LOCALCA_TIMEOUT_S = 30.0
_IOCTL_TIMEOUT_S = 5.0

# sockaddr_un.sun_path is 108 bytes on Linux with the NUL; pytest's tmp_path easily exceeds it.
_MAX_SOCKET_PATH = 100

# TPM2_Startup(TPM_SU_CLEAR), TPM 2.0 Part 3 §9.3: tag TPM_ST_NO_SESSIONS (0x8001), size 12,
# commandCode TPM_CC_Startup (0x144), startupType TPM_SU_CLEAR (0x0000).
_STARTUP_CLEAR = struct.pack(">HIIH", 0x8001, 12, 0x144, 0x0000)

# Public key handed to swtpm_localca once so that it creates its root and intermediate CA without
# a TPM: the P-256 (secp256r1) base point G, a valid curve point. The certificate is discarded.
_DUMMY_EK = (
    "x=6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296,"
    "y=4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5,id=secp256r1"
)

# What swtpm_setup itself passes to swtpm_localca for swtpm 0.7 (libtpms 0.9, spec 1.64).
_TPM_IDENTITY_ARGS = (
    "--tpm-spec-family", "2.0", "--tpm-spec-level", "0", "--tpm-spec-revision", "164",
    "--tpm-manufacturer", "id:00001014", "--tpm-model", "swtpm", "--tpm-version", "id:20191023",
    "--tpm2",
)  # fmt: skip


def swtpm_available() -> bool:
    """True if the swtpm tools this module drives are on PATH."""
    return all(shutil.which(t) for t in ("swtpm", "swtpm_setup", "swtpm_ioctl", "swtpm_localca"))


def _tail(text: str, lines: int = 3) -> str:
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)


def _file_tail(path: Path, lines: int = 3) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            return _tail(f.read().decode("utf-8", "replace"), lines)
    except OSError:
        return ""


def _run(argv: list[str], timeout: float, what: str) -> str:
    """Run a tool; return its combined output or raise BackendUnavailable with its tail."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as e:
        raise BackendUnavailable(f"{what}: {argv[0]} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise BackendUnavailable(f"{what}: {argv[0]} did not finish within {timeout:.0f} s") from e
    output = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0:
        detail = f": {_tail(output)}" if output.strip() else ""
        raise BackendUnavailable(f"{what}: {argv[0]} exited with {done.returncode}{detail}")
    return output


class SoftwareTpmCa:
    """A local CA (swtpm_localca) issuing EK and platform certificates to software TPMs.

    Layout of ``directory`` (all paths inside it)::

        swtpm_setup.conf  swtpm-localca.conf  swtpm-localca.options
        state/swtpm-localca-rootca-cert.pem   root CA, self-signed (CN=swtpm-localca-rootca)
        state/issuercert.pem                  intermediate (CN=swtpm-localca), signs EK certs
        state/*.pem (private keys), state/certserial

    Safe to share between processes: `ensure` holds a file lock while it creates the CA.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).resolve()
        self._state = self.directory / "state"

    @property
    def setup_config(self) -> Path:
        """The ``swtpm_setup.conf`` to pass to ``swtpm_setup --config``."""
        return self.directory / "swtpm_setup.conf"

    @property
    def root_certificate_path(self) -> Path:
        return self._state / "swtpm-localca-rootca-cert.pem"

    @property
    def intermediate_certificate_path(self) -> Path:
        return self._state / "issuercert.pem"

    def _write_configs(self) -> None:
        localca_conf = self.directory / "swtpm-localca.conf"
        localca_options = self.directory / "swtpm-localca.options"
        self.setup_config.write_text(
            "create_certs_tool = /usr/bin/swtpm_localca\n"
            f"create_certs_tool_config = {localca_conf}\n"
            f"create_certs_tool_options = {localca_options}\n"
            "active_pcr_banks = sha256\n"
        )
        localca_conf.write_text(
            f"statedir = {self._state}\n"
            f"signingkey = {self._state / 'signkey.pem'}\n"
            f"issuercert = {self.intermediate_certificate_path}\n"
            f"certserial = {self._state / 'certserial'}\n"
        )
        localca_options.write_text(
            "--platform-manufacturer TrustAuthority\n"
            "--platform-version 2.1\n"
            "--platform-model swtpm\n"
        )

    def ensure(self) -> SoftwareTpmCa:
        """Create the configuration and the root + intermediate CA if absent; idempotent."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / ".ensure.lock").open("w") as lock:
            # Several pytest workers or demo processes may share one CA directory.
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.setup_config.exists():
                self._write_configs()
            if self.root_certificate_path.exists() and self.intermediate_certificate_path.exists():
                return self
            # swtpm_localca creates its CA on first use; feed it a throw-away key now so that the
            # certificates exist before any TPM is provisioned (and not in a race between two).
            with tempfile.TemporaryDirectory(dir=self.directory) as out:
                _run(
                    [
                        "swtpm_localca", "--type", "ek", "--ek", _DUMMY_EK, "--dir", out,
                        "--configfile", str(self.directory / "swtpm-localca.conf"),
                        "--optsfile", str(self.directory / "swtpm-localca.options"),
                        *_TPM_IDENTITY_ARGS,
                    ],
                    _LOCALCA_TIMEOUT_S,
                    "creating the software TPM CA",
                )  # fmt: skip
        if not self.intermediate_certificate_path.exists():
            raise BackendUnavailable(
                f"swtpm_localca did not create {self.intermediate_certificate_path}"
            )
        return self

    def certificates(self) -> list[bytes]:
        """PEM certificates a verifier should trust for these TPMs' EKs: [root, intermediate]."""
        self.ensure()
        return [
            self.root_certificate_path.read_bytes(),
            self.intermediate_certificate_path.read_bytes(),
        ]


class SoftwareTpm:
    """One software TPM: a state directory provisioned with EK certificates, and its daemon.

    ``with SoftwareTpm(dir, ca) as tpm:`` provisions (if not yet done) and starts it, and stops
    it on exit. The daemon outlives this object until `stop` (any `SoftwareTpm` on the same
    directory can stop it: the pid and TCTI are recorded in the state directory).

    Provisioned: RSA-2048 EK (template L-1, certificate in NV 0x01c00002) and ECC P-384 EK
    (template H-3, certificate in NV 0x01c00016), platform certificate, PCR banks sha1 + sha256.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        ca: SoftwareTpmCa,
        *,
        start_timeout: float = 5.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.ca = ca
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._short_dir: Path | None = None

    # -- files in the state directory -------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.state_dir / "swtpm.log"

    @property
    def _pid_path(self) -> Path:
        return self.state_dir / "swtpm.pid"

    @property
    def _tcti_path(self) -> Path:
        return self.state_dir / "swtpm.tcti"

    @property
    def provisioned(self) -> bool:
        return (self.state_dir / "tpm2-00.permall").exists()

    @property
    def pid(self) -> int | None:
        """The daemon's pid while it runs, else None."""
        try:
            pid = int(self._pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_swtpm_alive(pid) else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def socket_path(self) -> Path:
        """The command socket of the running daemon."""
        try:
            tcti = self._tcti_path.read_text().strip()
        except OSError as e:
            raise UsageError(f"software TPM {self.state_dir} is not started") from e
        return Path(tcti.removeprefix("swtpm:path="))

    @property
    def control_path(self) -> Path:
        return Path(f"{self.socket_path}.ctrl")

    @property
    def tcti(self) -> str:
        """TCTI string for tpm2-tss / tpm2-pytss, e.g. ``swtpm:path=/x/swtpm.sock``."""
        return f"swtpm:path={self.socket_path}"

    def _error(self, message: str) -> BackendUnavailable:
        tail = _file_tail(self.log_path)
        return BackendUnavailable(f"{message}{f' (swtpm log: {tail})' if tail else ''}")

    # -- lifecycle -------------------------------------------------------------------------

    def provision(self) -> None:
        """(Re)create the TPM state with EKs and their certificates from the CA (~0.6 s)."""
        if self.running:
            raise UsageError(f"software TPM {self.state_dir} is running; stop it to re-provision")
        self.ca.ensure()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _run(
            [
                "swtpm_setup", "--tpm2", "--tpmstate", str(self.state_dir),
                "--create-ek-cert", "--create-platform-cert", "--pcr-banks", "sha1,sha256",
                "--config", str(self.ca.setup_config), "--overwrite",
            ],
            _SETUP_TIMEOUT_S,
            f"provisioning software TPM {self.state_dir}",
        )  # fmt: skip

    def _choose_socket(self) -> Path:
        preferred = self.state_dir / "swtpm.sock"
        if len(os.fsencode(f"{preferred}.ctrl")) <= _MAX_SOCKET_PATH:
            return preferred
        # mkdtemp makes a private (0700) directory, so the short path cannot be hijacked.
        self._short_dir = Path(tempfile.mkdtemp(prefix="ta-swtpm-"))
        return self._short_dir / "swtpm.sock"

    def start(self) -> None:
        """Start the daemon and wait until its sockets accept connections; no-op if running."""
        if self.running:
            return
        if not self.provisioned:
            raise UsageError(f"software TPM {self.state_dir} is not provisioned")
        self._cleanup()
        sock = self._choose_socket()
        self._tcti_path.write_text(f"swtpm:path={sock}\n")
        try:
            _run(
                [
                    "swtpm", "socket", "--tpm2", "--daemon",
                    "--server", f"type=unixio,path={sock}",
                    "--ctrl", f"type=unixio,path={sock}.ctrl",
                    "--tpmstate", f"dir={self.state_dir}",
                    # not-need-init + startup-clear: the TPM is usable at once, like after firmware.
                    "--flags", "not-need-init,startup-clear",
                    "--pid", f"file={self._pid_path}",
                    "--log", f"file={self.log_path}",
                ],
                self.start_timeout,
                f"starting software TPM {self.state_dir}",
            )  # fmt: skip
            self._wait_ready(sock)
        except BackendUnavailable as e:
            self.stop()
            raise self._error(str(e)) from e

    def _wait_ready(self, sock: Path) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.pid is not None and _accepts(sock) and _accepts(Path(f"{sock}.ctrl")):
                return
            if time.monotonic() > deadline:
                raise BackendUnavailable(
                    f"software TPM did not accept connections on {sock} "
                    f"within {self.start_timeout:.1f} s"
                )
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after `stop_timeout`); idempotent."""
        pid = self.pid
        if pid is not None and _is_swtpm_alive(pid):  # never signal a recycled pid
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                deadline = time.monotonic() + self.stop_timeout
                # an exiting process loses its command line before it is a zombie: wait for
                # the zombie (or its reaping), not just for the command line to vanish
                while not _process_gone(pid) and time.monotonic() < deadline:
                    time.sleep(0.01)
                if _process_gone(pid):
                    break
            else:
                raise self._error(f"software TPM pid {pid} survived SIGKILL")
        self._cleanup()

    def _cleanup(self) -> None:
        short_dir = self._short_dir
        with contextlib.suppress(UsageError):
            sock = self.socket_path
            short_dir = short_dir or (sock.parent if sock.parent != self.state_dir else None)
            for path in (sock, Path(f"{sock}.ctrl")):
                path.unlink(missing_ok=True)
        for path in (self._pid_path, self._tcti_path):
            path.unlink(missing_ok=True)
        if short_dir is not None and short_dir.name.startswith("ta-swtpm-"):
            shutil.rmtree(short_dir, ignore_errors=True)
        self._short_dir = None

    def reboot(self) -> None:
        """Simulate a power cycle: TPM_Init on the control channel, then TPM2_Startup(CLEAR).

        Afterwards PCRs are reset and clockInfo.resetCount has incremented (TPM 2.0 Part 1,
        "TPM Reset"). The Startup is sent here, on a second connection to the command
        socket (swtpm serves several), so an open `AgentTpm` stays usable without calling its
        own ``startup_clear``; transient objects and sessions loaded before are gone.
        """
        if not self.running:
            raise UsageError(f"software TPM {self.state_dir} is not running")
        try:
            _run(
                ["swtpm_ioctl", "--unix", str(self.control_path), "-i"],
                _IOCTL_TIMEOUT_S,
                "TPM_Init",
            )
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(_IOCTL_TIMEOUT_S)
                s.connect(str(self.socket_path))
                s.sendall(_STARTUP_CLEAR)
                response = _recv_response(s)
        except OSError as e:
            raise self._error(f"rebooting software TPM {self.state_dir}: {e}") from e
        except BackendUnavailable as e:
            raise self._error(str(e)) from e
        # Response header (Part 1, command/response structure): tag u16, size u32, responseCode u32.
        (rc,) = struct.unpack_from(">I", response, 6)
        if rc != 0:
            raise self._error(f"TPM2_Startup(CLEAR) after TPM_Init returned 0x{rc:x}")

    def __enter__(self) -> SoftwareTpm:
        if not self.provisioned:
            self.provision()
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SoftwareTpm({str(self.state_dir)!r}, pid={self.pid})"


def _recv_response(s: socket.socket) -> bytes:
    data = b""
    while len(data) < 10:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("connection closed before a full TPM response")
        data += chunk
    return data


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


def _is_swtpm_alive(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) swtpm process.

    The daemon is re-parented to PID 1, which in containers may never reap it, so "kill -0
    succeeds" is not enough; checking the command line also guards against a recycled pid.
    """
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and b"swtpm" in cmdline


def _process_gone(pid: int) -> bool:
    """True once ``pid`` has exited: reaped, or a zombie nobody reaps."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")

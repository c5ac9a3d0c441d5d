"""A real KMIP server for the tests: `trustauthority kms serve` (PyKMIP's server) as a
subprocess on a free loopback port, plus credentials it must refuse.

Run through the CLI rather than in a thread so the tests also cover the command, and because
PyKMIP's server installs signal handlers (main thread only) and forks helper processes. Stopped
by pid: SIGTERM, then SIGKILL to its process group (its own session), so no helper survives.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trustauthority import pki
from trustauthority.cli.processes import TRUSTAUTHORITY, BackgroundProcess, free_port
from trustauthority.errors import BackendUnavailable
from trustauthority.keyserver import KmipEndpoint
from trustauthority.keyserver.embedded import CLIENT_NAME, KmsFiles, ready

START_TIMEOUT = 30.0


class RunningKms:
    """One `trustauthority kms serve` process; `restart()` keeps its port and files."""

    def __init__(self, data_dir: Path, *, port: int | None = None,
                 database_path: Path | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port()
        self.files = KmsFiles.at(data_dir, database_path)
        self.output = self.files.data_dir.parent / f"{self.files.data_dir.name}-{self.port}.out"
        self._process: BackgroundProcess | None = None

    @property
    def pid(self) -> int:
        pid = self._process.pid if self._process is not None else None
        assert pid is not None, "the KMS is not running"
        return pid

    def start(self) -> RunningKms:
        command = [TRUSTAUTHORITY, "kms", "serve", "--data-dir", str(self.files.data_dir),
                   "--host", self.host, "--port", str(self.port),
                   "--database", str(self.files.database)]
        self._process = BackgroundProcess("the test KMS", command, self.output)
        try:
            self._process.start(self._ready, START_TIMEOUT)
        except BackendUnavailable as error:  # exited, or never took a TLS connection
            self._fail(str(error))
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.stop()

    def restart(self) -> RunningKms:
        self.stop()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the server still accepts TCP connections (the kernel's backlog) but answers
        nothing — a hung server."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def endpoint(self, host: str | None = None, **changes: Any) -> KmipEndpoint:
        """The endpoint Trust Authority would use; `changes` replace fields (timeout, pin...)."""
        base = self.files.endpoint(host or self.host, self.port)
        return dataclasses.replace(base, **changes)

    def server_certificate_sha256(self) -> str:
        certificate = x509.load_pem_x509_certificate(self.files.server_certificate.read_bytes())
        return certificate.fingerprint(hashes.SHA256()).hex()

    def _ready(self) -> bool:
        return ready(self.files, self.host, self.port)

    def _fail(self, why: str) -> None:
        self.stop()
        log = self.files.log.read_text(errors="replace")[-4000:] if self.files.log.exists() \
            else "(no server.log)"
        output = self.output.read_text(errors="replace")[-4000:] if self.output.exists() else ""
        raise RuntimeError(f"the test KMS on {self.host}:{self.port} {why}\n--- output ---\n"
                           f"{output}\n--- server.log ---\n{log}")


def start_kms(tmp_dir: Path, port: int | None = None, database_path: Path | None = None,
              ) -> RunningKms:
    """Start a KMS whose data lives in `tmp_dir`; give `database_path` of another one to make a
    second server sharing its keys (a replicated pair)."""
    return RunningKms(tmp_dir, port=port, database_path=database_path).start()


# -- credentials the KMS must refuse ---------------------------------------------------------


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _client_certificate(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
                        ) -> tuple[bytes, bytes]:
    key = pki.new_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CLIENT_NAME)]))
           .sign(key, hashes.SHA256()))
    certificate = pki.issue_client_certificate(ca_key, ca, csr, CLIENT_NAME, datetime.now(UTC))
    return _pem(certificate), _key_pem(key)


def foreign_pki() -> tuple[bytes, bytes, bytes]:
    """(CA, client certificate, client key) of a CA no KMS here trusts; the client certificate
    is otherwise exactly like Trust Authority's (CN, EKU clientAuth)."""
    ca_key, ca = pki.new_ca("not the KMS's CA", datetime.now(UTC))
    cert_pem, key_pem = _client_certificate(ca_key, ca)
    return _pem(ca), cert_pem, key_pem


def certificate_without_client_auth(files: KmsFiles) -> tuple[bytes, bytes]:
    """(certificate, key) from the KMS's own CA, CN `trustauthority`, but EKU serverAuth only."""
    ca = x509.load_pem_x509_certificate(files.ca_certificate.read_bytes())
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key, certificate = pki.issue_server_certificate(ca_key, ca, [CLIENT_NAME], datetime.now(UTC))
    return _pem(certificate), _key_pem(key)

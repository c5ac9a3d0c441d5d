"""An embedded KMIP key server — PyKMIP's own server — for trying trusted key release without a
vendor KMS, and for the tests.

`prepare_kms_dir` makes (once) and reuses a data directory: a CA, a server certificate, a client
certificate for Trust Authority (CN `trustauthority`: PyKMIP's server takes a client's identity
from its CN, and a key belongs to the identity that created it), an empty operation-policy
directory (PyKMIP's built-in default policy is the one wanted) and `server.conf`, which
`pykmip-server -f DIR/server.conf -l DIR/server.log` also runs. `serve_kms` runs the server in
this process until SIGINT or SIGTERM.

Written by hand around PyKMIP's `KmipServer`, because its own loop stops slowly and incompletely:
its listening socket blocks in accept() for up to 10 s after SIGTERM, and its stop() joins every
session thread for up to 10 s each (an idle client keeps its session alive). We shorten the
accept timeout, lengthen the sessions' read timeout (each expiry logs a traceback, and clients
keep idle connections open), and shut down ourselves: the listening socket, the policy monitor
process and the multiprocessing manager process — so no child process outlives the server.
Session threads are daemons and end with the process.

ECDSA P-256 certificates from `trustauthority.pki`: PyKMIP's TLS 1.2 cipher list has ECDHE-ECDSA
suites, and we restrict it to the two AES-GCM ones.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trustauthority import pki
from trustauthority.errors import ConfigError, UsageError
from trustauthority.files import write_private
from trustauthority.keyserver import KmipEndpoint

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5696
#: the client identity PyKMIP's server sees, and so the owner of the keys Trust Authority makes
CLIENT_NAME = "trustauthority"
#: TLS 1.2 suites the server offers (PyKMIP's default list prefers CBC suites)
CIPHER_SUITES = ("ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256")
#: leaf certificates closer than this to expiry are issued again on the next start
_RENEW_BEFORE = timedelta(days=7)
#: how often the accept loop looks whether a signal asked it to stop
_ACCEPT_POLL_SECONDS = 0.5
#: how long a session waits for a request before logging that it waited (and waiting again)
_SESSION_READ_TIMEOUT_SECONDS = 300.0
_ANY_ADDRESS = ("0.0.0.0", "")  # noqa: S104 - names "all interfaces", never put in a certificate


@dataclass(frozen=True)
class KmsFiles:
    """Where an embedded KMS keeps its files, all inside `data_dir` unless `database` was moved
    (two servers sharing one database model a replicated pair)."""

    data_dir: Path
    database: Path

    @classmethod
    def at(cls, data_dir: Path, database: Path | None = None) -> KmsFiles:
        data_dir = data_dir.resolve()
        return cls(data_dir, (database or data_dir / "kms.db").resolve())

    @property
    def ca_certificate(self) -> Path:
        return self.data_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.data_dir / "ca.key"

    @property
    def server_certificate(self) -> Path:
        return self.data_dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.data_dir / "server.key"

    @property
    def client_certificate(self) -> Path:
        return self.data_dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.data_dir / "client.key"

    @property
    def config(self) -> Path:
        return self.data_dir / "server.conf"

    @property
    def policy_dir(self) -> Path:
        return self.data_dir / "policies"

    @property
    def log(self) -> Path:
        return self.data_dir / "server.log"

    def endpoint(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 timeout: float = 5.0) -> KmipEndpoint:
        """How Trust Authority reaches this KMS with the client certificate made for it."""
        return KmipEndpoint(host=host, port=port, ca_pem=self.ca_certificate.read_bytes(),
                            cert_pem=self.client_certificate.read_bytes(),
                            key_pem=self.client_key.read_bytes(), timeout=timeout)


def prepare_kms_dir(data_dir: Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                    database: Path | None = None, server_names: Sequence[str] | None = None,
                    now: datetime | None = None) -> KmsFiles:
    """Create or reuse the KMS's data directory (owner-only files) and write `server.conf` for
    `host`, `port` and `database`. The server certificate names `server_names` (default:
    127.0.0.1, localhost and `host`); an existing one is kept while it names `host`."""
    if not 0 < port < 65536:
        raise UsageError(f"{port} is not a TCP port")
    now = now or datetime.now(UTC)
    files = KmsFiles.at(data_dir, database)
    files.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    files.policy_dir.mkdir(mode=0o700, exist_ok=True)
    ca_key, ca, ca_is_new = _ensure_ca(files, now)
    names = tuple(server_names) if server_names else _default_names(host)
    _ensure_server_certificate(files, ca_key, ca, names, host, now, renew=ca_is_new)
    _ensure_client_certificate(files, ca_key, ca, now, renew=ca_is_new)
    write_private(files.config, _server_conf(files, host, port))
    return files


def serve_kms(files: KmsFiles, *, on_ready: Callable[[], None] | None = None) -> None:
    """Run PyKMIP's server from `files.config` in the foreground until SIGINT or SIGTERM;
    `on_ready` runs once its port is bound. Meant to own its process: sets the umask to 077 (the
    server creates the key database and its logs) and the default socket timeout."""
    os.umask(0o077)
    with _quiet_deprecations():
        server = _new_server(files)
    try:
        with _quiet_deprecations():
            _start(server, files)
        # a short accept timeout lets the loop notice a SIGTERM quickly
        server._socket.settimeout(_ACCEPT_POLL_SECONDS)
        # accepted connections take the default timeout, which start() set to 10 s: a session
        # survives its read timing out but logs a traceback each time, i.e. every 10 s for each
        # idle pooled client connection
        socket.setdefaulttimeout(_SESSION_READ_TIMEOUT_SECONDS)
        if on_ready is not None:
            on_ready()
        server.serve()
    except KeyboardInterrupt:
        pass  # SIGINT: PyKMIP's handler raises it; stopping is what was asked
    finally:
        _shut_down(server)


# -- the PKI ----------------------------------------------------------------------------------


def ready(files: KmsFiles, host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a full mutual-TLS handshake with the client certificate Trust Authority uses
    succeeds: the probe that a started KMS is ready (its first run writes the certificates,
    then it listens). The server's name is not checked here (the KMIP adapter checks it on
    every connection)."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(str(files.ca_certificate))
        context.load_cert_chain(str(files.client_certificate), str(files.client_key))
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw) as tls:
            tls.getpeercert()
    except (OSError, ValueError):  # files not (fully) written yet, refused, TLS
        return False
    return True


def _default_names(host: str) -> tuple[str, ...]:
    names = [DEFAULT_HOST, "localhost"]
    if host not in names and host not in _ANY_ADDRESS:
        names.append(host)
    return tuple(names)


def _ensure_ca(files: KmsFiles, now: datetime,
               ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, bool]:
    have = files.ca_certificate.exists(), files.ca_key.exists()
    if all(have):
        certificate = _load_certificate(files.ca_certificate)
        return _load_key(files.ca_key), certificate, False
    if any(have):
        raise ConfigError(f"{files.data_dir} has only one of ca.pem and ca.key; restore the "
                          "other or remove both to start a new CA (existing keys stay usable)")
    key, certificate = pki.new_ca("Trust Authority embedded KMS CA", now)
    write_private(files.ca_key, _key_pem(key))
    write_private(files.ca_certificate, _certificate_pem(certificate))
    return key, certificate, True


def _ensure_server_certificate(files: KmsFiles, ca_key: ec.EllipticCurvePrivateKey,
                               ca: x509.Certificate, names: tuple[str, ...], host: str,
                               now: datetime, *, renew: bool) -> None:
    if not renew and files.server_certificate.exists() and files.server_key.exists():
        current = _load_certificate(files.server_certificate)
        if _still_valid(current, now) and (host in _ANY_ADDRESS or _names(current, host)):
            return
    key, certificate = pki.issue_server_certificate(ca_key, ca, names, now)
    write_private(files.server_key, _key_pem(key))
    write_private(files.server_certificate, _certificate_pem(certificate))


def _ensure_client_certificate(files: KmsFiles, ca_key: ec.EllipticCurvePrivateKey,
                               ca: x509.Certificate, now: datetime, *, renew: bool) -> None:
    if files.client_key.exists():
        key = _load_key(files.client_key)
        if not renew and files.client_certificate.exists() and _still_valid(
                _load_certificate(files.client_certificate), now):
            return
    else:
        key = pki.new_key()
        write_private(files.client_key, _key_pem(key))
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CLIENT_NAME)]))
           .sign(key, hashes.SHA256()))
    certificate = pki.issue_client_certificate(ca_key, ca, csr, CLIENT_NAME, now)
    write_private(files.client_certificate, _certificate_pem(certificate))


def _still_valid(certificate: x509.Certificate, now: datetime) -> bool:
    return certificate.not_valid_after_utc - _RENEW_BEFORE > now


def _names(certificate: x509.Certificate, host: str) -> bool:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        return ipaddress.ip_address(host) in names.get_values_for_type(x509.IPAddress)
    except ValueError:
        return host.lower() in (name.lower() for name in names.get_values_for_type(x509.DNSName))


def _load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the certificate {path}: {error}") from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        raise ConfigError(f"cannot read the private key {path} (unencrypted PEM expected)"
                          ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path} is not an ECDSA key")
    return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _server_conf(files: KmsFiles, host: str, port: int) -> str:
    paths = (files.server_certificate, files.server_key, files.ca_certificate, files.policy_dir,
             files.database)
    if any("%" in str(path) or "\n" in str(path) for path in paths):
        raise UsageError("the KMS's paths may not contain '%' or a newline (server.conf)")
    return "\n".join([
        "# Written by `trustauthority kms serve` on each start; edit its options instead.",
        "[server]",
        f"hostname={host}",
        f"port={port}",
        f"certificate_path={files.server_certificate}",
        f"key_path={files.server_key}",
        f"ca_path={files.ca_certificate}",
        "auth_suite=TLS1.2",
        f"policy_path={files.policy_dir}",
        "enable_tls_client_auth=True",
        f"tls_cipher_suites={' '.join(CIPHER_SUITES)}",
        # DEBUG would log every request and answer in hex, key material included
        "logging_level=INFO",
        f"database_path={files.database}",
        "",
    ])


# -- PyKMIP's server --------------------------------------------------------------------------


@contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """PyKMIP touches algorithms cryptography deprecates (TripleDES, ...) and SQLAlchemy 1.x APIs
    while it loads and starts: harmless today, and not the operator's to fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _new_server(files: KmsFiles) -> Any:
    from kmip.services.server import KmipServer

    # live_policies=False: the policy directory is read once, no polling process
    return KmipServer(config_path=str(files.config), log_path=str(files.log),
                      live_policies=False)


def _start(server: Any, files: KmsFiles) -> None:
    from kmip.core import exceptions

    try:
        server.start()
    except (exceptions.NetworkingError, exceptions.ConfigurationError, OSError) as error:
        raise ConfigError(f"the KMS cannot listen ({_cause(error)}); see {files.log}") from None


def _cause(error: BaseException) -> str:
    """PyKMIP replaces the OSError of bind() by its own message; the OSError is the context."""
    cause = error.__context__ if isinstance(error.__context__, OSError) else error
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return " ".join(str(cause).split()) or type(cause).__name__


def _shut_down(server: Any) -> None:
    listening = getattr(server, "_socket", None)
    if listening is not None:
        listening.close()  # a listening socket has no connection to shut down first
    monitor = getattr(server, "policy_monitor", None)
    if monitor is not None and monitor.pid is not None:
        monitor.stop()
        monitor.join(5)
        if monitor.is_alive():
            monitor.terminate()
            monitor.join(5)
    manager = getattr(server, "manager", None)
    if manager is not None:
        manager.shutdown()

"""Key servers: where the primary keys of trusted key providers live, and the one thing we ask
of them — wrap a workload's key under a primary key that never leaves the server, and unwrap it.

Two kinds plug in behind the same `KeyServer` protocol:

- `kmip.KmipKeyServer`: any KMIP 1.x server over mutual TLS (PyKMIP's, Vault, Thales, Fortanix,
  IBM SKLM);
- `pkcs11.Pkcs11KeyServer`: an HSM's PKCS#11 token (SoftHSM2 in the tests).

Adapters: they talk to the network or a PKCS#11 module, and import nothing of the store, the
services, the API or the CLI. Every failure to reach, trust or use a server is a
`KeyServerUnavailable` (the provider then tries its next server); a blob that does not
authenticate is a `WrappedKeyInvalid` (no other server would open it either). No key material and
no credential appears in an error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from trustauthority.errors import ConfigError

#: AES-256: the only primary-key and workload-key size we make or accept
KEY_BYTES = 32


@dataclass(frozen=True)
class KmipEndpoint:
    """How to reach and trust one KMIP server. `pinned_sha256` (hex SHA-256 of the server's DER
    certificate), when given, is checked in addition to the chain and the host name."""

    host: str
    port: int
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    username: str | None = None
    password: str | None = None
    pinned_sha256: str | None = None
    timeout: float = 5.0

    def __repr__(self) -> str:  # the key and password stay out of logs and tracebacks
        return f"KmipEndpoint({self.host}:{self.port})"


#: the longest a silent KMIP server is waited for, and the shortest that makes sense
TIMEOUT_RANGE = (0.5, 120.0)
_PIN = re.compile(r"[0-9a-fA-F]{64}")


def check_kmip_endpoint(endpoint: KmipEndpoint) -> None:
    """Everything about an endpoint that can be checked without dialling it; `ConfigError`
    naming the first problem (the service turns it into a usage error when one is added)."""
    host = endpoint.host
    # PyKMIP splits the host on commas (a fail-over list) and dials IPv4 only
    if not host or len(host) > 253 or any(c in host for c in ", \t\n") or ":" in host:
        raise ConfigError(f"KMIP host {host[:64]!r} must be one IPv4 address or DNS name")
    if not 0 < endpoint.port < 65536:
        raise ConfigError(f"KMIP port {endpoint.port} is not a TCP port")
    if not TIMEOUT_RANGE[0] <= endpoint.timeout <= TIMEOUT_RANGE[1]:
        raise ConfigError(f"the KMIP timeout must be between {TIMEOUT_RANGE[0]} and "
                          f"{TIMEOUT_RANGE[1]:.0f} seconds")
    if (endpoint.username is None) != (endpoint.password is None):
        raise ConfigError("give both a KMIP username and password, or neither")
    if endpoint.pinned_sha256 is not None and not _PIN.fullmatch(endpoint.pinned_sha256):
        raise ConfigError("the pinned certificate must be a SHA-256 in hex")
    try:
        x509.load_pem_x509_certificates(endpoint.ca_pem)
        certificate = x509.load_pem_x509_certificate(endpoint.cert_pem)
    except ValueError:
        raise ConfigError(f"the CA or client certificate for {host}:{endpoint.port} "
                          "is not PEM") from None
    try:
        key = load_pem_private_key(endpoint.key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"the client key for {host}:{endpoint.port} is not an "
                          "unencrypted PEM private key") from None
    if key.public_key() != certificate.public_key():
        raise ConfigError(f"the client key for {host}:{endpoint.port} does not "
                          "belong to its certificate")


@dataclass(frozen=True)
class Pkcs11Endpoint:
    """One token of a PKCS#11 module, opened as its user with `pin`."""

    module: str
    token_label: str
    pin: str

    def __repr__(self) -> str:
        return f"Pkcs11Endpoint({self.module}, token={self.token_label!r})"


@dataclass(frozen=True)
class HealthReport:
    """The health states operators know from vTA's key server checks.

    `client_trusts_server`: the server's certificate chains to the configured CA and names the
    host we dialled (and matches the pin); `server_trusts_client`: the server accepted our client
    certificate and credentials; `round_trip`: an operation came back. None = not reached.
    For PKCS#11, "server" is the token: found, and logged in with the PIN."""

    reachable: bool
    client_trusts_server: bool | None
    server_trusts_client: bool | None
    round_trip: bool
    latency_ms: float | None
    detail: str

    @property
    def healthy(self) -> bool:
        return (self.reachable and self.client_trusts_server is not False
                and self.server_trusts_client is not False and self.round_trip)


@dataclass(frozen=True)
class PrimaryKeyInfo:
    """What a server says of a primary key: usable means AES-256, active, may encrypt."""

    key_id: str
    algorithm: str
    length_bits: int
    usable: bool
    detail: str


class KeyServer(Protocol):
    """One key server. Implementations are safe to call from several threads at once (they keep
    a small pool of open sessions and reconnect after a failure)."""

    kind: str

    def check(self) -> HealthReport:
        """Connect afresh and report; never raises for the server's own failures."""
        ...

    def describe_key(self, key_id: str) -> PrimaryKeyInfo:
        """The key `key_id` as the server knows it. `KeyServerUnavailable` when the server
        cannot be used; `NotFound` when it has no such key."""
        ...

    def create_primary_key(self, name: str) -> str:
        """Make a new non-exportable AES-256 primary key on the server, ready to use; its id."""
        ...

    def wrap(self, key_id: str, key: bytes, aad: bytes) -> bytes:
        """`key` (32 bytes) wrapped under primary key `key_id`, authenticating `aad` too.
        The result is opaque and carries everything `unwrap` needs besides `key_id` and `aad`."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        """The key `wrap` wrapped; `WrappedKeyInvalid` if `wrapped` or `aad` was altered."""
        ...

    def close(self) -> None:
        ...

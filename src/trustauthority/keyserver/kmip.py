"""A KMIP 1.x key server over mutual TLS, through PyKMIP's client.

What PyKMIP does not do, and this module does by hand:

- **Host names.** PyKMIP checks the server's chain but passes no `server_hostname`, so it never
  checks that the certificate names the host we dialled. After every handshake we read the peer
  certificate and require its subjectAltName (IP or DNS, no CN fallback) to name
  `endpoint.host`, and the pin when one is configured.
- **Timeouts.** `ProxyKmipClient` has no timeout argument and its proxy truncates one to whole
  seconds; we set the proxy's (float) timeout before it creates its socket, so connect, handshake
  and every read are bounded by `endpoint.timeout`.
- **Threads.** A PyKMIP client is one socket and not thread-safe: we keep a small pool of open
  clients, discard one that failed, and drop idle ones the server closed (a restart) before use.
- **Errors.** Every PyKMIP, ssl and socket failure becomes `KeyServerUnavailable` naming
  host:port and the kind of failure, never key material or a credential.

Wrapping construction
---------------------

The primary key K (AES-256) never leaves the server, and each wrap or unwrap costs exactly one
KMIP round trip::

    r  = 12 random bytes, fresh for every blob
    W  = first 32 bytes of KMIP-Encrypt_K(AES-ECB, r || 00000001 || r || 00000002)
       = AES_K(r || 1) || AES_K(r || 2)
    iv = 12 random bytes
    blob = 01 || r || iv || AES-256-GCM_W(iv, key, aad = 01 || r || caller's aad)

`unwrap` asks the server for W again from the r in the blob and opens the GCM box.

Why it is sound: AES_K is a pseudorandom permutation; by the PRP/PRF switching lemma it is
indistinguishable from a random function up to q²/2^129 for q evaluations. The two blocks of one
blob have distinct counters, and two blobs share an input only if their 96-bit r collide
(birthday bound q²/2^97: 2^-33 after 2^32 blobs). So W is a fresh, uniformly random 256-bit key
per blob that only a holder of K — the server — can compute: AES used as a PRF in counter mode.
GCM under W then gives confidentiality and integrity of the workload key; its associated data
binds the blob's header (version, r) and the caller's `aad` (the workload it belongs to), so any
changed byte, a moved blob or another primary key (another W) fails the tag. Each W encrypts a
single message, so GCM's nonce-reuse hazard does not arise (but for an r collision, bounded
above). ECB is used here as
the raw block function on two distinct, non-secret inputs, not to encrypt data. PyKMIP's server
refuses ECB without padding, so we ask for PKCS#5 padding and discard the padding block it
appends (AES_K of a constant); a server that returns exactly 32 bytes works too.

Why not the alternatives: server-side AES-GCM over the key would be one round trip, but PyKMIP's
client returns only (data, iv) from Encrypt and drops the authentication tag, so the result
could not be authenticated; server-side CBC plus an HMAC needs a MAC operation too — two round
trips per wrap and per unwrap, and a second key to manage. W crosses the network only inside the
mutually authenticated TLS session — and in PyKMIP's logs if its `kmip.services.kmip_protocol`
logger (client) or `kmip.server` loggers are set to DEBUG, which dump messages in hex: keep them
at INFO.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import os
import queue
import select
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from kmip.core import enums
from kmip.core import exceptions as kmip_errors
from kmip.pie import exceptions as pie_errors
from kmip.pie.client import ProxyKmipClient
from kmip.services.kmip_protocol import RequestLengthMismatch

from trustauthority.errors import (
    KeyServerUnavailable,
    NotFound,
    UsageError,
    WrappedKeyInvalid,
)
from trustauthority.files import write_private
from trustauthority.keyserver import (
    KEY_BYTES,
    HealthReport,
    KmipEndpoint,
    PrimaryKeyInfo,
    check_kmip_endpoint,
)

T = TypeVar("T")

#: the blob format this module writes; unwrap refuses any other
VERSION = b"\x01"
_R_BYTES = 12
_IV_BYTES = 12
_TAG_BYTES = 16
BLOB_BYTES = 1 + _R_BYTES + _IV_BYTES + KEY_BYTES + _TAG_BYTES  # 73
_HEADER = 1 + _R_BYTES  # where the IV starts
_SEALED = _HEADER + _IV_BYTES  # where GCM's ciphertext and tag start
#: open clients kept for reuse; more may exist while many threads call at once
DEFAULT_POOL_SIZE = 4

_AES_ECB = {
    "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
    "block_cipher_mode": enums.BlockCipherMode.ECB,
    # PyKMIP refuses ECB with padding NONE; PKCS#5 appends one block we discard
    "padding_method": enums.PaddingMethod.PKCS5,
}
_DESCRIBED = ["Object Type", "Cryptographic Algorithm", "Cryptographic Length", "State",
              "Cryptographic Usage Mask"]

#: what the network, TLS and PyKMIP raise for a server we cannot use (operation refusals, which
#: leave the connection usable, are `KmipOperationFailure` and handled apart)
_TRANSPORT_FAILURES: tuple[type[BaseException], ...] = (
    OSError,  # socket errors, timeouts, refused connections, ssl.SSLError
    EOFError,  # PyKMIP: the server closed the connection before answering
    RequestLengthMismatch,  # a truncated answer
    kmip_errors.KmipError,  # a malformed or mismatched answer
    kmip_errors.InvalidKmipEncoding, kmip_errors.InvalidPrimitiveLength,
    kmip_errors.InvalidPaddingBytes, kmip_errors.ReadValueError,
    kmip_errors.StreamNotEmptyError,
    pie_errors.ClientConnectionFailure, pie_errors.ClientConnectionNotOpen,
    ValueError,  # PyKMIP's decoders raise it on values outside their enumerations
)
_OperationFailure = pie_errors.KmipOperationFailure


class _IdentityMismatch(KeyServerUnavailable):
    """The server's certificate chains to our CA but does not name the host or match the pin."""


class _Refused(KeyServerUnavailable):
    """The server answered an operation with a failure; `reason` is its KMIP ResultReason."""

    def __init__(self, message: str, reason: Any) -> None:
        super().__init__(message)
        self.reason = reason


_CONNECT_FAILURES: tuple[type[BaseException], ...] = (*_TRANSPORT_FAILURES, _IdentityMismatch)


class KmipKeyServer:
    """One KMIP server reached over mutual TLS (see the module docstring for the wrapping)."""

    kind = "kmip"

    def __init__(self, endpoint: KmipEndpoint, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        check_kmip_endpoint(endpoint)
        self.endpoint = endpoint
        self._where = f"{endpoint.host}:{endpoint.port}"
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue(maxsize=max(1, pool_size))
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"KmipKeyServer({self._where})"

    # -- the KeyServer protocol --------------------------------------------------------------

    def check(self) -> HealthReport:
        try:
            client = self._connect()
        except _IdentityMismatch as mismatch:
            return HealthReport(True, False, None, False, None, str(mismatch))
        except _TRANSPORT_FAILURES as error:
            return self._report_failure(error, connected=False)
        try:
            started = time.perf_counter()
            _query(client)
            latency = (time.perf_counter() - started) * 1000
        except _OperationFailure as failure:
            refused = failure.reason == enums.ResultReason.AUTHENTICATION_NOT_SUCCESSFUL
            return HealthReport(True, True, not refused, False, None,
                                f"{self._where}: {_refusal_text('Query', failure)}")
        except _TRANSPORT_FAILURES as error:
            return self._report_failure(error, connected=True)
        finally:
            _close_quietly(client)
        return HealthReport(True, True, True, True, latency,
                            f"{self._where}: Query answered in {latency:.1f} ms")

    def describe_key(self, key_id: str) -> PrimaryKeyInfo:
        try:
            _, attributes = self._call(
                "GetAttributes", lambda client: client.get_attributes(key_id, _DESCRIBED))
        except _Refused as refused:
            if refused.reason in (enums.ResultReason.ITEM_NOT_FOUND,
                                  enums.ResultReason.PERMISSION_DENIED):
                # PyKMIP answers PERMISSION_DENIED "could not locate" for others' keys
                raise NotFound(f"{self._where} has no key {key_id!r} we may use") from None
            raise
        values = {attribute.attribute_name.value: attribute.attribute_value.value
                  for attribute in attributes}
        return _key_info(key_id, values)

    def create_primary_key(self, name: str) -> str:
        def create(client: Any) -> str:
            uid = str(client.create(
                enums.CryptographicAlgorithm.AES, KEY_BYTES * 8, name=name,
                cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                          enums.CryptographicUsageMask.DECRYPT]))
            # a KMIP key is born Pre-Active, and servers refuse Encrypt until it is Active
            client.activate(uid)
            return uid

        return self._call("Create+Activate", create)

    def wrap(self, key_id: str, key: bytes, aad: bytes) -> bytes:
        if len(key) != KEY_BYTES:
            raise UsageError(f"only {KEY_BYTES}-byte (AES-256) keys are wrapped")
        r = os.urandom(_R_BYTES)
        iv = os.urandom(_IV_BYTES)
        header = VERSION + r
        sealed = AESGCM(self._blob_key(key_id, r)).encrypt(iv, key, header + aad)
        return header + iv + sealed

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        if len(wrapped) != BLOB_BYTES or wrapped[:1] != VERSION:
            raise WrappedKeyInvalid("the wrapped key is not a blob this key server made")
        header, iv, sealed = wrapped[:_HEADER], wrapped[_HEADER:_SEALED], wrapped[_SEALED:]
        blob_key = self._blob_key(key_id, header[1:])
        try:
            return AESGCM(blob_key).decrypt(iv, sealed, header + aad)
        except InvalidTag:
            raise WrappedKeyInvalid("the wrapped key does not authenticate under this primary "
                                    "key and context") from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
        while True:
            try:
                _close_quietly(self._idle.get_nowait())
            except queue.Empty:
                break

    # -- one KMIP round trip per blob --------------------------------------------------------

    def _blob_key(self, key_id: str, r: bytes) -> bytes:
        """W = AES_K(r || 1) || AES_K(r || 2), computed by the server."""
        blocks = r + (1).to_bytes(4, "big") + r + (2).to_bytes(4, "big")
        answer, _ = self._call("Encrypt", lambda client: client.encrypt(
            blocks, uid=key_id, cryptographic_parameters=dict(_AES_ECB)))
        # 48 bytes from PyKMIP (our two blocks, then its padding block); 32 from a server that
        # does not pad
        if not isinstance(answer, bytes) or len(answer) not in (2 * 16, 3 * 16):
            raise KeyServerUnavailable(f"{self._where}: Encrypt returned an answer of an "
                                       "unexpected size")
        return answer[:KEY_BYTES]

    # -- the pool ----------------------------------------------------------------------------

    def _call(self, operation: str, action: Callable[[Any], T]) -> T:
        """Run `action` on a pooled client. A refusal (`_Refused`) leaves the client usable; any
        other failure discards it (the next call connects afresh)."""
        client = self._checkout()
        try:
            result = action(client)
        except _OperationFailure as failure:
            self._checkin(client)
            raise _Refused(f"{self._where}: {_refusal_text(operation, failure)}",
                           failure.reason) from None
        except _TRANSPORT_FAILURES as error:
            _close_quietly(client)
            raise KeyServerUnavailable(
                f"{self._where}: {operation} failed: {self._describe(error)}") from error
        self._checkin(client)
        return result

    def _checkout(self) -> Any:
        if self._closed:
            raise KeyServerUnavailable(f"{self._where}: this key server connection is closed")
        while True:
            try:
                client = self._idle.get_nowait()
            except queue.Empty:
                break
            if _still_open(client):
                return client
            _close_quietly(client)  # the server closed it (restart, idle timeout)
        try:
            return self._connect()
        except _TRANSPORT_FAILURES as error:
            raise KeyServerUnavailable(
                f"{self._where}: cannot connect: {self._describe(error)}") from error

    def _checkin(self, client: Any) -> None:
        with self._lock:  # only check-ins add, all under the lock: full() cannot go stale
            keep = not self._closed and not self._idle.full()
            if keep:
                self._idle.put_nowait(client)
        if not keep:
            _close_quietly(client)

    def _connect(self) -> Any:
        """A connected client whose server proved the identity we expect; raises
        `_TRANSPORT_FAILURES` or `_IdentityMismatch`.

        A TLS failure is tried once more: a PKCS#11 module loaded in the same process can leave
        a stale error in OpenSSL's per-thread queue that fails the next handshake once."""
        try:
            return self._connect_once()
        except ssl.SSLError:
            return self._connect_once()

    def _connect_once(self) -> Any:
        endpoint = self.endpoint
        with _credentials(endpoint) as files:
            client = ProxyKmipClient(
                hostname=endpoint.host, port=endpoint.port, cert=str(files / "client.pem"),
                key=str(files / "client.key"), ca=str(files / "ca.pem"),
                ssl_version="PROTOCOL_SSLv23", username=endpoint.username,
                password=endpoint.password, config_file="/dev/null")
            # read by the proxy when it makes its socket: bounds connect, handshake and reads
            client.proxy.timeout = endpoint.timeout
            try:
                client.open()  # the files are read here, and never again by this client
                self._verify_identity(client.proxy.socket)
            except _CONNECT_FAILURES:
                _close_quietly(client)
                raise
        return client

    def _verify_identity(self, tls: ssl.SSLSocket) -> None:
        der = tls.getpeercert(binary_form=True)
        if der is None:
            raise _IdentityMismatch(f"{self._where} presented no certificate")
        pinned = self.endpoint.pinned_sha256
        if pinned is not None:
            expected = pinned.lower()  # check_kmip_endpoint admits 64 hex digits only
            if not hmac.compare_digest(hashlib.sha256(der).hexdigest(), expected):
                raise _IdentityMismatch(f"the certificate of {self._where} does not match the "
                                        "pinned SHA-256 fingerprint")
        if not _names_host(x509.load_der_x509_certificate(der), self.endpoint.host):
            raise _IdentityMismatch(f"the certificate of {self._where} does not name host "
                                    f"{self.endpoint.host}")

    # -- errors ------------------------------------------------------------------------------

    def _describe(self, error: BaseException) -> str:
        return _failure_kind(error, self.endpoint.timeout)[1]

    def _report_failure(self, error: BaseException, *, connected: bool) -> HealthReport:
        kind, text = _failure_kind(error, self.endpoint.timeout)
        detail = f"{self._where}: {text}"
        if kind == "unreachable" and not connected:
            return HealthReport(False, None, None, False, None, detail)
        if kind == "server_untrusted":
            return HealthReport(True, False, None, False, None, detail)
        if kind == "client_refused":
            return HealthReport(True, None, False, False, None, detail)
        return HealthReport(True, True if connected else None, None, False, None, detail)


# -- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _credentials(endpoint: KmipEndpoint) -> Iterator[Path]:
    """PyKMIP reads the credentials from files when it connects: owner-only copies (mkdtemp
    makes the directory 0700) that exist only for that moment, so no copy of the client key
    outlives a connect, whatever ends the process later."""
    directory = Path(tempfile.mkdtemp(prefix="ta-kmip-"))
    try:
        write_private(directory / "ca.pem", endpoint.ca_pem)
        write_private(directory / "client.pem", endpoint.cert_pem)
        write_private(directory / "client.key", endpoint.key_pem)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _names_host(certificate: x509.Certificate, host: str) -> bool:
    """Does the subjectAltName name `host` (IP literal, DNS name, leftmost-label wildcard)?"""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return any(_dns_matches(pattern, host) for pattern in names.get_values_for_type(
            x509.DNSName))
    return address in names.get_values_for_type(x509.IPAddress)


def _dns_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:] and "." in rest
    return pattern == host


def _key_info(key_id: str, values: dict[str, Any]) -> PrimaryKeyInfo:
    algorithm = values.get("Cryptographic Algorithm")
    length = values.get("Cryptographic Length")
    state = values.get("State")
    mask = values.get("Cryptographic Usage Mask")
    problems = []
    if values.get("Object Type") != enums.ObjectType.SYMMETRIC_KEY:
        problems.append("not a symmetric key")
    if algorithm != enums.CryptographicAlgorithm.AES or length != KEY_BYTES * 8:
        problems.append("not AES-256")
    if state != enums.State.ACTIVE:
        problems.append(f"state {getattr(state, 'name', state)}")
    if not isinstance(mask, int) or not mask & enums.CryptographicUsageMask.ENCRYPT.value:
        problems.append("may not Encrypt")
    name = getattr(algorithm, "name", str(algorithm))
    bits = length if isinstance(length, int) else 0
    detail = (f"{name}-{bits}, {getattr(state, 'name', state)}" if not problems
              else "not usable: " + ", ".join(problems))
    return PrimaryKeyInfo(key_id=key_id, algorithm=name, length_bits=bits,
                          usable=not problems, detail=detail)


def _query(client: Any) -> None:
    """One cheap round trip that every KMIP server answers and that touches no key."""
    result = client.proxy.query(query_functions=[enums.QueryFunction.QUERY_OPERATIONS])
    if result.result_status.value != enums.ResultStatus.SUCCESS:
        raise pie_errors.KmipOperationFailure(
            result.result_status.value, result.result_reason.value,
            result.result_message.value)


def _still_open(client: Any) -> bool:
    """An idle TLS connection has nothing to read; readable means the server closed it."""
    tls = client.proxy.socket
    if tls is None:
        return False
    poller = select.poll()
    poller.register(tls, select.POLLIN)
    return not poller.poll(0)


def _close_quietly(client: Any) -> None:
    # PyKMIP's close ignores the OSErrors of a socket that is already dead
    client.close()


def _refusal_text(operation: str, failure: Any) -> str:
    reason = getattr(failure.reason, "name", "UNKNOWN")
    if failure.reason == enums.ResultReason.AUTHENTICATION_NOT_SUCCESSFUL:
        return f"{operation}: the server did not accept our client certificate or credentials"
    message = " ".join(str(failure.message or "").split())[:200]
    return f"{operation} refused: {reason}" + (f" ({message})" if message else "")


def _failure_kind(error: BaseException, timeout: float) -> tuple[str, str]:
    """(unreachable | server_untrusted | client_refused | broken, one line for people)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return "server_untrusted", ("TLS: the server's certificate does not verify against "
                                    f"the configured CA ({error.verify_message})")
    if isinstance(error, ssl.SSLError):
        reason = str(error.reason or (error.args[-1] if error.args else type(error).__name__))
        if "ALERT" in reason.upper():
            return "client_refused", ("TLS: the server refused our client certificate "
                                      f"({reason.lower().replace('_', ' ')})")
        return "broken", f"TLS handshake failed ({reason.lower().replace('_', ' ')})"
    if isinstance(error, ConnectionRefusedError):
        return "unreachable", "connection refused"
    if isinstance(error, TimeoutError):
        return "unreachable", f"no answer within {timeout:g} s"
    if isinstance(error, socket.gaierror):
        return "unreachable", "the host name does not resolve"
    if isinstance(error, EOFError | RequestLengthMismatch | ConnectionError):
        return "broken", "the server closed the connection"
    if isinstance(error, OSError):
        return "unreachable", f"network error ({error.strerror or type(error).__name__})"
    return "broken", f"unexpected answer ({type(error).__name__})"

"""TPM trust settings (trust-admin): manufacturer CA certificates, allowed EK public keys, and
the settings that say which of the two a host may enroll with.

Certificates and keys arrive as untrusted PEM/DER: each is parsed, checked (a CA must say it is
one; an EK key must be RSA ≥ 2048 or ECC P-256/P-384) and stored by its SHA-256 fingerprint.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select
from sqlalchemy.orm import Session

from trustauthority.errors import Conflict, NotFound, UsageError
from trustauthority.service.audit import AuditLog
from trustauthority.service.authz import Caller, Permission, authorize
from trustauthority.store.db import Database, Transaction
from trustauthority.store.models import AllowedEk, Setting, TpmCa, table_of

_SETTINGS_KEY = "tpm"
_SETTINGS = table_of(Setting).c
#: read on every attestation: a prebuilt Core statement
_READ_SETTINGS = select(_SETTINGS.value).where(_SETTINGS.key == _SETTINGS_KEY)
_MAX_PEM = 256 * 1024


@dataclass(frozen=True)
class TpmSettings:
    """How a host proves its TPM is genuine. Secure defaults: EK certificates required.

    A certificate a host presents is always checked against the TPM CAs. For a TPM that
    presents none, the two switches decide (`HostService._check_ek`):

    - `require_ek_certificate` on: refused — whatever the allow-list says (the two cannot be
      on together, `set_settings` refuses that);
    - off, `allow_ek_allowlist` on: accepted only if its EK is on the allow-list;
    - both off: accepted on the join token or the approval alone (trust on first use, as
      Keylime's `require_ek_cert = False`): a leaked join token then admits a software TPM.
    """

    #: every TPM must present an EK certificate chaining to a trusted TPM CA
    require_ek_certificate: bool = True
    #: a TPM without a certificate is accepted when its EK is on the allow-list (needs
    #: require_ek_certificate off)
    allow_ek_allowlist: bool = False
    #: evidence over the SHA-1 PCR bank is refused unless this is on
    allow_sha1: bool = False


@functools.lru_cache(maxsize=16)
def _settings_of(stored: str) -> TpmSettings:
    """The stored settings document, parsed once per distinct document (they are immutable)."""
    return TpmSettings(**json.loads(stored))


@dataclass(frozen=True)
class TpmCaView:
    fingerprint_sha256: str
    subject: str
    is_root: bool
    not_after: datetime
    description: str
    added_at: datetime
    added_by: str


@dataclass(frozen=True)
class AllowedEkView:
    fingerprint_sha256: str
    algorithm: str
    description: str
    added_at: datetime
    added_by: str


def load_ca_certificates(raw: bytes) -> list[x509.Certificate]:
    """One DER certificate or one or more PEM certificates; each must be a CA."""
    if len(raw) > _MAX_PEM:
        raise UsageError("the certificate file is too large")
    try:
        certificates = (x509.load_pem_x509_certificates(raw) if b"-----BEGIN" in raw
                        else [x509.load_der_x509_certificate(raw)])
    except ValueError:
        raise UsageError("not a PEM or DER X.509 certificate") from None
    for certificate in certificates:
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except (x509.ExtensionNotFound, ValueError):
            raise UsageError(f"{certificate.subject.rfc4514_string()[:128]} has no valid basic "
                             "constraints: not a CA certificate") from None
        if not constraints.value.ca:
            raise UsageError(f"{certificate.subject.rfc4514_string()[:128]} is not a CA "
                             "certificate (basic constraints CA:FALSE)")
    return certificates


def load_ek_public_key(raw: bytes) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    if len(raw) > _MAX_PEM:
        raise UsageError("the key file is too large")
    try:
        key = (serialization.load_pem_public_key(raw) if b"-----BEGIN" in raw
               else serialization.load_der_public_key(raw))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise UsageError("not a PEM or DER public key (SubjectPublicKeyInfo) of a known "
                         "type") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in ("secp256r1",
                                                                          "secp384r1"):
        return key
    raise UsageError("an EK must be an RSA key of 2048 bits or more, or ECC P-256/P-384")


def public_key_fingerprint(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _ca_view(row: TpmCa) -> TpmCaView:
    return TpmCaView(row.fingerprint_sha256, row.subject, row.is_root, row.not_after,
                     row.description, row.added_at, row.added_by)


def _ek_view(row: AllowedEk) -> AllowedEkView:
    key = load_ek_public_key(row.public_pem.encode())
    algorithm = (f"rsa{key.key_size}" if isinstance(key, rsa.RSAPublicKey)
                 else f"ecc-{key.curve.name}")
    return AllowedEkView(row.fingerprint_sha256, algorithm, row.description, row.added_at,
                         row.added_by)


class TpmTrustService:
    def __init__(self, db: Database, audit: AuditLog, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock

    # -- manufacturer CAs ------------------------------------------------------------------

    def add_cas(self, caller: Caller, request_id: str, raw: bytes,
                description: str = "") -> list[TpmCaView]:
        role = authorize(caller, Permission.TPM_TRUST_MANAGE)
        certificates = load_ca_certificates(raw)
        with self._db.session() as session:
            added = []
            for certificate in certificates:
                fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
                if session.get(TpmCa, fingerprint) is not None:
                    raise Conflict(f"TPM CA {fingerprint[:16]}… is already trusted")
                row = TpmCa(
                    fingerprint_sha256=fingerprint,
                    subject=certificate.subject.rfc4514_string()[:512],
                    certificate_pem=certificate.public_bytes(
                        serialization.Encoding.PEM).decode(),
                    is_root=certificate.issuer == certificate.subject,
                    not_after=certificate.not_valid_after_utc,
                    description=description[:512], added_at=self._clock(),
                    added_by=caller.name)
                session.add(row)
                self._audit.record(session, principal=caller.name, role=role,
                                   action="tpm-ca.add", target=fingerprint, outcome="success",
                                   request_id=request_id,
                                   details={"subject": row.subject, "root": row.is_root,
                                            "not_after": row.not_after.isoformat()})
                added.append(_ca_view(row))
            return added

    def list_cas(self, caller: Caller) -> list[TpmCaView]:
        authorize(caller, Permission.TRUST_READ)
        with self._db.session(read_only=True) as session:
            return [_ca_view(row) for row in session.scalars(select(TpmCa)
                                                             .order_by(TpmCa.subject))]

    def remove_ca(self, caller: Caller, request_id: str, fingerprint: str) -> TpmCaView:
        role = authorize(caller, Permission.TPM_TRUST_MANAGE)
        with self._db.session() as session:
            row = session.get(TpmCa, fingerprint.lower())
            if row is None:
                raise NotFound(f"no trusted TPM CA with fingerprint {fingerprint[:64]!r}")
            view = _ca_view(row)
            session.delete(row)
            self._audit.record(session, principal=caller.name, role=role,
                               action="tpm-ca.remove", target=view.fingerprint_sha256,
                               outcome="success", request_id=request_id,
                               details={"subject": view.subject})
            return view

    def trusted_ca_certificates(self, session: Session) -> list[x509.Certificate]:
        """For enrollment (no caller: the service's own read)."""
        return [x509.load_pem_x509_certificate(row.certificate_pem.encode())
                for row in session.scalars(select(TpmCa))]

    # -- allowed EKs -------------------------------------------------------------------------

    def add_ek(self, caller: Caller, request_id: str, raw: bytes,
               description: str = "") -> AllowedEkView:
        role = authorize(caller, Permission.TPM_TRUST_MANAGE)
        key = load_ek_public_key(raw)
        fingerprint = public_key_fingerprint(key)
        with self._db.session() as session:
            if session.get(AllowedEk, fingerprint) is not None:
                raise Conflict(f"EK {fingerprint[:16]}… is already allowed")
            row = AllowedEk(
                fingerprint_sha256=fingerprint,
                public_pem=key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo
                                            ).decode(),
                description=description[:512], added_at=self._clock(), added_by=caller.name)
            session.add(row)
            view = _ek_view(row)
            self._audit.record(session, principal=caller.name, role=role, action="ek.add",
                               target=fingerprint, outcome="success", request_id=request_id,
                               details={"algorithm": view.algorithm})
            return view

    def list_eks(self, caller: Caller) -> list[AllowedEkView]:
        authorize(caller, Permission.TRUST_READ)
        with self._db.session(read_only=True) as session:
            return [_ek_view(row) for row in session.scalars(
                select(AllowedEk).order_by(AllowedEk.added_at))]

    def remove_ek(self, caller: Caller, request_id: str, fingerprint: str) -> AllowedEkView:
        role = authorize(caller, Permission.TPM_TRUST_MANAGE)
        with self._db.session() as session:
            row = session.get(AllowedEk, fingerprint.lower())
            if row is None:
                raise NotFound(f"no allowed EK with fingerprint {fingerprint[:64]!r}")
            view = _ek_view(row)
            session.delete(row)
            self._audit.record(session, principal=caller.name, role=role, action="ek.remove",
                               target=view.fingerprint_sha256, outcome="success",
                               request_id=request_id)
            return view

    # -- settings ----------------------------------------------------------------------------

    def current_settings(self, session: Transaction) -> TpmSettings:
        value = session.execute(_READ_SETTINGS).scalar()
        return TpmSettings() if value is None else _settings_of(value)

    def settings(self, caller: Caller) -> TpmSettings:
        authorize(caller, Permission.TRUST_READ)
        with self._db.session(read_only=True) as session:
            return self.current_settings(session)

    def set_settings(self, caller: Caller, request_id: str, *,
                     require_ek_certificate: bool | None = None,
                     allow_ek_allowlist: bool | None = None,
                     allow_sha1: bool | None = None) -> TpmSettings:
        role = authorize(caller, Permission.TPM_TRUST_MANAGE)
        with self._db.session() as session:
            current = asdict(self.current_settings(session))
            changes = {key: value for key, value in (
                ("require_ek_certificate", require_ek_certificate),
                ("allow_ek_allowlist", allow_ek_allowlist), ("allow_sha1", allow_sha1))
                if value is not None and current[key] != value}
            updated = TpmSettings(**{**current, **changes})
            if updated.require_ek_certificate and updated.allow_ek_allowlist:
                raise UsageError("the EK allow-list is for TPMs without a certificate, and "
                                 "require-ek-certificate refuses those: turn it off "
                                 "(--no-require-ek-certificate) to use the allow-list")
            if changes:
                row = session.get(Setting, _SETTINGS_KEY)
                value = json.dumps(asdict(updated), sort_keys=True)
                if row is None:
                    session.add(Setting(key=_SETTINGS_KEY, value=value))
                else:
                    row.value = value
                self._audit.record(session, principal=caller.name, role=role,
                                   action="tpm-settings.set", target="tpm", outcome="success",
                                   request_id=request_id, details={"changed": changes})
            return updated

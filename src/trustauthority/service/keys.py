"""The service's own keys, kept in the store with the private half sealed under the master key.

Every replica reads the same keys from the database, so any of them can sign an audit
checkpoint (and, later, tokens) and issue client certificates; the master key is what a replica
needs besides the database URL. Opened keys are cached in memory per process.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session

from trustauthority.errors import ConfigError
from trustauthority.store.db import Transaction
from trustauthority.store.masterkey import MasterKey
from trustauthority.store.models import ServiceKey, table_of


class KeyPurpose(StrEnum):
    AUDIT = "audit"  # signs audit checkpoints
    TLS_CA = "tls-ca"  # issues the server's and principals' TLS certificates
    ATTESTATION = "attestation"  # signs attestation tokens (ES256); public halves: the JWKS


@dataclass(frozen=True)
class PublicKeyView:
    """A service key as others may see it: its public half and its life."""

    kid: str
    algorithm: str
    public_pem: str
    created_at: datetime
    retired_at: datetime | None


def key_id(public: ec.EllipticCurvePublicKey) -> str:
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:32]


def load_public_pem(pem: str) -> ec.EllipticCurvePublicKey:
    try:
        public = serialization.load_pem_public_key(pem.encode())
    except ValueError:
        raise ConfigError("a stored service public key does not parse") from None
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise ConfigError("service keys are ECDSA keys")
    return public


_KEYS = table_of(ServiceKey).c
#: read on every token issued: a prebuilt Core statement costs a fraction of an ORM query
_ACTIVE_KEY = (select(_KEYS.kid, _KEYS.private_sealed, _KEYS.certificate_pem)
               .where(_KEYS.purpose == bindparam("purpose"), _KEYS.retired_at.is_(None))
               .order_by(_KEYS.created_at.desc()).limit(1))


class ServiceKeys:
    def __init__(self, master_key: MasterKey, clock: Callable[[], datetime]) -> None:
        self._master_key = master_key
        self._clock = clock
        self._opened: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._lock = threading.Lock()

    def _purpose_label(self, kid: str) -> str:
        return f"service-key:{kid}"

    def store(self, session: Session, purpose: KeyPurpose, key: ec.EllipticCurvePrivateKey,
              certificate: x509.Certificate | None = None) -> str:
        kid = key_id(key.public_key())
        private_der = key.private_bytes(serialization.Encoding.DER,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        session.add(ServiceKey(
            kid=kid, purpose=purpose.value, algorithm="ES256",
            public_pem=key.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
            certificate_pem=(certificate.public_bytes(serialization.Encoding.PEM).decode()
                             if certificate is not None else None),
            private_sealed=self._master_key.seal(private_der, purpose=self._purpose_label(kid)),
            created_at=self._clock(),
        ))
        return kid

    def create(self, session: Session, purpose: KeyPurpose) -> str:
        return self.store(session, purpose, ec.generate_private_key(ec.SECP256R1()))

    def _active(self, session: Transaction, purpose: KeyPurpose) -> Row[Any, Any, Any]:
        """The newest unretired key of `purpose` (kid, private_sealed, certificate_pem)."""
        row = session.execute(_ACTIVE_KEY, {"purpose": purpose.value}).first()
        if row is None:
            raise ConfigError(f"the store holds no {purpose.value} key; run `trustauthority init`")
        return row

    def signer(self, session: Transaction, purpose: KeyPurpose,
               ) -> tuple[str, ec.EllipticCurvePrivateKey]:
        row = self._active(session, purpose)
        with self._lock:
            key = self._opened.get(row.kid)
        if key is None:
            der = self._master_key.open(row.private_sealed, purpose=self._purpose_label(row.kid))
            loaded = serialization.load_der_private_key(der, password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ConfigError(f"service key {row.kid} is not an ECDSA key")
            key = loaded
            with self._lock:
                self._opened[row.kid] = key
        return row.kid, key

    def certificate(self, session: Session, purpose: KeyPurpose) -> x509.Certificate:
        row = self._active(session, purpose)
        if row.certificate_pem is None:
            raise ConfigError(f"the {purpose.value} key has no certificate")
        return x509.load_pem_x509_certificate(row.certificate_pem.encode())

    def ensure(self, session: Session, purpose: KeyPurpose) -> str:
        """The active key of `purpose`, created when the store has none (older stores)."""
        rows = session.scalars(select(ServiceKey.kid).where(
            ServiceKey.purpose == purpose.value, ServiceKey.retired_at.is_(None))).first()
        return rows if rows is not None else self.create(session, purpose)

    def public_keys(self, session: Session, purpose: KeyPurpose, *,
                    retired_after: datetime | None = None,
                    ) -> dict[str, ec.EllipticCurvePublicKey]:
        """Every key of `purpose`, retired ones included (old signatures stay checkable) —
        or, with `retired_after`, only those retired after that moment."""
        query = select(ServiceKey).where(ServiceKey.purpose == purpose.value)
        if retired_after is not None:
            query = query.where(ServiceKey.retired_at.is_(None)
                                | (ServiceKey.retired_at > retired_after))
        return {row.kid: load_public_pem(row.public_pem) for row in session.scalars(query)}

    def described(self, session: Session, purpose: KeyPurpose) -> list[PublicKeyView]:
        """Every key of `purpose`, newest first, public halves only."""
        rows = session.scalars(select(ServiceKey).where(ServiceKey.purpose == purpose.value)
                               .order_by(ServiceKey.created_at.desc(), ServiceKey.kid))
        return [PublicKeyView(row.kid, row.algorithm, row.public_pem, row.created_at,
                              row.retired_at) for row in rows]

    def rotate(self, session: Session, purpose: KeyPurpose) -> tuple[str | None, str]:
        """Retire the active key of `purpose` and create its successor: (old kid, new kid)."""
        now = self._clock()
        retired = None
        for row in session.scalars(select(ServiceKey).where(
                ServiceKey.purpose == purpose.value, ServiceKey.retired_at.is_(None))):
            row.retired_at = now
            retired = row.kid
        session.flush()
        return retired, self.create(session, purpose)

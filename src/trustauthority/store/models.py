"""Tables of the config store (SQLAlchemy 2 typed declarative models).

The Alembic migrations in `migrations/versions` create exactly these; a test compares them.
Times are stored as UTC and always come back timezone-aware, on SQLite as on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: constraint names Alembic can refer to, the same on every database
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class, for the prebuilt statements of the hot paths (an ORM
    statement costs several times a Core one to run, for rows nobody changes as objects)."""
    table = model.__table__
    if not isinstance(table, Table):  # every model here maps one table
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


class Principal(Base):
    """A person or a piece of automation (or, later, a host) that calls the API."""

    __tablename__ = "principals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # person | automation | host
    description: Mapped[str] = mapped_column(String(512), default="")
    #: several roles only with a trust-admin's explicit approval (separation of duties)
    multiple_roles_approved: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    roles: Mapped[list[PrincipalRole]] = relationship(
        back_populates="principal", cascade="all, delete-orphan", lazy="selectin")


class PrincipalRole(Base):
    __tablename__ = "principal_roles"

    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(32), primary_key=True)

    principal: Mapped[Principal] = relationship(back_populates="roles")


class ApiToken(Base):
    """An API token: only a hash of its secret is kept; the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public, part of the token
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class ClientCertificate(Base):
    """An mTLS client certificate issued by the service's CA to a principal."""

    __tablename__ = "client_certificates"

    fingerprint_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(String(512))
    not_after: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class ServiceKey(Base):
    """A key of the service itself (audit checkpoints, the TLS CA, later tokens).

    The private key is sealed under the master key, bound to this row by its key id.
    """

    __tablename__ = "service_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32), index=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_pem: Mapped[str] = mapped_column(Text)
    certificate_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    private_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class AuditRecord(Base):
    """One entry of the hash-chained audit log; rows are only ever inserted.

    `time` is kept as the exact ISO string the hash covers, `details` as canonical JSON.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_action_sequence", "action", "sequence"),
        Index("ix_audit_log_principal_sequence", "principal", "sequence"),
    )

    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[str] = mapped_column(String(40), index=True)
    principal: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    outcome: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text)
    previous_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's head, one row: writers lock it, so replicas append one at a time."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sequence: Mapped[int] = mapped_column(BigInteger)  # -1: empty chain
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signature by a service key over (sequence, entry hash): pins the chain up to there."""

    __tablename__ = "audit_checkpoints"

    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    entry_hash: Mapped[str] = mapped_column(String(64))
    time: Mapped[str] = mapped_column(String(40))
    kid: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)  # base64url


class Setting(Base):
    """Service-wide settings as JSON values, shared by every replica."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class TpmCa(Base):
    """A TPM manufacturer root or intermediate CA that EK certificates may chain to."""

    __tablename__ = "tpm_cas"

    fingerprint_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(512))
    certificate_pem: Mapped[str] = mapped_column(Text)
    is_root: Mapped[bool] = mapped_column(Boolean)
    not_after: Mapped[datetime] = mapped_column(UtcDateTime())
    description: Mapped[str] = mapped_column(String(512), default="")
    added_at: Mapped[datetime] = mapped_column(UtcDateTime())
    added_by: Mapped[str] = mapped_column(String(128))


class AllowedEk(Base):
    """An EK public key allowed by itself, for TPMs without an EK certificate."""

    __tablename__ = "allowed_eks"

    fingerprint_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_pem: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(512), default="")
    added_at: Mapped[datetime] = mapped_column(UtcDateTime())
    added_by: Mapped[str] = mapped_column(String(128))


class Cluster(Base):
    """A trusted cluster: its hosts share baselines, policy knobs and key-provider grants."""

    __tablename__ = "clusters"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(String(512), default="")
    #: appraisal policy knobs (JSON): require Secure Boot, compared PCRs, unknown events, strict
    policy: Mapped[str] = mapped_column(Text)
    token_lifetime_seconds: Mapped[int] = mapped_column(Integer)
    attestation_interval_seconds: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(128))


class BaselineRecord(Base):
    """A named, versioned baseline (`policy.Baseline` as JSON) and where it came from."""

    __tablename__ = "baselines"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(128))


class ClusterBaseline(Base):
    """A baseline active for a cluster (several at once: rolling upgrades)."""

    __tablename__ = "cluster_baselines"

    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"),
                                            primary_key=True)
    baseline_id: Mapped[str] = mapped_column(ForeignKey("baselines.id"), primary_key=True)


class JoinToken(Base):
    """A single-use, expiring token an infra-admin hands to a host to join a cluster.

    Like API tokens, `taj_<id>_<secret>`: only a hash of the secret is kept.
    """

    __tablename__ = "join_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"),
                                            index=True)
    description: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    used_by_host: Mapped[str | None] = mapped_column(String(36), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class Host(Base):
    """A machine with a TPM: its identity is its EK; its AK and binding key speak for it."""

    __tablename__ = "hosts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # derived from the EK
    name: Mapped[str] = mapped_column(String(128), unique=True)
    ek_fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    ek_public: Mapped[bytes] = mapped_column(LargeBinary)  # TPM2B_PUBLIC
    ek_certificate_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    ak_public: Mapped[bytes] = mapped_column(LargeBinary)  # TPM2B_PUBLIC
    #: what a quote's qualifiedSigner must be: the AK's qualified name under the EK
    ak_qualified_name: Mapped[bytes] = mapped_column(LargeBinary)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), unique=True)
    cluster_id: Mapped[str | None] = mapped_column(ForeignKey("clusters.id"), nullable=True,
                                                   index=True)
    #: pending | enrolled | trusted | untrusted ("stale" is computed when read)
    state: Mapped[str] = mapped_column(String(16))
    state_reason: Mapped[str] = mapped_column(String(1024), default="")
    facts: Mapped[str] = mapped_column(Text)  # JSON object of strings, as the agent reported
    enrolled_at: Mapped[datetime] = mapped_column(UtcDateTime())
    approved_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    last_attested_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    #: TPMS_CLOCK_INFO of the last verified quote, to check the counters never go back
    last_clock: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_reset_count: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_restart_count: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: the event log of the last verified evidence (for `baseline import --from-host`)
    last_event_log: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    binding_key_public: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    binding_key_thumbprint: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Enrollment(Base):
    """An enrollment waiting for the host to prove, with ActivateCredential, that AK and EK
    share a TPM. Only a hash of the credential secret is kept; the row lives minutes."""

    __tablename__ = "enrollments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    ek_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    ek_public: Mapped[bytes] = mapped_column(LargeBinary)
    ek_certificate_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    ak_public: Mapped[bytes] = mapped_column(LargeBinary)
    ak_qualified_name: Mapped[bytes] = mapped_column(LargeBinary)
    hostname: Mapped[str] = mapped_column(String(128))
    facts: Mapped[str] = mapped_column(Text)
    join_token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class AttestationNonce(Base):
    """A challenge handed to a host: single-use (deleted when used, on every replica alike)."""

    __tablename__ = "attestation_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AttestationRecord(Base):
    """One attestation of a host and its verdict: the host's attestation history."""

    __tablename__ = "attestations"
    __table_args__ = (Index("ix_attestations_host_at", "host_id", "at"),
                      # the retention sweep deletes by age across hosts
                      Index("ix_attestations_at", "at"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True, autoincrement=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(16))  # trusted | untrusted
    baseline: Mapped[str | None] = mapped_column(String(160), nullable=True)  # "name vN"
    reason: Mapped[str] = mapped_column(String(1024), default="")
    #: the structured failure (JSON) when untrusted
    report: Mapped[str | None] = mapped_column(Text, nullable=True)
    rebooted: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    pcr_digest: Mapped[str | None] = mapped_column(String(128), nullable=True)
    token_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class KeyServerRecord(Base):
    """A key server (KMIP endpoint or PKCS#11 token) and how to reach and trust it.

    The client's private key, password and PIN are sealed with the service master key
    (`sealed_secrets`, JSON before sealing); nothing secret is stored in the clear.
    """

    __tablename__ = "key_servers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # kmip | pkcs11
    #: "host:port" for KMIP, the module path for PKCS#11
    address: Mapped[str] = mapped_column(String(1024))
    #: non-secret settings (JSON): username, pinned certificate, timeout, token label
    settings: Mapped[str] = mapped_column(Text)
    ca_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    certificate_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    sealed_secrets: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(128))


class KeyProvider(Base):
    """A trusted key provider: key servers tried in order, and a versioned primary key."""

    __tablename__ = "key_providers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # every server of a provider is this kind
    description: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(128))


class ProviderServer(Base):
    """A key server of a provider, at its place in the failover order."""

    __tablename__ = "provider_servers"

    provider_id: Mapped[str] = mapped_column(ForeignKey("key_providers.id", ondelete="CASCADE"),
                                             primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_server_id: Mapped[str] = mapped_column(ForeignKey("key_servers.id"), index=True)


class PrimaryKeyVersion(Base):
    """One version of a provider's primary key: its id on the key servers. The highest active
    version wraps new keys; older active versions still unwrap; retired ones open nothing."""

    __tablename__ = "primary_key_versions"

    provider_id: Mapped[str] = mapped_column(ForeignKey("key_providers.id", ondelete="CASCADE"),
                                             primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16))  # active | retired
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ClusterProviderGrant(Base):
    """A cluster's hosts may receive keys of this provider."""

    __tablename__ = "cluster_provider_grants"

    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"),
                                            primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("key_providers.id", ondelete="CASCADE"),
                                             primary_key=True)
    granted_at: Mapped[datetime] = mapped_column(UtcDateTime())
    granted_by: Mapped[str] = mapped_column(String(128))


class WorkloadKey(Base):
    """A workload's key (KEK): never stored in the clear; `blob` is its wrapped form, the same
    the workload keeps in its header (so a rewrap can be fetched again). A workload has one
    active key; a rotation (deep rekey) leaves the previous one `superseded`, still released
    so hosts can re-encrypt, until it is deleted."""

    __tablename__ = "workload_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workload: Mapped[str] = mapped_column(String(256), index=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"), index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("key_providers.id"), index=True)
    primary_version: Mapped[int] = mapped_column(Integer)
    blob: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_by: Mapped[str] = mapped_column(String(128))
    rewrapped_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_released_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | superseded

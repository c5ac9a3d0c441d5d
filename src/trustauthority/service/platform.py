"""The service platform: one object that owns the store, the keys, the audit log and the use
cases, built once per process by `serve` (and by tests) and shared by every request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from trustauthority.audit.chain import AuditEntry
from trustauthority.errors import PermissionDenied
from trustauthority.service.attestation import DEFAULT_HISTORY, AttestationService
from trustauthority.service.audit import AuditFilter, AuditLog, AuditVerification, Checkpoint
from trustauthority.service.authz import Caller, Permission, authorize
from trustauthority.service.baselines import BaselineService
from trustauthority.service.clusters import ClusterService
from trustauthority.service.credentials import (
    CredentialRefused,
    authenticate_certificate,
    authenticate_token,
)
from trustauthority.service.hosts import HostService
from trustauthority.service.keys import KeyPurpose, PublicKeyView, ServiceKeys
from trustauthority.service.keyservers import (
    AdapterFactory,
    KeyServerRegistry,
    KeyServerService,
    default_adapter,
)
from trustauthority.service.principals import PrincipalService
from trustauthority.service.providers import ProviderService
from trustauthority.service.tpmtrust import TpmTrustService
from trustauthority.service.workloadkeys import WorkloadKeyService
from trustauthority.store.db import Database
from trustauthority.store.masterkey import MasterKey
from trustauthority.token import Jwks, VerificationKey

#: the longest token lifetime a cluster may set (schemas.ClusterCreate)
MAX_TOKEN_LIFETIME = timedelta(days=1)
KEY_RETIREMENT_MARGIN = timedelta(minutes=10)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Platform:
    def __init__(self, db: Database, master_key: MasterKey, *,
                 clock: Callable[[], datetime] = utc_now,
                 audit_checkpoint_interval: int = 100,
                 attestation_history: timedelta = DEFAULT_HISTORY,
                 issuer: str = "https://127.0.0.1:8443",
                 key_server_factory: AdapterFactory = default_adapter) -> None:
        self.db = db
        self.clock = clock
        self.keys = ServiceKeys(master_key, clock)
        self.audit = AuditLog(self.keys, clock, audit_checkpoint_interval)
        self.principals = PrincipalService(db, self.audit, self.keys, clock)
        self.tpm_trust = TpmTrustService(db, self.audit, clock)
        self.clusters = ClusterService(db, self.audit, clock)
        self.baselines = BaselineService(db, self.audit, clock)
        self.hosts = HostService(db, self.audit, self.tpm_trust, self.principals, clock)
        self.attestation = AttestationService(db, self.audit, self.keys, self.tpm_trust,
                                              self.baselines, clock, issuer,
                                              history=attestation_history)
        self.key_server_registry = KeyServerRegistry(master_key, clock, key_server_factory)
        self.key_servers = KeyServerService(db, self.audit, self.key_server_registry, clock)
        self.providers = ProviderService(db, self.audit, self.key_server_registry, clock)
        self.workload_keys = WorkloadKeyService(db, self.audit, self.providers.servers, clock,
                                                jwks=self.jwks, issuer=issuer)

    # -- token keys ---------------------------------------------------------------------------

    def jwks(self) -> Jwks:
        """Every attestation-token key, retired ones included until their tokens expire."""
        # a token lives at most MAX_TOKEN_LIFETIME; a key retired longer ago signed none that
        # is still valid (a relying party's leeway is covered by the margin)
        keep_after = self.clock() - MAX_TOKEN_LIFETIME - KEY_RETIREMENT_MARGIN
        with self.db.session(read_only=True) as session:
            keys = self.keys.public_keys(session, KeyPurpose.ATTESTATION,
                                         retired_after=keep_after)
        return Jwks(tuple(VerificationKey(kid, public) for kid, public in sorted(keys.items())))

    def rotate_token_key(self, caller: Caller, request_id: str) -> tuple[str | None, str]:
        """A new token-signing key; the old one stays in the JWKS until its tokens expire."""
        role = authorize(caller, Permission.SERVICE_KEY_MANAGE)
        with self.db.session() as session:
            old, new = self.keys.rotate(session, KeyPurpose.ATTESTATION)
            self.audit.record(session, principal=caller.name, role=role,
                              action="token-key.rotate", target=new, outcome="success",
                              request_id=request_id, details={"retired": old or "-"})
        return old, new

    def ensure_keys(self) -> None:
        """Keys a newer release needs that an older store lacks (run on start)."""
        with self.db.session() as session:
            self.keys.ensure(session, KeyPurpose.ATTESTATION)

    # -- authentication --------------------------------------------------------------------

    def authenticate(self, *, token: str | None, certificate_fingerprint: str | None,
                     request_id: str, source: str) -> Caller:
        """The caller behind a bearer token or a verified client certificate.

        A failure is audited (with the reason, never the token) in its own transaction, then
        re-raised as the same bland AuthenticationFailed for the caller.
        """
        try:
            with self.db.reading() as connection:
                if token is not None:
                    return authenticate_token(connection, token, self.clock())
                if certificate_fingerprint is not None:
                    return authenticate_certificate(connection, certificate_fingerprint,
                                                    self.clock())
                raise CredentialRefused("no credential presented", "none")
        except CredentialRefused as refused:
            with self.db.session() as session:
                self.audit.record(session, principal="-", role="-",
                                  action="auth.failure", target=refused.credential,
                                  outcome="denied", request_id=request_id,
                                  details={"reason": refused.reason, "source": source})
            raise

    def record_denial(self, caller: Caller, denied: PermissionDenied, *, action: str,
                      request_id: str) -> None:
        """Audit a refused action (its own transaction: the action's was rolled back)."""
        with self.db.session() as session:
            self.audit.record(session, principal=caller.name, role=caller.role_names,
                              action=action, target="-", outcome="denied",
                              request_id=request_id, details={"reason": str(denied)})

    # -- audit use cases ---------------------------------------------------------------------

    def audit_entries(self, caller: Caller, query: AuditFilter) -> list[AuditEntry]:
        authorize(caller, Permission.AUDIT_READ)
        with self.db.session(read_only=True) as session:
            return self.audit.entries(session, query)

    def audit_export(self, caller: Caller) -> Iterator[AuditEntry]:
        """Every entry in order (authorized now, streamed as the caller reads)."""
        authorize(caller, Permission.AUDIT_READ)
        return self._export()

    def _export(self) -> Iterator[AuditEntry]:
        with self.db.session(read_only=True) as session:
            yield from self.audit.export(session)

    def audit_verify(self, caller: Caller) -> AuditVerification:
        authorize(caller, Permission.AUDIT_READ)
        with self.db.session(read_only=True) as session:
            return self.audit.verify(session)

    def audit_keys(self, caller: Caller) -> list[PublicKeyView]:
        """The audit checkpoint keys (public halves), newest first: what to pin when verifying
        copies of the log offline (`audit verify --audit-key`)."""
        authorize(caller, Permission.AUDIT_READ)
        with self.db.session(read_only=True) as session:
            return self.keys.described(session, KeyPurpose.AUDIT)

    def audit_checkpoint(self, caller: Caller, request_id: str) -> Checkpoint | None:
        role = authorize(caller, Permission.AUDIT_CHECKPOINT)
        with self.db.session() as session:
            self.audit.record(session, principal=caller.name, role=role,
                              action="audit.checkpoint", target="audit-log", outcome="success",
                              request_id=request_id)
            return self.audit.checkpoint(session)

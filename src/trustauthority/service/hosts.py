"""Hosts: join tokens (infra-admin), enrollment (the host's agent), approval, trust state.

Enrollment proves three things before an AK is registered to a host (DESIGN.md, "Attestation
Service"; TPM 2.0 Part 1 §24 "Credential Protection"):

1. the EK is a genuine TPM's: its certificate chains to a trusted TPM CA (or, where the
   trust-admin allows it, the EK public key is on the allow-list);
2. the AK is an attestation key: restricted, signing, fixedTPM, fixedParent, TPM-generated;
3. AK and EK live in one TPM: the service answers with MakeCredential (a secret only that EK can
   unwrap, and only for an object with the AK's Name), and the host must return the secret.

Only then is the host created (or, for a known EK, updated: same EK, same host identity) with a
host principal whose API token the agent keeps. A host joins a cluster by a single-use join
token, consumed in the same transaction that registers the AK, or waits as `pending` for an
infra-admin's approval. Refusals are audited with their reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from trustauthority.errors import (
    ActivationFailed,
    CertificateError,
    Conflict,
    EvidenceError,
    JoinTokenRefused,
    NotFound,
    UsageError,
)
from trustauthority.service.audit import AuditLog
from trustauthority.service.authz import Caller, Permission, Role, authorize
from trustauthority.service.clusters import find_cluster
from trustauthority.service.credentials import JOIN_TOKEN, new_token
from trustauthority.service.names import check_name
from trustauthority.service.principals import PrincipalService
from trustauthority.service.tpmtrust import TpmTrustService, public_key_fingerprint
from trustauthority.store.db import Database
from trustauthority.store.models import (
    AllowedEk,
    ApiToken,
    AttestationRecord,
    Cluster,
    Enrollment,
    Host,
    JoinToken,
    Principal,
)
from trustauthority.tpm import TPM_RH_ENDORSEMENT
from trustauthority.tpm.credential import make_credential
from trustauthority.tpm.public import TpmPublic, hierarchy_qualified_name, parse_tpm2b_public
from trustauthority.verify.ekcert import (
    check_ak_attributes,
    ek_matches_certificate,
    load_certificate,
    verify_ek_certificate,
)

#: how long a host has to answer MakeCredential
ENROLLMENT_LIFETIME = timedelta(minutes=5)
#: a trusted host whose last attestation is older than its cluster's interval times this is stale
STALE_FACTOR = 3
#: the credential secret MakeCredential wraps (Part 1 §24.4: at most the EK nameAlg's size)
_SECRET_BYTES = 32


@dataclass(frozen=True)
class JoinTokenView:
    id: str
    cluster: str
    description: str
    created_at: datetime
    created_by: str
    expires_at: datetime
    used_at: datetime | None
    used_by_host: str | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class IssuedJoinToken:
    view: JoinTokenView
    token: str  # shown once


@dataclass(frozen=True)
class HostView:
    id: str
    name: str
    #: pending | enrolled | trusted | untrusted | stale
    state: str
    state_reason: str
    cluster: str | None
    facts: dict[str, str]
    ek_fingerprint: str
    enrolled_at: datetime
    approved_by: str | None
    last_attested_at: datetime | None
    binding_key_thumbprint: str | None


@dataclass(frozen=True)
class AttestationView:
    at: datetime
    status: str
    baseline: str | None
    reason: str
    rebooted: bool | None
    pcr_digest: str | None
    token_id: str | None
    #: the structured failure as recorded (`Failure.to_json`) when untrusted
    failure: Mapping[str, Any] | None = None


def _report(stored: str | None) -> Mapping[str, Any] | None:
    """A recorded failure report; None when there is none or it cannot be read (a row written
    by hand or damaged), so the history still lists the attestation with its reason line."""
    if stored is None:
        return None
    try:
        report = json.loads(stored)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


@dataclass(frozen=True)
class EnrollmentChallenge:
    enrollment_id: str
    credential_blob: bytes
    encrypted_secret: bytes
    expires_at: datetime


@dataclass(frozen=True)
class EnrollmentResult:
    host: HostView
    credential: str  # the host's API token, shown once


@dataclass(frozen=True)
class EnrollmentRequest:
    """What the agent sends, decoded from base64 but otherwise untrusted."""

    ek_public: bytes
    ek_certificate: bytes | None
    ek_intermediates: tuple[bytes, ...]
    ak_public: bytes
    hostname: str
    facts: dict[str, str]
    join_token: str | None


def host_id_for(ek_fingerprint: str) -> str:
    """A host's id follows from its EK: the same TPM is always the same host."""
    return f"h-{ek_fingerprint[:32]}"


def ak_qualified_name(ek: TpmPublic, ak: TpmPublic) -> bytes:
    """What a quote's qualifiedSigner is for an AK created under the EK (Part 1 §16.6)."""
    return ak.qualified_name(ek.qualified_name(hierarchy_qualified_name(TPM_RH_ENDORSEMENT)))


def _join_view(row: JoinToken, cluster: str) -> JoinTokenView:
    return JoinTokenView(row.id, cluster, row.description, row.created_at, row.created_by,
                         row.expires_at, row.used_at, row.used_by_host, row.revoked_at)


def effective_state(row: Host, cluster: Cluster | None, now: datetime) -> tuple[str, str]:
    """The host's state now, with its reason: a trusted host that stopped attesting is stale."""
    return state_now(row.state, row.state_reason, row.last_attested_at,
                     cluster.attestation_interval_seconds if cluster is not None else None, now)


def state_now(state: str, reason: str, last_attested_at: datetime | None,
              interval_seconds: int | None, now: datetime) -> tuple[str, str]:
    """`effective_state` from the columns it needs (for reads that fetch only those)."""
    if (state == "trusted" and interval_seconds is not None and last_attested_at is not None
            and now - last_attested_at > timedelta(seconds=interval_seconds * STALE_FACTOR)):
        return "stale", (f"no attestation since {last_attested_at.isoformat()} (more than "
                         f"{STALE_FACTOR} × the cluster's interval of {interval_seconds} s)")
    return state, reason


class HostService:
    def __init__(self, db: Database, audit: AuditLog, tpm_trust: TpmTrustService,
                 principals: PrincipalService, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._audit = audit
        self._tpm_trust = tpm_trust
        self._principals = principals
        self._clock = clock

    # -- views -------------------------------------------------------------------------------

    def view(self, session: Session, row: Host) -> HostView:
        cluster = session.get(Cluster, row.cluster_id) if row.cluster_id else None
        state, reason = effective_state(row, cluster, self._clock())
        return HostView(row.id, row.name, state, reason, cluster.name if cluster else None,
                        json.loads(row.facts), row.ek_fingerprint, row.enrolled_at,
                        row.approved_by, row.last_attested_at, row.binding_key_thumbprint)

    def _find(self, session: Session, name: str) -> Host:
        row = session.scalars(select(Host).where(Host.name == name)).first()
        if row is None:
            row = session.get(Host, name)  # a host may also be named by its id
        if row is None:
            raise NotFound(f"no host named {name[:128]!r}")
        return row

    # -- join tokens (infra-admin) -----------------------------------------------------------

    def create_join_token(self, caller: Caller, request_id: str, *, cluster: str,
                          lifetime: timedelta, description: str = "") -> IssuedJoinToken:
        role = authorize(caller, Permission.HOST_MANAGE)
        if not timedelta(minutes=1) <= lifetime <= timedelta(days=30):
            raise UsageError("a join token lives between one minute and 30 days")
        made = new_token(JOIN_TOKEN)
        now = self._clock()
        with self._db.session() as session:
            target = find_cluster(session, cluster)
            row = JoinToken(id=made.token_id, secret_hash=made.secret_hash,
                            cluster_id=target.id, description=description[:512],
                            created_at=now, created_by=caller.name, expires_at=now + lifetime)
            session.add(row)
            self._audit.record(session, principal=caller.name, role=role,
                               action="host.join-token.create", target=cluster,
                               outcome="success", request_id=request_id,
                               details={"token_id": made.token_id,
                                        "expires_at": row.expires_at.isoformat()})
            return IssuedJoinToken(_join_view(row, target.name), made.token)

    def list_join_tokens(self, caller: Caller) -> list[JoinTokenView]:
        authorize(caller, Permission.HOST_READ)
        with self._db.session(read_only=True) as session:
            rows = session.execute(select(JoinToken, Cluster.name)
                                   .join(Cluster, Cluster.id == JoinToken.cluster_id)
                                   .order_by(JoinToken.created_at))
            return [_join_view(row, cluster) for row, cluster in rows]

    def revoke_join_token(self, caller: Caller, request_id: str, token_id: str) -> JoinTokenView:
        role = authorize(caller, Permission.HOST_MANAGE)
        with self._db.session() as session:
            row = session.get(JoinToken, token_id)
            if row is None:
                raise NotFound(f"no join token with id {token_id[:32]!r}")
            if row.revoked_at is None:
                row.revoked_at = self._clock()
            cluster = session.get(Cluster, row.cluster_id)
            self._audit.record(session, principal=caller.name, role=role,
                               action="host.join-token.revoke", target=token_id,
                               outcome="success", request_id=request_id)
            return _join_view(row, cluster.name if cluster else "-")

    def _check_join_token(self, session: Session, token: str, now: datetime) -> JoinToken:
        """The join token's row if it may be used now; JoinTokenRefused with why otherwise."""
        parts = JOIN_TOKEN.split(token)
        if parts is None:
            raise JoinTokenRefused("the join token is not valid")
        row = session.get(JoinToken, parts[0])
        if not JOIN_TOKEN.matches(row.secret_hash if row else None, *parts) or row is None:
            raise JoinTokenRefused("the join token is not valid")
        if row.revoked_at is not None:
            raise JoinTokenRefused(f"join token {row.id} was revoked")
        if row.used_at is not None:
            raise JoinTokenRefused(f"join token {row.id} was already used")
        if row.expires_at <= now:
            raise JoinTokenRefused(f"join token {row.id} expired at {row.expires_at.isoformat()}")
        return row

    # -- enrollment (the host's agent; no caller: the EK and the join token vouch) -------------

    def _refuse(self, request_id: str, source: str, action: str, target: str,
                error: Exception) -> None:
        with self._db.session() as session:
            self._audit.record(session, principal="-", role="host-agent", action=action,
                               target=target, outcome="denied", request_id=request_id,
                               details={"reason": str(error)[:512], "source": source,
                                        "type": getattr(error, "error_type", "error")})

    def _check_ek(self, session: Session, request: EnrollmentRequest,
                  now: datetime) -> tuple[TpmPublic, str | None]:
        """Step 1: the EK is a genuine TPM's. Returns the EK and its certificate (PEM)."""
        ek = parse_tpm2b_public(request.ek_public)
        settings = self._tpm_trust.current_settings(session)
        if request.ek_certificate is not None:
            certificate = load_certificate(request.ek_certificate)
            intermediates = [load_certificate(raw) for raw in request.ek_intermediates]
            verify_ek_certificate(certificate, self._tpm_trust.trusted_ca_certificates(session),
                                  at=now, intermediates=intermediates)
            ek_matches_certificate(ek, certificate)
            return ek, certificate.public_bytes(serialization.Encoding.PEM).decode()
        # no certificate: the settings decide (TpmSettings says how)
        if settings.require_ek_certificate:
            raise CertificateError("no EK certificate was presented, and tpm-settings require "
                                   "one (require-ek-certificate)")
        if settings.allow_ek_allowlist:
            fingerprint = public_key_fingerprint(ek.public_key)
            if session.get(AllowedEk, fingerprint) is None:
                raise CertificateError(f"no EK certificate was presented and EK "
                                       f"{fingerprint[:16]}… is not on the allow-list")
        return ek, None

    def start_enrollment(self, request_id: str, source: str,
                         request: EnrollmentRequest) -> EnrollmentChallenge:
        """Steps 1-2, then MakeCredential (step 3 is `activate`)."""
        check_name("host", request.hostname)
        now = self._clock()
        try:
            with self._db.session() as session:
                ek, ek_pem = self._check_ek(session, request, now)
                ak = parse_tpm2b_public(request.ak_public)
                check_ak_attributes(ak)
                join_token_id = None
                if request.join_token is not None:
                    join_token_id = self._check_join_token(session, request.join_token, now).id
                secret = secrets.token_bytes(_SECRET_BYTES)
                credential = make_credential(ek, ak.name, secret)
                # the allow-list's fingerprint, so one EK has one name everywhere
                fingerprint = public_key_fingerprint(ek.public_key)
                # expired enrollments are dropped here, so the table stays small
                session.execute(delete(Enrollment).where(Enrollment.expires_at < now))
                row = Enrollment(
                    id=str(uuid.uuid4()), ek_fingerprint=fingerprint,
                    ek_public=request.ek_public, ek_certificate_pem=ek_pem,
                    ak_public=request.ak_public, ak_qualified_name=ak_qualified_name(ek, ak),
                    hostname=request.hostname, facts=json.dumps(request.facts, sort_keys=True),
                    join_token_id=join_token_id,
                    secret_hash=hashlib.sha256(secret).hexdigest(),
                    created_at=now, expires_at=now + ENROLLMENT_LIFETIME)
                session.add(row)
                return EnrollmentChallenge(row.id, credential.credential_blob,
                                           credential.encrypted_secret, row.expires_at)
        except (EvidenceError, JoinTokenRefused) as error:
            self._refuse(request_id, source, "host.enroll", request.hostname, error)
            raise

    def activate(self, request_id: str, source: str, enrollment_id: str,
                 secret: bytes) -> EnrollmentResult:
        """Step 3: the host returned the secret; register the AK, join the cluster."""
        now = self._clock()
        target = enrollment_id[:64]
        try:
            with self._db.session() as session:
                enrollment = session.get(Enrollment, enrollment_id)
                if enrollment is None or enrollment.expires_at <= now:
                    raise ActivationFailed("no such enrollment, or it expired: enroll again")
                target = enrollment.hostname
                # one attempt: a wrong answer ends the enrollment
                session.delete(enrollment)
                if not hmac.compare_digest(hashlib.sha256(secret).hexdigest(),
                                           enrollment.secret_hash):
                    raise ActivationFailed("the secret does not match: the AK is not in the TPM "
                                           "of the EK presented (ActivateCredential failed)")
                result = self._register(session, request_id, enrollment, now)
        except (ActivationFailed, JoinTokenRefused) as error:
            if isinstance(error, ActivationFailed):
                # the enrollment is consumed even though the caller's transaction rolled back
                with self._db.session() as session:
                    session.execute(delete(Enrollment).where(Enrollment.id == enrollment_id))
            self._refuse(request_id, source, "host.enroll", target, error)
            raise
        return result

    def _register(self, session: Session, request_id: str, enrollment: Enrollment,
                  now: datetime) -> EnrollmentResult:
        host_id = host_id_for(enrollment.ek_fingerprint)
        cluster_id: str | None = None
        if enrollment.join_token_id is not None:
            # single use across replicas: only one UPDATE can see used_at still empty
            consumed = session.execute(
                update(JoinToken)
                .where(JoinToken.id == enrollment.join_token_id, JoinToken.used_at.is_(None),
                       JoinToken.revoked_at.is_(None), JoinToken.expires_at > now)
                .values(used_at=now, used_by_host=host_id)
                .returning(JoinToken.cluster_id)).first()
            if consumed is None:
                raise JoinTokenRefused(f"join token {enrollment.join_token_id} was already "
                                       "used, revoked or expired")
            cluster_id = consumed[0]
        host = session.get(Host, host_id)
        if host is None:
            principal = self._principals.new_host_principal(session, host_id)
            host = Host(id=host_id, name=self._free_name(session, enrollment.hostname, host_id),
                        ek_fingerprint=enrollment.ek_fingerprint, principal_id=principal.id,
                        cluster_id=cluster_id, state_reason="", enrolled_at=now)
            session.add(host)
            action = "host.enroll"
        else:
            principal = session.get_one(Principal, host.principal_id)
            if principal.revoked_at is not None and cluster_id is None:
                # a revoked host does not let itself back in: it waits for a join token or
                # an infra-admin's approval like a new one
                host.cluster_id = None
            principal.revoked_at = None
            # a re-enrolled host gets a new credential; the old ones stop working
            session.execute(update(ApiToken).where(ApiToken.principal_id == principal.id,
                                                   ApiToken.revoked_at.is_(None))
                            .values(revoked_at=now))
            if cluster_id is not None:
                host.cluster_id = cluster_id
            # a new AK starts a new clock history: after a TPM clear (the way to recover from
            # one is to enroll again) clock and counters restart from zero
            host.last_clock = host.last_reset_count = host.last_restart_count = None
            host.enrolled_at = now
            # a new AK: the binding key must be certified by it again
            host.binding_key_public = None
            host.binding_key_thumbprint = None
            action = "host.re-enroll"
        host.ek_public = enrollment.ek_public
        host.ek_certificate_pem = enrollment.ek_certificate_pem
        host.ak_public = enrollment.ak_public
        host.ak_qualified_name = enrollment.ak_qualified_name
        host.facts = enrollment.facts
        host.state = "enrolled" if host.cluster_id is not None else "pending"
        host.state_reason = ("" if host.cluster_id is not None
                             else "waiting for an infra-admin to approve it into a cluster")
        session.flush()
        credential = self._principals.issue_host_credential(session, principal)
        view = self.view(session, host)
        self._audit.record(session, principal=host_id, role=Role.HOST.value, action=action,
                           target=host.name, outcome="success", request_id=request_id,
                           details={"ek_fingerprint": host.ek_fingerprint,
                                    # none: the allow-list or trust on first use let it in
                                    "ek_certificate": ("checked" if enrollment.ek_certificate_pem
                                                       else "none"),
                                    "cluster": view.cluster or "-",
                                    "join_token_id": enrollment.join_token_id or "-",
                                    "state": host.state})
        return EnrollmentResult(view, credential)

    def _free_name(self, session: Session, hostname: str, host_id: str) -> str:
        taken = session.scalars(select(Host.id).where(Host.name == hostname)).first()
        return hostname if taken is None else f"{hostname[:100]}-{host_id[2:10]}"

    # -- hosts (infra-admin writes; trust-admin and auditor read) ------------------------------

    def approve(self, caller: Caller, request_id: str, name: str, cluster: str) -> HostView:
        role = authorize(caller, Permission.HOST_MANAGE)
        with self._db.session() as session:
            host = self._find(session, name)
            target = find_cluster(session, cluster)
            if host.cluster_id == target.id and host.state != "pending":
                raise Conflict(f"host {host.name} is already in cluster {cluster}")
            host.cluster_id = target.id
            host.approved_by = caller.name
            host.state, host.state_reason = "enrolled", ""
            self._audit.record(session, principal=caller.name, role=role,
                               action="host.approve", target=host.name, outcome="success",
                               request_id=request_id, details={"cluster": cluster})
            session.flush()
            return self.view(session, host)

    def list_all(self, caller: Caller) -> list[HostView]:
        authorize(caller, Permission.HOST_READ)
        with self._db.session(read_only=True) as session:
            return [self.view(session, row)
                    for row in session.scalars(select(Host).order_by(Host.name))]

    def get(self, caller: Caller, name: str) -> HostView:
        authorize(caller, Permission.HOST_READ)
        with self._db.session(read_only=True) as session:
            return self.view(session, self._find(session, name))

    def history(self, caller: Caller, name: str, limit: int = 50) -> list[AttestationView]:
        authorize(caller, Permission.HOST_READ)
        with self._db.session(read_only=True) as session:
            host = self._find(session, name)
            rows = session.scalars(select(AttestationRecord)
                                   .where(AttestationRecord.host_id == host.id)
                                   .order_by(AttestationRecord.id.desc()).limit(limit))
            return [AttestationView(row.at, row.status, row.baseline, row.reason, row.rebooted,
                                    row.pcr_digest, row.token_id, _report(row.report))
                    for row in rows]

    def delete(self, caller: Caller, request_id: str, name: str) -> HostView:
        """Forget a host: its credential stops working; enrolling again starts afresh."""
        role = authorize(caller, Permission.HOST_MANAGE)
        now = self._clock()
        with self._db.session() as session:
            host = self._find(session, name)
            view = self.view(session, host)
            principal = session.get_one(Principal, host.principal_id)
            principal.revoked_at = now
            session.execute(update(ApiToken).where(ApiToken.principal_id == principal.id,
                                                   ApiToken.revoked_at.is_(None))
                            .values(revoked_at=now))
            session.delete(host)
            self._audit.record(session, principal=caller.name, role=role,
                               action="host.delete", target=view.name, outcome="success",
                               request_id=request_id, details={"host_id": view.id})
            return view

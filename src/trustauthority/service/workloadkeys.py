"""Workload keys and attested key release (vTA's scheme, for any fleet).

A workload key (KEK, AES-256) is made here, wrapped at once under the provider's primary key on
a key server, and handed out only as its wrapped blob (`keyrelease.blob`); the service keeps the
blob too, never the key. Creating one is an infra-admin's act, on a provider granted to the
workload's cluster. Nothing is stored until the key server has wrapped the key, and the key is
stored only wrapped: a crash on the way leaves either nothing or a complete blob.

Release (`prepare_release`, `unwrap_for_release`, `complete_release`), fail-closed, in this
order: the blob parses; it is the workload asked for; the attestation token verifies
(signature against our JWKS, `exp`, issuer); it is bound (`cnf`)
to the calling host's certified binding key and issued to that host; the host is trusted *now*
in the store (an untrusted or stale host is refused even with an unexpired token); the key is
ours, of the host's cluster, and the cluster holds a grant on the provider; the primary key
version is not retired. Then the key server unwraps (which authenticates the blob's header),
and the key goes back as a JWE only the host's TPM can open. Every release and refusal is
audited — with the reason, never the key.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, cast

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from trustauthority.errors import (
    Conflict,
    KeyReleaseRefused,
    KeyServerUnavailable,
    NotFound,
    PermissionDenied,
    PolicyViolation,
    TokenBindingMismatch,
    TokenKeyUnknown,
    TokenRejected,
    UsageError,
    WrappedKeyInvalid,
)
from trustauthority.keyrelease.blob import WrappedKeyBlob, header_aad, parse_blob
from trustauthority.keyrelease.jwe import encrypt_to_binding_key
from trustauthority.keyserver import KEY_BYTES, KeyServer
from trustauthority.service.audit import AuditLog
from trustauthority.service.authz import Caller, Permission, authorize
from trustauthority.service.clusters import find_cluster
from trustauthority.service.hosts import state_now
from trustauthority.service.providers import ProviderServers, find_provider, server_rows
from trustauthority.store.db import Database
from trustauthority.store.models import (
    Cluster,
    ClusterProviderGrant,
    Host,
    KeyProvider,
    KeyServerRecord,
    PrimaryKeyVersion,
    WorkloadKey,
    table_of,
)
from trustauthority.token import AttestationClaims, Jwks, check_still_valid, verify
from trustauthority.tpm.public import parse_public

#: how long the JWKS is reused for token checks (retired keys leave it a day after rotation)
JWKS_CACHE_SECONDS = 30.0
#: verified attestation tokens remembered (about one per host of the fleet)
VERIFIED_TOKENS_KEPT = 10_000
_WORKLOAD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/@")


_HOSTS = table_of(Host).c
_CLUSTERS = table_of(Cluster).c
_KEYS = table_of(WorkloadKey).c
_PROVIDERS = table_of(KeyProvider).c
_GRANTS = table_of(ClusterProviderGrant).c
_VERSIONS = table_of(PrimaryKeyVersion).c
#: everything a release decides on, in one prebuilt statement (a release is the hot path of
#: the key service): the caller's host and cluster, the blob's key, its provider, the cluster's
#: grant on it and the primary key version named by the blob. Missing parts come back NULL.
_RELEASE_FACTS = (
    select(_HOSTS.id.label("host_id"), _HOSTS.name.label("host_name"), _HOSTS.state,
           _HOSTS.state_reason, _HOSTS.last_attested_at,
           _HOSTS.cluster_id.label("host_cluster_id"), _HOSTS.binding_key_public,
           _HOSTS.binding_key_thumbprint, _CLUSTERS.name.label("cluster_name"),
           _CLUSTERS.attestation_interval_seconds, _KEYS.workload.label("key_workload"),
           _KEYS.provider_id.label("key_provider_id"), _KEYS.cluster_id.label("key_cluster_id"),
           _KEYS.primary_version.label("key_version"), _PROVIDERS.name.label("provider_name"),
           _GRANTS.cluster_id.label("granted"),
           _VERSIONS.key_id.label("version_key_id"), _VERSIONS.state.label("version_state"))
    .select_from(
        table_of(Host)
        .outerjoin(table_of(Cluster), _CLUSTERS.id == _HOSTS.cluster_id)
        .outerjoin(table_of(WorkloadKey), _KEYS.id == bindparam("key_id"))
        .outerjoin(table_of(KeyProvider), _PROVIDERS.id == _KEYS.provider_id)
        .outerjoin(table_of(ClusterProviderGrant),
                   (_GRANTS.cluster_id == _HOSTS.cluster_id)
                   & (_GRANTS.provider_id == _KEYS.provider_id))
        .outerjoin(table_of(PrimaryKeyVersion),
                   (_VERSIONS.provider_id == _KEYS.provider_id)
                   & (_VERSIONS.version == bindparam("version"))))
    .where(_HOSTS.principal_id == bindparam("principal_id")))
_STORED_BLOB = select(_KEYS.blob).where(_KEYS.id == bindparam("key_id"))
_MARK_RELEASED = (update(table_of(WorkloadKey)).where(_KEYS.id == bindparam("key_id"))
                  .values(last_released_at=bindparam("now")))


class _ReleaseFacts(Protocol):
    """A row of `_RELEASE_FACTS`."""

    host_id: str
    host_name: str
    state: str
    state_reason: str
    last_attested_at: datetime | None
    host_cluster_id: str | None
    binding_key_public: bytes | None
    binding_key_thumbprint: str | None
    cluster_name: str | None
    attestation_interval_seconds: int | None
    key_workload: str | None
    key_provider_id: str | None
    key_cluster_id: str | None
    key_version: int | None
    provider_name: str | None
    granted: str | None
    version_key_id: str | None
    version_state: str | None


@dataclass(frozen=True)
class WorkloadKeyView:
    id: str
    workload: str
    cluster: str
    provider: str
    primary_version: int
    blob: str
    created_at: datetime
    created_by: str
    rewrapped_at: datetime | None
    last_released_at: datetime | None
    state: str = "active"


@dataclass(frozen=True)
class Release:
    """A released key, as the host receives it: a JWE to its binding key."""

    jwe: str
    key_id: str
    workload: str
    provider: str
    primary_version: int
    #: the key's blob as stored now, when the one presented is older (a shallow rekey since):
    #: the same key, wrapped under a newer primary key version; None when they are the same
    current_blob: str | None = None


@dataclass(frozen=True)
class _Attempt:
    """Who asked for which workload's key: what a refusal is audited with. `context` grows as
    the checks learn more (host, provider, key id, token id)."""

    caller: Caller
    role: str
    request_id: str
    workload: str
    context: dict[str, str]


@dataclass(frozen=True)
class PendingRelease:
    """A release that passed every check but the key server's (`prepare_release`): what the
    next two steps need. It holds no key."""

    attempt: _Attempt
    parsed: WrappedKeyBlob
    servers: list[KeyServerRecord]
    primary_key_id: str
    provider_name: str
    binding_key: rsa.RSAPublicKey
    thumbprint: str
    current_blob: str | None


def check_workload(workload: str) -> str:
    if not 1 <= len(workload) <= 256 or not set(workload) <= _WORKLOAD_CHARS:
        raise UsageError("a workload id is 1 to 256 letters, digits and - _ . : / @")
    return workload


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class WorkloadKeyService:
    def __init__(self, db: Database, audit: AuditLog, servers: ProviderServers,
                 clock: Callable[[], datetime], *, jwks: Callable[[], Jwks],
                 issuer: str) -> None:
        self._db = db
        self._audit = audit
        self._servers = servers
        self._clock = clock
        self._jwks = jwks
        self._jwks_cache: tuple[float, Jwks] | None = None
        self._verified_tokens: dict[str, tuple[Jwks, AttestationClaims]] = {}
        self._issuer = issuer

    # -- views -------------------------------------------------------------------------------

    @staticmethod
    def _view(session: Session, row: WorkloadKey) -> WorkloadKeyView:
        cluster = session.get(Cluster, row.cluster_id)
        provider = session.get(KeyProvider, row.provider_id)
        return WorkloadKeyView(row.id, row.workload, cluster.name if cluster else "-",
                               provider.name if provider else "-", row.primary_version,
                               row.blob, row.created_at, row.created_by, row.rewrapped_at,
                               row.last_released_at, row.state)

    def list_all(self, caller: Caller, *, provider: str | None = None,
                 cluster: str | None = None) -> list[WorkloadKeyView]:
        authorize(caller, Permission.WORKLOAD_KEY_READ)
        with self._db.session(read_only=True) as session:
            query = select(WorkloadKey).order_by(WorkloadKey.workload)
            if provider is not None:
                query = query.where(WorkloadKey.provider_id == find_provider(session,
                                                                             provider).id)
            if cluster is not None:
                query = query.where(WorkloadKey.cluster_id == find_cluster(session, cluster).id)
            return [self._view(session, row) for row in session.scalars(query)]

    def get(self, caller: Caller, workload: str) -> WorkloadKeyView:
        authorize(caller, Permission.WORKLOAD_KEY_READ)
        with self._db.session(read_only=True) as session:
            return self._view(session, self._find(session, workload))

    @staticmethod
    def _find(session: Session, workload: str) -> WorkloadKey:
        """A key by its id, or a workload's active key."""
        row = session.get(WorkloadKey, workload) or session.scalars(
            select(WorkloadKey).where(WorkloadKey.workload == workload,
                                      WorkloadKey.state == "active")).first()
        if row is None:
            raise NotFound(f"no key for workload {workload[:256]!r}")
        return row

    @staticmethod
    def _has_active(session: Session, workload: str) -> bool:
        return session.scalars(select(WorkloadKey.id).where(
            WorkloadKey.workload == workload, WorkloadKey.state == "active")).first() is not None

    # -- create and rewrap -------------------------------------------------------------------

    def create(self, caller: Caller, request_id: str, *, provider: str, workload: str,
               cluster: str) -> WorkloadKeyView:
        role = authorize(caller, Permission.WORKLOAD_KEY_MANAGE)
        check_workload(workload)
        with self._db.session(read_only=True) as session:
            provider_row = find_provider(session, provider)
            cluster_row = find_cluster(session, cluster)
            if session.get(ClusterProviderGrant, (cluster_row.id, provider_row.id)) is None:
                raise PolicyViolation(f"cluster {cluster} has no grant on provider {provider}: "
                                      "a trust-admin grants it (cluster grant-provider)")
            if self._has_active(session, workload):
                raise Conflict(f"workload {workload} already has a key (`key rotate` makes a "
                               "new one)")
            version = self._current_version(session, provider_row.id)
            servers = server_rows(session, provider_row.id)
        return self._make(caller, role, request_id, action="key.create", workload=workload,
                          provider=provider_row, cluster=cluster_row, version=version,
                          servers=servers, replaces=None)

    def _make(self, caller: Caller, role: str, request_id: str, *, action: str, workload: str,
              provider: KeyProvider, cluster: Cluster, version: PrimaryKeyVersion,
              servers: list[KeyServerRecord], replaces: str | None) -> WorkloadKeyView:
        """A new KEK, wrapped on a key server, then (and only then) stored as its blob."""
        key_id = str(uuid.uuid4())
        kek = os.urandom(KEY_BYTES)
        aad = header_aad(key_id, workload, provider.id, version.version, provider.kind)
        wrapped, server = self._servers.run(
            provider.name, servers, lambda s: s.wrap(version.key_id, kek, aad))
        blob = WrappedKeyBlob(key_id, workload, provider.id, version.version,
                              provider.kind, wrapped).encode()
        with self._db.session() as session:
            active = session.scalars(select(WorkloadKey).where(
                WorkloadKey.workload == workload, WorkloadKey.state == "active")).first()
            if (active.id if active is not None else None) != replaces:
                raise Conflict(f"the keys of workload {workload} changed meanwhile: try again")
            if active is not None:
                active.state = "superseded"
            row = WorkloadKey(id=key_id, workload=workload, cluster_id=cluster.id,
                              provider_id=provider.id, primary_version=version.version,
                              blob=blob, created_at=self._clock(), created_by=caller.name,
                              state="active")
            session.add(row)
            details: dict[str, object] = {"key_id": key_id, "provider": provider.name,
                                          "cluster": cluster.name, "version": version.version,
                                          "key_server": server}
            if replaces is not None:
                details["supersedes"] = replaces
            self._audit.record(session, principal=caller.name, role=role, action=action,
                               target=workload, outcome="success", request_id=request_id,
                               details=details)
            session.flush()
            return self._view(session, row)

    def rotate(self, caller: Caller, request_id: str, workload: str) -> WorkloadKeyView:
        """Deep rekey, step one: a new key for the workload on the same provider. The previous
        one is superseded — still released, so hosts can re-encrypt their data under the new
        one (`agent workload rekey`) — until it is deleted (`key delete KEY_ID`)."""
        role = authorize(caller, Permission.WORKLOAD_KEY_MANAGE)
        with self._db.session(read_only=True) as session:
            current = self._find(session, workload)
            if current.state != "active":
                raise Conflict(f"key {current.id} is already superseded")
            provider_row = session.get(KeyProvider, current.provider_id)
            cluster_row = session.get(Cluster, current.cluster_id)
            assert provider_row is not None  # noqa: S101 - a foreign key
            assert cluster_row is not None  # noqa: S101 - a foreign key
            if session.get(ClusterProviderGrant, (cluster_row.id, provider_row.id)) is None:
                raise PolicyViolation(f"cluster {cluster_row.name} has no grant on provider "
                                      f"{provider_row.name}")
            version = self._current_version(session, provider_row.id)
            servers = server_rows(session, provider_row.id)
        return self._make(caller, role, request_id, action="key.rotate",
                          workload=current.workload, provider=provider_row,
                          cluster=cluster_row, version=version, servers=servers,
                          replaces=current.id)

    @staticmethod
    def _current_version(session: Session, provider_id: str) -> PrimaryKeyVersion:
        version = session.scalars(
            select(PrimaryKeyVersion).where(PrimaryKeyVersion.provider_id == provider_id,
                                            PrimaryKeyVersion.state == "active")
            .order_by(PrimaryKeyVersion.version.desc())).first()
        if version is None:
            raise Conflict("the provider has no active primary key version")
        return version

    def rewrap(self, caller: Caller, request_id: str, *, provider: str,
               workload: str | None = None) -> list[WorkloadKeyView]:
        """Shallow rekey: keys wrapped under older primary versions are re-wrapped under the
        current one; the keys themselves (and the data they protect) do not change."""
        role = authorize(caller, Permission.WORKLOAD_KEY_MANAGE)
        with self._db.session(read_only=True) as session:
            provider_row = find_provider(session, provider)
            current = self._current_version(session, provider_row.id)
            versions = {v.version: v for v in session.scalars(select(PrimaryKeyVersion).where(
                PrimaryKeyVersion.provider_id == provider_row.id))}
            servers = server_rows(session, provider_row.id)
            query = select(WorkloadKey).where(WorkloadKey.provider_id == provider_row.id,
                                              WorkloadKey.primary_version < current.version)
            if workload is not None:
                query = query.where(WorkloadKey.workload == workload)
            stale = [(row.id, row.workload, row.blob) for row in session.scalars(query)]
        done = []
        for key_id, name, text in stale:
            old = parse_blob(text)
            old_version = versions[old.primary_version]
            aad = header_aad(key_id, name, provider_row.id, current.version, provider_row.kind)

            def move(server: KeyServer, old: WrappedKeyBlob = old,
                     old_key_id: str = old_version.key_id, aad: bytes = aad) -> bytes:
                return server.wrap(current.key_id,
                                   server.unwrap(old_key_id, old.wrapped, old.aad), aad)

            wrapped, _ = self._servers.run(provider, servers, move)
            blob = WrappedKeyBlob(key_id, name, provider_row.id, current.version,
                                  provider_row.kind, wrapped).encode()
            with self._db.session() as session:
                row = session.get(WorkloadKey, key_id)
                if row is None or row.blob != text:
                    continue  # removed or rewrapped by someone else meanwhile
                row.blob, row.primary_version = blob, current.version
                row.rewrapped_at = self._clock()
                self._audit.record(session, principal=caller.name, role=role,
                                   action="key.rewrap", target=name, outcome="success",
                                   request_id=request_id,
                                   details={"key_id": key_id, "from_version": old.primary_version,
                                            "to_version": current.version})
                session.flush()
                done.append(self._view(session, row))
        return done

    def delete(self, caller: Caller, request_id: str, workload: str) -> None:
        """Forget a workload's key: its blob opens no more (crypto-shredding of its data)."""
        role = authorize(caller, Permission.WORKLOAD_KEY_MANAGE)
        with self._db.session() as session:
            row = self._find(session, workload)
            session.delete(row)
            self._audit.record(session, principal=caller.name, role=role, action="key.delete",
                               target=row.workload, outcome="success", request_id=request_id,
                               details={"key_id": row.id})

    # -- attested release --------------------------------------------------------------------

    def _verify_token(self, token: str) -> AttestationClaims:
        """Verify against our JWKS, kept for a while: reading and parsing it from the store cost
        more than the rest of the token check. A kid we do not know yet (a key rotated on
        another replica) reloads it once before the token is refused.

        A host presents the same token for every release until it attests again, so a token
        verified under the JWKS in use is remembered (by its exact text, signature included);
        a remembered one is only checked for time again. A JWKS reload forgets them all.
        """
        now = time.monotonic()
        cached = self._jwks_cache
        if cached is None or now - cached[0] > JWKS_CACHE_SECONDS:
            cached = self._jwks_cache = (now, self._jwks())
        jwks = cached[1]
        remembered = self._verified_tokens.get(token)
        if remembered is not None and remembered[0] is jwks:
            check_still_valid(remembered[1], self._clock())
            return remembered[1]
        try:
            claims = verify(token, jwks, issuer=self._issuer, now=self._clock())
        except TokenKeyUnknown:
            self._jwks_cache = (now, jwks := self._jwks())
            claims = verify(token, jwks, issuer=self._issuer, now=self._clock())
        if len(self._verified_tokens) >= VERIFIED_TOKENS_KEPT:
            self._verified_tokens.clear()  # crude, and enough: hosts re-present within minutes
        self._verified_tokens[token] = (jwks, claims)
        return claims

    # A release runs in three steps, apart so that the API can put the key-server call (and
    # the record after it) in a thread and the checks where it runs other blocking work
    # (`api.offload.run_around_io`). Each audits its own refusal; only the last writes the
    # success.

    def prepare_release(self, caller: Caller, request_id: str, *, blob: str, workload: str,
                        token: str) -> PendingRelease:
        """Every check that needs no key server: the token, the host's state now, the grant,
        the blob's binding."""
        role = authorize(caller, Permission.KEY_RELEASE)
        attempt = _Attempt(caller, role, request_id, workload, {"workload": workload[:256]})
        with self._refusal_audited(attempt):
            return self._prepare(attempt, blob, token)

    def unwrap_for_release(self, pending: PendingRelease) -> tuple[bytes, str]:
        """The key, unwrapped on the first available key server of the provider (its name)."""
        with self._refusal_audited(pending.attempt):
            parsed, primary_key_id = pending.parsed, pending.primary_key_id
            return self._servers.run(pending.provider_name, pending.servers,
                                     lambda s: s.unwrap(primary_key_id, parsed.wrapped,
                                                        parsed.aad))

    def complete_release(self, pending: PendingRelease, unwrapped: tuple[bytes, str]) -> Release:
        """The key encrypted to the binding key, and the release on record."""
        kek, server = unwrapped
        parsed, attempt = pending.parsed, pending.attempt
        with self._refusal_audited(attempt):
            payload = json.dumps({"key": _b64url(kek), "key_id": parsed.key_id,
                                  "workload": parsed.workload}).encode()
            jwe = encrypt_to_binding_key(pending.binding_key, payload, pending.thumbprint)
            with self._db.writing() as session:
                session.execute(_MARK_RELEASED, {"key_id": parsed.key_id,
                                                 "now": self._clock()})
                self._audit.record(session, principal=attempt.caller.name, role=attempt.role,
                                   action="key.release", target=parsed.workload,
                                   outcome="success", request_id=attempt.request_id,
                                   details={**attempt.context,
                                            "version": str(parsed.primary_version),
                                            "key_server": server})
        return Release(jwe, parsed.key_id, parsed.workload, pending.provider_name,
                       parsed.primary_version, pending.current_blob)

    @contextmanager
    def _refusal_audited(self, attempt: _Attempt) -> Iterator[None]:
        try:
            yield
        except (KeyReleaseRefused, TokenRejected, WrappedKeyInvalid, PermissionDenied,
                KeyServerUnavailable) as failed:
            # a refusal is "denied"; when every key server of the provider failed (the 503)
            # nothing was released either, and the attempt is on record as a "failure"
            outcome = "failure" if isinstance(failed, KeyServerUnavailable) else "denied"
            with self._db.writing() as session:
                self._audit.record(session, principal=attempt.caller.name, role=attempt.role,
                                   action="key.release",
                                   target=attempt.workload[:256] or "-", outcome=outcome,
                                   request_id=attempt.request_id,
                                   details={**attempt.context, "error": failed.error_type,
                                            "reason": str(failed)[:500]})
            raise

    def _prepare(self, attempt: _Attempt, text: str, token: str) -> PendingRelease:
        caller, workload, context = attempt.caller, attempt.workload, attempt.context
        parsed = parse_blob(text)
        context["key_id"] = parsed.key_id[:64]
        if parsed.workload != workload:
            raise KeyReleaseRefused("the blob belongs to another workload than the one asked "
                                    "for")
        claims = self._verify_token(token)
        context["token_jti"] = claims.jti
        with self._db.session(read_only=True) as session:
            found = session.execute(_RELEASE_FACTS, {
                "principal_id": caller.principal_id, "key_id": parsed.key_id,
                "version": parsed.primary_version}).first()
            if found is None:
                raise KeyReleaseRefused(f"{caller.name} is not an enrolled host")
            facts = cast(_ReleaseFacts, found)
            context["host"] = facts.host_name
            if facts.binding_key_thumbprint is None or facts.binding_key_public is None \
                    or claims.cnf_jkt != facts.binding_key_thumbprint:
                raise TokenBindingMismatch("the token is bound (cnf) to another key than this "
                                           "host's certified binding key")
            if claims.sub != facts.host_id:
                raise KeyReleaseRefused("the token was issued to another host")
            state, reason = state_now(facts.state, facts.state_reason, facts.last_attested_at,
                                      facts.attestation_interval_seconds, self._clock())
            if state != "trusted" or not claims.trusted:
                raise KeyReleaseRefused(f"host {facts.host_name} is {state} now"
                                        + (f": {reason}" if reason else ""))
            if facts.key_workload != parsed.workload \
                    or facts.key_provider_id != parsed.provider_id:
                raise WrappedKeyInvalid("the blob names no workload key of this service")
            assert facts.provider_name is not None  # noqa: S101 - a foreign key
            context["provider"] = facts.provider_name
            if facts.host_cluster_id is None or facts.key_cluster_id != facts.host_cluster_id:
                raise KeyReleaseRefused(f"workload {workload} belongs to another cluster than "
                                        f"host {facts.host_name}'s")
            if facts.granted is None:
                raise KeyReleaseRefused(f"cluster {facts.cluster_name} has no grant on provider "
                                        f"{facts.provider_name}")
            if facts.version_key_id is None or facts.version_state != "active":
                raise WrappedKeyInvalid(f"the blob was wrapped under primary key version "
                                        f"{parsed.primary_version}, which is retired or unknown")
            servers = server_rows(session, parsed.provider_id)
            current_blob = None
            if facts.key_version is not None and facts.key_version > parsed.primary_version:
                # rewrapped since this blob (never offered backwards, e.g. after a restore)
                current_blob = session.execute(_STORED_BLOB,
                                               {"key_id": parsed.key_id}).scalar_one_or_none()
                context["stored_version"] = str(facts.key_version)
        binding_key = parse_public(facts.binding_key_public).public_key
        # refused before the key server is asked: nothing to encrypt the key to
        if not isinstance(binding_key, rsa.RSAPublicKey):
            raise KeyReleaseRefused("the host's binding key is not an RSA key")
        return PendingRelease(attempt, parsed, servers, facts.version_key_id,
                              facts.provider_name, binding_key, facts.binding_key_thumbprint,
                              current_blob)

"""Trusted key providers (trust-admin): key servers tried in order, a versioned primary key that
lives on them, and the clusters granted its keys.

A provider's servers hold the same primary key under the same id (a replicated KMIP cluster, or
HSMs sharing a key): `ProviderServers.run` tries them in order and moves to the next only when
one is unavailable (`KeyServerUnavailable`); a blob that does not authenticate stops at once,
since no other server would open it. When all are down the caller gets one
`KeyServerUnavailable` (HTTP 503) and nothing is changed. Servers come back by themselves: the
adapters reconnect on the next call.

Network calls to key servers happen outside database transactions, so a slow key server never
holds a lock in the store.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from trustauthority.errors import Conflict, KeyServerUnavailable, NotFound, UsageError
from trustauthority.keyserver import HealthReport, KeyServer
from trustauthority.service.audit import AuditLog
from trustauthority.service.authz import Caller, Permission, authorize
from trustauthority.service.clusters import find_cluster
from trustauthority.service.keyservers import KeyServerRegistry, find_key_server
from trustauthority.service.names import check_name
from trustauthority.store.db import Database
from trustauthority.store.models import (
    Cluster,
    ClusterProviderGrant,
    KeyProvider,
    KeyServerRecord,
    PrimaryKeyVersion,
    ProviderServer,
    WorkloadKey,
)

log = logging.getLogger("trustauthority.providers")
T = TypeVar("T")


@dataclass(frozen=True)
class ServerHealth:
    name: str
    state: str  # healthy | unhealthy | unknown
    detail: str
    checked_at: datetime | None


@dataclass(frozen=True)
class PrimaryVersionView:
    version: int
    key_id: str
    state: str
    created_at: datetime
    keys: int  # workload keys wrapped under it


@dataclass(frozen=True)
class ProviderView:
    id: str
    name: str
    kind: str
    description: str
    servers: tuple[ServerHealth, ...]
    versions: tuple[PrimaryVersionView, ...]
    clusters: tuple[str, ...]
    created_at: datetime
    created_by: str

    @property
    def current_version(self) -> int:
        return max(v.version for v in self.versions if v.state == "active")

    @property
    def health(self) -> str:
        states = {server.state for server in self.servers}
        if states == {"healthy"}:
            return "healthy"
        if "healthy" in states:
            return "degraded"
        return "unhealthy" if "unhealthy" in states else "unknown"


def find_provider(session: Session, name: str) -> KeyProvider:
    row = session.scalars(select(KeyProvider).where(KeyProvider.name == name)).first()
    if row is None:
        raise NotFound(f"no key provider named {name[:128]!r}")
    return row


#: prebuilt: every key release reads it
_SERVERS_OF = (select(KeyServerRecord)
               .join(ProviderServer, ProviderServer.key_server_id == KeyServerRecord.id)
               .where(ProviderServer.provider_id == bindparam("provider_id"))
               .order_by(ProviderServer.position))


def server_rows(session: Session, provider_id: str) -> list[KeyServerRecord]:
    """The provider's key servers in failover order."""
    return list(session.scalars(_SERVERS_OF, {"provider_id": provider_id}))


class ProviderServers:
    """Failover across a provider's key servers, with each server's outcome remembered."""

    def __init__(self, registry: KeyServerRegistry) -> None:
        self._registry = registry

    def run(self, provider_name: str, servers: list[KeyServerRecord],
            operation: Callable[[KeyServer], T]) -> tuple[T, str]:
        """`operation` on the first server that is available; its result and the server's name.
        """
        failures = []
        for row in servers:
            try:
                result = operation(self._registry.adapter(row))
            except KeyServerUnavailable as error:
                detail = f"{row.name}: {error}"[:300]
                self._registry.note(row.id, healthy=False, detail=detail)
                log.warning("key server unavailable, trying the next one: %s", detail)
                failures.append(detail)
                continue
            self._registry.note(row.id, healthy=True, detail="ok")
            return result, row.name
        raise KeyServerUnavailable(
            f"no key server of provider {provider_name} is available ("
            + "; ".join(failures) + ")" if failures
            else f"provider {provider_name} has no key servers")

    def health(self, row: KeyServerRecord, *, live: bool) -> ServerHealth:
        if live:
            report: HealthReport = self._registry.adapter(row).check()
            self._registry.note(row.id, healthy=report.healthy, detail=report.detail)
        entry = self._registry.last_health(row.id)
        if entry is None:
            return ServerHealth(row.name, "unknown", "not used yet by this replica", None)
        return ServerHealth(row.name, "healthy" if entry.healthy else "unhealthy",
                            entry.detail, entry.at)


class ProviderService:
    def __init__(self, db: Database, audit: AuditLog, registry: KeyServerRegistry,
                 clock: Callable[[], datetime]) -> None:
        self._db = db
        self._audit = audit
        self._registry = registry
        self.servers = ProviderServers(registry)
        self._clock = clock

    # -- views -------------------------------------------------------------------------------

    def _view(self, session: Session, row: KeyProvider) -> ProviderView:
        """The provider with each server's health as last seen by this replica."""
        counts = dict(session.execute(
            select(WorkloadKey.primary_version, func.count()).where(
                WorkloadKey.provider_id == row.id).group_by(WorkloadKey.primary_version)).all())
        versions = tuple(
            PrimaryVersionView(v.version, v.key_id, v.state, v.created_at, counts.get(v.version, 0))
            for v in session.scalars(select(PrimaryKeyVersion).where(
                PrimaryKeyVersion.provider_id == row.id).order_by(PrimaryKeyVersion.version)))
        clusters = tuple(session.scalars(
            select(Cluster.name).join(ClusterProviderGrant,
                                      ClusterProviderGrant.cluster_id == Cluster.id)
            .where(ClusterProviderGrant.provider_id == row.id).order_by(Cluster.name)))
        servers = tuple(self.servers.health(server, live=False)
                        for server in server_rows(session, row.id))
        return ProviderView(row.id, row.name, row.kind, row.description, servers, versions,
                            clusters, row.created_at, row.created_by)

    def list_all(self, caller: Caller) -> list[ProviderView]:
        authorize(caller, Permission.TRUST_READ)
        with self._db.session(read_only=True) as session:
            return [self._view(session, row) for row in
                    session.scalars(select(KeyProvider).order_by(KeyProvider.name))]

    def get(self, caller: Caller, name: str, *, live: bool = True) -> ProviderView:
        """The provider, with each server checked now (`live`) or as last seen."""
        authorize(caller, Permission.TRUST_READ)
        with self._db.session(read_only=True) as session:
            row = find_provider(session, name)
            view, servers = self._view(session, row), server_rows(session, row.id)
        if live:  # the checks dial the servers: outside the transaction
            view = dataclasses.replace(view, servers=tuple(
                self.servers.health(server, live=True) for server in servers))
        return view

    # -- changes -----------------------------------------------------------------------------

    def create(self, caller: Caller, request_id: str, *, name: str, servers: list[str],
               primary_key: str | None, create_primary_key: bool = False,
               description: str = "") -> ProviderView:
        role = authorize(caller, Permission.KEY_PROVIDER_MANAGE)
        check_name("key provider", name)
        if not servers or len(servers) > 8 or len(set(servers)) != len(servers):
            raise UsageError("a provider needs one to eight distinct key servers")
        if (primary_key is None) == (not create_primary_key):
            raise UsageError("name the primary key (--primary-key ID) or create one "
                             "(--create-primary-key), not both")
        with self._db.session(read_only=True) as session:
            if session.scalars(select(KeyProvider.id).where(KeyProvider.name == name)).first():
                raise Conflict(f"a key provider named {name!r} already exists")
            rows = [find_key_server(session, server) for server in servers]
        kinds = {row.kind for row in rows}
        if len(kinds) != 1:
            raise UsageError("the key servers of a provider must all be KMIP or all PKCS#11")
        if create_primary_key:
            key_id, _ = self.servers.run(name, rows,
                                         lambda server: server.create_primary_key(f"ta-{name}-v1"))
        else:
            assert primary_key is not None  # noqa: S101 - checked above
            key_id = primary_key
        self._check_primary_key(rows, key_id)
        with self._db.session() as session:
            if session.scalars(select(KeyProvider.id).where(KeyProvider.name == name)).first():
                raise Conflict(f"a key provider named {name!r} already exists")
            row = KeyProvider(id=str(uuid.uuid4()), name=name, kind=kinds.pop(),
                              description=description[:512], created_at=self._clock(),
                              created_by=caller.name)
            session.add(row)
            session.flush()
            for position, server in enumerate(rows):
                session.add(ProviderServer(provider_id=row.id, position=position,
                                           key_server_id=server.id))
            session.add(PrimaryKeyVersion(provider_id=row.id, version=1, key_id=key_id,
                                          state="active", created_at=self._clock()))
            self._audit.record(session, principal=caller.name, role=role,
                               action="provider.create", target=name, outcome="success",
                               request_id=request_id,
                               details={"servers": servers, "primary_key": key_id,
                                        "created_primary_key": create_primary_key})
            session.flush()
            return self._view(session, row)

    def _check_primary_key(self, rows: list[KeyServerRecord], key_id: str) -> None:
        """The primary key must exist, usable, on every server of the provider."""
        for row in rows:
            try:
                info = self._registry.adapter(row).describe_key(key_id)
            except NotFound:
                raise UsageError(f"key server {row.name} has no key {key_id[:256]!r}: create it "
                                 "there first, or use --create-primary-key") from None
            except KeyServerUnavailable as error:
                raise KeyServerUnavailable(f"cannot check the primary key on {row.name}: "
                                           f"{error}") from None
            if not info.usable:
                raise UsageError(f"key {key_id[:256]!r} on {row.name} cannot be a primary key: "
                                 f"{info.detail}")

    def remove(self, caller: Caller, request_id: str, name: str) -> None:
        role = authorize(caller, Permission.KEY_PROVIDER_MANAGE)
        with self._db.session() as session:
            row = find_provider(session, name)
            keys = session.scalar(select(func.count()).select_from(WorkloadKey)
                                  .where(WorkloadKey.provider_id == row.id))
            if keys:
                raise Conflict(f"provider {name} still wraps {keys} workload keys; without it "
                               "they could never be opened again")
            session.delete(row)
            self._audit.record(session, principal=caller.name, role=role,
                               action="provider.remove", target=name, outcome="success",
                               request_id=request_id)

    def rekey(self, caller: Caller, request_id: str, name: str) -> PrimaryVersionView:
        """A new primary key version on the key servers; new keys are wrapped under it, older
        blobs still open until their version is retired (`key rewrap` moves them)."""
        role = authorize(caller, Permission.KEY_PROVIDER_MANAGE)
        with self._db.session(read_only=True) as session:
            row = find_provider(session, name)
            rows = server_rows(session, row.id)
            version = (session.scalar(select(func.max(PrimaryKeyVersion.version))
                                      .where(PrimaryKeyVersion.provider_id == row.id)) or 0) + 1
        key_id, _ = self.servers.run(
            name, rows, lambda server: server.create_primary_key(f"ta-{name}-v{version}"))
        self._check_primary_key(rows, key_id)
        with self._db.session() as session:
            now = self._clock()
            session.add(PrimaryKeyVersion(provider_id=row.id, version=version, key_id=key_id,
                                          state="active", created_at=now))
            self._audit.record(session, principal=caller.name, role=role,
                               action="provider.rekey", target=name, outcome="success",
                               request_id=request_id,
                               details={"version": version, "primary_key": key_id})
            return PrimaryVersionView(version, key_id, "active", now, 0)

    def retire_version(self, caller: Caller, request_id: str, name: str, version: int) -> None:
        """Blobs under a retired version open no more; refused while keys still use it."""
        role = authorize(caller, Permission.KEY_PROVIDER_MANAGE)
        with self._db.session() as session:
            row = find_provider(session, name)
            target = session.get(PrimaryKeyVersion, (row.id, version))
            if target is None:
                raise NotFound(f"provider {name} has no primary key version {version}")
            latest = session.scalar(select(func.max(PrimaryKeyVersion.version))
                                    .where(PrimaryKeyVersion.provider_id == row.id))
            if version == latest:
                raise Conflict("the newest primary key version wraps new keys: rekey first")
            keys = session.scalar(select(func.count()).select_from(WorkloadKey).where(
                WorkloadKey.provider_id == row.id, WorkloadKey.primary_version == version))
            if keys:
                raise Conflict(f"{keys} workload keys are still wrapped under version "
                               f"{version}: `key rewrap --provider {name}` first")
            target.state = "retired"
            self._audit.record(session, principal=caller.name, role=role,
                               action="provider.retire-version", target=name,
                               outcome="success", request_id=request_id,
                               details={"version": version})

    def grant(self, caller: Caller, request_id: str, cluster: str, provider: str) -> None:
        role = authorize(caller, Permission.KEY_PROVIDER_MANAGE)
        with self._db.session() as session:
            cluster_row, provider_row = find_cluster(session, cluster), find_provider(session,
                                                                                     provider)
            if session.get(ClusterProviderGrant, (cluster_row.id, provider_row.id)):
                raise Conflict(f"cluster {cluster} already has provider {provider}")
            session.add(ClusterProviderGrant(cluster_id=cluster_row.id,
                                             provider_id=provider_row.id,
                                             granted_at=self._clock(), granted_by=caller.name))
            self._audit.record(session, principal=caller.name, role=role,
                               action="cluster.grant-provider", target=cluster,
                               outcome="success", request_id=request_id,
                               details={"provider": provider})

    def revoke(self, caller: Caller, request_id: str, cluster: str, provider: str) -> None:
        role = authorize(caller, Permission.KEY_PROVIDER_MANAGE)
        with self._db.session() as session:
            cluster_row, provider_row = find_cluster(session, cluster), find_provider(session,
                                                                                     provider)
            grant = session.get(ClusterProviderGrant, (cluster_row.id, provider_row.id))
            if grant is None:
                raise NotFound(f"cluster {cluster} has no grant on provider {provider}")
            session.delete(grant)
            self._audit.record(session, principal=caller.name, role=role,
                               action="cluster.revoke-provider", target=cluster,
                               outcome="success", request_id=request_id,
                               details={"provider": provider})

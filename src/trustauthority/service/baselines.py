"""Baselines (trust-admin): import from a known-good event log, list, show, diff, delete, and
activate per cluster. Several may be active for one cluster at once (rolling upgrades).

An imported log is untrusted input: it is parsed by the evidence core (a damaged log is an
`EventLogFormatError` naming the byte offset) and only its digests become reference values.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from trustauthority.errors import Conflict, NotFound, UsageError
from trustauthority.eventlog import parse_event_log
from trustauthority.policy import Baseline, Difference, baseline_from_event_log, diff_baselines
from trustauthority.service.audit import AuditLog
from trustauthority.service.authz import Caller, Permission, authorize
from trustauthority.service.clusters import find_cluster
from trustauthority.service.names import check_name
from trustauthority.store.db import Database, Transaction
from trustauthority.store.models import BaselineRecord, Cluster, ClusterBaseline, Host, table_of

MAX_EVENT_LOG_BYTES = 512 * 1024


@dataclass(frozen=True)
class BaselineView:
    name: str
    version: int
    source: str
    created_at: datetime
    created_by: str
    baseline: Baseline
    clusters: tuple[str, ...]


_CLUSTER_BASELINES = table_of(ClusterBaseline).c
#: read on every attestation: a prebuilt Core statement
_ACTIVE_IDS = (select(_CLUSTER_BASELINES.baseline_id)
               .where(_CLUSTER_BASELINES.cluster_id == bindparam("cluster_id")))


class BaselineService:
    def __init__(self, db: Database, audit: AuditLog, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock
        #: parsed baselines by row id (immutable rows; a dict is safe across request threads)
        self._parsed: dict[str, Baseline] = {}

    def _clusters_of(self, session: Session, baseline_id: str) -> tuple[str, ...]:
        return tuple(session.scalars(
            select(Cluster.name).join(ClusterBaseline, ClusterBaseline.cluster_id == Cluster.id)
            .where(ClusterBaseline.baseline_id == baseline_id).order_by(Cluster.name)))

    def _view(self, session: Session, row: BaselineRecord) -> BaselineView:
        return BaselineView(row.name, row.version, row.source, row.created_at, row.created_by,
                            Baseline.from_json(json.loads(row.document)),
                            self._clusters_of(session, row.id))

    def _find(self, session: Session, name: str, version: int | None) -> BaselineRecord:
        statement = select(BaselineRecord).where(BaselineRecord.name == name)
        statement = (statement.where(BaselineRecord.version == version) if version is not None
                     else statement.order_by(BaselineRecord.version.desc()))
        row = session.scalars(statement.limit(1)).first()
        if row is None:
            which = f" version {version}" if version is not None else ""
            raise NotFound(f"no baseline {name[:128]!r}{which}")
        return row

    def import_event_log(self, caller: Caller, request_id: str, *, name: str,
                         raw_event_log: bytes, bank: str = "sha256",
                         strict: bool = False) -> BaselineView:
        """A new version of baseline `name` from a known-good host's firmware event log."""
        role = authorize(caller, Permission.BASELINE_MANAGE)
        digest = hashlib.sha256(raw_event_log).hexdigest()
        with self._db.session() as session:
            return self._import(session, caller, role, request_id, name=name,
                                raw_event_log=raw_event_log, bank=bank, strict=strict,
                                source=f"eventlog:sha256:{digest}")

    def import_from_host(self, caller: Caller, request_id: str, *, name: str, host: str,
                         bank: str = "sha256", strict: bool = False) -> BaselineView:
        """A new version of baseline `name` from a host's last verified evidence: the event log
        that replayed to the PCRs its TPM quoted (vTA's "import from a known-good host")."""
        role = authorize(caller, Permission.BASELINE_MANAGE)
        with self._db.session() as session:
            row = session.scalars(select(Host).where(Host.name == host)).first()
            if row is None:
                raise NotFound(f"no host named {host[:128]!r}")
            if row.last_event_log is None or row.last_attested_at is None:
                raise Conflict(f"host {host} has no verified evidence yet: let it attest first")
            digest = hashlib.sha256(row.last_event_log).hexdigest()
            return self._import(session, caller, role, request_id, name=name,
                                raw_event_log=row.last_event_log, bank=bank, strict=strict,
                                source=f"host:{row.name}:{row.last_attested_at.isoformat()}"
                                       f":sha256:{digest[:16]}")

    def _import(self, session: Session, caller: Caller, role: str, request_id: str, *,
                name: str, raw_event_log: bytes, bank: str, strict: bool,
                source: str) -> BaselineView:
        check_name("baseline", name)
        if len(raw_event_log) > MAX_EVENT_LOG_BYTES:
            raise UsageError(f"the event log is larger than {MAX_EVENT_LOG_BYTES} bytes")
        log = parse_event_log(raw_event_log)
        latest = session.scalar(select(func.max(BaselineRecord.version))
                                .where(BaselineRecord.name == name))
        version = (latest or 0) + 1
        baseline = baseline_from_event_log(log, name=name, version=version, bank=bank,
                                           strict=strict)
        row = BaselineRecord(id=str(uuid.uuid4()), name=name, version=version,
                             document=json.dumps(baseline.to_json(), sort_keys=True),
                             source=source[:256], created_at=self._clock(),
                             created_by=caller.name)
        session.add(row)
        self._audit.record(session, principal=caller.name, role=role,
                           action="baseline.import", target=f"{name} v{version}",
                           outcome="success", request_id=request_id,
                           details={"source": row.source, "bank": bank, "strict": strict,
                                    "components": len(baseline.components)})
        session.flush()
        return self._view(session, row)

    def list_all(self, caller: Caller) -> list[BaselineView]:
        authorize(caller, Permission.TRUST_READ)
        with self._db.session(read_only=True) as session:
            rows = session.scalars(select(BaselineRecord).order_by(BaselineRecord.name,
                                                                   BaselineRecord.version))
            return [self._view(session, row) for row in rows]

    def get(self, caller: Caller, name: str, version: int | None = None) -> BaselineView:
        authorize(caller, Permission.TRUST_READ)
        with self._db.session(read_only=True) as session:
            return self._view(session, self._find(session, name, version))

    def diff(self, caller: Caller, a: tuple[str, int | None],
             b: tuple[str, int | None]) -> tuple[BaselineView, BaselineView, list[Difference]]:
        authorize(caller, Permission.TRUST_READ)
        with self._db.session(read_only=True) as session:
            first = self._view(session, self._find(session, *a))
            second = self._view(session, self._find(session, *b))
        return first, second, diff_baselines(first.baseline, second.baseline)

    def delete(self, caller: Caller, request_id: str, name: str, version: int) -> BaselineView:
        role = authorize(caller, Permission.BASELINE_MANAGE)
        with self._db.session() as session:
            row = self._find(session, name, version)
            view = self._view(session, row)
            if view.clusters:
                raise Conflict(f"{name} v{version} is active for {', '.join(view.clusters)}; "
                               "remove it from those clusters first")
            session.delete(row)
            self._audit.record(session, principal=caller.name, role=role,
                               action="baseline.delete", target=f"{name} v{version}",
                               outcome="success", request_id=request_id)
            return view

    def add_to_cluster(self, caller: Caller, request_id: str, cluster: str, name: str,
                       version: int | None = None) -> BaselineView:
        role = authorize(caller, Permission.CLUSTER_MANAGE)
        with self._db.session() as session:
            target = find_cluster(session, cluster)
            row = self._find(session, name, version)
            if session.get(ClusterBaseline, (target.id, row.id)) is not None:
                raise Conflict(f"{name} v{row.version} is already active for {cluster}")
            session.add(ClusterBaseline(cluster_id=target.id, baseline_id=row.id))
            self._audit.record(session, principal=caller.name, role=role,
                               action="cluster.add-baseline", target=cluster,
                               outcome="success", request_id=request_id,
                               details={"baseline": name, "version": row.version})
            session.flush()
            return self._view(session, row)

    def remove_from_cluster(self, caller: Caller, request_id: str, cluster: str, name: str,
                            version: int) -> BaselineView:
        role = authorize(caller, Permission.CLUSTER_MANAGE)
        with self._db.session() as session:
            target = find_cluster(session, cluster)
            row = self._find(session, name, version)
            link = session.get(ClusterBaseline, (target.id, row.id))
            if link is None:
                raise NotFound(f"{name} v{version} is not active for {cluster}")
            session.delete(link)
            self._audit.record(session, principal=caller.name, role=role,
                               action="cluster.remove-baseline", target=cluster,
                               outcome="success", request_id=request_id,
                               details={"baseline": name, "version": version})
            session.flush()
            return self._view(session, row)

    def active_for(self, session: Transaction, cluster_id: str) -> list[Baseline]:
        """The baselines a cluster's hosts are appraised against (the service's own read, on
        every attestation). A stored version never changes, so each is parsed once per
        process and kept by its row id; only the ids are read each time."""
        ids = session.execute(_ACTIVE_IDS, {"cluster_id": cluster_id}).scalars().all()
        missing = [baseline_id for baseline_id in ids if baseline_id not in self._parsed]
        if missing:
            for row in session.execute(select(BaselineRecord.id, BaselineRecord.document)
                                       .where(BaselineRecord.id.in_(missing))):
                self._parsed[row.id] = Baseline.from_json(json.loads(row.document))
        return [self._parsed[baseline_id] for baseline_id in ids]

"""Trusted clusters (trust-admin): a host belongs to one; the cluster names its appraisal policy,
token lifetime and attestation interval (and, later, its baselines and key-provider grants)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trustauthority.errors import Conflict, NotFound, UsageError
from trustauthority.policy import DEFAULT_PCRS as POLICY_DEFAULT_PCRS
from trustauthority.service.audit import AuditLog
from trustauthority.service.authz import Caller, Permission, authorize
from trustauthority.service.names import check_name
from trustauthority.store.db import Database
from trustauthority.store.models import Cluster

#: the PCRs compared by default (`policy.DEFAULT_PCRS`, which says why 1, 5 and 6 are not)
DEFAULT_PCRS = tuple(sorted(POLICY_DEFAULT_PCRS))


@dataclass(frozen=True)
class ClusterPolicy:
    """Appraisal knobs, with secure defaults."""

    require_secure_boot: bool = True
    pcrs: tuple[int, ...] = DEFAULT_PCRS
    allow_unknown_events: bool = False
    strict_pcr_values: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"require_secure_boot": self.require_secure_boot, "pcrs": list(self.pcrs),
                "allow_unknown_events": self.allow_unknown_events,
                "strict_pcr_values": self.strict_pcr_values}


@dataclass(frozen=True)
class ClusterView:
    id: str
    name: str
    description: str
    policy: ClusterPolicy
    token_lifetime_seconds: int
    attestation_interval_seconds: int
    created_at: datetime
    created_by: str


def _policy(raw: str) -> ClusterPolicy:
    value = json.loads(raw)
    return ClusterPolicy(require_secure_boot=bool(value["require_secure_boot"]),
                         pcrs=tuple(int(pcr) for pcr in value["pcrs"]),
                         allow_unknown_events=bool(value["allow_unknown_events"]),
                         strict_pcr_values=bool(value["strict_pcr_values"]))


def _view(row: Cluster) -> ClusterView:
    return ClusterView(row.id, row.name, row.description, _policy(row.policy),
                       row.token_lifetime_seconds, row.attestation_interval_seconds,
                       row.created_at, row.created_by)


def check_policy(policy: ClusterPolicy) -> ClusterPolicy:
    if not policy.pcrs or any(not 0 <= pcr <= 23 for pcr in policy.pcrs):
        raise UsageError("compared PCRs must be a non-empty set of PCR indices 0–23")
    return ClusterPolicy(policy.require_secure_boot, tuple(sorted(set(policy.pcrs))),
                         policy.allow_unknown_events, policy.strict_pcr_values)


class ClusterService:
    def __init__(self, db: Database, audit: AuditLog, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock

    def _find(self, session: Session, name: str) -> Cluster:
        row = session.scalars(select(Cluster).where(Cluster.name == name)).first()
        if row is None:
            raise NotFound(f"no cluster named {name[:128]!r}")
        return row

    def create(self, caller: Caller, request_id: str, *, name: str, description: str = "",
               policy: ClusterPolicy | None = None, token_lifetime_seconds: int = 600,
               attestation_interval_seconds: int = 300) -> ClusterView:
        role = authorize(caller, Permission.CLUSTER_MANAGE)
        check_name("cluster", name)
        if not 30 <= token_lifetime_seconds <= 86_400:
            raise UsageError("the token lifetime must be between 30 seconds and a day")
        if not 10 <= attestation_interval_seconds <= 86_400:
            raise UsageError("the attestation interval must be between 10 seconds and a day")
        checked = check_policy(policy or ClusterPolicy())
        with self._db.session() as session:
            if session.scalars(select(Cluster.id).where(Cluster.name == name)).first():
                raise Conflict(f"a cluster named {name!r} already exists")
            row = Cluster(id=str(uuid.uuid4()), name=name, description=description[:512],
                          policy=json.dumps(checked.to_json(), sort_keys=True),
                          token_lifetime_seconds=token_lifetime_seconds,
                          attestation_interval_seconds=attestation_interval_seconds,
                          created_at=self._clock(), created_by=caller.name)
            session.add(row)
            self._audit.record(session, principal=caller.name, role=role,
                               action="cluster.create", target=name, outcome="success",
                               request_id=request_id,
                               details={"policy": checked.to_json(),
                                        "token_lifetime_seconds": token_lifetime_seconds,
                                        "attestation_interval_seconds":
                                            attestation_interval_seconds})
            return _view(row)

    def list_all(self, caller: Caller) -> list[ClusterView]:
        authorize(caller, Permission.TRUST_READ)
        with self._db.session(read_only=True) as session:
            return [_view(row) for row in session.scalars(select(Cluster)
                                                          .order_by(Cluster.name))]

    def get(self, caller: Caller, name: str) -> ClusterView:
        authorize(caller, Permission.TRUST_READ)
        with self._db.session(read_only=True) as session:
            return _view(self._find(session, name))

    def delete(self, caller: Caller, request_id: str, name: str) -> ClusterView:
        role = authorize(caller, Permission.CLUSTER_MANAGE)
        with self._db.session() as session:
            row = self._find(session, name)
            view = _view(row)
            session.delete(row)
            self._audit.record(session, principal=caller.name, role=role,
                               action="cluster.delete", target=name, outcome="success",
                               request_id=request_id)
            return view

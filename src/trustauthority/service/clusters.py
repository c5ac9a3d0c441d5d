"""Trusted clusters (trust-admin): a host belongs to one; the cluster names its appraisal policy,
token lifetime and attestation interval (and, later, its baselines and key-provider grants)."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trustauthority.errors import Conflict, NotFound, UsageError
from trustauthority.policy import Policy
from trustauthority.service.audit import AuditLog
from trustauthority.service.authz import Caller, Permission, authorize
from trustauthority.service.names import check_name
from trustauthority.store.db import Database
from trustauthority.store.models import Cluster, Host


@dataclass(frozen=True)
class ClusterView:
    id: str
    name: str
    description: str
    policy: Policy
    token_lifetime_seconds: int
    attestation_interval_seconds: int
    created_at: datetime
    created_by: str


def policy_to_json(policy: Policy) -> dict[str, Any]:
    """The cluster's stored (and API) form of its `policy.Policy`."""
    return {"require_secure_boot": policy.require_secure_boot, "pcrs": sorted(policy.pcrs),
            "allow_unknown_events": policy.allow_unknown_events,
            "strict_pcr_values": policy.strict}


@functools.lru_cache(maxsize=256)
def policy_of(raw: str) -> Policy:
    """A stored policy document, parsed (once per distinct document: every attestation reads
    its cluster's, and a Policy is immutable)."""
    value = json.loads(raw)
    return Policy(require_secure_boot=value["require_secure_boot"],
                  pcrs=frozenset(value["pcrs"]),
                  allow_unknown_events=value["allow_unknown_events"],
                  strict=value["strict_pcr_values"])


def cluster_policy(row: Cluster) -> Policy:
    """The appraisal policy a cluster's hosts are held to."""
    return policy_of(row.policy)


def find_cluster(session: Session, name: str) -> Cluster:
    """The cluster named `name` (for every use case that names one)."""
    row = session.scalars(select(Cluster).where(Cluster.name == name)).first()
    if row is None:
        raise NotFound(f"no cluster named {name[:128]!r}")
    return row


def _view(row: Cluster) -> ClusterView:
    return ClusterView(row.id, row.name, row.description, policy_of(row.policy),
                       row.token_lifetime_seconds, row.attestation_interval_seconds,
                       row.created_at, row.created_by)


class ClusterService:
    def __init__(self, db: Database, audit: AuditLog, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock

    def create(self, caller: Caller, request_id: str, *, name: str, description: str = "",
               policy: Policy | None = None, token_lifetime_seconds: int = 600,
               attestation_interval_seconds: int = 300) -> ClusterView:
        role = authorize(caller, Permission.CLUSTER_MANAGE)
        check_name("cluster", name)
        if not 30 <= token_lifetime_seconds <= 86_400:
            raise UsageError("the token lifetime must be between 30 seconds and a day")
        if not 10 <= attestation_interval_seconds <= 86_400:
            raise UsageError("the attestation interval must be between 10 seconds and a day")
        checked = policy or Policy()
        with self._db.session() as session:
            if session.scalars(select(Cluster.id).where(Cluster.name == name)).first():
                raise Conflict(f"a cluster named {name!r} already exists")
            row = Cluster(id=str(uuid.uuid4()), name=name, description=description[:512],
                          policy=json.dumps(policy_to_json(checked), sort_keys=True),
                          token_lifetime_seconds=token_lifetime_seconds,
                          attestation_interval_seconds=attestation_interval_seconds,
                          created_at=self._clock(), created_by=caller.name)
            session.add(row)
            self._audit.record(session, principal=caller.name, role=role,
                               action="cluster.create", target=name, outcome="success",
                               request_id=request_id,
                               details={"policy": policy_to_json(checked),
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
            return _view(find_cluster(session, name))

    def delete(self, caller: Caller, request_id: str, name: str) -> ClusterView:
        role = authorize(caller, Permission.CLUSTER_MANAGE)
        with self._db.session() as session:
            row = find_cluster(session, name)
            if session.scalars(select(Host.id).where(Host.cluster_id == row.id)).first():
                raise Conflict(f"cluster {name} still has hosts: remove them or approve them "
                               "into another cluster first")
            view = _view(row)
            session.delete(row)
            self._audit.record(session, principal=caller.name, role=role,
                               action="cluster.delete", target=name, outcome="success",
                               request_id=request_id)
            return view

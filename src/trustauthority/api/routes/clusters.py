"""Trusted clusters (trust-admin writes; the other roles read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from trustauthority.api.security import Requires, platform_of
from trustauthority.policy import Policy
from trustauthority.schemas import ClusterCreate, ClusterOut, ClusterPolicyModel
from trustauthority.service.authz import Caller, Permission
from trustauthority.service.clusters import ClusterView, policy_to_json

router = APIRouter(prefix="/clusters", tags=["clusters"])

Reader = Annotated[Caller, Depends(Requires(Permission.TRUST_READ))]
Manager = Annotated[Caller, Depends(Requires(Permission.CLUSTER_MANAGE))]
Name = Annotated[str, Path(min_length=1, max_length=128)]


def _out(view: ClusterView) -> ClusterOut:
    return ClusterOut(id=view.id, name=view.name, description=view.description,
                      policy=ClusterPolicyModel(**policy_to_json(view.policy)),
                      token_lifetime_seconds=view.token_lifetime_seconds,
                      attestation_interval_seconds=view.attestation_interval_seconds,
                      created_at=view.created_at, created_by=view.created_by)


@router.get("", response_model=list[ClusterOut])
def list_clusters(request: Request, caller: Reader) -> list[ClusterOut]:
    return [_out(view) for view in platform_of(request).clusters.list_all(caller)]


@router.post("", response_model=ClusterOut, status_code=201)
def create_cluster(request: Request, caller: Manager, body: ClusterCreate) -> ClusterOut:
    policy = Policy(require_secure_boot=body.policy.require_secure_boot,
                    pcrs=frozenset(body.policy.pcrs),
                    allow_unknown_events=body.policy.allow_unknown_events,
                    strict=body.policy.strict_pcr_values)
    view = platform_of(request).clusters.create(
        caller, request.state.request_id, name=body.name, description=body.description,
        policy=policy, token_lifetime_seconds=body.token_lifetime_seconds,
        attestation_interval_seconds=body.attestation_interval_seconds)
    return _out(view)


@router.get("/{name}", response_model=ClusterOut)
def get_cluster(request: Request, caller: Reader, name: Name) -> ClusterOut:
    return _out(platform_of(request).clusters.get(caller, name))


@router.delete("/{name}", response_model=ClusterOut)
def delete_cluster(request: Request, caller: Manager, name: Name) -> ClusterOut:
    return _out(platform_of(request).clusters.delete(caller, request.state.request_id, name))

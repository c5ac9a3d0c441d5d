"""Baselines and the baselines active per cluster (trust-admin writes; the others read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from trustauthority.api.routes.convert import b64decode
from trustauthority.api.security import Requires, platform_of
from trustauthority.errors import UsageError
from trustauthority.schemas import (
    BaselineDiffOut,
    BaselineFromHost,
    BaselineImport,
    BaselineOut,
    ClusterBaselineAdd,
    DifferenceOut,
)
from trustauthority.service.authz import Caller, Permission
from trustauthority.service.baselines import BaselineView

router = APIRouter(tags=["baselines"])

Reader = Annotated[Caller, Depends(Requires(Permission.TRUST_READ))]
Manager = Annotated[Caller, Depends(Requires(Permission.BASELINE_MANAGE))]
ClusterManager = Annotated[Caller, Depends(Requires(Permission.CLUSTER_MANAGE))]
Name = Annotated[str, Path(min_length=1, max_length=128)]
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _out(view: BaselineView) -> BaselineOut:
    return BaselineOut(name=view.name, version=view.version, source=view.source,
                       created_at=view.created_at, created_by=view.created_by,
                       clusters=list(view.clusters), baseline=view.baseline.to_json())


def _reference(value: str) -> tuple[str, int | None]:
    """`name` or `name:version`."""
    name, _, version = value.partition(":")
    if not version:
        return name, None
    if not version.isdigit() or not 1 <= int(version) < 2**31:
        raise UsageError(f"{value[:140]!r}: the version after ':' must be a positive number")
    return name, int(version)


@router.get("/baselines", response_model=list[BaselineOut])
def list_baselines(request: Request, caller: Reader) -> list[BaselineOut]:
    return [_out(view) for view in platform_of(request).baselines.list_all(caller)]


@router.post("/baselines", response_model=BaselineOut, status_code=201)
def import_baseline(request: Request, caller: Manager, body: BaselineImport) -> BaselineOut:
    """A new version of a baseline from a known-good host's firmware event log."""
    raw = b64decode(body.event_log_base64, "event_log_base64")
    return _out(platform_of(request).baselines.import_event_log(
        caller, request.state.request_id, name=body.name, raw_event_log=raw, bank=body.bank,
        strict=body.strict))


@router.post("/baselines/from-host", response_model=BaselineOut, status_code=201)
def import_baseline_from_host(request: Request, caller: Manager,
                              body: BaselineFromHost) -> BaselineOut:
    """A new version of a baseline from a known-good host's last verified evidence."""
    return _out(platform_of(request).baselines.import_from_host(
        caller, request.state.request_id, name=body.name, host=body.host, bank=body.bank,
        strict=body.strict))


@router.get("/baselines/diff", response_model=BaselineDiffOut)
def diff(request: Request, caller: Reader,
         a: Annotated[str, Query(min_length=1, max_length=140, description="name[:version]")],
         b: Annotated[str, Query(min_length=1, max_length=140, description="name[:version]")],
         ) -> BaselineDiffOut:
    """How baseline b differs from a (a is "expected")."""
    first, second, differences = platform_of(request).baselines.diff(
        caller, _reference(a), _reference(b))
    return BaselineDiffOut(a=f"{first.name} v{first.version}",
                           b=f"{second.name} v{second.version}",
                           differences=[DifferenceOut(**d.to_json()) for d in differences])


@router.get("/baselines/{name}", response_model=BaselineOut)
def get_baseline(request: Request, caller: Reader, name: Name,
                 version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
                 ) -> BaselineOut:
    return _out(platform_of(request).baselines.get(caller, name, version))


@router.delete("/baselines/{name}/{version}", response_model=BaselineOut)
def delete_baseline(request: Request, caller: Manager, name: Name,
                    version: Version) -> BaselineOut:
    return _out(platform_of(request).baselines.delete(caller, request.state.request_id, name,
                                                      version))


@router.post("/clusters/{name}/baselines", response_model=BaselineOut, status_code=201)
def add_cluster_baseline(request: Request, caller: ClusterManager, name: Name,
                         body: ClusterBaselineAdd) -> BaselineOut:
    """Make a baseline active for a cluster (several may be: rolling upgrades)."""
    return _out(platform_of(request).baselines.add_to_cluster(
        caller, request.state.request_id, name, body.baseline, body.version))


@router.delete("/clusters/{name}/baselines/{baseline}/{version}", response_model=BaselineOut)
def remove_cluster_baseline(request: Request, caller: ClusterManager, name: Name,
                            baseline: Name, version: Version) -> BaselineOut:
    return _out(platform_of(request).baselines.remove_from_cluster(
        caller, request.state.request_id, name, baseline, version))

"""Key servers and trusted key providers (trust-admin writes; the other admin roles and the
auditor read), workload keys (infra-admin), and attested key release (a host)."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from trustauthority.api.offload import run_around_io
from trustauthority.api.routes.convert import json_response
from trustauthority.api.security import Requires, platform_of
from trustauthority.keyserver import HealthReport, KmipEndpoint, Pkcs11Endpoint
from trustauthority.schemas import (
    KeyReleaseIn,
    KeyReleaseOut,
    KeyRewrap,
    KeyRotate,
    KeyServerHealthOut,
    KeyServerOut,
    KmipServerCreate,
    Pkcs11ServerCreate,
    PrimaryVersionOut,
    ProviderCreate,
    ProviderGrant,
    ProviderOut,
    ServerHealthOut,
    WorkloadKeyCreate,
    WorkloadKeyOut,
)
from trustauthority.service.authz import Caller, Permission
from trustauthority.service.keyservers import KeyServerView
from trustauthority.service.providers import PrimaryVersionView, ProviderView
from trustauthority.service.workloadkeys import WorkloadKeyView

router = APIRouter(tags=["keys"])
#: what hosts call to unlock their workloads; served first (routes are matched in order)
release = APIRouter(tags=["keys"])

Reader = Annotated[Caller, Depends(Requires(Permission.TRUST_READ))]
ProviderManager = Annotated[Caller, Depends(Requires(Permission.KEY_PROVIDER_MANAGE))]
KeyReader = Annotated[Caller, Depends(Requires(Permission.WORKLOAD_KEY_READ))]
KeyManager = Annotated[Caller, Depends(Requires(Permission.WORKLOAD_KEY_MANAGE))]
Releaser = Annotated[Caller, Depends(Requires(Permission.KEY_RELEASE))]
Name = Annotated[str, Path(min_length=1, max_length=128)]
Workload = Annotated[str, Path(min_length=1, max_length=256)]


def _server_out(view: KeyServerView) -> KeyServerOut:
    return KeyServerOut(id=view.id, name=view.name, kind=view.kind,  # type: ignore[arg-type]
                        address=view.address, settings=view.settings,
                        certificate_subject=view.certificate_subject,
                        certificate_not_after=view.certificate_not_after,
                        ca_subject=view.ca_subject, providers=list(view.providers),
                        created_at=view.created_at, created_by=view.created_by)


def _health_out(name: str, report: HealthReport) -> KeyServerHealthOut:
    return KeyServerHealthOut(name=name, healthy=report.healthy, reachable=report.reachable,
                              client_trusts_server=report.client_trusts_server,
                              server_trusts_client=report.server_trusts_client,
                              round_trip=report.round_trip, latency_ms=report.latency_ms,
                              detail=report.detail)


def _version_out(view: PrimaryVersionView) -> PrimaryVersionOut:
    return PrimaryVersionOut(version=view.version, key_id=view.key_id,
                             state=view.state,  # type: ignore[arg-type]
                             created_at=view.created_at, keys=view.keys)


def _provider_out(view: ProviderView) -> ProviderOut:
    return ProviderOut(
        id=view.id, name=view.name, kind=view.kind,  # type: ignore[arg-type]
        description=view.description, health=view.health,  # type: ignore[arg-type]
        servers=[ServerHealthOut(name=s.name, state=s.state,  # type: ignore[arg-type]
                                 detail=s.detail, checked_at=s.checked_at)
                 for s in view.servers],
        versions=[_version_out(v) for v in view.versions],
        current_version=view.current_version, clusters=list(view.clusters),
        created_at=view.created_at, created_by=view.created_by)


def _key_out(view: WorkloadKeyView) -> WorkloadKeyOut:
    return WorkloadKeyOut(id=view.id, workload=view.workload, cluster=view.cluster,
                          provider=view.provider, primary_version=view.primary_version,
                          blob=view.blob, created_at=view.created_at,
                          created_by=view.created_by, rewrapped_at=view.rewrapped_at,
                          last_released_at=view.last_released_at,
                          state=view.state)  # type: ignore[arg-type]


# -- key servers --------------------------------------------------------------------------------

@router.get("/key-servers", response_model=list[KeyServerOut])
def list_key_servers(request: Request, caller: Reader) -> list[KeyServerOut]:
    return [_server_out(v) for v in platform_of(request).key_servers.list_all(caller)]


@router.post("/key-servers/kmip", response_model=KeyServerOut, status_code=201)
def add_kmip_server(request: Request, caller: ProviderManager,
                    body: KmipServerCreate) -> KeyServerOut:
    """Register a KMIP server: its address, the CA that signs its certificate, and the client
    certificate and key Trust Authority presents (the key and password are stored sealed)."""
    return _server_out(platform_of(request).key_servers.add_kmip(
        caller, request.state.request_id, body.name, KmipEndpoint(
            host=body.host, port=body.port, ca_pem=body.ca_pem.encode(),
            cert_pem=body.certificate_pem.encode(), key_pem=body.key_pem.encode(),
            username=body.username, password=body.password,
            pinned_sha256=body.pinned_sha256, timeout=body.timeout_seconds)))


@router.post("/key-servers/pkcs11", response_model=KeyServerOut, status_code=201)
def add_pkcs11_server(request: Request, caller: ProviderManager,
                      body: Pkcs11ServerCreate) -> KeyServerOut:
    """Register an HSM token by its PKCS#11 module and label (the PIN is stored sealed)."""
    return _server_out(platform_of(request).key_servers.add_pkcs11(
        caller, request.state.request_id, body.name,
        Pkcs11Endpoint(module=body.module, token_label=body.token_label, pin=body.pin)))


@router.get("/key-servers/{name}", response_model=KeyServerOut)
def get_key_server(request: Request, caller: Reader, name: Name) -> KeyServerOut:
    return _server_out(platform_of(request).key_servers.get(caller, name))


@router.delete("/key-servers/{name}", response_model=KeyServerOut)
def remove_key_server(request: Request, caller: ProviderManager, name: Name) -> KeyServerOut:
    return _server_out(platform_of(request).key_servers.remove(
        caller, request.state.request_id, name))


@router.post("/key-servers/{name}/test", response_model=KeyServerHealthOut)
def test_key_server(request: Request, caller: Reader, name: Name) -> KeyServerHealthOut:
    """Connect now: does the service trust the server, does the server trust the service, does
    a round trip work?"""
    return _health_out(name, platform_of(request).key_servers.test(
        caller, request.state.request_id, name))


# -- trusted key providers ----------------------------------------------------------------------

@router.get("/providers", response_model=list[ProviderOut])
def list_providers(request: Request, caller: Reader) -> list[ProviderOut]:
    return [_provider_out(v) for v in platform_of(request).providers.list_all(caller)]


@router.post("/providers", response_model=ProviderOut, status_code=201)
def create_provider(request: Request, caller: ProviderManager,
                    body: ProviderCreate) -> ProviderOut:
    return _provider_out(platform_of(request).providers.create(
        caller, request.state.request_id, name=body.name, servers=list(body.servers),
        primary_key=body.primary_key, create_primary_key=body.create_primary_key,
        description=body.description))


@router.get("/providers/{name}", response_model=ProviderOut)
def get_provider(request: Request, caller: Reader, name: Name,
                 live: Annotated[bool, Query(description="check every server now")] = True,
                 ) -> ProviderOut:
    return _provider_out(platform_of(request).providers.get(caller, name, live=live))


@router.delete("/providers/{name}", status_code=204)
def remove_provider(request: Request, caller: ProviderManager, name: Name) -> None:
    platform_of(request).providers.remove(caller, request.state.request_id, name)


@router.post("/providers/{name}/rekey", response_model=PrimaryVersionOut, status_code=201)
def rekey_provider(request: Request, caller: ProviderManager, name: Name) -> PrimaryVersionOut:
    """A new primary key version on the key servers: new keys are wrapped under it."""
    return _version_out(platform_of(request).providers.rekey(
        caller, request.state.request_id, name))


@router.delete("/providers/{name}/versions/{version}", status_code=204)
def retire_primary_version(request: Request, caller: ProviderManager, name: Name,
                           version: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> None:
    platform_of(request).providers.retire_version(caller, request.state.request_id, name,
                                                  version)


@router.post("/clusters/{name}/providers", status_code=204)
def grant_provider(request: Request, caller: ProviderManager, name: Name,
                   body: ProviderGrant) -> None:
    platform_of(request).providers.grant(caller, request.state.request_id, name, body.provider)


@router.delete("/clusters/{name}/providers/{provider}", status_code=204)
def revoke_provider(request: Request, caller: ProviderManager, name: Name,
                    provider: Name) -> None:
    platform_of(request).providers.revoke(caller, request.state.request_id, name, provider)


# -- workload keys ------------------------------------------------------------------------------

@router.get("/keys", response_model=list[WorkloadKeyOut])
def list_keys(request: Request, caller: KeyReader,
              provider: Annotated[str | None, Query(max_length=128)] = None,
              cluster: Annotated[str | None, Query(max_length=128)] = None,
              ) -> list[WorkloadKeyOut]:
    return [_key_out(v) for v in platform_of(request).workload_keys.list_all(
        caller, provider=provider, cluster=cluster)]


@router.post("/keys", response_model=WorkloadKeyOut, status_code=201)
def create_key(request: Request, caller: KeyManager, body: WorkloadKeyCreate) -> WorkloadKeyOut:
    """A new workload key, wrapped on the provider's key server; the answer's `blob` is all
    that is ever handed out."""
    return _key_out(platform_of(request).workload_keys.create(
        caller, request.state.request_id, provider=body.provider, workload=body.workload,
        cluster=body.cluster))


@router.post("/keys/rotation", response_model=WorkloadKeyOut, status_code=201)
def rotate_key(request: Request, caller: KeyManager, body: KeyRotate) -> WorkloadKeyOut:
    """Deep rekey: a new key for the workload; the previous one stays released (superseded)
    until deleted, so hosts can re-encrypt their data under the new one."""
    return _key_out(platform_of(request).workload_keys.rotate(
        caller, request.state.request_id, body.workload))


@router.post("/keys/rewrap", response_model=list[WorkloadKeyOut])
def rewrap_keys(request: Request, caller: KeyManager, body: KeyRewrap) -> list[WorkloadKeyOut]:
    return [_key_out(v) for v in platform_of(request).workload_keys.rewrap(
        caller, request.state.request_id, provider=body.provider, workload=body.workload)]


@release.post("/keys/release", response_model=KeyReleaseOut)
async def release_key(request: Request, caller: Releaser, body: KeyReleaseIn) -> Response:
    """Attested key release: the workload's key, encrypted to this host's TPM binding key,
    only if the host is trusted now and its cluster is granted the provider."""
    keys = platform_of(request).workload_keys
    # the key-server call (the network, possibly a slow or dead server) never on the loop
    release = await run_around_io(request, partial(
        keys.prepare_release, caller, request.state.request_id, blob=body.blob,
        workload=body.workload, token=body.token), keys.unwrap_for_release,
        keys.complete_release)
    return json_response(KeyReleaseOut(
        jwe=release.jwe, key_id=release.key_id, workload=release.workload,
        provider=release.provider, primary_version=release.primary_version,
        current_blob=release.current_blob))


@router.get("/keys/{workload:path}", response_model=WorkloadKeyOut)
def get_key(request: Request, caller: KeyReader, workload: Workload) -> WorkloadKeyOut:
    return _key_out(platform_of(request).workload_keys.get(caller, workload))


@router.delete("/keys/{workload:path}", status_code=204)
def delete_key(request: Request, caller: KeyManager, workload: Workload) -> None:
    platform_of(request).workload_keys.delete(caller, request.state.request_id, workload)

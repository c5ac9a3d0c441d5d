"""Principals, their API tokens and their mTLS client certificates."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from trustauthority.api.routes.convert import principal_out, token_out
from trustauthority.api.security import Requires, platform_of
from trustauthority.schemas import (
    CertificateCreate,
    CertificateOut,
    PrincipalCreate,
    PrincipalOut,
    TokenCreate,
    TokenIssued,
    TokenOut,
)
from trustauthority.service.authz import Caller, Permission

router = APIRouter(prefix="/principals", tags=["principals"])

Reader = Annotated[Caller, Depends(Requires(Permission.PRINCIPAL_READ))]
Manager = Annotated[Caller, Depends(Requires(Permission.PRINCIPAL_MANAGE))]
Name = Annotated[str, Path(min_length=1, max_length=128)]


@router.get("", response_model=list[PrincipalOut])
def list_principals(request: Request, caller: Reader,
                    include_revoked: Annotated[bool, Query()] = False) -> list[PrincipalOut]:
    views = platform_of(request).principals.list_all(caller, include_revoked=include_revoked)
    return [principal_out(view) for view in views]


@router.post("", response_model=PrincipalOut, status_code=201)
def create_principal(request: Request, caller: Manager, body: PrincipalCreate) -> PrincipalOut:
    view = platform_of(request).principals.create(
        caller, request.state.request_id, name=body.name, kind=body.kind,
        roles=list(body.roles), description=body.description,
        allow_multiple_roles=body.allow_multiple_roles)
    return principal_out(view)


@router.get("/{name}", response_model=PrincipalOut)
def get_principal(request: Request, caller: Reader, name: Name) -> PrincipalOut:
    return principal_out(platform_of(request).principals.get(caller, name))


@router.post("/{name}/revoke", response_model=PrincipalOut)
def revoke_principal(request: Request, caller: Manager, name: Name) -> PrincipalOut:
    view = platform_of(request).principals.revoke(caller, request.state.request_id, name)
    return principal_out(view)


@router.get("/{name}/tokens", response_model=list[TokenOut])
def list_tokens(request: Request, caller: Reader, name: Name) -> list[TokenOut]:
    return [token_out(view) for view in platform_of(request).principals.list_tokens(caller, name)]


@router.post("/{name}/tokens", response_model=TokenIssued, status_code=201)
def create_token(request: Request, caller: Manager, name: Name,
                 body: TokenCreate) -> TokenIssued:
    lifetime = None if body.expires_in_days is None else timedelta(days=body.expires_in_days)
    issued = platform_of(request).principals.create_token(
        caller, request.state.request_id, name, label=body.label, lifetime=lifetime)
    return TokenIssued(token=issued.token, info=token_out(issued.view))


@router.post("/{name}/tokens/{token_id}/revoke", response_model=TokenOut)
def revoke_token(request: Request, caller: Manager, name: Name,
                 token_id: Annotated[str, Path(min_length=1, max_length=32)]) -> TokenOut:
    view = platform_of(request).principals.revoke_token(caller, request.state.request_id,
                                                        name, token_id)
    return token_out(view)


@router.post("/{name}/certificates", response_model=CertificateOut, status_code=201)
def issue_certificate(request: Request, caller: Manager, name: Name,
                      body: CertificateCreate) -> CertificateOut:
    issued = platform_of(request).principals.issue_certificate(
        caller, request.state.request_id, name, raw_csr_pem=body.csr_pem,
        lifetime=timedelta(days=body.lifetime_days))
    return CertificateOut(principal=issued.principal,
                          fingerprint_sha256=issued.fingerprint_sha256, serial=issued.serial,
                          not_after=issued.not_after, certificate_pem=issued.certificate_pem,
                          ca_pem=issued.ca_pem)

"""TPM trust settings: manufacturer CAs, allowed EKs, TPM settings (trust-admin writes)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from trustauthority.api.security import Requires, platform_of
from trustauthority.schemas import (
    EkAdd,
    EkOut,
    TpmCaAdd,
    TpmCaOut,
    TpmSettingsOut,
    TpmSettingsUpdate,
)
from trustauthority.service.authz import Caller, Permission
from trustauthority.service.tpmtrust import AllowedEkView, TpmCaView

router = APIRouter(tags=["tpm trust"])

Reader = Annotated[Caller, Depends(Requires(Permission.TRUST_READ))]
Manager = Annotated[Caller, Depends(Requires(Permission.TPM_TRUST_MANAGE))]
FingerprintPath = Annotated[str, Path(min_length=64, max_length=64, pattern=r"^[0-9a-fA-F]+$")]


def _ca(view: TpmCaView) -> TpmCaOut:
    return TpmCaOut(**asdict(view))


def _ek(view: AllowedEkView) -> EkOut:
    return EkOut(**asdict(view))


@router.get("/tpm-cas", response_model=list[TpmCaOut])
def list_cas(request: Request, caller: Reader) -> list[TpmCaOut]:
    return [_ca(view) for view in platform_of(request).tpm_trust.list_cas(caller)]


@router.post("/tpm-cas", response_model=list[TpmCaOut], status_code=201)
def add_cas(request: Request, caller: Manager, body: TpmCaAdd) -> list[TpmCaOut]:
    """Trust one or more TPM manufacturer CA certificates (roots or intermediates)."""
    views = platform_of(request).tpm_trust.add_cas(
        caller, request.state.request_id, body.certificate_pem.encode(), body.description)
    return [_ca(view) for view in views]


@router.delete("/tpm-cas/{fingerprint}", response_model=TpmCaOut)
def remove_ca(request: Request, caller: Manager, fingerprint: FingerprintPath) -> TpmCaOut:
    return _ca(platform_of(request).tpm_trust.remove_ca(caller, request.state.request_id,
                                                        fingerprint))


@router.get("/eks", response_model=list[EkOut])
def list_eks(request: Request, caller: Reader) -> list[EkOut]:
    return [_ek(view) for view in platform_of(request).tpm_trust.list_eks(caller)]


@router.post("/eks", response_model=EkOut, status_code=201)
def add_ek(request: Request, caller: Manager, body: EkAdd) -> EkOut:
    """Allow one EK public key (a TPM without an EK certificate)."""
    return _ek(platform_of(request).tpm_trust.add_ek(
        caller, request.state.request_id, body.public_key_pem.encode(), body.description))


@router.delete("/eks/{fingerprint}", response_model=EkOut)
def remove_ek(request: Request, caller: Manager, fingerprint: FingerprintPath) -> EkOut:
    return _ek(platform_of(request).tpm_trust.remove_ek(caller, request.state.request_id,
                                                        fingerprint))


@router.get("/tpm-settings", response_model=TpmSettingsOut)
def get_settings(request: Request, caller: Reader) -> TpmSettingsOut:
    return TpmSettingsOut(**asdict(platform_of(request).tpm_trust.settings(caller)))


@router.patch("/tpm-settings", response_model=TpmSettingsOut)
def set_settings(request: Request, caller: Manager, body: TpmSettingsUpdate) -> TpmSettingsOut:
    updated = platform_of(request).tpm_trust.set_settings(
        caller, request.state.request_id, require_ek_certificate=body.require_ek_certificate,
        allow_ek_allowlist=body.allow_ek_allowlist, allow_sha1=body.allow_sha1)
    return TpmSettingsOut(**asdict(updated))

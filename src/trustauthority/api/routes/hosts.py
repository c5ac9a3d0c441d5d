"""Hosts: enrollment (public: the host's EK and join token vouch for it), join tokens and
approval (infra-admin), trust state and history (the admin roles and the auditor read), and
attestation (the host itself)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request, Response
from pydantic import ValidationError

from trustauthority.api.offload import run_blocking
from trustauthority.api.routes.convert import b64decode, json_response
from trustauthority.api.security import Requires, platform_of
from trustauthority.schemas import (
    AttestationOut,
    AttestationResultOut,
    ChallengeOut,
    DifferenceOut,
    EnrollmentActivate,
    EnrollmentChallengeOut,
    EnrollmentDone,
    EnrollmentStart,
    EvidenceIn,
    FailureOut,
    HostApprove,
    HostOut,
    JoinTokenCreate,
    JoinTokenIssued,
    JoinTokenOut,
)
from trustauthority.service.attestation import AttestationResult, Evidence
from trustauthority.service.authz import Caller, Permission
from trustauthority.service.hosts import EnrollmentRequest, HostView, JoinTokenView

router = APIRouter(tags=["hosts"])
#: no `Requires`: a host has no credential before it enrolls
enrollment = APIRouter(tags=["enrollment"])
#: what every host calls every few minutes; served first (routes are matched in order)
attestation = APIRouter(tags=["attestation"])

Reader = Annotated[Caller, Depends(Requires(Permission.HOST_READ))]
Manager = Annotated[Caller, Depends(Requires(Permission.HOST_MANAGE))]
Attester = Annotated[Caller, Depends(Requires(Permission.ATTEST))]
Name = Annotated[str, Path(min_length=1, max_length=128)]


def host_out(view: HostView) -> HostOut:
    return HostOut(id=view.id, name=view.name, state=view.state,  # type: ignore[arg-type]
                   state_reason=view.state_reason, cluster=view.cluster, facts=view.facts,
                   ek_fingerprint=view.ek_fingerprint, enrolled_at=view.enrolled_at,
                   approved_by=view.approved_by, last_attested_at=view.last_attested_at,
                   binding_key_thumbprint=view.binding_key_thumbprint)


def _join_out(view: JoinTokenView) -> JoinTokenOut:
    return JoinTokenOut(id=view.id, cluster=view.cluster, description=view.description,
                        created_at=view.created_at, created_by=view.created_by,
                        expires_at=view.expires_at, used_at=view.used_at,
                        used_by_host=view.used_by_host, revoked_at=view.revoked_at)


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


# -- enrollment -------------------------------------------------------------------------------

@enrollment.post("/enrollments", response_model=EnrollmentChallengeOut, status_code=201)
def start_enrollment(request: Request, body: EnrollmentStart) -> EnrollmentChallengeOut:
    """Step 1 of enrollment: the EK is checked, the AK's attributes too; the answer is a
    MakeCredential challenge that only the TPM holding both can open."""
    challenge = platform_of(request).hosts.start_enrollment(
        request.state.request_id, _client(request), EnrollmentRequest(
            ek_public=b64decode(body.ek_public, "ek_public"),
            ek_certificate=(b64decode(body.ek_certificate, "ek_certificate")
                            if body.ek_certificate is not None else None),
            ek_intermediates=tuple(b64decode(raw, "ek_intermediates")
                                   for raw in body.ek_intermediates),
            ak_public=b64decode(body.ak_public, "ak_public"), hostname=body.hostname,
            facts=dict(body.facts), join_token=body.join_token))
    return EnrollmentChallengeOut(
        enrollment_id=challenge.enrollment_id,
        credential_blob=base64.b64encode(challenge.credential_blob).decode(),
        encrypted_secret=base64.b64encode(challenge.encrypted_secret).decode(),
        expires_at=challenge.expires_at)


@enrollment.post("/enrollments/{enrollment_id}/activation", response_model=EnrollmentDone)
def activate_enrollment(request: Request, body: EnrollmentActivate,
                        enrollment_id: Annotated[str, Path(min_length=1, max_length=64)],
                        ) -> EnrollmentDone:
    """Step 2: the secret ActivateCredential returned; the host is registered (and joins the
    join token's cluster, or waits for approval). The host's credential is shown once."""
    result = platform_of(request).hosts.activate(
        request.state.request_id, _client(request), enrollment_id,
        b64decode(body.secret, "secret"))
    return EnrollmentDone(host=host_out(result.host), credential=result.credential)


# -- join tokens ------------------------------------------------------------------------------

@router.post("/join-tokens", response_model=JoinTokenIssued, status_code=201)
def create_join_token(request: Request, caller: Manager, body: JoinTokenCreate,
                      ) -> JoinTokenIssued:
    issued = platform_of(request).hosts.create_join_token(
        caller, request.state.request_id, cluster=body.cluster,
        lifetime=timedelta(seconds=body.lifetime_seconds), description=body.description)
    return JoinTokenIssued(join_token=_join_out(issued.view), token=issued.token)


@router.get("/join-tokens", response_model=list[JoinTokenOut])
def list_join_tokens(request: Request, caller: Reader) -> list[JoinTokenOut]:
    return [_join_out(view) for view in platform_of(request).hosts.list_join_tokens(caller)]


@router.delete("/join-tokens/{token_id}", response_model=JoinTokenOut)
def revoke_join_token(request: Request, caller: Manager,
                      token_id: Annotated[str, Path(min_length=1, max_length=32)],
                      ) -> JoinTokenOut:
    return _join_out(platform_of(request).hosts.revoke_join_token(
        caller, request.state.request_id, token_id))


# -- hosts ------------------------------------------------------------------------------------

@router.get("/hosts", response_model=list[HostOut])
def list_hosts(request: Request, caller: Reader) -> list[HostOut]:
    return [host_out(view) for view in platform_of(request).hosts.list_all(caller)]


@router.get("/hosts/{name}", response_model=HostOut)
def get_host(request: Request, caller: Reader, name: Name) -> HostOut:
    return host_out(platform_of(request).hosts.get(caller, name))


@router.get("/hosts/{name}/attestations", response_model=list[AttestationOut])
def host_history(request: Request, caller: Reader, name: Name,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[AttestationOut]:
    return [AttestationOut(at=view.at, status=view.status,  # type: ignore[arg-type]
                           baseline=view.baseline, reason=view.reason, rebooted=view.rebooted,
                           pcr_digest=view.pcr_digest, token_id=view.token_id,
                           failure=_stored_failure(view.failure))
            for view in platform_of(request).hosts.history(caller, name, limit)]


def _stored_failure(report: Mapping[str, Any] | None) -> FailureOut | None:
    """The recorded report in the evidence answer's shape; None if it no longer fits it."""
    if report is None:
        return None
    try:
        return FailureOut.model_validate(report)
    except ValidationError:
        return None


@router.post("/hosts/{name}/approval", response_model=HostOut)
def approve_host(request: Request, caller: Manager, name: Name, body: HostApprove) -> HostOut:
    return host_out(platform_of(request).hosts.approve(caller, request.state.request_id, name,
                                                       body.cluster))


@router.delete("/hosts/{name}", response_model=HostOut)
def delete_host(request: Request, caller: Manager, name: Name) -> HostOut:
    return host_out(platform_of(request).hosts.delete(caller, request.state.request_id, name))


# -- attestation ------------------------------------------------------------------------------

@attestation.post("/attestation/challenge", response_model=ChallengeOut)
async def challenge(request: Request, caller: Attester, after: BackgroundTasks) -> Response:
    """A single-use nonce (valid two minutes) and the PCRs to quote."""
    service = platform_of(request).attestation
    issued = await run_blocking(request, partial(service.challenge, caller))
    if service.sweep_due():  # after the response, in a thread (a sync task): no request waits
        after.add_task(service.sweep)
    return json_response(ChallengeOut(nonce=base64.b64encode(issued.nonce).decode(),
                                      expires_at=issued.expires_at, bank="sha256",
                                      pcrs=list(issued.pcrs)))


def result_out(result: AttestationResult) -> AttestationResultOut:
    failure = result.failure
    return AttestationResultOut(
        status=result.status.value,
        host=result.host, cluster=result.cluster, baseline=result.baseline,
        token=result.token, expires_at=result.expires_at,
        failure=None if failure is None else FailureOut(
            type=failure.type, detail=failure.detail,
            closest_baseline=failure.closest_baseline,
            differences=[DifferenceOut(**difference.to_json())
                         for difference in failure.differences]))


@attestation.post("/attestation/evidence", response_model=AttestationResultOut)
async def evidence(request: Request, caller: Attester, body: EvidenceIn) -> Response:
    """The quote, PCR values, event log and certified binding key answering a challenge: the
    verdict, with a token when trusted or the first failed check when not."""
    pcrs: dict[str, dict[int, bytes]] = {
        bank: {int(pcr): bytes.fromhex(value) for pcr, value in values.items()}
        for bank, values in body.pcrs.items()}
    submitted = Evidence(
        nonce=b64decode(body.nonce, "nonce"),
        quote_attest=b64decode(body.quote.attest, "quote.attest"),
        quote_signature=b64decode(body.quote.signature, "quote.signature"),
        pcrs=pcrs, event_log=b64decode(body.event_log, "event_log"),
        binding_key_public=b64decode(body.binding_key.public, "binding_key.public"),
        certify_attest=b64decode(body.binding_key.certify_attest, "binding_key.certify_attest"),
        certify_signature=b64decode(body.binding_key.certify_signature,
                                    "binding_key.certify_signature"))
    result = await run_blocking(request, partial(platform_of(request).attestation.submit,
                                                 caller, request.state.request_id, submitted))
    return json_response(result_out(result))

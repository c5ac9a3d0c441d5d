"""The audit log: list, export (JSON lines), verify, checkpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from trustauthority.api.routes.convert import audit_out
from trustauthority.api.security import Requires, platform_of
from trustauthority.errors import AuditChainBroken
from trustauthority.schemas import (
    AuditEntryOut,
    AuditKeyOut,
    AuditVerificationOut,
    CheckpointOut,
)
from trustauthority.service.audit import AuditFilter
from trustauthority.service.authz import Caller, Permission

router = APIRouter(prefix="/audit", tags=["audit"])

Reader = Annotated[Caller, Depends(Requires(Permission.AUDIT_READ))]


@router.get("", response_model=list[AuditEntryOut])
def list_entries(
    request: Request, caller: Reader,
    since: Annotated[datetime | None, Query(
        description="entries at or after (ISO 8601; UTC when no offset is given)")] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    principal: Annotated[str | None, Query(max_length=128)] = None,
    after: Annotated[int | None, Query(ge=-1, le=2**62, description="sequence to page after")]
    = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntryOut]:
    entries = platform_of(request).audit_entries(
        caller, AuditFilter(since=since, action=action, principal=principal,
                            after_sequence=after, limit=limit))
    return [audit_out(entry) for entry in entries]


@router.get("/export", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {}}}})
def export(request: Request, caller: Reader) -> StreamingResponse:
    """Every entry, oldest first, one JSON object per line (verifiable offline)."""
    entries = platform_of(request).audit_export(caller)

    def lines() -> Iterator[bytes]:
        for entry in entries:
            yield (json.dumps(entry.to_json(), sort_keys=True) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/verification", response_model=AuditVerificationOut)
def verify(request: Request, caller: Reader) -> AuditVerificationOut:
    """Verify the whole chain and its signed checkpoints now."""
    try:
        result = platform_of(request).audit_verify(caller)
    except AuditChainBroken as broken:
        return AuditVerificationOut(ok=False, broken_at=broken.sequence, detail=str(broken))
    return AuditVerificationOut(
        ok=True, entries=result.entries, head_sequence=result.head_sequence,
        head_hash=result.head_hash, checkpoints=result.checkpoints,
        last_checkpoint=result.last_checkpoint, unsigned_tail=result.unsigned_tail)


@router.get("/keys", response_model=list[AuditKeyOut])
def keys(request: Request, caller: Reader) -> list[AuditKeyOut]:
    """The public keys that sign the log's checkpoints, newest first."""
    return [AuditKeyOut(kid=key.kid, algorithm=key.algorithm, public_pem=key.public_pem,
                        created_at=key.created_at, retired_at=key.retired_at,
                        active=key.retired_at is None)
            for key in platform_of(request).audit_keys(caller)]


@router.post("/checkpoints", response_model=CheckpointOut, status_code=201)
def checkpoint(request: Request,
               caller: Annotated[Caller, Depends(Requires(Permission.AUDIT_CHECKPOINT))],
               ) -> CheckpointOut:
    """Sign the current head of the chain now."""
    made = platform_of(request).audit_checkpoint(caller, request.state.request_id)
    if made is None:
        return CheckpointOut(created=False)
    return CheckpointOut(created=True, sequence=made.sequence, entry_hash=made.entry_hash,
                         kid=made.kid)

"""Service views to response bodies, and request fields to what the use cases take."""

from __future__ import annotations

import base64
import binascii

from fastapi import Response
from pydantic import BaseModel

from trustauthority.audit.chain import AuditEntry
from trustauthority.errors import UsageError
from trustauthority.schemas import AuditEntryOut, PrincipalOut, TokenOut
from trustauthority.service.principals import PrincipalView, TokenView


def principal_out(view: PrincipalView) -> PrincipalOut:
    return PrincipalOut(id=view.id, name=view.name, kind=view.kind, roles=list(view.roles),
                        description=view.description,
                        multiple_roles_approved=view.multiple_roles_approved,
                        created_at=view.created_at, created_by=view.created_by,
                        revoked_at=view.revoked_at)


def token_out(view: TokenView) -> TokenOut:
    return TokenOut(id=view.id, principal=view.principal, label=view.label,
                    created_at=view.created_at, expires_at=view.expires_at,
                    revoked_at=view.revoked_at)


def audit_out(entry: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(**entry.to_json())


def b64decode(value: str, what: str) -> bytes:
    """A base64 request field; the schemas already bound its size and alphabet."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{what} is not valid base64") from None


def json_response(body: BaseModel, status_code: int = 200) -> Response:
    """`body` as the JSON response, for the routes every host calls all the time.

    A route that returns its model makes FastAPI validate it again against the route's
    response model, in a worker thread of its own (a sync route's third thread hand-off). The
    body here is already that model, validated when it was built; the route keeps
    `response_model` for the OpenAPI document.
    """
    return Response(body.model_dump_json(), status_code=status_code,
                    media_type="application/json")

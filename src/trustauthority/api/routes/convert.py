"""Service views to response bodies."""

from __future__ import annotations

from trustauthority.audit.chain import AuditEntry
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

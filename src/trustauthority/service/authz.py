"""Roles, permissions and the one authorization check (separation of duties).

Every use case calls `authorize` before it touches anything, so the API's early check in the
routes is a convenience, never the only gate. The permission table is the product's role model
(DESIGN.md, "Actors and roles"): trust configuration belongs to the trust-admin alone; the
infra-admin runs hosts and workload keys; the auditor reads; a host only speaks for itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from trustauthority.errors import PermissionDenied, UsageError


class Role(StrEnum):
    TRUST_ADMIN = "trust-admin"
    INFRA_ADMIN = "infra-admin"
    AUDITOR = "auditor"
    HOST = "host"


class Permission(StrEnum):
    SELF_READ = "self:read"
    PRINCIPAL_READ = "principal:read"
    PRINCIPAL_MANAGE = "principal:manage"
    AUDIT_READ = "audit:read"
    AUDIT_CHECKPOINT = "audit:checkpoint"
    TRUST_READ = "trust:read"  # TPM CAs, allowed EKs, TPM settings, clusters: trust state
    TPM_TRUST_MANAGE = "tpm-trust:manage"
    CLUSTER_MANAGE = "cluster:manage"
    BASELINE_MANAGE = "baseline:manage"
    HOST_READ = "host:read"  # hosts, their trust state and history, join tokens
    HOST_MANAGE = "host:manage"  # join tokens, approving and removing hosts
    ATTEST = "attest"  # a host proving its own boot state
    SERVICE_KEY_MANAGE = "service-key:manage"  # rotating the token-signing key
    KEY_PROVIDER_MANAGE = "key-provider:manage"  # key servers, providers, grants, rekey
    WORKLOAD_KEY_READ = "workload-key:read"  # which workload keys exist (never their value)
    WORKLOAD_KEY_MANAGE = "workload-key:manage"  # creating and rewrapping workload keys
    KEY_RELEASE = "key:release"  # a trusted host asking for its workload's key


_EVERYONE = frozenset(Role)

#: who may do what; a permission missing here is granted to nobody
GRANTS: dict[Permission, frozenset[Role]] = {
    Permission.SELF_READ: _EVERYONE,
    Permission.PRINCIPAL_READ: frozenset({Role.TRUST_ADMIN, Role.AUDITOR}),
    Permission.PRINCIPAL_MANAGE: frozenset({Role.TRUST_ADMIN}),
    Permission.AUDIT_READ: frozenset({Role.TRUST_ADMIN, Role.AUDITOR}),
    Permission.AUDIT_CHECKPOINT: frozenset({Role.TRUST_ADMIN}),
    Permission.TRUST_READ: frozenset({Role.TRUST_ADMIN, Role.INFRA_ADMIN, Role.AUDITOR}),
    Permission.TPM_TRUST_MANAGE: frozenset({Role.TRUST_ADMIN}),
    Permission.CLUSTER_MANAGE: frozenset({Role.TRUST_ADMIN}),
    Permission.BASELINE_MANAGE: frozenset({Role.TRUST_ADMIN}),
    Permission.HOST_READ: frozenset({Role.TRUST_ADMIN, Role.INFRA_ADMIN, Role.AUDITOR}),
    Permission.HOST_MANAGE: frozenset({Role.INFRA_ADMIN}),
    Permission.ATTEST: frozenset({Role.HOST}),
    Permission.SERVICE_KEY_MANAGE: frozenset({Role.TRUST_ADMIN}),
    Permission.KEY_PROVIDER_MANAGE: frozenset({Role.TRUST_ADMIN}),
    Permission.WORKLOAD_KEY_READ: frozenset({Role.TRUST_ADMIN, Role.INFRA_ADMIN, Role.AUDITOR}),
    Permission.WORKLOAD_KEY_MANAGE: frozenset({Role.INFRA_ADMIN}),
    Permission.KEY_RELEASE: frozenset({Role.HOST}),
}


def parse_roles(names: Iterable[str]) -> frozenset[Role]:
    roles = set()
    for name in names:
        try:
            roles.add(Role(name))
        except ValueError:
            known = ", ".join(role.value for role in Role)
            raise UsageError(f"unknown role {name!r} (roles: {known})") from None
    return frozenset(roles)


def check_role_combination(roles: frozenset[Role], *, multiple_approved: bool) -> None:
    """Separation of duties: one role per principal unless a trust-admin approves more.

    A host's credential lives on a machine; it never carries a person's role, approval or not.
    """
    if not roles:
        raise UsageError("a principal needs a role")
    if Role.HOST in roles and len(roles) > 1:
        raise UsageError("the host role cannot be combined with another role")
    if len(roles) > 1 and not multiple_approved:
        raise UsageError("several roles break separation of duties; a trust-admin must approve "
                         "it explicitly (allow_multiple_roles)")


@dataclass(frozen=True)
class Caller:
    """An authenticated principal, as the use cases see it."""

    principal_id: str
    name: str
    roles: frozenset[Role]
    credential: str  # "token:<id>" or "certificate:<sha256>", for the audit log

    def role_for(self, permission: Permission) -> Role | None:
        """The caller's role that grants `permission` (the one the audit entry names)."""
        allowed = GRANTS.get(permission, frozenset())
        for role in sorted(self.roles):
            if role in allowed:
                return role
        return None

    @property
    def role_names(self) -> str:
        return ",".join(sorted(self.roles))


def authorize(caller: Caller, permission: Permission) -> Role:
    """The role under which `caller` may do `permission`; PermissionDenied otherwise."""
    role = caller.role_for(permission)
    if role is None:
        raise PermissionDenied(f"{caller.name} ({caller.role_names}) may not {permission.value}")
    return role

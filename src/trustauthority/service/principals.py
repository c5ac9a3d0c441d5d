"""Principals and their credentials: who may call the service, with which roles.

Only a trust-admin manages principals. Separation of duties holds by default: one role per
principal unless the trust-admin approves several explicitly (and never a host with a person's
role); the last trust-admin cannot be revoked, so the service cannot be locked out of itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from sqlalchemy import Row, bindparam, func, select
from sqlalchemy.orm import Session

from trustauthority import pki
from trustauthority.errors import Conflict, NotFound, UsageError
from trustauthority.service.audit import AuditLog
from trustauthority.service.authz import (
    Caller,
    Permission,
    Role,
    authorize,
    check_role_combination,
    parse_roles,
)
from trustauthority.service.credentials import new_token
from trustauthority.service.keys import KeyPurpose, ServiceKeys
from trustauthority.service.names import check_name
from trustauthority.store.db import Database
from trustauthority.store.models import (
    ApiToken,
    ClientCertificate,
    Principal,
    PrincipalRole,
    table_of,
)

KINDS = ("person", "automation", "host")
MAX_TOKEN_LIFETIME = timedelta(days=3650)


@dataclass(frozen=True)
class PrincipalView:
    id: str
    name: str
    kind: str
    roles: tuple[str, ...]
    description: str
    multiple_roles_approved: bool
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


@dataclass(frozen=True)
class TokenView:
    id: str
    principal: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class IssuedToken:
    view: TokenView
    token: str  # the only time the secret exists outside the caller's hands


@dataclass(frozen=True)
class IssuedCertificate:
    principal: str
    fingerprint_sha256: str
    serial: str
    not_after: datetime
    certificate_pem: str
    ca_pem: str


_PRINCIPALS = table_of(Principal)
#: `whoami` is every client's first call and what agents check, so it is one Core read of the
#: principal's row, not an ORM load (its roles came with the credential's authentication)
_PRINCIPAL_BY_ID = select(_PRINCIPALS).where(_PRINCIPALS.c.id == bindparam("principal_id"))


def _view(principal: Principal | Row[Any], roles: Iterable[str] | None = None) -> PrincipalView:
    """A principal as the API shows it; `roles` for a bare row (an ORM one brings its own)."""
    if roles is None:
        roles = (role.role for role in principal.roles)
    return PrincipalView(
        id=principal.id, name=principal.name, kind=principal.kind,
        roles=tuple(sorted(roles)), description=principal.description,
        multiple_roles_approved=principal.multiple_roles_approved,
        created_at=principal.created_at, created_by=principal.created_by,
        revoked_at=principal.revoked_at)


def _token_view(token: ApiToken, principal: str) -> TokenView:
    return TokenView(id=token.id, principal=principal, label=token.label,
                     created_at=token.created_at, expires_at=token.expires_at,
                     revoked_at=token.revoked_at)


class PrincipalService:
    def __init__(self, db: Database, audit: AuditLog, keys: ServiceKeys,
                 clock: Callable[[], datetime]) -> None:
        self._db = db
        self._audit = audit
        self._keys = keys
        self._clock = clock

    # -- helpers ---------------------------------------------------------------------------

    def _find(self, session: Session, name: str) -> Principal:
        principal = session.scalars(select(Principal).where(Principal.name == name)).first()
        if principal is None:
            raise NotFound(f"no principal named {name[:128]!r}")
        return principal

    def _new_principal(self, session: Session, *, name: str, kind: str, roles: frozenset[Role],
                       description: str, multiple_roles_approved: bool,
                       created_by: str) -> Principal:
        check_name("principal", name)
        if kind not in KINDS:
            raise UsageError(f"kind must be one of {', '.join(KINDS)}")
        if (kind == "host") != (Role.HOST in roles):
            raise UsageError("the host role and the host kind go together")
        check_role_combination(roles, multiple_approved=multiple_roles_approved)
        if session.scalars(select(Principal.id).where(Principal.name == name)).first():
            raise Conflict(f"a principal named {name!r} already exists")
        principal = Principal(
            id=str(uuid.uuid4()), name=name, kind=kind, description=description[:512],
            multiple_roles_approved=multiple_roles_approved and len(roles) > 1,
            created_at=self._clock(), created_by=created_by,
            roles=[PrincipalRole(role=role.value) for role in sorted(roles)])
        session.add(principal)
        session.flush()  # tokens and certificates refer to it; insert it first
        return principal

    def _issue_token(self, session: Session, principal: Principal, *, label: str,
                     lifetime: timedelta | None, created_by: str) -> IssuedToken:
        if lifetime is not None and not timedelta(0) < lifetime <= MAX_TOKEN_LIFETIME:
            raise UsageError("a token's lifetime must be positive and at most ten years")
        made = new_token()
        now = self._clock()
        row = ApiToken(id=made.token_id, principal_id=principal.id,
                       secret_hash=made.secret_hash, label=label[:128], created_at=now,
                       created_by=created_by,
                       expires_at=None if lifetime is None else now + lifetime)
        session.add(row)
        return IssuedToken(_token_view(row, principal.name), made.token)

    # -- hosts (for enrollment: the host's EK vouched, not a caller) ------------------------

    def new_host_principal(self, session: Session, host_id: str) -> Principal:
        """The principal a host authenticates as, named by its id; reused if it existed."""
        existing = session.scalars(select(Principal).where(Principal.name == host_id)).first()
        if existing is not None:
            if existing.kind != "host":
                raise Conflict(f"a principal named {host_id!r} exists and is not a host")
            existing.revoked_at = None
            now = self._clock()
            for token in session.scalars(select(ApiToken).where(
                    ApiToken.principal_id == existing.id, ApiToken.revoked_at.is_(None))):
                token.revoked_at = now
            return existing
        return self._new_principal(session, name=host_id, kind="host",
                                   roles=frozenset({Role.HOST}), description="enrolled host",
                                   multiple_roles_approved=False, created_by="enrollment")

    def issue_host_credential(self, session: Session, principal: Principal) -> str:
        """A new API token for an enrolled host (no expiry: revoked when the host is)."""
        return self._issue_token(session, principal, label="enrollment", lifetime=None,
                                 created_by="enrollment").token

    # -- bootstrap -------------------------------------------------------------------------

    def bootstrap_admin(self, name: str, request_id: str) -> IssuedToken:
        """The first trust-admin and its token; only on a store without principals."""
        with self._db.session() as session:
            if session.scalar(select(func.count()).select_from(Principal)):
                raise Conflict("the store already has principals; the first trust-admin is "
                               "created only once")
            principal = self._new_principal(
                session, name=name, kind="person", roles=frozenset({Role.TRUST_ADMIN}),
                description="first trust-admin, created by init",
                multiple_roles_approved=False, created_by="init")
            issued = self._issue_token(session, principal, label="init", lifetime=None,
                                       created_by="init")
            self._audit.record(session, principal="init", role="system",
                               action="principal.create", target=name, outcome="success",
                               request_id=request_id,
                               details={"roles": [Role.TRUST_ADMIN.value], "kind": "person",
                                        "token_id": issued.view.id})
            return issued

    # -- use cases -------------------------------------------------------------------------

    def whoami(self, caller: Caller) -> PrincipalView:
        authorize(caller, Permission.SELF_READ)
        with self._db.reading() as connection:
            row = connection.execute(_PRINCIPAL_BY_ID,
                                     {"principal_id": caller.principal_id}).first()
        if row is None:
            raise NotFound(f"no principal named {caller.name[:128]!r}")
        return _view(row, (role.value for role in caller.roles))

    def list_all(self, caller: Caller, *,
                 include_revoked: bool = False) -> list[PrincipalView]:
        authorize(caller, Permission.PRINCIPAL_READ)
        with self._db.session(read_only=True) as session:
            statement = select(Principal).order_by(Principal.name)
            if not include_revoked:
                statement = statement.where(Principal.revoked_at.is_(None))
            return [_view(principal) for principal in session.scalars(statement)]

    def get(self, caller: Caller, name: str) -> PrincipalView:
        authorize(caller, Permission.PRINCIPAL_READ)
        with self._db.session(read_only=True) as session:
            return _view(self._find(session, name))

    def create(self, caller: Caller, request_id: str, *, name: str, kind: str,
               roles: list[str], description: str = "",
               allow_multiple_roles: bool = False) -> PrincipalView:
        role = authorize(caller, Permission.PRINCIPAL_MANAGE)
        wanted = parse_roles(roles)
        with self._db.session() as session:
            principal = self._new_principal(
                session, name=name, kind=kind, roles=wanted, description=description,
                multiple_roles_approved=allow_multiple_roles, created_by=caller.name)
            self._audit.record(session, principal=caller.name, role=role,
                               action="principal.create", target=name, outcome="success",
                               request_id=request_id,
                               details={"roles": sorted(wanted), "kind": kind,
                                        "multiple_roles_approved": allow_multiple_roles})
            session.flush()
            return _view(principal)

    def revoke(self, caller: Caller, request_id: str, name: str) -> PrincipalView:
        """Revoke a principal and with it every token and certificate it holds."""
        role = authorize(caller, Permission.PRINCIPAL_MANAGE)
        with self._db.session() as session:
            principal = self._find(session, name)
            if principal.revoked_at is not None:
                raise Conflict(f"{name} is already revoked")
            if Role.TRUST_ADMIN in {r.role for r in principal.roles}:
                others = session.scalar(
                    select(func.count()).select_from(Principal).join(PrincipalRole)
                    .where(PrincipalRole.role == Role.TRUST_ADMIN.value,
                           Principal.revoked_at.is_(None), Principal.id != principal.id))
                if not others:
                    raise Conflict(f"{name} is the last trust-admin; add another first")
            now = self._clock()
            principal.revoked_at = now
            tokens = list(session.scalars(select(ApiToken).where(
                ApiToken.principal_id == principal.id, ApiToken.revoked_at.is_(None))))
            certificates = list(session.scalars(select(ClientCertificate).where(
                ClientCertificate.principal_id == principal.id,
                ClientCertificate.revoked_at.is_(None))))
            for token in tokens:
                token.revoked_at = now
            for certificate in certificates:
                certificate.revoked_at = now
            self._audit.record(session, principal=caller.name, role=role,
                               action="principal.revoke", target=name, outcome="success",
                               request_id=request_id,
                               details={"revoked_credentials": {
                                   "api": len(tokens), "certificates": len(certificates)}})
            return _view(principal)

    def create_token(self, caller: Caller, request_id: str, name: str, *, label: str = "",
                     lifetime: timedelta | None = None) -> IssuedToken:
        role = authorize(caller, Permission.PRINCIPAL_MANAGE)
        with self._db.session() as session:
            principal = self._find(session, name)
            if principal.revoked_at is not None:
                raise Conflict(f"{name} is revoked")
            issued = self._issue_token(session, principal, label=label, lifetime=lifetime,
                                       created_by=caller.name)
            self._audit.record(session, principal=caller.name, role=role,
                               action="token.create", target=name, outcome="success",
                               request_id=request_id,
                               details={"token_id": issued.view.id, "label": label[:128],
                                        "expires_at": (issued.view.expires_at.isoformat()
                                                       if issued.view.expires_at else None)})
            return issued

    def list_tokens(self, caller: Caller, name: str) -> list[TokenView]:
        authorize(caller, Permission.PRINCIPAL_READ)
        with self._db.session(read_only=True) as session:
            principal = self._find(session, name)
            rows = session.scalars(select(ApiToken).where(ApiToken.principal_id == principal.id)
                                   .order_by(ApiToken.created_at))
            return [_token_view(row, principal.name) for row in rows]

    def revoke_token(self, caller: Caller, request_id: str, name: str,
                     token_id: str) -> TokenView:
        role = authorize(caller, Permission.PRINCIPAL_MANAGE)
        with self._db.session() as session:
            principal = self._find(session, name)
            row = session.get(ApiToken, token_id)
            if row is None or row.principal_id != principal.id:
                raise NotFound(f"{name} has no token {token_id[:32]!r}")
            if row.revoked_at is None:
                row.revoked_at = self._clock()
                self._audit.record(session, principal=caller.name, role=role,
                                   action="token.revoke", target=name, outcome="success",
                                   request_id=request_id, details={"token_id": token_id})
            return _token_view(row, principal.name)

    def issue_certificate(self, caller: Caller, request_id: str, name: str, *,
                          raw_csr_pem: str, lifetime: timedelta = pki.CLIENT_LIFETIME,
                          ) -> IssuedCertificate:
        """An mTLS client certificate for `name`, from a CSR whose key the client keeps."""
        role = authorize(caller, Permission.PRINCIPAL_MANAGE)
        csr = pki.load_csr(raw_csr_pem)
        if not timedelta(0) < lifetime <= pki.CLIENT_LIFETIME:
            raise UsageError("a client certificate lives at most a year")
        with self._db.session() as session:
            principal = self._find(session, name)
            if principal.revoked_at is not None:
                raise Conflict(f"{name} is revoked")
            _kid, ca_key = self._keys.signer(session, KeyPurpose.TLS_CA)
            ca = self._keys.certificate(session, KeyPurpose.TLS_CA)
            now = self._clock()
            certificate = pki.issue_client_certificate(ca_key, ca, csr, principal.name, now,
                                                       lifetime)
            fingerprint = pki.fingerprint(certificate)
            session.add(ClientCertificate(
                fingerprint_sha256=fingerprint, principal_id=principal.id,
                serial=format(certificate.serial_number, "x"),
                subject=certificate.subject.rfc4514_string()[:512],
                not_after=certificate.not_valid_after_utc, created_at=now))
            self._audit.record(session, principal=caller.name, role=role,
                               action="certificate.issue", target=name, outcome="success",
                               request_id=request_id,
                               details={"fingerprint_sha256": fingerprint,
                                        "not_after": certificate.not_valid_after_utc.isoformat()})
            return IssuedCertificate(
                principal=name, fingerprint_sha256=fingerprint,
                serial=format(certificate.serial_number, "x"),
                not_after=certificate.not_valid_after_utc,
                certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
                ca_pem=ca.public_bytes(serialization.Encoding.PEM).decode())

"""API tokens and client certificates: making them, and turning one into a `Caller`.

A token is `tat_<id>_<secret>`: the id finds the row, the secret (256 random bits) is checked
against a SHA-256 hash. A fast hash is right here: the secret is random, not a password, so there
is nothing to brute-force, and a slow hash would only slow every API call. Failures say the same
thing whatever went wrong, so a caller learns nothing about which tokens exist; the audit log
gets the real reason.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, FromClause, Row, Select, bindparam, select

from trustauthority.errors import AuthenticationFailed
from trustauthority.service.authz import Caller, parse_roles
from trustauthority.store.models import (
    ApiToken,
    ClientCertificate,
    Principal,
    PrincipalRole,
    table_of,
)


@dataclass(frozen=True)
class TokenKind:
    """`<prefix>_<16 hex id>_<43 base64url secret>`; the kind's purpose is hashed with the
    secret, so a secret of one kind never verifies as another."""

    prefix: str
    purpose: str

    def split(self, unverified: str) -> tuple[str, str] | None:
        """(id, secret) of something that looks like a token of this kind, else None."""
        match = re.fullmatch(rf"{self.prefix}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})", unverified)
        return (match.group(1), match.group(2)) if match else None

    def hash(self, token_id: str, secret: str) -> str:
        return hashlib.sha256(f"trustauthority {self.purpose} v1\0{token_id}\0{secret}"
                              .encode()).hexdigest()

    def matches(self, stored_hash: str | None, token_id: str, secret: str) -> bool:
        """Compared even for unknown ids, so timing does not tell which ids exist."""
        expected = stored_hash if stored_hash is not None else "0" * 64
        return hmac.compare_digest(expected, self.hash(token_id, secret)) and (
            stored_hash is not None)


#: the prefixes are public, so that secret scanners can match them
API_TOKEN = TokenKind("tat", "api token")
JOIN_TOKEN = TokenKind("taj", "join token")


@dataclass(frozen=True)
class NewToken:
    token_id: str
    secret_hash: str
    token: str  # shown once, never stored


def new_token(kind: TokenKind = API_TOKEN) -> NewToken:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewToken(token_id, kind.hash(token_id, secret), f"{kind.prefix}_{token_id}_{secret}")


class CredentialRefused(AuthenticationFailed):
    """AuthenticationFailed with the real reason, kept for the audit log only."""

    def __init__(self, reason: str, credential: str) -> None:
        self.reason = reason
        self.credential = credential
        super().__init__("invalid, expired or revoked credential")


_TOKENS = table_of(ApiToken).c
_CERTIFICATES = table_of(ClientCertificate).c
_PRINCIPALS = table_of(Principal).c
_ROLES = table_of(PrincipalRole).c


def _credential_query(credential_table: FromClause, key: ColumnElement[str],
                      *columns: ColumnElement[Any]) -> Select[Any]:
    """The credential's row, its principal and each of its roles, in one statement.

    Built once: every API call authenticates, and a statement object made per call costs
    more to key for SQLAlchemy's compiled cache than the query costs SQLite to run.
    """
    return (select(*columns, _PRINCIPALS.id.label("principal_id"),
                   _PRINCIPALS.name.label("principal_name"),
                   _PRINCIPALS.revoked_at.label("principal_revoked_at"), _ROLES.role)
            .select_from(credential_table)
            .join(table_of(Principal), _PRINCIPALS.id == credential_table.c.principal_id)
            .outerjoin(table_of(PrincipalRole), _ROLES.principal_id == _PRINCIPALS.id)
            .where(key == bindparam("key")))


_TOKEN_QUERY = _credential_query(table_of(ApiToken), _TOKENS.id, _TOKENS.secret_hash,
                                 _TOKENS.revoked_at, _TOKENS.expires_at)
_CERTIFICATE_QUERY = _credential_query(
    table_of(ClientCertificate), _CERTIFICATES.fingerprint_sha256, _CERTIFICATES.revoked_at,
    _CERTIFICATES.not_after)


def _caller(rows: Sequence[Row[Any]], credential: str) -> Caller:
    """The principal of `rows` (one row per role; `_credential_query`'s principal columns)."""
    first = rows[0]
    if first.principal_revoked_at is not None:
        raise CredentialRefused("principal revoked", credential)
    return Caller(principal_id=first.principal_id, name=first.principal_name,
                  roles=parse_roles(row.role for row in rows if row.role is not None),
                  credential=credential)


def token_id_of(unverified_token: str) -> str | None:
    """The id part of something that looks like a token (for the audit log), else None."""
    parts = API_TOKEN.split(unverified_token)
    return parts[0] if parts else None


def authenticate_token(connection: Connection, unverified_token: str, now: datetime) -> Caller:
    parts = API_TOKEN.split(unverified_token)
    if parts is None:
        raise CredentialRefused("not a Trust Authority API token", "token:malformed")
    token_id, secret = parts
    credential = f"token:{token_id}"
    rows = connection.execute(_TOKEN_QUERY, {"key": token_id}).all()
    token = rows[0] if rows else None
    if not API_TOKEN.matches(token.secret_hash if token else None, token_id, secret) \
            or token is None:
        raise CredentialRefused("unknown token or wrong secret", credential)
    if token.revoked_at is not None:
        raise CredentialRefused("token revoked", credential)
    if token.expires_at is not None and token.expires_at <= now:
        raise CredentialRefused("token expired", credential)
    return _caller(rows, credential)


def authenticate_certificate(connection: Connection, fingerprint_sha256: str,
                             now: datetime) -> Caller:
    """A client certificate the TLS layer already verified against the service's CA."""
    credential = f"certificate:{fingerprint_sha256[:16]}"
    rows = connection.execute(_CERTIFICATE_QUERY, {"key": fingerprint_sha256}).all()
    if not rows:
        raise CredentialRefused("certificate not issued to a principal", credential)
    certificate = rows[0]
    if certificate.revoked_at is not None:
        raise CredentialRefused("certificate revoked", credential)
    if certificate.not_after <= now:
        raise CredentialRefused("certificate expired", credential)
    return _caller(rows, credential)

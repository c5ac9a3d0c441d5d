"""Authentication and the route-level role check.

Each `/v1` route declares what it needs with `Requires(Permission.X)`; the dependency
authenticates (bearer token, or a client certificate the TLS layer verified) and refuses a
principal outside the role before the body is validated (FastAPI reads it first, within the
middleware's size limit). The use case checks again: this is the early gate, not the only one.
A test walks every route and fails on one without a `Requires`.
"""

from __future__ import annotations

import hashlib
import ssl

from fastapi import Request

from trustauthority.api.offload import run_blocking
from trustauthority.errors import PermissionDenied
from trustauthority.service.authz import Caller, Permission, authorize
from trustauthority.service.platform import Platform


def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def _certificate_fingerprint(request: Request) -> str | None:
    tls = request.scope.get("extensions", {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain:
        return None
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(chain[0])).hexdigest()


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else header


class Requires:
    """The dependency every `/v1` route carries: who is calling, and may they do this?"""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> Caller:
        platform = platform_of(request)
        token = _bearer(request)
        fingerprint = _certificate_fingerprint(request)
        request_id = str(request.state.request_id)
        client = request.client.host if request.client else "-"

        def check() -> Caller:
            caller = platform.authenticate(token=token, certificate_fingerprint=fingerprint,
                                           request_id=request_id, source=client)
            try:
                authorize(caller, self.permission)
            except PermissionDenied as denied:
                platform.record_denial(caller, denied, action=self.permission.value,
                                       request_id=request_id)
                raise
            return caller

        # a database read (and an audit write on failure): see `offload` for where it runs
        return await run_blocking(request, check)

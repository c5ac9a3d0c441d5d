"""Liveness, readiness and "who am I"."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from trustauthority.api.offload import run_blocking
from trustauthority.api.routes.convert import principal_out
from trustauthority.api.security import Requires, platform_of
from trustauthority.schemas import Health, Readiness, TokenKeyRotated, WhoAmI
from trustauthority.service.authz import Caller, Permission

public = APIRouter(tags=["system"])
router = APIRouter(tags=["system"])


@public.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@public.get("/.well-known/jwks.json")
async def jwks(request: Request) -> dict[str, list[dict[str, str]]]:
    """The public keys that verify attestation tokens (RFC 7517), for hosts and relying
    parties; a rotated-out key stays here until the tokens it signed have expired."""
    return (await run_blocking(request, platform_of(request).jwks)).to_dict()


@public.get("/readyz", response_model=Readiness)
def readyz(request: Request) -> Readiness:
    """The database is reachable (503 otherwise)."""
    platform = platform_of(request)
    platform.db.ping()
    return Readiness(status="ready", database=platform.db.dialect,
                     schema_current=platform.db.schema_is_current())


@router.get("/whoami", response_model=WhoAmI)
async def whoami(request: Request,
                 caller: Annotated[Caller, Depends(Requires(Permission.SELF_READ))]) -> WhoAmI:
    view = await run_blocking(request, partial(platform_of(request).principals.whoami, caller))
    return WhoAmI(principal=principal_out(view), credential=caller.credential)


@router.post("/token-keys/rotation", response_model=TokenKeyRotated)
def rotate_token_key(request: Request, caller: Annotated[
        Caller, Depends(Requires(Permission.SERVICE_KEY_MANAGE))]) -> TokenKeyRotated:
    """Sign tokens with a new key from now on; the old key stays in the JWKS until the tokens
    it signed have expired."""
    retired, kid = platform_of(request).rotate_token_key(caller, request.state.request_id)
    return TokenKeyRotated(kid=kid, retired_kid=retired)

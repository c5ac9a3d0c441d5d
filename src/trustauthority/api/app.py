"""The FastAPI application: `/v1` routers, `/healthz`, `/readyz`, OpenAPI at `/v1/openapi.json`."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from trustauthority import __version__
from trustauthority.api import errors
from trustauthority.api.middleware import RequestContextMiddleware
from trustauthority.api.routes import audit, principals, system
from trustauthority.api.security import Requires
from trustauthority.service.authz import Permission
from trustauthority.service.platform import Platform

API_PREFIX = "/v1"
#: every router served under /v1; each of its routes must carry a Requires(...) dependency
V1_ROUTERS: tuple[APIRouter, ...] = (system.router, principals.router, audit.router)


def route_permissions() -> dict[tuple[str, str], Permission | None]:
    """(method, path) -> the permission its `Requires` demands (None: it has none).

    The role tests walk the served OpenAPI document against this table, so a route added
    without a role check fails the suite.
    """
    table: dict[tuple[str, str], Permission | None] = {}
    for router in V1_ROUTERS:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            required = [dependency.call.permission
                        for dependency in route.dependant.dependencies
                        if isinstance(dependency.call, Requires)]
            for method in route.methods or ():
                table[(method, API_PREFIX + route.path)] = required[0] if required else None
    return table


def create_app(platform: Platform, *, max_request_bytes: int = 1_048_576) -> FastAPI:
    app = FastAPI(
        title="Trust Authority", version=__version__,
        description="Attest TPM 2.0 hosts; release keys only to hosts trusted right now.",
        openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.platform = platform
    errors.install(app)
    app.include_router(system.public)
    for router in V1_ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=max_request_bytes)
    return app

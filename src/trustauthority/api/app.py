"""The FastAPI application: `/v1` routers, `/healthz`, `/readyz`, OpenAPI at `/v1/openapi.json`."""

from __future__ import annotations

from fastapi import FastAPI

from trustauthority import __version__
from trustauthority.api import errors
from trustauthority.api.middleware import RequestContextMiddleware
from trustauthority.api.routes import audit, principals, system
from trustauthority.service.platform import Platform

API_PREFIX = "/v1"


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
    for router in (system.router, principals.router, audit.router):
        app.include_router(router, prefix=API_PREFIX)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=max_request_bytes)
    return app

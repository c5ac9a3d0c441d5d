"""The FastAPI application: `/v1` routers, `/healthz`, `/readyz`, OpenAPI at `/v1/openapi.json`."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from trustauthority import __version__
from trustauthority.api import errors
from trustauthority.api.middleware import RequestContextMiddleware
from trustauthority.api.routes import (
    audit,
    baselines,
    clusters,
    hosts,
    keys,
    principals,
    system,
    trust,
)
from trustauthority.api.security import Requires
from trustauthority.schemas import ErrorBody
from trustauthority.service.authz import Permission
from trustauthority.service.platform import Platform

API_PREFIX = "/v1"
#: every router served under /v1; each of its routes must carry a Requires(...) dependency,
#: except enrollment's, where the host's EK and join token vouch (the role tests list them).
#: A request is matched against the routes in this order, one by one: the calls every host
#: makes all the time come first, so they do not pay for trying the other sixty routes.
V1_ROUTERS: tuple[APIRouter, ...] = (hosts.attestation, keys.release, system.router,
                                      principals.router, audit.router, trust.router,
                                      clusters.router, baselines.router, hosts.router,
                                      hosts.enrollment, keys.router)


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
            # as the OpenAPI document spells it: `{workload:path}` is `{workload}` there
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
            for method in route.methods or ():
                table[(method, API_PREFIX + path)] = required[0] if required else None
    return table


_ERRORS = {
    "400": "malformed request (bad JSON, an invalid value)",
    "401": "no credential, or an unknown, revoked or expired one",
    "403": "the principal's role may not do this",
    "404": "no such object",
    "409": "conflicts with the stored state",
    "413": "the body is larger than the service accepts",
    "422": "the body or a parameter does not match the schema",
    "503": "a backend (the database, every key server of a provider) is unavailable",
}


def _document_errors(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the error body every error response really has.

    FastAPI documents 422 as its own validation body and no other error; ours are all
    `ErrorBody`, so each operation lists the statuses it can answer with that schema.
    """
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["ErrorBody"] = ErrorBody.model_json_schema(
        ref_template="#/components/schemas/{model}")
    document["components"]["securitySchemes"] = {
        "apiToken": {"type": "http", "scheme": "bearer",
                     "description": "an API token `tat_<id>_<secret>`"},
        "clientCertificate": {"type": "mutualTLS",
                              "description": "a client certificate issued by the service's CA"},
    }
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, operations in document.get("paths", {}).items():
        statuses = (_ERRORS if path.startswith(API_PREFIX) else {"503": _ERRORS["503"]})
        for operation in operations.values():
            if path.startswith(API_PREFIX):
                operation["security"] = [{"apiToken": []}, {"clientCertificate": []}]
            responses = operation.setdefault("responses", {})
            for status, description in statuses.items():
                if status == "422" or status not in responses:
                    responses[status] = {"description": description, "content": reference}
    app.openapi_schema = document
    return document


def create_app(platform: Platform, *, max_request_bytes: int = 1_048_576,
               blocking_inline: bool = False) -> FastAPI:
    """The API. `blocking_inline`: run authentication and the hot routes' work on the event
    loop instead of the thread pool (`offload`; for one process on SQLite)."""
    app = FastAPI(
        title="Trust Authority", version=__version__,
        description="Attest TPM 2.0 hosts; release keys only to hosts trusted right now.",
        openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.platform = platform
    app.state.blocking_inline = blocking_inline
    errors.install(app)
    app.include_router(system.public)
    for router in V1_ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=max_request_bytes)
    app.openapi = lambda: _document_errors(app)  # type: ignore[method-assign]
    return app

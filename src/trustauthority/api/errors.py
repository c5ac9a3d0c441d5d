"""The one place errors become HTTP responses.

Every error body is `{"type", "detail", "request_id"}`; `type` is the stable `error_type` of our
exception tree. Nothing else leaks: an unexpected exception is logged with its request id and
answered with a bland 500 (by `middleware.RequestContextMiddleware`, which sees it first).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from trustauthority.errors import (
    AuditChainBroken,
    AuthenticationFailed,
    BackendUnavailable,
    ConfigError,
    Conflict,
    EvidenceError,
    JoinTokenRefused,
    KeyReleaseRefused,
    NotFound,
    PermissionDenied,
    PolicyViolation,
    TokenRejected,
    TrustAuthorityError,
    UsageError,
    WrappedKeyInvalid,
)

log = logging.getLogger("trustauthority.api")

#: what a caller learns of a failure we did not expect (the log has the rest, by request id)
INTERNAL_ERROR = "internal error; the service log has the details under this request id"

#: most specific first; the first match wins
STATUS: tuple[tuple[type[TrustAuthorityError], int], ...] = (
    (AuthenticationFailed, 401),
    (PermissionDenied, 403),
    (JoinTokenRefused, 403),
    (KeyReleaseRefused, 403),
    (TokenRejected, 403),
    (WrappedKeyInvalid, 422),
    (NotFound, 404),
    (Conflict, 409),
    (UsageError, 400),
    (EvidenceError, 422),
    (PolicyViolation, 403),
    (AuditChainBroken, 409),
    (BackendUnavailable, 503),
    (ConfigError, 500),
)

_HTTP_TYPES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "request_too_large",
               415: "unsupported_media_type"}


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def error_body(error_type: str, detail: str, request_id: str) -> dict[str, str]:
    """The one shape of every error the API answers (`schemas.ErrorBody`)."""
    return {"type": error_type, "detail": detail, "request_id": request_id}


def error_response(request: Request, status: int, error_type: str, detail: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, headers=headers,
                        content=error_body(error_type, detail, request_id_of(request)))


def status_for(error: TrustAuthorityError) -> int:
    for cls, status in STATUS:
        if isinstance(error, cls):
            return status
    return 500


async def _ours(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, TrustAuthorityError)  # noqa: S101 - registered for this type only
    status = status_for(error)
    if status >= 500:
        log.error("request %s: %s: %s", request_id_of(request), error.error_type, error)
        # server-side trouble: the details (addresses, paths) go to the log, not the caller
        detail = ("the service is misconfigured; see its log" if isinstance(error, ConfigError)
                  else "a backend the service depends on is unavailable; retry later (the "
                       "service log has the details under this request id)")
    else:
        detail = str(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(request, status, error.error_type, detail, headers)


async def _validation(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)  # noqa: S101 - registered for this type only
    problems = error.errors()
    if any(problem.get("type") == "json_invalid" for problem in problems):
        return error_response(request, 400, "malformed_json", "the body is not valid JSON")
    described = []
    for problem in problems[:5]:
        where = ".".join(str(part) for part in problem.get("loc", ()))
        described.append(f"{where}: {problem.get('msg', 'invalid')}")
    return error_response(request, 422, "validation_error", "; ".join(described))


async def _http(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)  # noqa: S101 - registered for this type only
    error_type = _HTTP_TYPES.get(error.status_code, "http_error")
    detail = error.detail if isinstance(error.detail, str) else error_type
    return error_response(request, error.status_code, error_type, detail,
                          dict(error.headers) if error.headers else None)


def install(app: FastAPI) -> None:
    app.add_exception_handler(TrustAuthorityError, _ours)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)

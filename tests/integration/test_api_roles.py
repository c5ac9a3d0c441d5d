"""Separation of duties over real HTTPS: every role is denied every route outside its role.

The table is built from the application itself: every `/v1` route must carry a `Requires`
dependency (a new route without one fails `test_every_route_declares_its_permission`), and for
every (route, role) pair that the permission table does not grant, a request with that role's
token gets 403 `forbidden` — before the body is read — and is audited as denied.
"""

from __future__ import annotations

import re

import pytest

from tests.support.service import RunningService
from trustauthority.api.app import create_app, route_permissions
from trustauthority.service.authz import GRANTS, Permission, Role

#: routes outside /v1 that answer anyone (liveness and readiness probes)
#: no credential: health, the token keys, and enrollment (a host's EK and join token vouch)
PUBLIC = {"/healthz", "/readyz", "/.well-known/jwks.json", "/v1/enrollments",
          "/v1/enrollments/{enrollment_id}/activation"}
#: a placeholder value for every path parameter the API uses
PATH_VALUES = {"name": "no-such-principal", "token_id": "0123456789abcdef",
               "fingerprint": "ab" * 32, "version": "1", "baseline": "no-such-baseline",
               "enrollment_id": "no-such-enrollment", "provider": "no-such-provider",
               "workload": "no-such-workload"}


def _routes() -> list[tuple[str, str, Permission | None]]:
    """Every operation the app serves (its OpenAPI document) with the permission it requires."""
    table = route_permissions()
    # the document only: no platform is needed, nothing is served
    document = create_app(platform=None).openapi()  # type: ignore[arg-type]
    served = []
    for path, operations in document["paths"].items():
        for method in operations:
            served.append((method.upper(), path, table.get((method.upper(), path))))
    return served


ROUTES = _routes()


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda match: PATH_VALUES[match.group(1)], path)


def test_every_route_declares_its_permission() -> None:
    unguarded = [f"{method} {path}" for method, path, permission in ROUTES
                 if permission is None and path not in PUBLIC]
    assert not unguarded, f"routes without a Requires(...) role check: {unguarded}"
    assert len(ROUTES) >= 12, ROUTES  # the walk found the API, not an empty list
    assert all(path.startswith("/v1/") for _m, path, p in ROUTES if p is not None)


def test_only_the_trust_admin_manages_principals_and_every_other_role_is_limited() -> None:
    for role in (Role.INFRA_ADMIN, Role.AUDITOR, Role.HOST):
        denied = [p for p in Permission if role not in GRANTS.get(p, frozenset())]
        assert denied, f"{role} may do everything"
    assert GRANTS[Permission.PRINCIPAL_MANAGE] == {Role.TRUST_ADMIN}


def test_every_role_is_denied_every_route_outside_it(service: RunningService) -> None:
    tokens = {role: service.principal_with_token(f"p-{role.value}", role.value)
              for role in Role}
    checked = 0
    for role, token in tokens.items():
        with service.http(token) as http:
            for method, path, permission in ROUTES:
                if permission is None:
                    continue
                response = http.request(method, _concrete(path), json={"unexpected": 1})
                if role in GRANTS[permission]:
                    assert response.status_code != 403, (role, method, path, response.text)
                    continue
                assert response.status_code == 403, (role, method, path, response.text)
                assert response.json()["type"] == "forbidden"
                checked += 1
    assert checked >= 10
    with service.admin() as admin:
        denials = admin.audit_entries(action=Permission.PRINCIPAL_MANAGE.value, limit=1000)
    assert {entry.principal for entry in denials if entry.outcome == "denied"} == {
        "p-infra-admin", "p-auditor", "p-host"}


@pytest.mark.parametrize("credential", [None, "tat_0123456789abcdef_" + "A" * 43, "garbage"])
def test_every_guarded_route_refuses_a_missing_or_unknown_credential(
        sqlite_service: RunningService, credential: str | None) -> None:
    with sqlite_service.http(credential) as http:
        for method, path, permission in ROUTES:
            if permission is None:
                continue
            response = http.request(method, _concrete(path))
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["type"] == "unauthenticated"
            assert response.headers["www-authenticate"] == "Bearer"

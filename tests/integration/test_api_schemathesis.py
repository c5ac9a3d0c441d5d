"""Schemathesis fuzzes every operation of the served OpenAPI document over real HTTPS.

Each operation gets its own fresh service and a bounded, reproducible run (Hypothesis
`derandomize`): schemathesis's examples, coverage (boundary values, wrong types, unsupported
methods) and fuzzing phases. The requests carry the token of "fuzzer", a trust-admin and
infra-admin of its own beside the first admin (a host's token for the host's own operations), so
they pass the role gate and reach the use cases; whatever the fuzzer revokes on the way (even
itself) is fine, but no response may be a 5xx.

What each response must satisfy:

- `not_a_server_error`: never a 5xx;
- `content_type_conformance`, `response_headers_conformance`, `status_code_conformance`:
  as documented;
- `response_schema_conformance`: the documented body, errors included (`ErrorBody`);
- every error is the stable `{"type", "detail", "request_id"}` body;
- no 403 (the fuzzer holds the role of every operation; only a join token it made up is
  refused) and no 401 unless the fuzzer revoked itself.

The document is taken from the application at import time (schemathesis parametrizes at
collection, before any service runs); `test_the_fuzzed_document_is_the_served_one` proves it is
the one `/v1/openapi.json` serves. (`schemathesis.pytest.from_fixture`, which would load it from
the running service, fails on pytest 9.2: it sets `Function._nodeid`, which pytest removed.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import APIOperation, CheckContext, Response
from schemathesis import Case as GenericCase
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from tests.support.service import RunningService
from trustauthority.api.app import create_app, route_permissions
from trustauthority.schemas import PrincipalCreate
from trustauthority.service.authz import Permission
from trustauthority.store.models import Principal

#: the document only: no platform is needed to build it
DOCUMENT: dict[str, Any] = create_app(platform=None).openapi()  # type: ignore[arg-type]
schema = schemathesis.openapi.from_dict(DOCUMENT)
PERMISSIONS = route_permissions()

Case = GenericCase[APIOperation[Any, Any, Any, Any]]

FUZZER = "fuzzer"
#: the first string Hypothesis tries for a name; a principal of that name makes the shrunk and
#: boundary cases of the `{name}` routes reach a real principal (200, 201, 409), not only 404
KNOWN_NAME = "0"
ERROR_KEYS = {"type", "detail", "request_id"}
#: small enough for ~30 s on 2 cores for all 15 operations, each on a fresh service
MAX_EXAMPLES = 25
#: a 403 the fuzzer may see although its roles allow the operation: a join token, a key release
#: or an attestation token refused, or a grant the trust policy lacks
REFUSALS_NOT_OF_ROLE = {"join_token_refused", "key_release_refused", "policy_violation",
                        "token_malformed", "token_signature_invalid", "token_key_unknown",
                        "token_expired", "token_issuer_mismatch", "token_binding_mismatch",
                        "token_rejected"}


@dataclass
class FuzzTarget:
    service: RunningService
    token: str
    host_token: str

    def headers(self, case: Case) -> dict[str, str]:
        permission = PERMISSIONS.get((case.method.upper(), case.path))
        token = (self.host_token if permission in (Permission.ATTEST, Permission.KEY_RELEASE)
                 else self.token)
        return {"Authorization": f"Bearer {token}"}

    @property
    def verify(self) -> str:
        return str(self.service.ca_file)

    def revoked(self, name: str) -> bool:
        with self.service.platform.db.session(read_only=True) as session:
            revoked_at = session.scalar(select(Principal.revoked_at)
                                        .where(Principal.name == name))
        return revoked_at is not None


@pytest.fixture
def fuzz_target(sqlite_service: RunningService) -> FuzzTarget:
    token = sqlite_service.principal_with_token(FUZZER, "trust-admin", "infra-admin")
    host_token = sqlite_service.principal_with_token("fuzzer-host", "host")
    with sqlite_service.admin() as admin:
        admin.create_principal(PrincipalCreate(name=KNOWN_NAME, roles=["auditor"]))
    return FuzzTarget(sqlite_service, token, host_token)


def errors_are_the_stable_body(_ctx: CheckContext, response: Response,
                               case: Case) -> bool | None:
    if response.status_code < 400:
        return None
    body = response.json()
    if not isinstance(body, dict) or set(body) != ERROR_KEYS:
        raise AssertionError(f"{case.method} {case.formatted_path}: the {response.status_code} "
                             f"body is not the stable error body: {response.text[:300]}")
    if not all(isinstance(body[key], str) and body[key] for key in ERROR_KEYS):
        raise AssertionError(f"{case.method} {case.formatted_path}: {response.text[:300]}")
    if response.headers.get("x-request-id") != [body["request_id"]]:
        raise AssertionError(f"{case.method} {case.formatted_path}: the body's request id is "
                             f"not the header's: {response.headers}")
    return None


CHECKS = [not_a_server_error, content_type_conformance, response_headers_conformance,
          status_code_conformance, response_schema_conformance, errors_are_the_stable_body]


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_with_a_server_error(case: Case, fuzz_target: FuzzTarget) -> None:
    response = case.call_and_validate(base_url=fuzz_target.service.url,
                                      headers=fuzz_target.headers(case),
                                      verify=fuzz_target.verify, checks=CHECKS)
    request = f"{case.method} {case.formatted_path} {case.query} {case.body!r}"
    if response.status_code == 403:  # never for a role: only what the request itself lacks
        assert response.json()["type"] in REFUSALS_NOT_OF_ROLE, f"refused: {request}"
    if response.status_code == 401:
        assert fuzz_target.revoked(FUZZER), f"the fuzzer's token stopped working: {request}"


def test_every_operation_is_fuzzed() -> None:
    """Nothing is excluded: the parametrization covers every operation of the document."""
    documented = {(method.upper(), path) for path, operations in DOCUMENT["paths"].items()
                  for method in operations}
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results
    fuzzed = {(result.ok().method.upper(), result.ok().path)
              for result in results if isinstance(result, Ok)}
    assert fuzzed == documented
    assert len(fuzzed) >= 15, fuzzed


def test_the_fuzzed_document_is_the_served_one(sqlite_service: RunningService) -> None:
    with sqlite_service.http() as http:
        response = http.get("/v1/openapi.json")
    assert response.status_code == 200, response.text
    assert response.json() == DOCUMENT


def _resolve(reference: dict[str, Any]) -> dict[str, Any]:
    name = str(reference["$ref"]).removeprefix("#/components/schemas/")
    resolved: dict[str, Any] = DOCUMENT["components"]["schemas"][name]
    return resolved


def test_the_documented_422_body_is_the_one_served() -> None:
    wrong = []
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            documented = operation["responses"].get("422")
            if documented is None:
                continue
            body = _resolve(documented["content"]["application/json"]["schema"])
            properties = body.get("properties", {})
            if set(properties) != ERROR_KEYS or properties["detail"].get("type") != "string":
                wrong.append(f"{method.upper()} {path}: 422 documented as {body.get('title')}")
    assert not wrong, "\n".join(wrong)

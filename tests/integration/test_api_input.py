"""Untrusted API input gets a clean 4xx with the stable error body, never a 5xx or a traceback.

Every error the API answers is `{"type", "detail", "request_id"}` (and nothing else), with the
request id also in the `X-Request-ID` header. The tables below send what a careless or hostile
client sends — bodies that are not JSON, of the wrong shape, too large; query parameters out of
range; routes and methods that do not exist; request ids that must not be echoed — and each
must be refused with its stable `type`. The use-case refusals (duplicate names, separation of
duties, the last trust-admin) are checked here too, as the API answers them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tests.support.service import RunningService

#: the API's default request size limit (`max_request_bytes`)
LIMIT = 1_048_576
ERROR_KEYS = {"type", "detail", "request_id"}
GENERATED_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
JSON = {"Content-Type": "application/json"}


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    """`response` is the stable error body with this status and type, and leaks nothing."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["type"] == error_type, body
    assert isinstance(body["detail"], str), body
    assert body["detail"], body
    assert body["request_id"] == response.headers["x-request-id"], (body, response.headers)
    for leak in ("Traceback", 'File "', "sqlalchemy", "pydantic_core"):
        assert leak not in response.text, response.text
    return body


def principal_names(service: RunningService) -> set[str]:
    with service.admin() as admin:
        return {principal.name for principal in admin.list_principals(include_revoked=True)}


# -- bodies that are not JSON ----------------------------------------------------------------

MALFORMED_JSON = [
    pytest.param(b"{", id="truncated-object"),
    pytest.param(b'{"name": "x", "roles": ["auditor"]', id="unclosed"),
    pytest.param(b"{'name': 'x', 'roles': ['auditor']}", id="single-quotes"),
    pytest.param(b'{"name": "x", "roles": ["auditor"],}', id="trailing-comma"),
    pytest.param(b"name=x&roles=auditor", id="form-encoded"),
    pytest.param(b'{"name": "x"} {"name": "y"}', id="two-documents"),
]


@pytest.mark.parametrize("body", MALFORMED_JSON)
def test_a_body_that_is_not_json_is_a_400_malformed_json(
        sqlite_service: RunningService, body: bytes) -> None:
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post("/v1/principals", content=body, headers=JSON)
    assert_error(response, 400, "malformed_json")
    assert principal_names(sqlite_service) == {"admin"}


def test_a_body_that_is_not_utf8_is_a_clean_400(sqlite_service: RunningService) -> None:
    # JSON must be UTF-8 (RFC 8259); FastAPI refuses the bytes before they reach the JSON parser
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post("/v1/principals", headers=JSON,
                             content=b'{"name": "\xff\xfe", "roles": ["auditor"]}')
    assert response.status_code == 400, response.text
    assert_error(response, 400, response.json()["type"])
    assert response.json()["type"] in {"malformed_json", "bad_request"}
    assert principal_names(sqlite_service) == {"admin"}


# -- bodies of the wrong shape ---------------------------------------------------------------

BAD_BODIES = [
    # (path, body, a word the detail must name)
    pytest.param("/v1/principals", {"name": 5, "roles": ["auditor"]}, "name", id="name-not-str"),
    pytest.param("/v1/principals", {"name": "x"}, "roles", id="roles-missing"),
    pytest.param("/v1/principals", {"roles": ["auditor"]}, "name", id="name-missing"),
    pytest.param("/v1/principals", {"name": "x", "roles": "auditor"}, "roles",
                 id="roles-not-list"),
    pytest.param("/v1/principals", {"name": "x", "roles": []}, "roles", id="roles-empty"),
    pytest.param("/v1/principals", {"name": "x", "roles": ["root"]}, "roles",
                 id="role-unknown"),
    pytest.param("/v1/principals", {"name": "x", "roles": ["auditor"] * 5}, "roles",
                 id="roles-too-many"),
    pytest.param("/v1/principals", {"name": "x", "roles": ["auditor"], "kind": "robot"}, "kind",
                 id="kind-unknown"),
    pytest.param("/v1/principals", {"name": "x", "roles": ["auditor"], "is_admin": True},
                 "is_admin", id="unknown-field"),
    pytest.param("/v1/principals",
                 {"name": "x", "roles": ["auditor"], "allow_multiple_roles": "maybe"},
                 "allow_multiple_roles", id="bool-not-bool"),
    pytest.param("/v1/principals", {"name": "x", "roles": ["auditor"], "description": "d" * 513},
                 "description", id="description-too-long"),
    pytest.param("/v1/principals", ["x", ["auditor"]], "body", id="array-not-object"),
    pytest.param("/v1/principals", None, "body", id="null-body"),
    pytest.param("/v1/principals/admin/tokens", {"expires_in_days": 0}, "expires_in_days",
                 id="token-lifetime-zero"),
    pytest.param("/v1/principals/admin/tokens", {"expires_in_days": 3651}, "expires_in_days",
                 id="token-lifetime-too-long"),
    pytest.param("/v1/principals/admin/tokens", {"expires_in_days": "soon"}, "expires_in_days",
                 id="token-lifetime-not-int"),
    pytest.param("/v1/principals/admin/tokens", {"label": "l" * 129}, "label",
                 id="token-label-too-long"),
    pytest.param("/v1/principals/admin/tokens", {"label": "x", "scope": "all"}, "scope",
                 id="token-unknown-field"),
    pytest.param("/v1/principals/admin/certificates", {}, "csr_pem", id="csr-missing"),
    pytest.param("/v1/principals/admin/certificates", {"csr_pem": ""}, "csr_pem",
                 id="csr-empty"),
    pytest.param("/v1/principals/admin/certificates", {"csr_pem": "x" * 16385}, "csr_pem",
                 id="csr-too-long"),
    pytest.param("/v1/principals/admin/certificates", {"csr_pem": "x", "lifetime_days": 366},
                 "lifetime_days", id="certificate-lifetime-too-long"),
]


@pytest.mark.parametrize(("path", "body", "named"), BAD_BODIES)
def test_a_body_of_the_wrong_shape_is_a_422_validation_error(
        sqlite_service: RunningService, path: str, body: object, named: str) -> None:
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post(path, content=json.dumps(body).encode(), headers=JSON)
        error = assert_error(response, 422, "validation_error")
        assert named in error["detail"], error
        # nothing was made: no principal, no token
        tokens = http.get("/v1/principals/admin/tokens")
    assert tokens.status_code == 200, tokens.text
    assert len(tokens.json()) == 1  # the token `init` issued
    assert principal_names(sqlite_service) == {"admin"}


def test_a_missing_body_is_a_422_not_a_crash(sqlite_service: RunningService) -> None:
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post("/v1/principals")
    error = assert_error(response, 422, "validation_error")
    assert "body" in error["detail"]


BAD_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("-leading-dash", id="leading-dash"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("has space", id="space"),
    pytest.param("a/b", id="slash"),
    pytest.param("semi;colon", id="semicolon"),
    pytest.param("ümlaut", id="non-ascii"),
    pytest.param("tab\there", id="control-character"),
    pytest.param("x" * 129, id="too-long"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_principal_name_is_refused(sqlite_service: RunningService, name: str) -> None:
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post("/v1/principals", json={"name": name, "roles": ["auditor"]})
    assert response.status_code in (400, 422), response.text
    assert_error(response, response.status_code,
                 "validation_error" if response.status_code == 422 else "usage_error")
    assert principal_names(sqlite_service) == {"admin"}


# -- bodies that are too large -------------------------------------------------------------

def _padded_principal(name: str, size: int) -> bytes:
    """A valid PrincipalCreate body padded with JSON whitespace to exactly `size` bytes."""
    core = f'{{"name": "{name}", "roles": ["auditor"]'.encode()
    return core + b" " * (size - len(core) - 1) + b"}"


def _chunks(body: bytes, size: int = 65_536) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


def test_a_body_at_the_limit_is_accepted(sqlite_service: RunningService) -> None:
    body = _padded_principal("at-the-limit", LIMIT)
    assert len(body) == LIMIT
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post("/v1/principals", content=body, headers=JSON)
    assert response.status_code == 201, response.text
    assert "at-the-limit" in principal_names(sqlite_service)


def test_a_body_over_the_limit_with_a_content_length_is_a_413(
        sqlite_service: RunningService) -> None:
    body = _padded_principal("too-large", LIMIT + 1)
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post("/v1/principals", content=body, headers=JSON)
    assert response.request.headers["content-length"] == str(LIMIT + 1)
    error = assert_error(response, 413, "request_too_large")
    assert str(LIMIT) in error["detail"]
    assert "too-large" not in principal_names(sqlite_service)


def test_a_streamed_body_under_the_limit_is_accepted(sqlite_service: RunningService) -> None:
    body = _padded_principal("streamed", 300_000)
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post("/v1/principals", content=_chunks(body), headers=JSON)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 201, response.text
    assert "streamed" in principal_names(sqlite_service)


def test_a_streamed_body_over_the_limit_without_a_content_length_is_a_413(
        sqlite_service: RunningService) -> None:
    body = _padded_principal("streamed-too-large", 2 * LIMIT)
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post("/v1/principals", content=_chunks(body), headers=JSON)
    assert "content-length" not in response.request.headers
    assert "streamed-too-large" not in principal_names(sqlite_service)
    assert response.status_code < 500, response.text
    assert_error(response, 413, "request_too_large")


def test_a_streamed_body_over_the_limit_is_refused_cleanly(
        sqlite_service: RunningService) -> None:
    """The refusal leaves the connection's client and the service working, and stores nothing."""
    body = _padded_principal("streamed-refused", 2 * LIMIT)
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post("/v1/principals", content=_chunks(body), headers=JSON)
        assert_error(response, 413, "request_too_large")
        # and the client and the service go on
        assert http.get("/v1/whoami").status_code == 200
    assert "streamed-refused" not in principal_names(sqlite_service)


# -- query parameters ------------------------------------------------------------------------

BAD_QUERIES = [
    pytest.param("/v1/audit?limit=0", "limit", id="limit-zero"),
    pytest.param("/v1/audit?limit=1001", "limit", id="limit-too-large"),
    pytest.param("/v1/audit?limit=ten", "limit", id="limit-not-int"),
    pytest.param("/v1/audit?limit=", "limit", id="limit-empty"),
    pytest.param("/v1/audit?after=abc", "after", id="after-not-int"),
    pytest.param("/v1/audit?after=-2", "after", id="after-below-minus-one"),
    pytest.param(f"/v1/audit?after={2**62 + 1}", "after", id="after-too-large"),
    pytest.param(f"/v1/audit?after={10**40}", "after", id="after-huge"),
    pytest.param("/v1/audit?since=notadate", "since", id="since-not-a-date"),
    pytest.param("/v1/audit?since=2024-13-01T00:00:00Z", "since", id="since-month-13"),
    pytest.param("/v1/audit?since=2024-01-01T00:00:00%2B25:00", "since", id="since-bad-offset"),
    pytest.param("/v1/audit?action=" + "a" * 65, "action", id="action-too-long"),
    pytest.param("/v1/audit?principal=" + "p" * 129, "principal", id="principal-too-long"),
    pytest.param("/v1/principals?include_revoked=perhaps", "include_revoked",
                 id="include-revoked-not-bool"),
]


@pytest.mark.parametrize(("url", "named"), BAD_QUERIES)
def test_a_bad_query_parameter_is_a_422(sqlite_service: RunningService, url: str,
                                        named: str) -> None:
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.get(url)
    error = assert_error(response, 422, "validation_error")
    assert f"query.{named}" in error["detail"], error


@pytest.mark.parametrize("url", [
    "/v1/audit?limit=1", "/v1/audit?limit=1000", "/v1/audit?after=-1",
    f"/v1/audit?after={2**62}", "/v1/audit?since=2024-01-01T00:00:00Z",
    "/v1/audit?since=2024-01-01", "/v1/audit?action=" + "a" * 64,
])
def test_query_parameters_at_their_bounds_are_accepted(sqlite_service: RunningService,
                                                       url: str) -> None:
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.get(url)
    assert response.status_code == 200, response.text
    assert isinstance(response.json(), list)


def test_since_means_the_same_instant_whatever_its_offset(
        sqlite_service: RunningService) -> None:
    with sqlite_service.admin() as admin:
        entries = admin.audit_entries(limit=1000)
    first = datetime.fromisoformat(entries[0].time)
    last = datetime.fromisoformat(entries[-1].time)
    east, west = timezone(timedelta(hours=5)), timezone(timedelta(hours=-5))
    with sqlite_service.http(sqlite_service.admin_token) as http:
        before_all = (first - timedelta(minutes=1)).astimezone(east).isoformat()
        after_all = (last + timedelta(minutes=1)).astimezone(west).isoformat()
        everything = http.get("/v1/audit", params={"since": before_all, "limit": 1000})
        nothing = http.get("/v1/audit", params={"since": after_all, "limit": 1000})
    assert everything.status_code == nothing.status_code == 200
    assert len(everything.json()) == len(entries), before_all
    assert nothing.json() == [], after_all


# -- routes and methods ----------------------------------------------------------------------

UNKNOWN_ROUTES = [
    pytest.param("GET", "/v1/nope", id="v1-unknown"),
    pytest.param("GET", "/nope", id="root-unknown"),
    pytest.param("GET", "/v2/principals", id="other-version"),
    pytest.param("POST", "/v1/principals/admin/unknown", id="under-a-principal"),
    pytest.param("GET", "/v1/principals/admin/tokens/abc", id="token-without-action"),
    pytest.param("GET", "/v1/principals/admin/tokens/abc/revoke/more", id="too-deep"),
    pytest.param("GET", "/v1/../../etc/passwd", id="dot-dot"),
]


@pytest.mark.parametrize("token", [True, False], ids=["admin", "anonymous"])
@pytest.mark.parametrize(("method", "path"), UNKNOWN_ROUTES)
def test_an_unknown_route_is_a_404_json(sqlite_service: RunningService, method: str, path: str,
                                        token: bool) -> None:
    with sqlite_service.http(sqlite_service.admin_token if token else None) as http:
        response = http.request(method, path)
    assert_error(response, 404, "not_found")


WRONG_METHODS = [
    # (method, path, the methods the path serves)
    pytest.param("DELETE", "/v1/principals", {"GET", "POST"}, id="delete-collection"),
    pytest.param("PUT", "/v1/principals/admin", {"GET"}, id="put-principal"),
    pytest.param("DELETE", "/v1/principals/admin", {"GET"}, id="delete-principal"),
    pytest.param("GET", "/v1/principals/admin/revoke", {"POST"}, id="get-revoke"),
    pytest.param("PATCH", "/v1/principals/admin/tokens", {"GET", "POST"}, id="patch-tokens"),
    pytest.param("GET", "/v1/audit/checkpoints", {"POST"}, id="get-checkpoints"),
    pytest.param("POST", "/v1/audit/export", {"GET"}, id="post-export"),
    pytest.param("POST", "/v1/whoami", {"GET"}, id="post-whoami"),
    pytest.param("DELETE", "/healthz", {"GET"}, id="delete-healthz"),
]


@pytest.mark.parametrize(("method", "path", "served"), WRONG_METHODS)
def test_a_wrong_method_is_a_405_json(sqlite_service: RunningService, method: str, path: str,
                                      served: set[str]) -> None:
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    allowed = {part.strip() for part in response.headers["allow"].split(",")}
    # Starlette lists the methods of the first route that matched the path, which for a path
    # with two routes (GET and POST /v1/principals) is only one of them
    assert allowed, response.headers
    assert allowed <= served, (allowed, served)
    assert method not in allowed


# -- request ids -----------------------------------------------------------------------------

@pytest.mark.parametrize("offered", ["abc-123", "A.b_c-9", "0" * 64, "x"])
def test_a_valid_client_request_id_is_echoed_and_audited(sqlite_service: RunningService,
                                                         offered: str) -> None:
    with sqlite_service.http(sqlite_service.admin_token) as http:
        found = http.get("/v1/whoami", headers={"X-Request-ID": offered})
        missing = http.get("/v1/principals/nobody", headers={"X-Request-ID": offered})
        created = http.post("/v1/principals", headers={"X-Request-ID": offered},
                            json={"name": "traced", "roles": ["auditor"]})
    assert found.status_code == 200
    assert found.headers["x-request-id"] == offered
    assert assert_error(missing, 404, "not_found")["request_id"] == offered
    assert created.status_code == 201, created.text
    assert created.headers["x-request-id"] == offered
    with sqlite_service.admin() as admin:
        audited = admin.audit_entries(action="principal.create", principal="admin")
    assert [entry.request_id for entry in audited if entry.target == "traced"] == [offered]


@pytest.mark.parametrize("offered", [
    pytest.param("has space", id="space"),
    pytest.param("x" * 65, id="65-chars"),
    pytest.param("y" * 200, id="200-chars"),
    pytest.param("semi;colon", id="semicolon"),
    pytest.param("<script>", id="markup"),
    pytest.param("a/b", id="slash"),
    pytest.param("", id="empty"),
])
def test_an_invalid_client_request_id_is_replaced(sqlite_service: RunningService,
                                                  offered: str) -> None:
    with sqlite_service.http(sqlite_service.admin_token) as http:
        ok = http.get("/v1/whoami", headers={"X-Request-ID": offered})
        missing = http.get("/v1/principals/nobody", headers={"X-Request-ID": offered})
    for response in (ok, missing):
        generated = response.headers["x-request-id"]
        assert generated != offered
        assert GENERATED_REQUEST_ID.match(generated), generated
    assert assert_error(missing, 404, "not_found")["request_id"] == missing.headers[
        "x-request-id"]
    assert ok.headers["x-request-id"] != missing.headers["x-request-id"]


def test_every_request_without_an_id_gets_its_own(sqlite_service: RunningService) -> None:
    with sqlite_service.http(sqlite_service.admin_token) as http:
        ids = [http.get("/v1/whoami").headers["x-request-id"] for _ in range(5)]
    assert len(set(ids)) == 5
    assert all(GENERATED_REQUEST_ID.match(request_id) for request_id in ids), ids


# -- refusals of the use cases ---------------------------------------------------------------

def test_a_duplicate_principal_is_a_409_conflict(sqlite_service: RunningService) -> None:
    with sqlite_service.http(sqlite_service.admin_token) as http:
        first = http.post("/v1/principals", json={"name": "twice", "roles": ["auditor"]})
        again = http.post("/v1/principals", json={"name": "twice", "roles": ["infra-admin"]})
        admin_again = http.post("/v1/principals", json={"name": "admin", "roles": ["auditor"]})
        kept = http.get("/v1/principals/twice")
    assert first.status_code == 201, first.text
    assert "twice" in assert_error(again, 409, "conflict")["detail"]
    assert_error(admin_again, 409, "conflict")
    assert kept.json()["roles"] == ["auditor"]  # the first one stands


ROLE_REFUSALS = [
    # (body, a phrase of the refusal)
    pytest.param({"name": "two", "roles": ["auditor", "infra-admin"]}, "separation of duties",
                 id="two-roles-unapproved"),
    pytest.param({"name": "three", "roles": ["auditor", "infra-admin", "trust-admin"]},
                 "separation of duties", id="three-roles-unapproved"),
    pytest.param({"name": "h1", "kind": "host", "roles": ["host", "auditor"],
                  "allow_multiple_roles": True}, "cannot be combined", id="host-plus-person"),
    pytest.param({"name": "h2", "kind": "host", "roles": ["host", "trust-admin"],
                  "allow_multiple_roles": True}, "cannot be combined",
                 id="host-plus-trust-admin"),
    pytest.param({"name": "h3", "kind": "person", "roles": ["host", "auditor"],
                  "allow_multiple_roles": True}, "host", id="person-with-host-role"),
    pytest.param({"name": "h4", "kind": "person", "roles": ["host"]}, "host kind",
                 id="person-kind-host-role"),
    pytest.param({"name": "h5", "kind": "host", "roles": ["auditor"]}, "host kind",
                 id="host-kind-person-role"),
]


@pytest.mark.parametrize(("body", "phrase"), ROLE_REFUSALS)
def test_a_role_combination_that_breaks_separation_of_duties_is_a_400(
        sqlite_service: RunningService, body: dict[str, object], phrase: str) -> None:
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post("/v1/principals", json=body)
        error = assert_error(response, 400, "usage_error")
        assert phrase in error["detail"], error
        assert_error(http.get(f"/v1/principals/{body['name']}"), 404, "not_found")


def test_several_roles_are_accepted_with_explicit_approval(
        sqlite_service: RunningService) -> None:
    """The control for the refusals above: the approval is what makes the difference."""
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post("/v1/principals", json={
            "name": "two", "roles": ["auditor", "infra-admin"], "allow_multiple_roles": True})
    assert response.status_code == 201, response.text
    assert response.json()["roles"] == ["auditor", "infra-admin"]
    assert response.json()["multiple_roles_approved"] is True


def test_the_last_trust_admin_cannot_be_revoked(sqlite_service: RunningService) -> None:
    second = sqlite_service.principal_with_token("second-admin", "trust-admin")
    with sqlite_service.http(sqlite_service.admin_token) as http:
        assert_error(http.post("/v1/principals/nobody/revoke"), 404, "not_found")
        # two trust-admins: the first may go ...
        revoked = http.post("/v1/principals/admin/revoke")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    with sqlite_service.http(second) as http:
        # ... but not the one that is left, not even by itself
        last = assert_error(http.post("/v1/principals/second-admin/revoke"), 409, "conflict")
        assert "last trust-admin" in last["detail"]
        again = assert_error(http.post("/v1/principals/admin/revoke"), 409, "conflict")
        assert "already revoked" in again["detail"]
        assert http.get("/v1/whoami").status_code == 200  # still in charge


def test_the_only_trust_admin_cannot_revoke_itself(sqlite_service: RunningService) -> None:
    with sqlite_service.http(sqlite_service.admin_token) as http:
        error = assert_error(http.post("/v1/principals/admin/revoke"), 409, "conflict")
        assert "last trust-admin" in error["detail"]
        assert http.get("/v1/whoami").status_code == 200


# -- a NUL character, on both databases ------------------------------------------------------

#: (method, path, JSON body or None): each carries a NUL character in a string input
NUL_INPUTS: list[tuple[str, str, dict[str, object] | None]] = [
    ("POST", "/v1/principals", {"name": "nul-desc", "roles": ["auditor"],
                                "description": "a\x00b"}),
    ("POST", "/v1/principals", {"name": "nul\x00name", "roles": ["auditor"]}),
    ("POST", "/v1/principals/admin/tokens", {"label": "a\x00b"}),
    ("GET", "/v1/principals/a%00b", None),
    ("GET", "/v1/principals/a%00b/tokens", None),
    ("POST", "/v1/principals/admin/tokens/a%00b/revoke", None),
    ("GET", "/v1/audit?principal=a%00b", None),
    ("GET", "/v1/audit?action=a%00b", None),
]


def test_a_nul_character_in_any_string_input_is_never_a_server_error(
        service: RunningService) -> None:
    failures = []
    with service.http(service.admin_token) as http:
        for method, path, body in NUL_INPUTS:
            response = http.request(method, path, json=body)
            if response.status_code >= 500:
                failures.append(f"{method} {path} {body!r}: {response.status_code} "
                                f"{response.text[:200]}")
            elif response.status_code >= 400:
                assert_error(response, response.status_code, response.json()["type"])
        assert http.get("/readyz").status_code == 200
    assert not failures, "\n".join(failures)


def test_an_unexpected_failure_is_a_bland_500_with_its_request_id(
        sqlite_service: RunningService, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret internals /etc/trustauthority")

    monkeypatch.setattr(sqlite_service.platform.principals, "whoami", explode)
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.get("/v1/whoami")
    body = assert_error(response, 500, "internal_error")
    assert "internals" not in response.text
    assert "Traceback" not in response.text
    # the operator finds the cause in the log under the id the caller was given
    assert any(body["request_id"] in record.getMessage() and record.exc_info
               for record in caplog.records)

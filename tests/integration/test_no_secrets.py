"""No secret is ever written down: not in the audit log, an error body, the logs or the store.

One realistic run against a served instance (on SQLite and on PostgreSQL): principals of every
role, API tokens (some expiring), an mTLS client certificate, and authentication failures with a
forged but well-formed token, a real token id with a guessed secret, a revoked token, the token of
a revoked principal, a malformed token and a token under the wrong scheme; plus request bodies
that carry a token where they should not. Then none of the secrets — every token whole and its
secret part, the master key (raw, hex, base64), the private keys (the service's audit and TLS CA
keys, its TLS server key, the mTLS client's key; raw, DER, PEM) and any PEM private key — may
appear in

(a) the audit export, (b) any error body (or header) the API answered, (c) the server's logs
(`trustauthority`, `uvicorn`, `alembic`, and SQLAlchemy's statements with their parameters, all
at DEBUG, from `init` on), (d) the store: the raw SQLite file and its WAL, and every column of
every table on either database.

Each place is shown to hold what it should (the token ids, the hashes of the secrets, the access
log lines), so an empty or wrong haystack cannot pass. The audit log must have recorded every
failure by token id only.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine, MetaData, select

from tests.support.service import RunningService
from trustauthority.schemas import CertificateCreate, PrincipalCreate, TokenCreate
from trustauthority.service.credentials import API_TOKEN
from trustauthority.service.keys import KeyPurpose

#: the server side's loggers, captured from `init` on
LOGGERS = ("trustauthority", "uvicorn", "alembic", "sqlalchemy.engine")


@dataclass
class Secrets:
    """Every secret of the run, by a label that names it without showing it."""

    needles: dict[str, bytes] = field(default_factory=dict)
    #: token id -> secret, for the tokens the service issued
    issued: dict[str, str] = field(default_factory=dict)

    def token(self, label: str, token: str, *, issued: bool = True) -> str:
        _prefix, token_id, secret = token.split("_", 2)
        self.needles[f"{label} (whole token)"] = token.encode()
        self.needles[f"{label} (secret part)"] = secret.encode()
        if issued:
            self.issued[token_id] = secret
        return token_id

    def master_key(self, key: bytes) -> None:
        forms = {
            "raw": key, "hex": key.hex().encode(), "HEX": key.hex().upper().encode(),
            "base64": base64.b64encode(key), "base64url": base64.urlsafe_b64encode(key),
        }
        for name, value in list(forms.items()):
            forms[f"{name} unpadded"] = value.rstrip(b"=")
        for name, value in forms.items():
            self.needles[f"master key ({name})"] = value

    def private_key(self, label: str, key: ec.EllipticCurvePrivateKey) -> None:
        """The private scalar in the forms it would leak in: raw, hex, PKCS#8 DER, PEM."""
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        self.needles[f"{label} (raw scalar)"] = scalar
        self.needles[f"{label} (hex scalar)"] = scalar.hex().encode()
        self.needles[f"{label} (PKCS#8 DER)"] = der
        # the first PEM line of it: base64 of the DER, as a PEM file would carry it
        self.needles[f"{label} (PEM)"] = base64.b64encode(der)[:64]

    def found_in(self, haystack: bytes) -> list[str]:
        found = [label for label, needle in self.needles.items() if needle in haystack]
        if b"PRIVATE KEY" in haystack:
            found.append("a PEM private key")
        return found


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture the server's loggers at DEBUG; requested before `service`, so `init` is in it."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _key_and_csr() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mtls")]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def _forged_token(token_id: str | None = None) -> str:
    """Well-formed (`tat_<16 hex>_<43 urlsafe>`), but not issued by the service."""
    secret = secrets.token_urlsafe(32)
    assert len(secret) == 43
    return f"tat_{token_id or secrets.token_hex(8)}_{secret}"


def _table_dump(engine: Engine) -> bytes:
    """Every value of every column of every table, as bytes."""
    metadata = MetaData()
    metadata.reflect(engine)
    assert {"principals", "api_tokens", "audit_log", "service_keys"} <= set(metadata.tables)
    parts: list[bytes] = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        parts.append(bytes(value))
                    else:
                        parts.append(str(value).encode())
    return b"\n".join(parts)


def _sqlite_files(data_dir: Path) -> Iterator[tuple[str, bytes]]:
    database = data_dir / "trustauthority.db"
    assert database.is_file(), sorted(data_dir.iterdir())
    yield database.name, database.read_bytes()
    wal = database.with_name(database.name + "-wal")
    if wal.exists():
        yield wal.name, wal.read_bytes()


def test_no_secret_is_written_anywhere(debug_logs: pytest.LogCaptureFixture,
                                       service: RunningService, tmp_path: Path) -> None:
    found = Secrets()
    found.master_key((service.data_dir / "master.key").read_bytes())
    # the service's own private keys: sealed in the store, in a file for the TLS server key
    with service.platform.db.session(read_only=True) as session:
        for purpose in KeyPurpose:
            found.private_key(f"the {purpose.value} key", service.platform.keys.signer(
                session, purpose)[1])
    server_key = serialization.load_pem_private_key(
        (service.data_dir / "tls" / "server-key.pem").read_bytes(), password=None)
    assert isinstance(server_key, ec.EllipticCurvePrivateKey)
    found.private_key("the TLS server key", server_key)
    admin_id = found.token("the first trust-admin's token", service.admin_token)
    errors: list[httpx.Response] = []

    def call(token: str | None, method: str, path: str,
             body: dict[str, object] | None = None) -> httpx.Response:
        with service.http(token) as http:
            response = http.request(method, path, json=body)
        if response.status_code >= 400:
            errors.append(response)
        return response

    # -- a realistic run: principals of every role and their tokens --------------------------
    tokens: dict[str, str] = {}
    token_ids: dict[str, str] = {}
    with service.admin() as admin:
        for name, roles, kind in (("ops", ["infra-admin"], "person"),
                                  ("reader", ["auditor"], "person"),
                                  ("pipeline", ["infra-admin", "auditor"], "automation"),
                                  ("host-1", ["host"], "host"),
                                  ("leaver", ["auditor"], "person"),
                                  ("mtls", ["auditor"], "person")):
            admin.create_principal(PrincipalCreate.model_validate({
                "name": name, "roles": roles, "kind": kind,
                "allow_multiple_roles": len(roles) > 1}))
            issued = admin.create_token(name, TokenCreate(label=f"{name} laptop",
                                                          expires_in_days=30))
            tokens[name] = issued.token
            token_ids[name] = found.token(f"the token of {name}", issued.token)
            assert issued.info.id == token_ids[name]
        second = admin.create_token("reader", TokenCreate(label="to be revoked"))
        revoked_id = found.token("reader's revoked token", second.token)
        # mTLS: the client keeps its key, the service sees a CSR only
        key, csr = _key_and_csr()
        certificate = admin.issue_certificate("mtls", CertificateCreate(csr_pem=csr,
                                                                        lifetime_days=30))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    found.private_key("the mTLS client's key", key)
    cert_file, key_file = tmp_path / "mtls.pem", tmp_path / "mtls-key.pem"
    cert_file.write_text(certificate.certificate_pem)
    key_file.write_bytes(key_pem)
    with service.client(cert=cert_file, key=key_file) as mtls:
        assert mtls.whoami().credential.startswith("certificate:")

    # every token works before anything is revoked
    for name, token in tokens.items():
        response = call(token, "GET", "/v1/whoami")
        assert response.status_code == 200, (name, response.text)
    assert call(second.token, "GET", "/v1/whoami").status_code == 200

    # -- authentication failures ---------------------------------------------------------
    with service.admin() as admin:
        admin.revoke_token("reader", revoked_id)
        admin.revoke_principal("leaver")
    forged = _forged_token()
    forged_id = found.token("a forged token", forged, issued=False)
    guessed = _forged_token(token_ids["ops"])  # a real id with a guessed secret
    found.token("a guessed secret for ops's token id", guessed, issued=False)
    expected_failures = {  # target -> reason, as the audit log must record them
        f"token:{forged_id}": "unknown token or wrong secret",
        f"token:{token_ids['ops']}": "unknown token or wrong secret",
        f"token:{revoked_id}": "token revoked",
        f"token:{token_ids['leaver']}": "token revoked",
        "token:malformed": "not a Trust Authority API token",
    }
    for token in (forged, guessed, second.token, tokens["leaver"]):
        for method, path in (("GET", "/v1/whoami"), ("GET", "/v1/principals"),
                             ("POST", "/v1/principals/ops/tokens")):
            response = call(token, method, path, {"label": "x"})
            assert response.status_code == 401, (method, path, response.text)
    ops_token = tokens["ops"]
    for header in (f"Token {ops_token}", f"Basic {ops_token}", "tat_not-a-token"):
        with service.http() as http:
            response = http.get("/v1/whoami", headers={"Authorization": header})
        assert response.status_code == 401, response.text
        errors.append(response)

    # -- a token where it does not belong: refused without being echoed -----------------------
    admin_token = service.admin_token
    misplaced: list[tuple[str, dict[str, object]]] = [
        ("/v1/principals/ops/tokens", {"label": "x", "token": ops_token}),
        ("/v1/principals/ops/tokens", {"label": {"secret": ops_token}}),
        ("/v1/principals/ops/tokens", {"expires_in_days": ops_token}),
        ("/v1/principals", {"name": "x", "roles": ["auditor"], "password": ops_token}),
        ("/v1/principals/mtls/certificates", {"csr_pem": key_pem.decode()}),
    ]
    for path, body in misplaced:
        response = call(admin_token, "POST", path, body)
        assert response.status_code in (400, 422), (path, response.text)
    assert len(errors) == 4 * 3 + 3 + len(misplaced)

    # -- (a) the audit export ------------------------------------------------------------
    with service.admin() as admin:
        exported = list(admin.audit_export())
    failures = [entry for entry in exported if entry["action"] == "auth.failure"]
    recorded = {entry["target"]: entry["details"]["reason"] for entry in failures}
    assert recorded == expected_failures, recorded
    assert all(entry["outcome"] == "denied" and entry["principal"] == "-"
               for entry in failures), failures
    assert len(failures) == 4 * 3 + 3
    export = "\n".join(json.dumps(entry, sort_keys=True) for entry in exported).encode()
    issued_ids = {entry["details"].get("token_id") for entry in exported
                  if entry["action"] == "token.create"}
    assert issued_ids == set(token_ids.values()) | {revoked_id}  # ids are audited ...
    assert exported[0]["details"]["token_id"] == admin_id  # (init's, with the first admin)
    leaked = found.found_in(export)
    assert not leaked, f"the audit export holds {leaked}"  # ... secrets never

    # -- (b) every error body the API answered ---------------------------------------------
    for response in errors:
        assert set(response.json()) == {"type", "detail", "request_id"}, response.text
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items()).encode()
        leaked = found.found_in(response.content + b"\n" + headers)
        assert not leaked, f"{response.request.method} {response.request.url} answered {leaked}"

    # -- (c) the server's logs, from `init` on -----------------------------------------------
    records = [*debug_logs.get_records("setup"), *debug_logs.get_records("call")]
    logged = "\n".join(debug_logs.handler.format(record) for record in records).encode()
    assert b"Running upgrade" in logged  # the capture began with `init` (its migrations) ...
    assert b"Uvicorn running on" in logged  # ... and went on while the service ran
    assert b"INSERT INTO api_tokens" in logged  # SQL and its parameters are in the capture
    assert b'"GET /v1/whoami HTTP/1.1" 401' in logged  # and so are the access log lines
    leaked = found.found_in(logged)
    assert not leaked, f"the logs hold {leaked}"

    # -- (d) the store ---------------------------------------------------------------------
    dump = _table_dump(service.platform.db.engine)
    for token_id, secret in found.issued.items():
        assert token_id.encode() in dump  # the ids and the hashes are stored ...
        assert API_TOKEN.hash(token_id, secret).encode() in dump
    leaked = found.found_in(dump)
    assert not leaked, f"the tables hold {leaked}"  # ... the secrets are not
    if service.platform.db.dialect == "sqlite":
        for name, raw in _sqlite_files(service.data_dir):
            leaked = found.found_in(raw)
            assert not leaked, f"{name} holds {leaked}"

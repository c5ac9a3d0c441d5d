"""Authentication over real HTTPS: API tokens and mTLS client certificates, revoked and expired
ones refused, every failure audited."""

from __future__ import annotations

import base64
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import update

from tests.support.service import RunningService
from trustauthority import pki
from trustauthority.errors import AuthenticationFailed, PermissionDenied
from trustauthority.schemas import CertificateCreate, PrincipalCreate, TokenCreate
from trustauthority.store.models import ApiToken


def _key_and_csr(name: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def _write_credential(directory: Path, key: ec.EllipticCurvePrivateKey,
                      certificate_pem: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_text(certificate_pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_a_token_works_until_it_is_revoked(service: RunningService) -> None:
    token = service.principal_with_token("ops", "infra-admin")
    with service.client(token) as ops:
        assert ops.whoami().principal.roles == ["infra-admin"]
    with service.admin() as admin:
        token_id = token.split("_")[1]
        admin.revoke_token("ops", token_id)
    with service.client(token) as ops, pytest.raises(AuthenticationFailed):
        ops.whoami()
    with service.admin() as admin:
        failures = admin.audit_entries(action="auth.failure")
    assert [(f.target, f.details["reason"]) for f in failures] == [
        (f"token:{token_id}", "token revoked")]


def test_an_expired_token_is_refused(sqlite_service: RunningService) -> None:
    with sqlite_service.admin() as admin:
        admin.create_principal(PrincipalCreate(name="bot", kind="automation",
                                               roles=["auditor"]))
        issued = admin.create_token("bot", TokenCreate(label="ci", expires_in_days=1))
    assert issued.info.expires_at is not None
    assert issued.info.expires_at - datetime.now(UTC) > timedelta(hours=23)
    with sqlite_service.client(issued.token) as bot:
        bot.whoami()
    with sqlite_service.platform.db.session() as session:  # a day passes
        session.execute(update(ApiToken).where(ApiToken.id == issued.info.id)
                        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with sqlite_service.client(issued.token) as bot, pytest.raises(AuthenticationFailed):
        bot.whoami()


def test_a_token_with_a_wrong_secret_is_refused(sqlite_service: RunningService) -> None:
    token = sqlite_service.principal_with_token("ops", "infra-admin")
    prefix, token_id, secret = token.split("_", 2)
    forged = f"{prefix}_{token_id}_{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"
    with sqlite_service.client(forged) as client, pytest.raises(AuthenticationFailed):
        client.whoami()


def test_revoking_a_principal_revokes_its_tokens_and_certificates(
        sqlite_service: RunningService, tmp_path: Path) -> None:
    token = sqlite_service.principal_with_token("ops", "infra-admin")
    key, csr = _key_and_csr("ops")
    with sqlite_service.admin() as admin:
        issued = admin.issue_certificate("ops", CertificateCreate(csr_pem=csr))
        cert_file, key_file = _write_credential(tmp_path, key, issued.certificate_pem)
        with sqlite_service.client(cert=cert_file, key=key_file) as by_cert:
            assert by_cert.whoami().credential.startswith("certificate:")
        admin.revoke_principal("ops")
    with sqlite_service.client(token) as by_token, pytest.raises(AuthenticationFailed):
        by_token.whoami()
    with sqlite_service.client(cert=cert_file, key=key_file) as by_cert, pytest.raises(
            AuthenticationFailed):
        by_cert.whoami()


def test_a_client_certificate_authenticates_as_its_principal_with_its_role(
        service: RunningService, tmp_path: Path) -> None:
    service.principal_with_token("aud", "auditor")
    key, csr = _key_and_csr("aud")
    with service.admin() as admin:
        issued = admin.issue_certificate("aud", CertificateCreate(csr_pem=csr,
                                                                  lifetime_days=30))
    certificate = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
    # the service names the certificate after the principal, whatever the CSR asked for
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "aud"
    assert certificate.public_key() == key.public_key()
    cert_file, key_file = _write_credential(tmp_path, key, issued.certificate_pem)
    with service.client(cert=cert_file, key=key_file) as auditor:
        me = auditor.whoami()
        assert (me.principal.name, me.principal.roles) == ("aud", ["auditor"])
        assert auditor.audit_verify().ok
        with pytest.raises(PermissionDenied):
            auditor.create_principal(PrincipalCreate(name="x", roles=["auditor"]))


def test_a_certificate_from_another_ca_never_reaches_the_application(
        sqlite_service: RunningService, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    rogue_ca_key, rogue_ca = pki.new_ca("rogue", now)
    key, csr = _key_and_csr("admin")
    rogue = pki.issue_client_certificate(rogue_ca_key, rogue_ca, pki.load_csr(csr), "admin", now)
    cert_file, key_file = _write_credential(
        tmp_path, key, rogue.public_bytes(serialization.Encoding.PEM).decode())
    context = ssl.create_default_context(cafile=str(sqlite_service.ca_file))
    context.load_cert_chain(str(cert_file), str(key_file))
    with httpx.Client(base_url=sqlite_service.url, verify=context) as http, pytest.raises(
            httpx.TransportError):
        # the TLS handshake itself fails: the server does not accept the rogue chain
        http.get("/v1/whoami").raise_for_status()


def test_a_certificate_signing_request_must_be_well_formed(
        sqlite_service: RunningService) -> None:
    sqlite_service.principal_with_token("ops", "infra-admin")
    garbage = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post("/v1/principals/ops/certificates",
                             json={"csr_pem": garbage})
    assert response.status_code == 400
    assert response.json()["type"] == "usage_error"
    # a well-formed request whose key algorithm is unknown (id-ecPublicKey swapped for 1.2.3.4…)
    _key, good = _key_and_csr("ops")
    der = x509.load_pem_x509_csr(good.encode()).public_bytes(serialization.Encoding.DER)
    unknown = der.replace(bytes.fromhex("06072a8648ce3d0201"), bytes.fromhex("06072a030405060708"))
    assert unknown != der
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post("/v1/principals/ops/certificates", json={"csr_pem": (
            "-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(unknown).decode()
            + "-----END CERTIFICATE REQUEST-----\n")})
    assert response.status_code == 400, response.text
    assert "algorithm" in response.json()["detail"]

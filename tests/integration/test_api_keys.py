"""Key servers and providers through the API, without key servers running: what is refused
before anything is stored, who may do what, and that no secret comes back or reaches the audit
log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.service import RunningService
from trustauthority import pki
from trustauthority.errors import NotFound, PermissionDenied, UsageError
from trustauthority.schemas import KmipServerCreate, Pkcs11ServerCreate, ProviderCreate


def _kmip(name: str = "kms1", **changes: object) -> KmipServerCreate:
    """A KMIP registration whose PEMs parse and match (no server behind it)."""
    now = datetime.now(UTC)
    ca_key, ca = pki.new_ca("test KMS CA", now)
    client_key, certificate = pki.issue_server_certificate(ca_key, ca, ["127.0.0.1"], now)
    pem = serialization.Encoding.PEM
    values: dict[str, object] = {
        "name": name, "host": "127.0.0.1", "port": 5696,
        "ca_pem": ca.public_bytes(pem).decode(),
        "certificate_pem": certificate.public_bytes(pem).decode(),
        "key_pem": client_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode(),
        "username": "trustauthority", "password": "kmip-password-31337"}
    values.update(changes)
    return KmipServerCreate.model_validate(values)


def test_key_servers_are_checked_before_they_are_stored(sqlite_service: RunningService) -> None:
    with sqlite_service.admin() as admin:
        good = _kmip()
        other_key = _kmip().key_pem
        with pytest.raises(UsageError, match="does not belong"):
            admin.add_kmip_server(_kmip(key_pem=other_key))
        # what the KMIP adapter would refuse at use is refused here, not stored (a 500 later)
        with pytest.raises(UsageError, match="username and password"):
            admin.add_kmip_server(_kmip(username="ta", password=None))
        with pytest.raises(UsageError, match="is not PEM"):
            admin.add_kmip_server(_kmip(ca_pem="-----BEGIN CERTIFICATE-----\nAAAA\n"))
        for module, reason in (("/srv/missing/evil.so", "no PKCS#11 module|must be installed"),
                               ("/etc/passwd", "must be installed")):
            with pytest.raises(UsageError, match=reason):
                admin.add_pkcs11_server(Pkcs11ServerCreate(name="hsm", module=module,
                                                           token_label="t", pin="1234"))  # noqa: S106 - test token
        assert admin.list_key_servers() == []
        added = admin.add_kmip_server(good)
        assert added.address == "127.0.0.1:5696"
        with pytest.raises(UsageError, match="already exists"):
            admin.add_kmip_server(good)
        with pytest.raises(NotFound):
            admin.create_provider(ProviderCreate(name="p", servers=["nope"],
                                                 create_primary_key=True))
        with pytest.raises(UsageError, match="not both"):
            admin.create_provider(ProviderCreate(name="p", servers=["kms1"], primary_key="1",
                                                 create_primary_key=True))
        shown = admin.get_key_server("kms1").model_dump_json()
        audit = "\n".join(entry.model_dump_json() for entry in admin.audit_entries(limit=1000))
    secret_key = good.key_pem.split("\n")[1]
    for text in (shown, audit):
        assert secret_key not in text
        assert "kmip-password-31337" not in text


def test_only_a_trust_admin_manages_key_servers_and_providers(
        sqlite_service: RunningService) -> None:
    infra = sqlite_service.principal_with_token("infra", "infra-admin")
    auditor = sqlite_service.principal_with_token("auditor", "auditor")
    with sqlite_service.admin() as admin:
        admin.add_kmip_server(_kmip())
    with sqlite_service.client(infra) as client:
        with pytest.raises(PermissionDenied):
            client.add_kmip_server(_kmip("kms2"))
        with pytest.raises(PermissionDenied):
            client.remove_key_server("kms1")
        with pytest.raises(PermissionDenied):
            client.grant_provider("prod", "keys")
        assert [server.name for server in client.list_key_servers()] == ["kms1"]
    with sqlite_service.client(auditor) as client:
        assert [server.name for server in client.list_key_servers()] == ["kms1"]
        assert client.list_workload_keys() == []
        with pytest.raises(PermissionDenied):
            client.rekey_provider("keys")


def test_a_dangling_module_path_is_refused(sqlite_service: RunningService,
                                          tmp_path: Path) -> None:
    module = tmp_path / "libfake.so"
    module.write_bytes(b"\x7fELF")
    with sqlite_service.admin() as admin, pytest.raises(UsageError, match="must be installed"):
        admin.add_pkcs11_server(Pkcs11ServerCreate(name="hsm", module=str(module),
                                                   token_label="t", pin="1234"))  # noqa: S106 - test token

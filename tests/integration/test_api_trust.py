"""TPM trust settings and trusted clusters over real HTTPS (trust-admin writes, others read),
each change audited; the CLI commands on top."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from typer.testing import CliRunner

from tests.support.service import RunningService
from trustauthority.agent.swtpm import SoftwareTpmCa
from trustauthority.cli.main import app
from trustauthority.errors import Conflict, NotFound, PermissionDenied, UsageError
from trustauthority.schemas import (
    ClusterCreate,
    ClusterPolicyModel,
    EkAdd,
    TpmCaAdd,
    TpmSettingsUpdate,
)


def _pem(certificates: list[bytes]) -> str:
    return "".join(x509.load_der_x509_certificate(der).public_bytes(
        serialization.Encoding.PEM).decode() if not der.startswith(b"-----") else der.decode()
        for der in certificates)


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.mark.swtpm
def test_tpm_cas_are_added_listed_and_removed(service: RunningService,
                                              swtpm_ca: SoftwareTpmCa) -> None:
    with service.admin() as admin:
        added = admin.add_tpm_cas(TpmCaAdd(certificate_pem=_pem(swtpm_ca.certificates()),
                                           description="swtpm local CA"))
        assert sorted(ca.is_root for ca in added) == [False, True]
        assert {ca.fingerprint_sha256 for ca in admin.list_tpm_cas()} == {
            ca.fingerprint_sha256 for ca in added}
        with pytest.raises(Conflict):
            admin.add_tpm_cas(TpmCaAdd(certificate_pem=_pem(swtpm_ca.certificates()[:1])))
        removed = admin.remove_tpm_ca(added[0].fingerprint_sha256)
        assert removed.fingerprint_sha256 not in {ca.fingerprint_sha256
                                                  for ca in admin.list_tpm_cas()}
        with pytest.raises(NotFound):
            admin.remove_tpm_ca(added[0].fingerprint_sha256)
        actions = [entry.action for entry in admin.audit_entries(limit=1000)]
    assert actions.count("tpm-ca.add") == 2
    assert actions.count("tpm-ca.remove") == 1


def test_a_leaf_certificate_or_garbage_is_not_a_tpm_ca(sqlite_service: RunningService) -> None:
    server_pem = (sqlite_service.data_dir / "tls" / "server.pem").read_text()
    leaf = server_pem[:server_pem.index("-----END CERTIFICATE-----") + 25] + "\n"
    with sqlite_service.admin() as admin:
        with pytest.raises(UsageError, match="not a CA"):
            admin.add_tpm_cas(TpmCaAdd(certificate_pem=leaf))
        with pytest.raises(UsageError, match="not a PEM or DER"):
            admin.add_tpm_cas(TpmCaAdd(certificate_pem="-----BEGIN CERTIFICATE-----\nAA\n"))
        assert admin.list_tpm_cas() == []


def test_allowed_eks_accept_tpm_key_types_only(sqlite_service: RunningService) -> None:
    rsa_key = rsa.generate_private_key(65537, 2048)
    with sqlite_service.admin() as admin:
        added = admin.add_ek(EkAdd(public_key_pem=_public_pem(rsa_key), description="host7"))
        assert added.algorithm == "rsa2048"
        p256 = admin.add_ek(EkAdd(public_key_pem=_public_pem(ec.generate_private_key(
            ec.SECP256R1()))))
        assert p256.algorithm == "ecc-secp256r1"
        for weak in (rsa.generate_private_key(65537, 1024),  # noqa: S505 - must be refused
                     ec.generate_private_key(ec.SECP521R1())):
            with pytest.raises(UsageError, match="EK must be"):
                admin.add_ek(EkAdd(public_key_pem=_public_pem(weak)))
        with pytest.raises(Conflict):
            admin.add_ek(EkAdd(public_key_pem=_public_pem(rsa_key)))
        # a SubjectPublicKeyInfo of an algorithm no one knows (OID 1.2.3.4)
        spki = bytes.fromhex("300e" "3005" "06032a0304" "030500" "01020304")
        unknown = base64.b64encode(spki).decode()
        with pytest.raises(UsageError, match="known type"):
            admin.add_ek(EkAdd(public_key_pem=f"-----BEGIN PUBLIC KEY-----\n{unknown}\n"
                                              "-----END PUBLIC KEY-----\n"))
        assert len(admin.list_eks()) == 2
        admin.remove_ek(added.fingerprint_sha256)
        assert [ek.algorithm for ek in admin.list_eks()] == ["ecc-secp256r1"]


def test_tpm_settings_default_to_the_secure_choice_and_changes_are_audited(
        service: RunningService) -> None:
    ops = service.principal_with_token("ops", "infra-admin")
    with service.admin() as admin:
        settings = admin.tpm_settings()
        assert (settings.require_ek_certificate, settings.allow_ek_allowlist,
                settings.allow_sha1) == (True, False, False)
        # the allow-list is for TPMs without a certificate, which required certificates refuse
        with pytest.raises(UsageError, match="no-require-ek-certificate"):
            admin.set_tpm_settings(TpmSettingsUpdate(allow_ek_allowlist=True))
        changed = admin.set_tpm_settings(TpmSettingsUpdate(require_ek_certificate=False,
                                                           allow_ek_allowlist=True))
        assert (changed.require_ek_certificate, changed.allow_ek_allowlist) == (False, True)
        assert admin.tpm_settings() == changed
        [entry] = admin.audit_entries(action="tpm-settings.set")
        assert entry.details == {"changed": {"allow_ek_allowlist": True,
                                             "require_ek_certificate": False}}
    with service.client(ops) as infra:
        assert infra.tpm_settings() == changed  # infra-admin reads trust state
        with pytest.raises(PermissionDenied):
            infra.set_tpm_settings(TpmSettingsUpdate(allow_sha1=True))


def test_clusters_are_created_read_and_deleted(service: RunningService) -> None:
    auditor = service.principal_with_token("carol", "auditor")
    with service.admin() as admin:
        created = admin.create_cluster(ClusterCreate(
            name="prod", policy=ClusterPolicyModel(pcrs=[7, 0, 4, 4]),
            token_lifetime_seconds=300))
        assert created.policy.pcrs == [0, 4, 7]
        assert created.policy.require_secure_boot
        with pytest.raises(Conflict):
            admin.create_cluster(ClusterCreate(name="prod"))
        with pytest.raises(UsageError):
            admin.create_cluster(ClusterCreate(name="bad", policy=ClusterPolicyModel(
                pcrs=[24])))
    with service.client(auditor) as reader:
        assert [cluster.name for cluster in reader.list_clusters()] == ["prod"]
        assert reader.get_cluster("prod").token_lifetime_seconds == 300
        with pytest.raises(PermissionDenied):
            reader.delete_cluster("prod")
    with service.admin() as admin:
        admin.delete_cluster("prod")
        assert admin.list_clusters() == []
        with pytest.raises(NotFound):
            admin.get_cluster("prod")


@pytest.mark.swtpm
def test_the_cli_manages_tpm_trust_and_clusters(sqlite_service: RunningService,
                                                swtpm_ca: SoftwareTpmCa,
                                                tmp_path: Path) -> None:
    bundle = tmp_path / "vendor.pem"
    bundle.write_text(_pem(swtpm_ca.certificates()))
    connect = ["--server", sqlite_service.url, "--ca", str(sqlite_service.ca_file),
               "--token", sqlite_service.admin_token]
    runner = CliRunner()
    added = runner.invoke(app, [*connect, "tpm-ca", "add", str(bundle), "--json"])
    assert added.exit_code == 0, added.output
    assert len(json.loads(added.output)) == 2
    listed = runner.invoke(app, [*connect, "tpm-ca", "list"])
    assert listed.exit_code == 0
    assert "root" in listed.output
    bad = runner.invoke(app, [*connect, "tpm-ca", "add", str(tmp_path / "missing.pem")])
    assert bad.exit_code == 2
    created = runner.invoke(app, [*connect, "cluster", "create", "prod", "--pcr", "7",
                                  "--no-require-secure-boot", "--json"])
    assert created.exit_code == 0, created.output
    assert json.loads(created.output)["policy"]["pcrs"] == [7]
    settings = runner.invoke(app, [*connect, "tpm-settings", "set", "--allow-sha1", "--json"])
    assert json.loads(settings.output)["allow_sha1"] is True

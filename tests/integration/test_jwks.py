"""The service publishes its attestation-token keys as a JWKS, and `ta token verify` checks a
token against it the way a relying party would."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from tests.support.service import RunningService
from trustauthority.cli.main import app
from trustauthority.service.keys import KeyPurpose
from trustauthority.token import (
    AttestationClaims,
    BaselineRef,
    Jwks,
    SigningKey,
    TrustStatus,
    issue,
    jwk_thumbprint,
)


def _token(service: RunningService, issuer: str,
           binding: SigningKey | None = None) -> str:
    with service.platform.db.session() as session:
        kid, private = service.platform.keys.signer(session, KeyPurpose.ATTESTATION)
    binding = binding or SigningKey.generate()
    claims = AttestationClaims.create(
        issuer=issuer, host_id="host-1", cluster="prod", status=TrustStatus.TRUSTED,
        baseline=BaselineRef("golden", 1), pcr_digest="ab" * 32, secure_boot=True,
        binding_key_thumbprint=jwk_thumbprint(binding.public_key), now=datetime.now(UTC))
    return issue(claims, SigningKey(kid, private))


def test_the_jwks_is_public_and_verifies_the_service_tokens(
        sqlite_service: RunningService) -> None:
    with sqlite_service.http() as http:  # no credential: the JWKS is public
        document = http.get("/.well-known/jwks.json").json()
    jwks = Jwks.parse(document)
    assert len(jwks.keys) == 1
    assert jwks.keys[0].to_jwk()["crv"] == "P-256"
    assert all("d" not in key for key in document["keys"])  # public halves only


def test_token_verify_accepts_a_good_token_and_rejects_a_bad_one(
        sqlite_service: RunningService) -> None:
    issuer = sqlite_service.url
    token = _token(sqlite_service, issuer)
    jwks_url = f"{sqlite_service.url}/.well-known/jwks.json"
    base = ["token", "verify", "--jwks", jwks_url, "--issuer", issuer,
            "--ca", str(sqlite_service.ca_file)]
    runner = CliRunner()
    good = runner.invoke(app, [*base, token, "--json"])
    assert good.exit_code == 0, good.output
    claims = json.loads(good.output)["claims"]
    assert claims["sub"] == "host-1"
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    rejected = runner.invoke(app, [*base, forged])
    assert rejected.exit_code == 1
    foreign = runner.invoke(app, [*base[:-4], "--issuer", "https://evil.example", "--ca",
                                  str(sqlite_service.ca_file), token])
    assert foreign.exit_code == 1
    assert "issuer" in foreign.output


def _pem(key: SigningKey) -> bytes:
    return key.public_key.public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)


def test_token_verify_checks_the_binding_a_relying_party_names(
        sqlite_service: RunningService, tmp_path: Path) -> None:
    issuer = sqlite_service.url
    holder, other = SigningKey.generate(), SigningKey.generate()
    token = _token(sqlite_service, issuer, binding=holder)
    (tmp_path / "holder.pem").write_bytes(_pem(holder))
    (tmp_path / "other.pem").write_bytes(_pem(other))
    (tmp_path / "junk.pem").write_bytes(b"not a key")
    base = ["token", "verify", token, "--jwks", f"{issuer}/.well-known/jwks.json", "--issuer",
            issuer, "--ca", str(sqlite_service.ca_file)]
    runner = CliRunner()
    bound = runner.invoke(app, [*base, "--binding-key", str(tmp_path / "holder.pem"), "--json"])
    assert bound.exit_code == 0, bound.output
    assert json.loads(bound.output)["binding_key_checked"] is True
    unbound = runner.invoke(app, [*base, "--json"])
    assert json.loads(unbound.output)["binding_key_checked"] is False
    # the same token presented by a host holding another key
    copied = runner.invoke(app, [*base, "--binding-key", str(tmp_path / "other.pem")])
    assert copied.exit_code == 1, copied.output
    assert "cnf.jkt" in copied.output
    junk = runner.invoke(app, [*base, "--binding-key", str(tmp_path / "junk.pem")])
    assert junk.exit_code == 2, junk.output
    assert "--binding-key is neither" in junk.output

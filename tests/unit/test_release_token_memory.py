"""The key service remembers verified attestation tokens (a host presents the same one for
every release): a remembered token still expires, an altered one is verified afresh and refused,
and a JWKS reload forgets what was verified under the old one."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from trustauthority.errors import TokenExpired, TokenSignatureInvalid
from trustauthority.service import workloadkeys
from trustauthority.service.workloadkeys import WorkloadKeyService
from trustauthority.token import (
    AttestationClaims,
    BaselineRef,
    Jwks,
    SigningKey,
    TrustStatus,
    issue,
    jwk_thumbprint,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ISSUER = "https://ta.example.test"
KEY = SigningKey.generate("ta-1")
CLAIMS = AttestationClaims.create(
    issuer=ISSUER, host_id="host-1", cluster="prod", status=TrustStatus.TRUSTED,
    baseline=BaselineRef("golden", 1), pcr_digest=hashlib.sha256(b"pcrs").hexdigest(),
    secure_boot=True, now=NOW,
    binding_key_thumbprint=jwk_thumbprint(ec.generate_private_key(ec.SECP256R1()).public_key()))
TOKEN = issue(CLAIMS, KEY)


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def _service(clock: _Clock, loads: list[Jwks]) -> WorkloadKeyService:
    def load() -> Jwks:
        loads.append(Jwks.of(KEY))
        return loads[-1]

    unused = cast(Any, None)  # the token check touches neither the store nor the key servers
    return WorkloadKeyService(unused, unused, unused, clock, jwks=load, issuer=ISSUER)


def test_a_remembered_token_is_still_checked_for_time() -> None:
    clock, loads = _Clock(), list[Jwks]()
    service = _service(clock, loads)
    first = service._verify_token(TOKEN)
    assert first == CLAIMS
    assert service._verify_token(TOKEN) is first  # remembered, not verified again
    assert len(loads) == 1
    clock.now = CLAIMS.exp + timedelta(minutes=1)
    with pytest.raises(TokenExpired):
        service._verify_token(TOKEN)


def test_an_altered_token_is_verified_afresh_and_refused() -> None:
    service = _service(_Clock(), [])
    service._verify_token(TOKEN)
    header, payload, signature = TOKEN.split(".")
    changed = "A" if signature[-2] != "A" else "B"  # a bit of the signature itself
    forged = f"{header}.{payload}.{signature[:-2]}{changed}{signature[-1]}"
    with pytest.raises(TokenSignatureInvalid):
        service._verify_token(forged)


def test_a_jwks_reload_forgets_what_was_verified_under_the_old_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock, loads = _Clock(), list[Jwks]()
    service = _service(clock, loads)
    first = service._verify_token(TOKEN)
    monkeypatch.setattr(workloadkeys, "JWKS_CACHE_SECONDS", -1.0)  # every call reloads
    again = service._verify_token(TOKEN)
    assert len(loads) == 2
    assert again == first
    assert again is not first  # verified again under the new JWKS

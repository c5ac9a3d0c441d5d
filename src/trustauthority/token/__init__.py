"""Attestation tokens, pure: EAR claims, ES256 signing, JWKS, and verification with binding.

Public API: `AttestationClaims` (with `TrustStatus`, `BaselineRef`, `VerifierId`); `SigningKey`,
`VerificationKey`, `Jwks`, `jwk_of`, `jwk_thumbprint`; `issue`, `verify`. No I/O and no clock:
`verify` takes `now` from its caller.
"""

from trustauthority.token.claims import (
    DEFAULT_LIFETIME,
    EAR_PROFILE,
    AttestationClaims,
    BaselineRef,
    TrustStatus,
    VerifierId,
)
from trustauthority.token.jwt import DEFAULT_LEEWAY, JWS_TYP, check_still_valid, issue, verify
from trustauthority.token.keys import (
    SUPPORTED_ALGORITHMS,
    Jwks,
    PublicKey,
    SigningKey,
    VerificationKey,
    jwk_of,
    jwk_thumbprint,
)

__all__ = [
    "DEFAULT_LEEWAY",
    "DEFAULT_LIFETIME",
    "EAR_PROFILE",
    "JWS_TYP",
    "SUPPORTED_ALGORITHMS",
    "AttestationClaims",
    "BaselineRef",
    "Jwks",
    "PublicKey",
    "SigningKey",
    "TrustStatus",
    "VerificationKey",
    "VerifierId",
    "check_still_valid",
    "issue",
    "jwk_of",
    "jwk_thumbprint",
    "verify",
]

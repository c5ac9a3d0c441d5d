"""Issue attestation tokens (compact JWS, ES256) and verify them against a JWKS.

`verify` performs, in this order, and raises at the first failure (RFC 7515 §5.2, RFC 8725):

1. the token is a well-formed compact JWS: a string of at most `MAX_TOKEN_LENGTH` characters,
   three dot-separated parts, each canonical unpadded base64url; the header a JSON object with
   string ``alg`` and ``kid``, ``typ`` = `JWS_TYP` (explicit typing, RFC 8725 §3.11) and no
   ``crit`` (we understand no extension, RFC 7515 §4.1.11) -> `TokenMalformed`;
2. ``alg`` is in the allow-list (default ES256 only; "none" and HMAC can never be allowed,
   RFC 8725 §3.1) -> `TokenSignatureInvalid`;
3. ``kid`` names a key of the JWKS, and that key may verify ``alg`` (its type and curve fit, and
   its own ``alg``, if any, is the same) -> `TokenKeyUnknown`. Keys named in the header itself
   (``jwk``, ``jku``, ``x5c``, ``x5u``) are never used;
4. the signature verifies over the header and payload as received -> `TokenSignatureInvalid`;
5. the payload is a JSON object whose ``iss`` is `issuer` -> `TokenMalformed`,
   `TokenIssuerMismatch`;
6. ``exp``, ``iat`` (and ``nbf`` if present) are integer NumericDates, and `now` is before ``exp``,
   not before ``nbf``, and not before ``iat``, each with `leeway` -> `TokenExpired`;
7. the claims follow the schema of `AttestationClaims.from_payload` -> `TokenMalformed`;
8. when `binding_key` is given, ``cnf.jkt`` equals its RFC 7638 thumbprint (the presenter holds
   the key the token was issued to) -> `TokenBindingMismatch`.

Only then are the claims returned. Nothing here reads a clock: the caller passes `now`.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection
from datetime import datetime, timedelta

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from joserfc.jws import JWSRegistry

from trustauthority.errors import (
    TokenBindingMismatch,
    TokenExpired,
    TokenIssuerMismatch,
    TokenKeyUnknown,
    TokenMalformed,
    TokenSignatureInvalid,
)
from trustauthority.token._codec import b64url_decode, canonical_json, json_object, shown
from trustauthority.token.claims import AttestationClaims, numeric_date
from trustauthority.token.keys import (
    SIGNING_ALGORITHM,
    SUPPORTED_ALGORITHMS,
    Jwks,
    PublicKey,
    SigningKey,
    joserfc_key,
    jwk_thumbprint,
)

#: the JWS ``typ`` of our tokens: media type application/eat+jwt (RFC 9782), "application/"
#: left out as RFC 7515 §4.1.9 recommends
JWS_TYP = "eat+jwt"
#: our tokens are under 2 KiB; a longer string is refused before any parsing
MAX_TOKEN_LENGTH = 8192
DEFAULT_ALGORITHMS: tuple[str, ...] = (SIGNING_ALGORITHM,)
DEFAULT_LEEWAY = timedelta(seconds=30)


def issue(claims: AttestationClaims, key: SigningKey) -> str:
    """Sign `claims` with `key`: a compact JWS (ES256) with ``kid`` and ``typ`` in its header."""
    header = {"alg": SIGNING_ALGORITHM, "kid": key.kid, "typ": JWS_TYP}
    token = jws.serialize_compact(header, canonical_json(claims.to_payload()),
                                  ECKey.import_key(key.private_key),
                                  algorithms=[SIGNING_ALGORITHM])
    if len(token) > MAX_TOKEN_LENGTH:  # cannot happen with the claims' length limits
        raise ValueError(f"token is longer than {MAX_TOKEN_LENGTH} characters")
    return token


def verify(token: str, jwks: Jwks, *, issuer: str, now: datetime,
           leeway: timedelta = DEFAULT_LEEWAY, binding_key: PublicKey | None = None,
           algorithms: Collection[str] = DEFAULT_ALGORITHMS) -> AttestationClaims:
    """Verify an untrusted token (the checks in the module docstring, in order).

    `now` must be timezone-aware; `leeway` absorbs clock skew between hosts; `algorithms` may
    only name `SUPPORTED_ALGORITHMS`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if leeway < timedelta(0):
        raise ValueError("leeway must not be negative")
    allowed = frozenset(algorithms)
    if not allowed or not allowed <= SUPPORTED_ALGORITHMS:
        raise ValueError(f"algorithms must be a non-empty subset of {sorted(SUPPORTED_ALGORITHMS)}")

    # 1. well-formed compact JWS (RFC 7515 §7.1), nothing trusted yet
    raw_header, raw_payload, raw_signature, signing_input = _split(token)
    unverified_header = json_object(raw_header, "header")
    alg, kid = unverified_header.get("alg"), unverified_header.get("kid")
    if not isinstance(alg, str) or not isinstance(kid, str):
        raise TokenMalformed("header lacks a string alg or kid")
    typ = unverified_header.get("typ")
    if typ != JWS_TYP:
        raise TokenMalformed(f"header typ {shown(typ)} is not {JWS_TYP!r}")
    if "crit" in unverified_header:
        raise TokenMalformed("header has crit: no extension is understood here")

    # 2. the algorithm is one we accept, chosen by us, not by the token
    if alg not in allowed:
        raise TokenSignatureInvalid(f"alg {shown(alg)} is not allowed "
                                    f"(allowed: {', '.join(sorted(allowed))})")

    # 3. the key, from the JWKS only
    key = jwks.find(kid)
    if alg not in key.algorithms:
        raise TokenKeyUnknown(f"kid {shown(kid)} is a {key.description} key "
                              f"that may not verify {alg}")

    # 4. the signature
    if not _signature_verifies(alg, signing_input, raw_signature, key.public_key):
        raise TokenSignatureInvalid(f"signature does not verify with key {shown(kid)}")

    # 5. signed now, but not yet ours: the issuer
    payload = json_object(raw_payload, "payload")
    iss = payload.get("iss")
    if not isinstance(iss, str) or iss != issuer:
        raise TokenIssuerMismatch(f"issuer {shown(iss)} is not {shown(issuer)}")

    # 6. time (RFC 7519 §4.1.4, §4.1.5), with leeway for clock skew
    exp, iat = numeric_date(payload.get("exp"), "exp"), numeric_date(payload.get("iat"), "iat")
    if now >= exp + leeway:
        raise TokenExpired(f"token expired at {exp.isoformat()}")
    if "nbf" in payload:
        nbf = numeric_date(payload["nbf"], "nbf")
        if now < nbf - leeway:
            raise TokenExpired(f"token is not valid before {nbf.isoformat()}")
    if now < iat - leeway:
        raise TokenExpired(f"token is issued in the future ({iat.isoformat()})")

    # 7. the schema
    claims = AttestationClaims.from_payload(payload)

    # 8. proof of possession: bound to the presenting host's key
    if binding_key is not None:
        try:
            expected = jwk_thumbprint(binding_key)
        except ValueError as error:
            raise TokenBindingMismatch(f"binding key not accepted: {error}") from None
        if not hmac.compare_digest(claims.cnf_jkt, expected):
            raise TokenBindingMismatch("token is bound to another key (cnf.jkt differs)")
    return claims


def check_still_valid(claims: AttestationClaims, now: datetime,
                      leeway: timedelta = DEFAULT_LEEWAY) -> None:
    """Step 6 again, for claims `verify` returned earlier (a verifier that keeps verified tokens
    must still refuse one whose time has run out). Tokens made here carry no nbf."""
    if now >= claims.exp + leeway:
        raise TokenExpired(f"token expired at {claims.exp.isoformat()}")
    if now < claims.iat - leeway:
        raise TokenExpired(f"token is issued in the future ({claims.iat.isoformat()})")


def _split(token: object) -> tuple[bytes, bytes, bytes, bytes]:
    """Header, payload and signature bytes, and the signing input, of a compact JWS."""
    if not isinstance(token, str):
        raise TokenMalformed("token is not a string")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenMalformed(f"token is longer than {MAX_TOKEN_LENGTH} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenMalformed(f"token has {len(parts)} parts, not 3 (compact JWS)")
    header_b64, payload_b64, signature_b64 = parts
    raw_header = b64url_decode(header_b64, "header")
    raw_payload = b64url_decode(payload_b64, "payload")
    raw_signature = b64url_decode(signature_b64, "signature")
    # every part is ASCII now, as the signing input must be (RFC 7515 §5.1 step 8)
    return raw_header, raw_payload, raw_signature, f"{header_b64}.{payload_b64}".encode("ascii")


def _signature_verifies(alg: str, signing_input: bytes, signature: bytes,
                        public_key: PublicKey) -> bool:
    try:
        model = JWSRegistry(algorithms=[alg]).get_alg(alg)
        key = joserfc_key(public_key)
        model.check_key(key)
        return bool(model.verify(signing_input, signature, key))
    except JoseError:  # a key that does not fit alg; step 3 has excluded it already
        return False

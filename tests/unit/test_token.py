"""Attestation tokens: EAR claims, JWK thumbprints, JWKS parsing and rotation, and `verify`'s
checks, each failing with its own error. Tokens to attack are forged here with `cryptography` and
`hmac` directly, so the tests do not lean on the code they test.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import hashlib
import hmac
import json
import string
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trustauthority import __version__, errors
from trustauthority.errors import (
    TokenBindingMismatch,
    TokenExpired,
    TokenIssuerMismatch,
    TokenKeyUnknown,
    TokenMalformed,
    TokenRejected,
    TokenSignatureInvalid,
)
from trustauthority.token import (
    DEFAULT_LIFETIME,
    EAR_PROFILE,
    JWS_TYP,
    AttestationClaims,
    BaselineRef,
    Jwks,
    SigningKey,
    TrustStatus,
    VerificationKey,
    VerifierId,
    check_still_valid,
    issue,
    jwk_of,
    jwk_thumbprint,
    verify,
)
from trustauthority.token.keys import MAX_JWKS_KEYS, MAX_JWKS_SIZE

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ISSUER = "https://ta.example.test"
LEEWAY = timedelta(seconds=30)

KEY = SigningKey.generate("ta-2026-05")
PREVIOUS_KEY = SigningKey.generate("ta-2026-04")
OTHER_KEY = SigningKey.generate("ta-2026-05")  # same kid as KEY, another key: a forger's
JWKS = Jwks.of(KEY, PREVIOUS_KEY)
HOST_KEY = ec.generate_private_key(ec.SECP256R1())  # the host's TPM-resident binding key
HOST_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
THIEF_KEY = ec.generate_private_key(ec.SECP256R1())  # another machine's binding key
RSA_SIGNER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
P384_SIGNER = ec.generate_private_key(ec.SECP384R1())

CLAIMS = AttestationClaims.create(
    issuer=ISSUER, host_id="host-0042", cluster="prod-eu", status=TrustStatus.TRUSTED,
    baseline=BaselineRef("fedora-41-uki", 3), pcr_digest=hashlib.sha256(b"pcrs").hexdigest(),
    secure_boot=True, binding_key_thumbprint=jwk_thumbprint(HOST_KEY.public_key()), now=NOW,
    jti="d6f1c0de-0001",
)
TOKEN = issue(CLAIMS, KEY)
HEADER: dict[str, object] = {"alg": "ES256", "kid": KEY.kid, "typ": JWS_TYP}

# RFC 7638 §3.1: the example RSA key and its thumbprint
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
    "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
    "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


# --- forging tokens by hand ---------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _es256(private_key: ec.EllipticCurvePrivateKey) -> Callable[[bytes], bytes]:
    size = (private_key.curve.key_size + 7) // 8
    hash_algorithm = hashes.SHA256() if size == 32 else hashes.SHA384()

    def sign(signing_input: bytes) -> bytes:
        r, s = decode_dss_signature(private_key.sign(signing_input, ec.ECDSA(hash_algorithm)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return sign


def _rs256(private_key: rsa.RSAPrivateKey, pss: bool = False) -> Callable[[bytes], bytes]:
    pad: padding.AsymmetricPadding = (
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32) if pss
        else padding.PKCS1v15())
    return lambda signing_input: private_key.sign(signing_input, pad, hashes.SHA256())


def _hs256(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda signing_input: hmac.new(secret, signing_input, hashlib.sha256).digest()


_SIGN = _es256(KEY.private_key)


def _forge(header: Mapping[str, object] | bytes, payload: Mapping[str, object] | bytes,
           sign: Callable[[bytes], bytes] = _SIGN) -> str:
    raw_header = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw_payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{_b64(raw_header)}.{_b64(raw_payload)}"
    return f"{signing_input}.{_b64(sign(signing_input.encode('ascii')))}"


def _payload(**changes: object) -> dict[str, object]:
    payload = CLAIMS.to_payload()
    payload.update(changes)
    return payload


def _appraisal_payload(**changes: object) -> dict[str, object]:
    payload = json.loads(json.dumps(CLAIMS.to_payload()))
    payload["submods"]["tpm"]["x-ta"].update(changes)
    assert isinstance(payload, dict)
    return payload


def _verify(token: str, **options: object) -> AttestationClaims:
    arguments: dict[str, object] = {"issuer": ISSUER, "now": NOW, "leeway": LEEWAY}
    arguments.update(options)
    return verify(token, JWKS, **arguments)  # type: ignore[arg-type]


# --- round trips ---------------------------------------------------------------------------------

def test_an_issued_token_verifies_to_the_same_claims() -> None:
    assert _verify(TOKEN) == CLAIMS
    assert _verify(TOKEN, binding_key=HOST_KEY.public_key()) == CLAIMS


def test_the_token_is_a_standard_es256_jws_any_library_can_check() -> None:
    header_b64, payload_b64, signature_b64 = TOKEN.split(".")
    assert json.loads(_unb64(header_b64)) == HEADER
    assert json.loads(_unb64(payload_b64)) == CLAIMS.to_payload()
    signature = _unb64(signature_b64)
    assert len(signature) == 64  # JWS ES256 is r || s, 32 bytes each (RFC 7518 §3.4), not DER
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                               int.from_bytes(signature[32:], "big"))
    KEY.public_key.verify(der, f"{header_b64}.{payload_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        PREVIOUS_KEY.public_key.verify(der, f"{header_b64}.{payload_b64}".encode(),
                                       ec.ECDSA(hashes.SHA256()))


def test_an_untrusted_verdict_without_a_baseline_round_trips() -> None:
    claims = dataclasses.replace(CLAIMS, status=TrustStatus.UNTRUSTED, baseline=None,
                                 secure_boot=None)
    verified = _verify(issue(claims, KEY))
    assert verified == claims
    assert not verified.trusted
    assert verified.to_payload()["submods"] == {
        "tpm": {"ear.status": "contraindicated",
                "x-ta": {"baseline": None, "pcr-digest": claims.pcr_digest,
                         "secure-boot": None}}}


def test_a_token_bound_to_an_rsa_binding_key_verifies_with_that_key_only() -> None:
    claims = dataclasses.replace(CLAIMS,
                                 cnf_jkt=jwk_thumbprint(HOST_RSA_KEY.public_key()))
    token = issue(claims, KEY)
    assert _verify(token, binding_key=HOST_RSA_KEY.public_key()) == claims
    with pytest.raises(TokenBindingMismatch):
        _verify(token, binding_key=HOST_KEY.public_key())


def test_rsa_signatures_verify_where_the_caller_allows_them() -> None:
    jwks = Jwks((VerificationKey("rsa-1", RSA_SIGNER.public_key()),))
    for alg, sign in (("RS256", _rs256(RSA_SIGNER)), ("PS256", _rs256(RSA_SIGNER, pss=True))):
        token = _forge({**HEADER, "alg": alg, "kid": "rsa-1"}, _payload(), sign)
        assert verify(token, jwks, issuer=ISSUER, now=NOW, algorithms=(alg,)) == CLAIMS
        with pytest.raises(TokenSignatureInvalid, match="is not allowed"):
            verify(token, jwks, issuer=ISSUER, now=NOW)  # ES256 only by default


def test_es384_verifies_with_a_p384_key_where_allowed() -> None:
    jwks = Jwks((VerificationKey("p384", P384_SIGNER.public_key()),))
    token = _forge({**HEADER, "alg": "ES384", "kid": "p384"}, _payload(), _es256(P384_SIGNER))
    assert verify(token, jwks, issuer=ISSUER, now=NOW, algorithms=("ES384",)) == CLAIMS


# --- each check, failing with its own error ----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Bad:
    token: str
    error: type[TokenRejected]
    match: str
    options: dict[str, object] = dataclasses.field(default_factory=dict)


def _tampered_payload() -> str:
    header_b64, _, signature_b64 = TOKEN.split(".")
    forged = _b64(json.dumps(_payload(sub="host-0043")).encode())
    return f"{header_b64}.{forged}.{signature_b64}"


def _reencoded_header() -> str:
    _, payload_b64, signature_b64 = TOKEN.split(".")
    same_meaning = json.dumps({"typ": JWS_TYP, "kid": KEY.kid, "alg": "ES256"}, indent=1)
    return f"{_b64(same_meaning.encode())}.{payload_b64}.{signature_b64}"


def _swapped_kid() -> str:
    _, payload_b64, signature_b64 = TOKEN.split(".")
    header = _b64(json.dumps({**HEADER, "kid": PREVIOUS_KEY.kid}).encode())
    return f"{header}.{payload_b64}.{signature_b64}"


def _non_canonical_signature() -> str:
    # a 64-byte signature is 86 base64url characters with 4 unused bits at the end: set them
    head, signature_b64 = TOKEN.rsplit(".", 1)
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    spare = alphabet[alphabet.index(signature_b64[-1]) | 0b1]
    assert spare != signature_b64[-1]
    assert _unb64(signature_b64[:-1] + spare) == _unb64(signature_b64)  # to a lenient decoder
    return f"{head}.{signature_b64[:-1]}{spare}"


def _public_pem() -> bytes:
    return KEY.public_key.public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)


def _bad_cases() -> list[object]:
    exp = CLAIMS.exp
    ok_payload = _payload()
    cases: dict[str, Bad] = {
        # 1. well-formed compact JWS
        "empty": Bad("", TokenMalformed, "1 parts, not 3"),
        "two parts": Bad("abc.def", TokenMalformed, "2 parts, not 3"),
        "four parts": Bad(TOKEN + ".e30", TokenMalformed, "4 parts, not 3"),
        "not base64url": Bad("e30.@@@.abc", TokenMalformed, "payload is not unpadded base64url"),
        "padded": Bad(TOKEN + "=", TokenMalformed, "signature is not unpadded base64url"),
        "non-ascii": Bad(TOKEN[:-1] + "é", TokenMalformed, "signature is not unpadded"),
        "standard base64 alphabet": Bad(TOKEN[:-1] + "+", TokenMalformed,
                                        "signature is not unpadded base64url"),
        "impossible length": Bad("abcde.e30.abc", TokenMalformed, "header is not unpadded"),
        "non-canonical trailing bits": Bad(_non_canonical_signature(), TokenMalformed,
                                           "signature is not canonical base64url"),
        "oversized": Bad("a" * 8193, TokenMalformed, "longer than 8192"),
        "oversized but well-formed": Bad(_forge(HEADER, _payload(pad="x" * 9000)),
                                         TokenMalformed, "longer than 8192"),
        "header not json": Bad(_forge(b"{alg: ES256}", ok_payload), TokenMalformed,
                               "header is not JSON"),
        "header not utf-8": Bad(_forge(b'{"alg":"\xff"}', ok_payload), TokenMalformed,
                                "header is not JSON"),
        "header an array": Bad(_forge(b'["ES256"]', ok_payload), TokenMalformed,
                               "header is not a JSON object"),
        "header duplicate alg": Bad(_forge(
            f'{{"alg":"none","alg":"ES256","kid":"{KEY.kid}","typ":"{JWS_TYP}"}}'.encode(),
            ok_payload), TokenMalformed, "duplicate member 'alg'"),
        "no kid": Bad(_forge({"alg": "ES256", "typ": JWS_TYP}, ok_payload), TokenMalformed,
                      "lacks a string alg or kid"),
        "alg not a string": Bad(_forge({**HEADER, "alg": ["ES256"]}, ok_payload),
                                TokenMalformed, "lacks a string alg or kid"),
        "no typ": Bad(_forge({"alg": "ES256", "kid": KEY.kid}, ok_payload), TokenMalformed,
                      "typ None is not 'eat\\+jwt'"),
        "typ JWT": Bad(_forge({**HEADER, "typ": "JWT"}, ok_payload), TokenMalformed,
                       "typ 'JWT' is not"),
        "crit": Bad(_forge({**HEADER, "crit": ["exp"]}, ok_payload), TokenMalformed, "crit"),
        # 2. the algorithm
        "alg none, no signature": Bad(_forge({**HEADER, "alg": "none"}, ok_payload,
                                             lambda _: b""),
                                      TokenSignatureInvalid, "alg 'none' is not allowed"),
        "alg none, a signature": Bad(_forge({**HEADER, "alg": "none"}, ok_payload),
                                     TokenSignatureInvalid, "alg 'none' is not allowed"),
        "alg None spelt otherwise": Bad(_forge({**HEADER, "alg": "nOnE"}, ok_payload,
                                               lambda _: b""),
                                        TokenSignatureInvalid, "alg 'nOnE' is not allowed"),
        "HS256 keyed with the public key PEM": Bad(
            _forge({**HEADER, "alg": "HS256"}, ok_payload, _hs256(_public_pem())),
            TokenSignatureInvalid, "alg 'HS256' is not allowed"),
        "HS256 keyed with the public JWK": Bad(
            _forge({**HEADER, "alg": "HS256"}, ok_payload,
                   _hs256(json.dumps(jwk_of(KEY.public_key)).encode())),
            TokenSignatureInvalid, "alg 'HS256' is not allowed"),
        "RS256 header on an EC key": Bad(
            _forge({**HEADER, "alg": "RS256"}, ok_payload, _rs256(RSA_SIGNER)),
            TokenSignatureInvalid, "alg 'RS256' is not allowed \\(allowed: ES256\\)"),
        # 3. the key
        "RS256 header on an EC key, RS256 allowed": Bad(
            _forge({**HEADER, "alg": "RS256"}, ok_payload, _rs256(RSA_SIGNER)),
            TokenKeyUnknown, "is a EC P-256 key that may not verify RS256",
            {"algorithms": ("ES256", "RS256")}),
        "ES384 header on a P-256 key, ES384 allowed": Bad(
            _forge({**HEADER, "alg": "ES384"}, ok_payload, _es256(P384_SIGNER)),
            TokenKeyUnknown, "may not verify ES384", {"algorithms": ("ES256", "ES384")}),
        "unknown kid": Bad(_forge({**HEADER, "kid": "ta-1999-01"}, ok_payload),
                           TokenKeyUnknown, "kid 'ta-1999-01' is not in the JWKS"),
        # 4. the signature
        "tampered payload": Bad(_tampered_payload(), TokenSignatureInvalid,
                                "signature does not verify with key 'ta-2026-05'"),
        "tampered header (same meaning, other bytes)": Bad(
            _reencoded_header(), TokenSignatureInvalid, "signature does not verify"),
        "kid swapped to the previous key": Bad(_swapped_kid(), TokenSignatureInvalid,
                                               "does not verify with key 'ta-2026-04'"),
        "signed by a forger's key with our kid": Bad(
            _forge(HEADER, ok_payload, _es256(OTHER_KEY.private_key)), TokenSignatureInvalid,
            "signature does not verify"),
        "signature truncated": Bad(TOKEN.rsplit(".", 1)[0] + "." + _b64(
            _unb64(TOKEN.rsplit(".", 1)[1])[:63]), TokenSignatureInvalid, "does not verify"),
        "signature DER instead of r||s": Bad(
            _forge(HEADER, ok_payload,
                   lambda data: KEY.private_key.sign(data, ec.ECDSA(hashes.SHA256()))),
            TokenSignatureInvalid, "does not verify"),
        "empty signature": Bad(TOKEN.rsplit(".", 1)[0] + ".", TokenSignatureInvalid,
                               "does not verify"),
        # 5. the payload and its issuer
        "payload an array": Bad(_forge(HEADER, b"[1]"), TokenMalformed,
                                "payload is not a JSON object"),
        "payload duplicate sub": Bad(_forge(HEADER, b'{"sub":"a","sub":"b"}'), TokenMalformed,
                                     "duplicate member 'sub'"),
        "payload NaN": Bad(_forge(HEADER, b'{"exp":NaN}'), TokenMalformed, "NaN is not JSON"),
        "wrong issuer": Bad(_forge(HEADER, _payload(iss="https://evil.example")),
                            TokenIssuerMismatch, "issuer 'https://evil.example' is not"),
        "no issuer": Bad(_forge(HEADER, {k: v for k, v in ok_payload.items() if k != "iss"}),
                         TokenIssuerMismatch, "issuer None is not"),
        "issuer not a string": Bad(_forge(HEADER, _payload(iss=[ISSUER])), TokenIssuerMismatch,
                                   "issuer \\['https"),
        # 6. time
        "expired (exp + leeway)": Bad(TOKEN, TokenExpired, "token expired at",
                                      {"now": exp + LEEWAY}),
        "expired (exp, no leeway)": Bad(TOKEN, TokenExpired, "token expired at",
                                        {"now": exp, "leeway": timedelta(0)}),
        "long expired": Bad(TOKEN, TokenExpired, "expired", {"now": NOW + timedelta(days=400)}),
        "not yet valid (nbf)": Bad(_forge(HEADER, _payload(nbf=int(NOW.timestamp()) + 31)),
                                   TokenExpired, "not valid before"),
        "issued in the future (iat)": Bad(
            issue(dataclasses.replace(CLAIMS, iat=NOW + timedelta(seconds=31),
                                      exp=NOW + timedelta(minutes=11)), KEY),
            TokenExpired, "issued in the future"),
        "exp a string": Bad(_forge(HEADER, _payload(exp="tomorrow")), TokenMalformed,
                            "exp is missing or not an integer NumericDate"),
        "exp fractional": Bad(_forge(HEADER, _payload(exp=CLAIMS.exp.timestamp() + 0.5)),
                              TokenMalformed, "exp is missing or not an integer"),
        "exp true": Bad(_forge(HEADER, _payload(exp=True)), TokenMalformed,
                        "exp is missing or not an integer"),
        "exp huge": Bad(_forge(HEADER, _payload(exp=10**30)), TokenMalformed,
                        "exp is outside the NumericDate range"),
        "no iat": Bad(_forge(HEADER, {k: v for k, v in ok_payload.items() if k != "iat"}),
                      TokenMalformed, "iat is missing"),
        "nbf a string": Bad(_forge(HEADER, _payload(nbf="now")), TokenMalformed,
                            "nbf is missing or not an integer"),
        # 7. the claims schema
        "other eat_profile": Bad(_forge(HEADER, _payload(eat_profile="tag:ietf.org,2026:x")),
                                 TokenMalformed, "eat_profile 'tag:ietf.org,2026:x' is not"),
        "status unknown": Bad(_forge(HEADER, _payload(submods={"tpm": {
            "ear.status": "warning", "x-ta": {}}})), TokenMalformed, "ear.status 'warning'"),
        "secure boot a string": Bad(_forge(HEADER, _appraisal_payload(**{"secure-boot": "yes"})),
                                    TokenMalformed, "secure-boot is not true, false or null"),
        "pcr digest upper case": Bad(_forge(HEADER, _appraisal_payload(
            **{"pcr-digest": CLAIMS.pcr_digest.upper()})), TokenMalformed,
            "pcr_digest must be 64 lowercase hex"),
        "no cnf": Bad(_forge(HEADER, {k: v for k, v in ok_payload.items() if k != "cnf"}),
                      TokenMalformed, "cnf is missing or not a JSON object"),
        "exp before iat": Bad(_forge(HEADER, _payload(exp=int(NOW.timestamp()) - 10,
                                                      iat=int(NOW.timestamp()) - 1)),
                              TokenMalformed, "exp must be after iat",
                              {"now": NOW - timedelta(seconds=20)}),
        # 8. the binding
        "bound to another host's key": Bad(TOKEN, TokenBindingMismatch,
                                           "bound to another key",
                                           {"binding_key": THIEF_KEY.public_key()}),
        "binding key of a refused type": Bad(
            TOKEN, TokenBindingMismatch, "binding key not accepted",
            {"binding_key": ec.generate_private_key(ec.SECP521R1()).public_key()}),
    }
    return [pytest.param(case, id=name) for name, case in cases.items()]


@pytest.mark.parametrize("case", _bad_cases())
def test_each_check_refuses_with_its_own_error(case: Bad) -> None:
    with pytest.raises(TokenRejected, match=case.match) as caught:
        _verify(case.token, **case.options)
    assert type(caught.value) is case.error, caught.value
    assert "\n" not in str(caught.value)


def test_the_checks_run_in_the_documented_order() -> None:
    # a token wrong in every way reports the first check: each later check must not run first
    everything_wrong = _forge({**HEADER, "alg": "HS256", "kid": "nope"},
                              _payload(iss="x", exp=0), _hs256(b"k"))
    with pytest.raises(TokenSignatureInvalid, match="alg 'HS256'"):
        _verify(everything_wrong, binding_key=THIEF_KEY.public_key())
    unknown_and_unsigned = _forge({**HEADER, "kid": "nope"}, _payload(iss="x"), lambda _: b"")
    with pytest.raises(TokenKeyUnknown):
        _verify(unknown_and_unsigned)
    bad_signature_and_issuer = _forge(HEADER, _payload(iss="x"), _es256(OTHER_KEY.private_key))
    with pytest.raises(TokenSignatureInvalid):
        _verify(bad_signature_and_issuer)
    wrong_issuer_and_expired = _forge(HEADER, _payload(iss="x"))
    with pytest.raises(TokenRejected, match="issuer") as caught:
        _verify(wrong_issuer_and_expired, now=NOW + timedelta(days=1))
    assert type(caught.value) is TokenIssuerMismatch
    with pytest.raises(TokenExpired):  # expired beats the binding check
        _verify(TOKEN, now=NOW + timedelta(days=1), binding_key=THIEF_KEY.public_key())


@pytest.mark.parametrize(("now", "leeway", "valid"), [
    (CLAIMS.exp + LEEWAY - timedelta(seconds=1), LEEWAY, True),
    (CLAIMS.exp + LEEWAY, LEEWAY, False),
    (CLAIMS.exp - timedelta(seconds=1), timedelta(0), True),
    (CLAIMS.exp, timedelta(0), False),
    (CLAIMS.iat - LEEWAY, LEEWAY, True),                           # host clock slightly behind
    (CLAIMS.iat - LEEWAY - timedelta(seconds=1), LEEWAY, False),   # ... too far behind
    (CLAIMS.iat - timedelta(microseconds=1), timedelta(0), False),
])
def test_expiry_and_issue_time_at_the_edges_of_the_leeway(now: datetime, leeway: timedelta,
                                                          valid: bool) -> None:
    """verify, and check_still_valid for a token verified earlier, agree at every edge."""
    if valid:
        assert _verify(TOKEN, now=now, leeway=leeway) == CLAIMS
        check_still_valid(CLAIMS, now, leeway)
    else:
        with pytest.raises(TokenExpired):
            _verify(TOKEN, now=now, leeway=leeway)
        with pytest.raises(TokenExpired):
            check_still_valid(CLAIMS, now, leeway)


@pytest.mark.parametrize(("seconds_early", "valid"), [(30, True), (31, False)])
def test_not_before_at_the_edge_of_the_leeway(seconds_early: int, valid: bool) -> None:
    nbf = int(NOW.timestamp()) + 60
    token = _forge(HEADER, _payload(nbf=nbf))
    now = datetime.fromtimestamp(nbf - seconds_early, UTC)
    if valid:
        assert _verify(token, now=now) == CLAIMS  # nbf is checked, then ignored by the schema
    else:
        with pytest.raises(TokenExpired, match="not valid before"):
            _verify(token, now=now)


def test_now_in_another_timezone_is_the_same_instant() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert _verify(TOKEN, now=(CLAIMS.exp - timedelta(seconds=1)).astimezone(tokyo),
                   leeway=timedelta(0)) == CLAIMS
    with pytest.raises(TokenExpired):
        _verify(TOKEN, now=CLAIMS.exp.astimezone(tokyo), leeway=timedelta(0))


@pytest.mark.parametrize(("options", "message"), [
    ({"now": datetime(2026, 5, 1, 12, 0)}, "timezone-aware"),  # naive on purpose
    ({"leeway": timedelta(seconds=-1)}, "leeway"),
    ({"algorithms": ("HS256",)}, "subset"),
    ({"algorithms": ("ES256", "none")}, "subset"),
    ({"algorithms": ()}, "non-empty"),
])
def test_verify_cannot_be_configured_insecurely(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _verify(TOKEN, **options)


def test_a_token_that_is_not_a_string_is_malformed() -> None:
    with pytest.raises(TokenMalformed, match="not a string"):
        _verify(TOKEN.encode())  # type: ignore[arg-type]


# --- no edit to a token verifies -----------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(index=st.integers(min_value=0, max_value=len(TOKEN) - 1), replacement=st.characters())
def test_any_single_character_change_is_refused(index: int, replacement: str) -> None:
    assume(replacement != TOKEN[index])
    tampered = TOKEN[:index] + replacement + TOKEN[index + 1:]
    with pytest.raises(TokenRejected):
        _verify(tampered)


@settings(max_examples=200, deadline=None)
@given(index=st.integers(min_value=0, max_value=len(TOKEN) - 1), inserted=st.characters())
def test_any_single_character_deletion_or_insertion_is_refused(index: int, inserted: str) -> None:
    for tampered in (TOKEN[:index] + TOKEN[index + 1:], TOKEN[:index] + inserted + TOKEN[index:]):
        with pytest.raises(TokenRejected):
            _verify(tampered)


# --- JWKS and rotation ---------------------------------------------------------------------------

def test_a_token_from_the_previous_key_verifies_until_that_key_is_dropped() -> None:
    old_token = issue(CLAIMS, PREVIOUS_KEY)
    published = Jwks.parse(Jwks.of(KEY, PREVIOUS_KEY).to_json())  # what a host fetches
    assert verify(old_token, published, issuer=ISSUER, now=NOW) == CLAIMS
    assert verify(TOKEN, published, issuer=ISSUER, now=NOW) == CLAIMS
    rotated = Jwks.parse(Jwks.of(KEY).to_json())
    with pytest.raises(TokenKeyUnknown, match="'ta-2026-04' is not in the JWKS"):
        verify(old_token, rotated, issuer=ISSUER, now=NOW)
    assert verify(TOKEN, rotated, issuer=ISSUER, now=NOW) == CLAIMS


def test_the_jwks_document_carries_kid_use_and_alg() -> None:
    document = Jwks.of(KEY, VerificationKey("host-rsa", HOST_RSA_KEY.public_key())).to_dict()
    numbers = KEY.public_key.public_numbers()
    assert document == {"keys": [
        {"kty": "EC", "crv": "P-256", "x": _b64(numbers.x.to_bytes(32, "big")),
         "y": _b64(numbers.y.to_bytes(32, "big")), "kid": KEY.kid, "use": "sig", "alg": "ES256"},
        {**jwk_of(HOST_RSA_KEY.public_key()), "kid": "host-rsa", "use": "sig"},
    ]}


@pytest.mark.parametrize("public_key", [
    KEY.public_key, P384_SIGNER.public_key(), RSA_SIGNER.public_key(),
    rsa.generate_private_key(public_exponent=3, key_size=3072).public_key(),
], ids=["P-256", "P-384", "RSA-2048", "RSA-3072-e3"])
def test_a_jwks_round_trips_through_json(public_key: ec.EllipticCurvePublicKey
                                         | rsa.RSAPublicKey) -> None:
    jwks = Jwks.of(VerificationKey("k1", public_key), PREVIOUS_KEY)
    assert Jwks.parse(jwks.to_json()) == jwks
    assert Jwks.parse(jwks.to_json().encode()) == jwks
    assert Jwks.parse(jwks.to_dict()) == jwks


def test_keys_not_for_signatures_are_left_out() -> None:
    document = Jwks.of(KEY, PREVIOUS_KEY).to_dict()
    document["keys"][1]["use"] = "enc"
    assert Jwks.parse(json.dumps(document)).kids == (KEY.kid,)
    ops = {"keys": [{k: v for k, v in jwk.items() if k != "use"} for jwk in document["keys"]]}
    ops["keys"][0]["key_ops"] = ["verify"]  # type: ignore[assignment]
    ops["keys"][1]["key_ops"] = ["encrypt"]  # type: ignore[assignment]
    assert Jwks.parse(json.dumps(ops)).kids == (KEY.kid,)


def test_a_key_limited_to_one_alg_verifies_no_other() -> None:
    jwks = Jwks.parse({"keys": [{**jwk_of(RSA_SIGNER.public_key()), "kid": "rsa-pss",
                                 "alg": "PS256"}]})
    both = ("RS256", "PS256")
    pss = _forge({**HEADER, "alg": "PS256", "kid": "rsa-pss"}, _payload(),
                 _rs256(RSA_SIGNER, pss=True))
    assert verify(pss, jwks, issuer=ISSUER, now=NOW, algorithms=both) == CLAIMS
    pkcs1 = _forge({**HEADER, "alg": "RS256", "kid": "rsa-pss"}, _payload(), _rs256(RSA_SIGNER))
    with pytest.raises(TokenKeyUnknown, match="may not verify RS256"):
        verify(pkcs1, jwks, issuer=ISSUER, now=NOW, algorithms=both)


def _jwk(**changes: object) -> dict[str, object]:
    jwk: dict[str, object] = dict(VerificationKey("k1", KEY.public_key).to_jwk())
    jwk.update(changes)
    return {key: value for key, value in jwk.items() if value is not None}


def _rsa_jwk(**changes: object) -> dict[str, object]:
    jwk: dict[str, object] = {**jwk_of(RSA_SIGNER.public_key()), "kid": "r1"}
    jwk.update(changes)
    return jwk


_P256_X = KEY.public_key.public_numbers().x.to_bytes(32, "big")


@pytest.mark.parametrize(("document", "match"), [
    (b"not json", "JWKS is not JSON"),
    (b"[]", "JWKS is not a JSON object"),
    (b"{}", "no 'keys' array"),
    (json.dumps({"keys": {"k1": _jwk()}}), "no 'keys' array"),
    (json.dumps({"keys": []}), "no signature keys"),
    (json.dumps({"keys": [_jwk(use="enc")]}), "no signature keys"),
    (json.dumps({"keys": ["k1"]}), "key #0 is not a JSON object"),
    (json.dumps({"keys": [_jwk(kty=None)]}), "kty is missing"),
    (json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}),
     "private key material \\(k\\)"),
    (json.dumps({"keys": [_jwk(kty="OKP", crv="Ed25519")]}), "kty 'OKP' is not accepted"),
    (json.dumps({"keys": [_jwk(d="AAAA")]}), "private key material \\(d\\)"),
    (json.dumps({"keys": [_jwk(kid=None)]}), "kid is missing"),
    (json.dumps({"keys": [_jwk(kid="")]}), "kid is missing"),
    (json.dumps({"keys": [_jwk(kid=7)]}), "kid is missing"),
    (json.dumps({"keys": [_jwk(), _jwk(alg=None)]}), "several keys with kid 'k1'"),
    (json.dumps({"keys": [_jwk(crv="P-521")]}), "crv 'P-521' is not accepted"),
    (json.dumps({"keys": [_jwk(crv="secp256k1")]}), "crv 'secp256k1' is not accepted"),
    (json.dumps({"keys": [_jwk(x=_b64(_P256_X[1:]))]}), "must be 32 bytes"),
    (json.dumps({"keys": [_jwk(x=_b64(b"\0" + _P256_X))]}), "must be 32 bytes"),
    (json.dumps({"keys": [_jwk(x=_b64(bytes(32)))]}), "not on P-256"),
    (json.dumps({"keys": [_jwk(x=None)]}), "x is missing"),
    (json.dumps({"keys": [_jwk(x=base64.urlsafe_b64encode(_P256_X).decode())]}),
     "x is not unpadded base64url"),
    (json.dumps({"keys": [_jwk(alg="ES384")]}), "alg ES384 does not fit a EC P-256 key"),
    (json.dumps({"keys": [_jwk(alg="HS256")]}), "alg HS256 does not fit"),
    (json.dumps({"keys": [_jwk(alg=["ES256"])]}), "alg is not a string"),
    (json.dumps({"keys": [_jwk(use=1)]}), "use is not a string"),
    (json.dumps({"keys": [_jwk(use=None, key_ops="verify")]}), "key_ops is not an array"),
    (json.dumps({"keys": [_jwk(key_ops=["verify"])]}), "both use and key_ops"),
    (json.dumps({"keys": [_rsa_jwk(n=_b64(
        rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - refused
        .public_key().public_numbers().n.to_bytes(128, "big")))]}),
     "RSA-1024 is not accepted"),
    (json.dumps({"keys": [_rsa_jwk(n=_b64(b"\0" + _unb64(str(_rsa_jwk()["n"]))))]}),
     "without leading zero"),
    (json.dumps({"keys": [_rsa_jwk(e=_b64(b"\1" + bytes(7) + b"\1"))]}), "e is larger"),
    (json.dumps({"keys": [_rsa_jwk(e="AAE")]}), "without leading zero"),
    (json.dumps({"keys": [_rsa_jwk(e="Ag")]}), "not a valid RSA public key"),  # e = 2: even
    (json.dumps({"keys": [_rsa_jwk(alg="ES256")]}), "does not fit a RSA-2048 key"),
    (json.dumps({"keys": [_rsa_jwk(p="AAAA", q="AAAA")]}), "private key material \\(p, q\\)"),
    ('{"keys": [], "keys": []}', "duplicate member 'keys'"),
    (json.dumps({"keys": [_jwk(kid=f"k{i}") for i in range(MAX_JWKS_KEYS + 1)]}),
     f"more than {MAX_JWKS_KEYS} keys"),
    (json.dumps({"keys": [_jwk()], "padding": "x" * MAX_JWKS_SIZE}),
     f"larger than {MAX_JWKS_SIZE} bytes"),
    (b"[" * 100_000 + b"]" * 100_000, "larger than"),
    (b"[" * 30_000 + b"]" * 30_000, "JWKS is not JSON"),  # too deep to parse: refused, no crash
])
def test_a_malformed_jwks_is_refused(document: str | bytes, match: str) -> None:
    with pytest.raises(TokenMalformed, match=match):
        Jwks.parse(document)


def test_jwks_lookup_and_construction() -> None:
    assert JWKS.find(PREVIOUS_KEY.kid).public_key == PREVIOUS_KEY.public_key
    with pytest.raises(TokenKeyUnknown):
        JWKS.find("nope")
    with pytest.raises(ValueError, match="unique"):
        Jwks.of(KEY, OTHER_KEY)
    with pytest.raises(ValueError, match="does not fit"):
        VerificationKey("k", KEY.public_key, "RS256")
    assert VerificationKey("k", RSA_SIGNER.public_key()).algorithms == {"RS256", "PS256"}
    assert VerificationKey("k", P384_SIGNER.public_key()).alg == "ES384"


# --- keys and thumbprints ------------------------------------------------------------------------

def test_rfc_7638_example_thumbprint() -> None:
    n = int.from_bytes(_unb64(RFC7638_N), "big")
    public_key = rsa.RSAPublicNumbers(65537, n).public_key()
    assert jwk_of(public_key) == {"kty": "RSA", "n": RFC7638_N, "e": "AQAB"}
    assert jwk_thumbprint(public_key) == RFC7638_THUMBPRINT


@pytest.mark.parametrize("private_key", [HOST_KEY, P384_SIGNER], ids=["P-256", "P-384"])
def test_ec_thumbprint_matches_a_hand_computed_one(
        private_key: ec.EllipticCurvePrivateKey) -> None:
    numbers = private_key.public_key().public_numbers()
    size = (private_key.curve.key_size + 7) // 8
    crv = "P-256" if size == 32 else "P-384"
    # RFC 7638 §3.2: required members only, lexicographic order, no whitespace
    canonical = (f'{{"crv":"{crv}","kty":"EC","x":"{_b64(numbers.x.to_bytes(size, "big"))}",'
                 f'"y":"{_b64(numbers.y.to_bytes(size, "big"))}"}}')
    expected = _b64(hashlib.sha256(canonical.encode()).digest())
    assert jwk_thumbprint(private_key.public_key()) == expected


def test_a_thumbprint_keeps_leading_zero_coordinates_full_size() -> None:
    # about 1 in 128 P-256 keys has an x below 2**248; its JWK must still carry 32 bytes
    for _ in range(2000):
        private_key = ec.generate_private_key(ec.SECP256R1())
        if private_key.public_key().public_numbers().x < 2**248:
            break
    else:
        pytest.fail("no key with a short x in 2000 tries")
    assert len(_unb64(jwk_of(private_key.public_key())["x"])) == 32


@pytest.mark.parametrize("public_key", [
    ec.generate_private_key(ec.SECP521R1()).public_key(),
    ec.generate_private_key(ec.SECP256K1()).public_key(),
    rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(),  # noqa: S505
    ed25519.Ed25519PrivateKey.generate().public_key(),
], ids=["P-521", "secp256k1", "RSA-1024", "Ed25519"])
def test_keys_we_do_not_accept_have_no_jwk(public_key: object) -> None:
    with pytest.raises(ValueError, match=r"not accepted|not an EC or RSA"):
        jwk_of(public_key)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"not accepted|not an EC or RSA"):
        jwk_thumbprint(public_key)  # type: ignore[arg-type]


def test_signing_key() -> None:
    generated = SigningKey.generate()
    assert generated.kid == jwk_thumbprint(generated.public_key)
    assert repr(generated) == f"SigningKey(kid={generated.kid!r})"  # no key material
    with pytest.raises(ValueError, match="needs a P-256 key"):
        SigningKey("k", ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ValueError, match="kid"):
        SigningKey("", ec.generate_private_key(ec.SECP256R1()))


# --- claims --------------------------------------------------------------------------------------

def test_the_payload_is_laid_out_as_an_ear() -> None:
    assert CLAIMS.to_payload() == {
        "eat_profile": "tag:github.com,2023:veraison/ear",
        "iss": ISSUER,
        "sub": "host-0042",
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 600,
        "jti": "d6f1c0de-0001",
        "cnf": {"jkt": jwk_thumbprint(HOST_KEY.public_key())},
        "ear.verifier-id": {"developer": "Trust Authority",
                            "build": f"trustauthority {__version__}"},
        "submods": {"tpm": {
            "ear.status": "affirming",
            "ear.appraisal-policy-id": "policy://trustauthority/baseline/fedora-41-uki/3",
            "x-ta": {"baseline": {"name": "fedora-41-uki", "version": 3},
                     "pcr-digest": hashlib.sha256(b"pcrs").hexdigest(), "secure-boot": True},
        }},
        "x-ta": {"cluster": "prod-eu"},
    }
    assert EAR_PROFILE == "tag:github.com,2023:veraison/ear"
    assert TrustStatus.TRUSTED.ear_status == "affirming"
    assert TrustStatus.UNTRUSTED.ear_status == "contraindicated"


def test_create_sets_lifetime_and_whole_seconds() -> None:
    claims = AttestationClaims.create(
        issuer=ISSUER, host_id="h", cluster="c", status=TrustStatus.UNTRUSTED, baseline=None,
        pcr_digest="0" * 64, secure_boot=False, binding_key_thumbprint=RFC7638_THUMBPRINT,
        now=NOW + timedelta(microseconds=999_999))
    assert claims.iat == NOW
    assert claims.exp - claims.iat == DEFAULT_LIFETIME == timedelta(minutes=10)
    assert len(claims.jti) >= 16
    assert dataclasses.replace(claims, jti="x").jti == "x"
    assert len({AttestationClaims.create(
        issuer=ISSUER, host_id="h", cluster="c", status=TrustStatus.UNTRUSTED, baseline=None,
        pcr_digest="0" * 64, secure_boot=False, binding_key_thumbprint=RFC7638_THUMBPRINT,
        now=NOW).jti for _ in range(20)}) == 20


@pytest.mark.parametrize(("changes", "match"), [
    ({"status": TrustStatus.TRUSTED, "baseline": None}, "baseline is required"),
    ({"iat": datetime(2026, 5, 1, 12, 0)}, "timezone-aware"),  # naive on purpose
    ({"iat": NOW + timedelta(microseconds=5)}, "whole seconds"),
    ({"exp": NOW}, "exp must be after iat"),
    ({"iat": datetime(1969, 12, 31, tzinfo=UTC)}, "NumericDate range"),
    ({"pcr_digest": "ab" * 20}, "pcr_digest"),
    ({"pcr_digest": "AB" * 32}, "pcr_digest"),
    ({"cnf_jkt": RFC7638_THUMBPRINT[:-1]}, "cnf.jkt"),
    ({"cnf_jkt": RFC7638_THUMBPRINT[:-1] + "t"}, "cnf.jkt"),  # non-zero trailing bits
    ({"sub": ""}, "sub must be"),
    ({"cluster": "c" * 257}, "cluster must be"),
])
def test_claims_refuse_impossible_values(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(CLAIMS, **changes)  # type: ignore[arg-type]


def test_baseline_and_verifier_id_refuse_impossible_values() -> None:
    with pytest.raises(ValueError, match="version"):
        BaselineRef("b", 0)
    with pytest.raises(ValueError, match="baseline name"):
        BaselineRef("", 1)
    with pytest.raises(ValueError, match="verifier build"):
        VerifierId(build="")


def _without(payload: dict[str, object], *path: str) -> dict[str, object]:
    copy = json.loads(json.dumps(payload))
    node = copy
    for name in path[:-1]:
        node = node[name]
    del node[path[-1]]
    assert isinstance(copy, dict)
    return copy


def _with(payload: dict[str, object], value: object, *path: str) -> dict[str, object]:
    copy = json.loads(json.dumps(payload))
    node = copy
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    assert isinstance(copy, dict)
    return copy


_OK = CLAIMS.to_payload()


@pytest.mark.parametrize(("payload", "match"), [
    (_without(_OK, "eat_profile"), "eat_profile None"),
    (_without(_OK, "sub"), "sub is missing"),
    (_with(_OK, 42, "jti"), "jti is missing or not a string"),
    (_with(_OK, None, "ear.verifier-id"), "ear.verifier-id is missing"),
    (_without(_OK, "ear.verifier-id", "build"), "build is missing"),
    (_with(_OK, {}, "submods"), "exactly one appraisal"),
    (_with(_OK, {"other": 1}, "submods", "sgx"), "exactly one appraisal"),
    (_with(_OK, "affirming", "submods", "tpm"), "tpm is missing or not a JSON object"),
    (_without(_OK, "submods", "tpm", "ear.status"), "ear.status None"),
    (_with(_OK, True, "submods", "tpm", "ear.status"), "ear.status True"),
    (_without(_OK, "submods", "tpm", "x-ta"), "x-ta is missing"),
    (_with(_OK, "fedora", "submods", "tpm", "x-ta", "baseline"), "baseline is not null"),
    (_with(_OK, "3", "submods", "tpm", "x-ta", "baseline", "version"), "not an integer"),
    (_with(_OK, True, "submods", "tpm", "x-ta", "baseline", "version"), "not an integer"),
    (_with(_OK, 0, "submods", "tpm", "x-ta", "baseline", "version"), "version must be 1"),
    (_with(_OK, 1, "submods", "tpm", "x-ta", "baseline", "extra"), "baseline is not null"),
    (_with(_OK, "policy://other", "submods", "tpm", "ear.appraisal-policy-id"),
     "does not name the matched baseline"),
    (_without(_OK, "submods", "tpm", "ear.appraisal-policy-id"),
     "does not name the matched baseline"),
    (_with(_OK, 1, "submods", "tpm", "x-ta", "secure-boot"), "secure-boot is not true"),
    (_without(_OK, "submods", "tpm", "x-ta", "pcr-digest"), "pcr-digest is missing"),
    (_without(_OK, "x-ta"), "x-ta is missing"),
    (_with(_OK, ["prod-eu"], "x-ta", "cluster"), "cluster is missing or not a string"),
    (_with(_OK, {"jwk": {}}, "cnf"), "jkt is missing"),
    (_with(_OK, "nope", "cnf", "jkt"), "cnf.jkt must be"),
    (_with(_OK, -1, "iat"), "iat is outside"),
    (_with(_OK, 1.0, "iat"), "iat is missing or not an integer"),
])
def test_from_payload_refuses_anything_off_schema(payload: dict[str, object],
                                                   match: str) -> None:
    with pytest.raises(TokenMalformed, match=match):
        AttestationClaims.from_payload(payload)


def test_from_payload_ignores_claims_it_does_not_know() -> None:
    extended = {**_OK, "nbf": 0, "x-other": {"anything": [1]}}
    assert AttestationClaims.from_payload(extended) == CLAIMS


_text = st.text(min_size=1, max_size=40)
_claims = st.builds(
    AttestationClaims,
    iss=_text, sub=_text, cluster=_text, jti=_text,
    iat=st.integers(0, 2**33).map(lambda s: datetime.fromtimestamp(s, UTC)),
    exp=st.just(datetime(2300, 1, 1, tzinfo=UTC)),
    status=st.just(TrustStatus.TRUSTED),
    baseline=st.builds(BaselineRef, name=_text, version=st.integers(1, 2**40)),
    pcr_digest=st.binary(min_size=32, max_size=32).map(bytes.hex),
    secure_boot=st.none() | st.booleans(),
    cnf_jkt=st.binary(min_size=32, max_size=32).map(_b64),
    verifier_id=st.builds(VerifierId, developer=_text, build=_text),
) | st.builds(
    AttestationClaims,
    iss=_text, sub=_text, cluster=_text, jti=_text,
    iat=st.just(NOW), exp=st.just(NOW + timedelta(seconds=1)),
    status=st.just(TrustStatus.UNTRUSTED),
    baseline=st.none(),
    pcr_digest=st.binary(min_size=32, max_size=32).map(bytes.hex),
    secure_boot=st.none() | st.booleans(),
    cnf_jkt=st.binary(min_size=32, max_size=32).map(_b64),
)


@settings(max_examples=150, deadline=None)
@given(claims=_claims)
def test_any_claims_survive_payload_json_and_a_signature(claims: AttestationClaims) -> None:
    payload = json.loads(json.dumps(claims.to_payload()))
    assert AttestationClaims.from_payload(payload) == claims
    token = issue(claims, KEY)
    now = max(claims.iat, NOW)  # exp is after both
    assert verify(token, JWKS, issuer=claims.iss, now=now) == claims


# --- errors and purity ---------------------------------------------------------------------------

def test_token_errors_have_stable_types_under_one_root() -> None:
    expected = {
        TokenRejected: "token_rejected", TokenExpired: "token_expired",
        TokenSignatureInvalid: "token_signature_invalid", TokenMalformed: "token_malformed",
        TokenKeyUnknown: "token_key_unknown", TokenBindingMismatch: "token_binding_mismatch",
    }
    for cls, error_type in expected.items():
        assert cls.error_type == error_type
        assert errors.error_class_for(error_type) is cls
        assert issubclass(cls, TokenRejected)
        assert cls.__doc__
        assert cls.__name__ in (errors.__doc__ or "")


TOKEN_PACKAGE = Path(__file__).resolve().parents[2] / "src" / "trustauthority" / "token"
#: the only modules the token package may import: no I/O, no network, no clock
ALLOWED_IMPORTS = ("__future__", "base64", "collections.abc", "dataclasses", "datetime", "enum",
                   "hmac", "json", "re", "secrets", "string", "typing", "cryptography", "joserfc",
                   "trustauthority")
FORBIDDEN_IMPORTS = ("trustauthority.store", "trustauthority.service", "trustauthority.api",
                     "trustauthority.client", "trustauthority.cli", "trustauthority.agent")
CLOCK_AND_IO_CALLS = frozenset({"now", "utcnow", "today", "time", "time_ns", "monotonic",
                                "open", "urlopen", "getenv"})


def _impurities(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            allowed = any(name == ok or name.startswith(ok + ".") for ok in ALLOWED_IMPORTS)
            forbidden = any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN_IMPORTS)
            if not allowed or forbidden:
                found.append(f"imports {name}")
        if isinstance(node, ast.Call):
            called = node.func
            name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
            if name in CLOCK_AND_IO_CALLS:
                found.append(f"calls {name}()")
    return found


def test_the_token_package_is_pure() -> None:
    sources = sorted(TOKEN_PACKAGE.glob("*.py"))
    assert len(sources) >= 4
    offenders = [f"{path.name} {problem}" for path in sources
                 for problem in _impurities(path.read_text())]
    assert not offenders, offenders


def test_the_purity_check_catches_an_offender() -> None:
    source = ("import socket\nfrom datetime import datetime\nfrom trustauthority.store import x\n"
              "datetime.now()\nopen('f')\n")
    assert _impurities(source) == ["imports socket", "imports trustauthority.store",
                                   "calls now()", "calls open()"]

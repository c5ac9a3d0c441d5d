"""Keys around attestation tokens: the service's ES256 signing key, public JWKs and their RFC 7638
thumbprints (the binding key's goes into ``cnf.jkt``), and the JWKS that tokens are verified with.

Accepted public keys, for verification and for binding alike: EC P-256 and P-384, and RSA of 2048
bits or more. Rotation: the JWKS carries the current key and the previous ones, and a previous key
stays published until the last token it signed has expired (token lifetime plus leeway).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, RSAKey

from trustauthority.errors import TokenKeyUnknown, TokenMalformed
from trustauthority.token._codec import b64url_decode, json_object, shown

#: a public key we accept: EC P-256/P-384 or RSA >= 2048 bits (TPM binding keys are one of these)
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

#: JWS algorithms this package can verify (RFC 7518 §3.1). "none" and the HMAC algorithms are not
#: among them and cannot be allowed by any caller: with a JWKS of public keys, accepting HS256
#: would let anyone holding the public key forge tokens (the classic algorithm-confusion attack).
SUPPORTED_ALGORITHMS = frozenset({"ES256", "ES384", "RS256", "PS256"})
#: the algorithm `issue` signs with; `verify` allows only this one unless told otherwise
SIGNING_ALGORITHM = "ES256"

MIN_RSA_BITS = 2048
#: bounds the work one hostile JWKS key can cause per verification
MAX_RSA_BITS = 16384
#: an untrusted JWKS document larger than this, or with more keys, is refused unparsed
MAX_JWKS_SIZE = 64 * 1024
MAX_JWKS_KEYS = 64
MAX_KID_LENGTH = 256

# cryptography's curve name -> JWK "crv", the one JWS alg for it, coordinate size in bytes
# (RFC 7518 §6.2.1.1, §3.4: ES256 is P-256 only, ES384 P-384 only)
_CURVES = {"secp256r1": ("P-256", "ES256", 32), "secp384r1": ("P-384", "ES384", 48)}
_CURVE_BY_CRV = {crv: (ec.SECP256R1() if crv == "P-256" else ec.SECP384R1(), alg, size)
                 for crv, alg, size in _CURVES.values()}
_RSA_ALGORITHMS = frozenset({"RS256", "PS256"})
# members that exist only in private JWKs (RFC 7518 §6.2.2, §6.3.2, §6.4.1)
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def key_description(public_key: object) -> str:
    """'EC P-256', 'RSA-2048', ...; ValueError for any key this package does not accept."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = _CURVES.get(public_key.curve.name)
        if curve is None:
            raise ValueError(f"EC curve {public_key.curve.name} is not accepted (P-256, P-384)")
        return f"EC {curve[0]}"
    if isinstance(public_key, rsa.RSAPublicKey):
        if not MIN_RSA_BITS <= public_key.key_size <= MAX_RSA_BITS:
            raise ValueError(f"RSA-{public_key.key_size} is not accepted "
                             f"({MIN_RSA_BITS} to {MAX_RSA_BITS} bits)")
        return f"RSA-{public_key.key_size}"
    raise ValueError(f"{type(public_key).__name__} is not an EC or RSA public key")


def algorithms_for(public_key: PublicKey) -> frozenset[str]:
    """The JWS algorithms that can verify with this key (ES256 with P-256 only, and so on)."""
    key_description(public_key)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return frozenset({_CURVES[public_key.curve.name][1]})
    return _RSA_ALGORITHMS


def joserfc_key(public_key: PublicKey) -> ECKey | RSAKey:
    """The key as the JOSE library's type (for signatures and thumbprints)."""
    key_description(public_key)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ECKey.import_key(public_key)
    return RSAKey.import_key(public_key)


def jwk_of(public_key: PublicKey) -> dict[str, str]:
    """The public JWK with only its required members (RFC 7518 §6.2.1 EC, §6.3.1 RSA).

    Coordinates are full-size and integers unpadded, as RFC 7518 requires, so this is also the
    exact input of the RFC 7638 thumbprint.
    """
    exported = joserfc_key(public_key).as_dict()
    members = ("crv", "x", "y") if isinstance(public_key, ec.EllipticCurvePublicKey) else ("n", "e")
    jwk = {"kty": str(exported["kty"])}
    jwk.update({name: str(exported[name]) for name in members})
    return jwk


def jwk_thumbprint(public_key: PublicKey) -> str:
    """RFC 7638 JWK thumbprint: base64url(SHA-256(required members, sorted, no whitespace))."""
    return joserfc_key(public_key).thumbprint()


def _check_kid(kid: str) -> None:
    if not 0 < len(kid) <= MAX_KID_LENGTH or not kid.isprintable():
        raise ValueError(f"kid must be 1 to {MAX_KID_LENGTH} printable characters")


@dataclass(frozen=True, eq=False)
class SigningKey:
    """The service's token signing key: an EC P-256 private key (ES256) and its kid."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        _check_kid(self.kid)
        if self.private_key.curve.name != "secp256r1":
            raise ValueError(f"{SIGNING_ALGORITHM} needs a P-256 key, not "
                             f"{self.private_key.curve.name}")

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        """A new P-256 key; its kid defaults to its RFC 7638 thumbprint (RFC 7638 §1)."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        return cls(kid if kid is not None else jwk_thumbprint(private_key.public_key()),
                   private_key)

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def verification_key(self) -> VerificationKey:
        """What goes into the JWKS for this key."""
        return VerificationKey(self.kid, self.public_key, SIGNING_ALGORITHM)


@dataclass(frozen=True)
class VerificationKey:
    """One signature key of a JWKS: kid, public key, and the JWS algorithm it is limited to.

    ``alg`` defaults to the only algorithm an EC key fits; an RSA key without ``alg`` may verify
    RS256 and PS256 (still only where the verifier allows them).
    """

    kid: str
    public_key: PublicKey
    alg: str | None = None

    def __post_init__(self) -> None:
        _check_kid(self.kid)
        fitting = algorithms_for(self.public_key)
        if self.alg is None and len(fitting) == 1:
            object.__setattr__(self, "alg", next(iter(fitting)))
        if self.alg is not None and self.alg not in fitting:
            raise ValueError(f"alg {self.alg} does not fit a {self.description} key")

    @property
    def description(self) -> str:
        return key_description(self.public_key)

    @property
    def algorithms(self) -> frozenset[str]:
        """The JWS algorithms this key may verify."""
        return frozenset({self.alg}) if self.alg is not None else algorithms_for(self.public_key)

    def to_jwk(self) -> dict[str, str]:
        jwk = jwk_of(self.public_key)
        jwk.update(kid=self.kid, use="sig")
        if self.alg is not None:
            jwk["alg"] = self.alg
        return jwk


@dataclass(frozen=True)
class Jwks:
    """A JSON Web Key Set (RFC 7517 §5) of signature keys, unique by kid.

    Build it with `Jwks.of(current, *previous)`; read an untrusted document with `Jwks.parse`.
    """

    keys: tuple[VerificationKey, ...]

    def __post_init__(self) -> None:
        kids = [key.kid for key in self.keys]
        if len(set(kids)) != len(kids):
            raise ValueError("kids in a JWKS must be unique")

    @classmethod
    def of(cls, *keys: SigningKey | VerificationKey) -> Jwks:
        return cls(tuple(key.verification_key() if isinstance(key, SigningKey) else key
                         for key in keys))

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(key.kid for key in self.keys)

    def find(self, kid: str) -> VerificationKey:
        """The key named `kid`; `TokenKeyUnknown` when there is none (rotated out, or not ours)."""
        for key in self.keys:
            if key.kid == kid:
                return key
        raise TokenKeyUnknown(f"kid {shown(kid)} is not in the JWKS")

    def to_dict(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS document, as served to hosts and relying parties."""
        return {"keys": [key.to_jwk() for key in self.keys]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def parse(cls, raw_jwks: str | bytes | Mapping[str, object]) -> Jwks:
        """Read an untrusted JWKS document; `TokenMalformed` for anything we would not trust.

        Keys whose ``use`` is not ``sig``, or whose ``key_ops`` lack ``verify``, are not
        signature keys and are left out (RFC 7517 §4.2, §4.3). Every signature key must be EC
        P-256/P-384 or RSA >= 2048 with a unique ``kid``, public members only, in the exact
        encoding RFC 7518 §6 prescribes; its ``alg``, if present, must fit it and then limits
        it. Unlike RFC 7517 §5's advice to skip key types not understood, any other key type
        refuses the whole document: this JWKS is ours, and anything else in it means the wrong
        document was fetched (fail closed).
        """
        if isinstance(raw_jwks, Mapping):
            document: Mapping[str, object] = raw_jwks
        else:
            raw = raw_jwks.encode("utf-8") if isinstance(raw_jwks, str) else raw_jwks
            if len(raw) > MAX_JWKS_SIZE:
                raise TokenMalformed(f"JWKS is larger than {MAX_JWKS_SIZE} bytes")
            document = json_object(raw, "JWKS")
        raw_keys = document.get("keys")
        if not isinstance(raw_keys, list):
            raise TokenMalformed("JWKS has no 'keys' array")
        if len(raw_keys) > MAX_JWKS_KEYS:
            raise TokenMalformed(f"JWKS has more than {MAX_JWKS_KEYS} keys")
        keys: list[VerificationKey] = []
        for index, raw_key in enumerate(raw_keys):
            if not isinstance(raw_key, Mapping):
                raise TokenMalformed(f"JWKS key #{index} is not a JSON object")
            key = _parse_jwk(raw_key, f"JWKS key #{index}")
            if key is not None:
                keys.append(key)
        if not keys:
            raise TokenMalformed("JWKS has no signature keys")
        kids = [key.kid for key in keys]
        duplicates = sorted({kid for kid in kids if kids.count(kid) > 1})
        if duplicates:
            raise TokenMalformed(f"JWKS has several keys with kid {shown(duplicates[0])}")
        return cls(tuple(keys))


def _optional_text(raw_key: Mapping[str, object], name: str, where: str) -> str | None:
    value = raw_key.get(name)
    if value is not None and not isinstance(value, str):
        raise TokenMalformed(f"{where}: {name} is not a string")
    return value


def _is_signature_key(raw_key: Mapping[str, object], where: str) -> bool:
    use = _optional_text(raw_key, "use", where)
    key_ops = raw_key.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list)
                                or not all(isinstance(op, str) for op in key_ops)):
        raise TokenMalformed(f"{where}: key_ops is not an array of strings")
    if use is not None and key_ops is not None:
        # RFC 7517 §4.3: both SHOULD NOT be used together; a mixed message is not a key we trust
        raise TokenMalformed(f"{where}: has both use and key_ops")
    return (use is None or use == "sig") and (key_ops is None or "verify" in key_ops)


def _unsigned(raw_key: Mapping[str, object], name: str, where: str) -> bytes:
    value = raw_key.get(name)
    if not isinstance(value, str):
        raise TokenMalformed(f"{where}: {name} is missing or not a string")
    return b64url_decode(value, f"{where}: {name}")


def _parse_jwk(raw_key: Mapping[str, object], where: str) -> VerificationKey | None:
    kty = raw_key.get("kty")
    if not isinstance(kty, str):
        raise TokenMalformed(f"{where}: kty is missing or not a string")
    if not _is_signature_key(raw_key, where):
        return None
    private = [name for name in _PRIVATE_MEMBERS if name in raw_key]
    if private:
        raise TokenMalformed(f"{where}: carries private key material ({', '.join(private)})")
    kid = raw_key.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH or not kid.isprintable():
        raise TokenMalformed(f"{where}: kid is missing or not 1 to {MAX_KID_LENGTH} "
                             "printable characters")
    where = f"JWKS key {shown(kid)}"
    alg = _optional_text(raw_key, "alg", where)
    public_key: PublicKey
    if kty == "EC":
        public_key = _ec_public_key(raw_key, where)
    elif kty == "RSA":
        public_key = _rsa_public_key(raw_key, where)
    else:
        raise TokenMalformed(f"{where}: kty {shown(kty)} is not accepted (EC or RSA only)")
    try:
        return VerificationKey(kid, public_key, alg)
    except ValueError as error:  # alg that does not fit the key
        raise TokenMalformed(f"{where}: {error}") from None


def _ec_public_key(raw_key: Mapping[str, object], where: str) -> ec.EllipticCurvePublicKey:
    crv = raw_key.get("crv")
    if not isinstance(crv, str) or crv not in _CURVE_BY_CRV:
        raise TokenMalformed(f"{where}: crv {shown(crv)} is not accepted (P-256, P-384)")
    curve, _, size = _CURVE_BY_CRV[crv]
    x, y = _unsigned(raw_key, "x", where), _unsigned(raw_key, "y", where)
    if len(x) != size or len(y) != size:
        # RFC 7518 §6.2.1.2/3: coordinates MUST be the full size of the curve
        raise TokenMalformed(f"{where}: x and y must be {size} bytes each for {crv}")
    numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                            curve)
    try:
        return numbers.public_key()
    except ValueError:
        raise TokenMalformed(f"{where}: the point is not on {crv}") from None


def _rsa_public_key(raw_key: Mapping[str, object], where: str) -> rsa.RSAPublicKey:
    n, e = _unsigned(raw_key, "n", where), _unsigned(raw_key, "e", where)
    if not n or not e or n[0] == 0 or e[0] == 0:
        # RFC 7518 §6.3.1.1/2: minimal big-endian octets, no leading zero
        raise TokenMalformed(f"{where}: n and e must be non-empty, without leading zero octets")
    if len(e) > 4:
        # real exponents are 3 or 65537; a huge one only makes verification slow
        raise TokenMalformed(f"{where}: e is larger than 32 bits")
    bits = len(n) * 8 - (8 - n[0].bit_length())
    if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise TokenMalformed(f"{where}: RSA-{bits} is not accepted "
                             f"({MIN_RSA_BITS} to {MAX_RSA_BITS} bits)")
    try:
        return rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
    except ValueError as error:
        raise TokenMalformed(f"{where}: not a valid RSA public key ({error})") from None

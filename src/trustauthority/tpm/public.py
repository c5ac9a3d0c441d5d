"""TPM2B_PUBLIC / TPMT_PUBLIC (TPM 2.0 Part 2 §12.2): parse, Name, qualified name, public key.

Hand-written because tpm2-pytss needs the native TSS library; the verifier must run anywhere
and must treat the bytes as untrusted (bounded, typed errors, no C parser on attacker input).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from trustauthority.errors import TpmFormatError
from trustauthority.tpm.constants import (
    Alg,
    EccCurve,
    ObjectAttributes,
    alg_name,
    digest,
    hash_supported,
)
from trustauthority.tpm.reader import Reader, tpm2b, u16, u32

#: the public keys a TPM object can have here
TpmKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_CURVES: dict[int, ec.EllipticCurve] = {
    EccCurve.NIST_P256: ec.SECP256R1(),
    EccCurve.NIST_P384: ec.SECP384R1(),
    EccCurve.NIST_P521: ec.SECP521R1(),
}
#: coordinate size in bytes per curve, for padding ECC points (Part 1 §C.8)
CURVE_BYTES: dict[int, int] = {
    EccCurve.NIST_P256: 32,
    EccCurve.NIST_P384: 48,
    EccCurve.NIST_P521: 66,
}
_CURVE_IDS: dict[str, int] = {
    "secp256r1": EccCurve.NIST_P256,
    "secp384r1": EccCurve.NIST_P384,
    "secp521r1": EccCurve.NIST_P521,
}
#: schemes whose details are just a hash algorithm (Part 2 §11.2.3.2, TPMS_SCHEME_HASH)
_HASH_SCHEMES = frozenset(
    {Alg.RSASSA, Alg.RSAPSS, Alg.OAEP, Alg.ECDSA, Alg.ECDH, Alg.SM2, Alg.ECSCHNORR, Alg.ECMQV,
     Alg.HMAC}
)


@dataclass(frozen=True)
class SymDef:
    """TPMT_SYM_DEF_OBJECT: the symmetric algorithm of a storage key (e.g. an EK)."""

    algorithm: int
    key_bits: int = 0
    mode: int = Alg.NULL


@dataclass(frozen=True)
class Scheme:
    """TPMT_*_SCHEME: a signing/encryption/KDF scheme and its hash (NULL when unset)."""

    scheme: int
    hash_alg: int = Alg.NULL
    count: int = 0  # ECDAA only


@dataclass(frozen=True)
class RsaParms:
    symmetric: SymDef
    scheme: Scheme
    key_bits: int
    exponent: int  # 0 means the default 65537 (Part 2 §12.2.3.5)
    modulus: bytes


@dataclass(frozen=True)
class EccParms:
    symmetric: SymDef
    scheme: Scheme
    curve: int
    kdf: Scheme
    x: bytes
    y: bytes


@dataclass(frozen=True)
class OtherParms:
    """KEYEDHASH or SYMCIPHER objects: kept for Names, never used as signing keys here."""

    raw_parameters: bytes
    unique: bytes


@dataclass(frozen=True)
class TpmPublic:
    """A parsed TPMT_PUBLIC; `raw` is the exact marshalled TPMT_PUBLIC that the Name hashes."""

    type: int
    name_alg: int
    attributes: ObjectAttributes
    auth_policy: bytes
    parms: RsaParms | EccParms | OtherParms
    raw: bytes

    @cached_property
    def name(self) -> bytes:
        """Name = nameAlg || H_nameAlg(TPMT_PUBLIC) (Part 1 §16)."""
        if not hash_supported(self.name_alg):
            raise TpmFormatError(f"TPMT_PUBLIC: unsupported nameAlg {alg_name(self.name_alg)}")
        return u16(self.name_alg) + digest(self.name_alg, self.raw)

    def qualified_name(self, parent_qualified_name: bytes) -> bytes:
        """QN(A) = nameAlg || H_nameAlg(QN(parent) || Name(A)) (Part 1 §16).

        For a primary key the parent's qualified name is its hierarchy handle, e.g.
        ``hierarchy_qualified_name(TPM_RH_ENDORSEMENT)`` for an EK.
        """
        return u16(self.name_alg) + digest(self.name_alg, parent_qualified_name + self.name)

    @property
    def tpm2b(self) -> bytes:
        """The marshalled TPM2B_PUBLIC."""
        return tpm2b(self.raw)

    @cached_property
    def scheme(self) -> Scheme:
        if isinstance(self.parms, RsaParms | EccParms):
            return self.parms.scheme
        return Scheme(Alg.NULL)

    def has(self, flag: ObjectAttributes) -> bool:
        return bool(self.attributes & flag)

    @cached_property
    def public_key(self) -> TpmKey:
        """The `cryptography` public key of an RSA or ECC object."""
        parms = self.parms
        if isinstance(parms, RsaParms):
            if not parms.modulus:
                raise TpmFormatError("TPMT_PUBLIC: RSA key has an empty modulus")
            exponent = parms.exponent or 65537
            try:
                modulus = int.from_bytes(parms.modulus, "big")
                return rsa.RSAPublicNumbers(exponent, modulus).public_key()
            except ValueError as exc:
                raise TpmFormatError(f"TPMT_PUBLIC: invalid RSA key: {exc}") from None
        if isinstance(parms, EccParms):
            curve = _CURVES.get(parms.curve)
            if curve is None:
                raise TpmFormatError(f"TPMT_PUBLIC: unsupported ECC curve 0x{parms.curve:04x}")
            try:
                return ec.EllipticCurvePublicNumbers(
                    int.from_bytes(parms.x, "big"), int.from_bytes(parms.y, "big"), curve
                ).public_key()
            except ValueError as exc:
                raise TpmFormatError(f"TPMT_PUBLIC: ECC point is not on the curve: {exc}") from None
        raise TpmFormatError(f"TPMT_PUBLIC: {alg_name(self.type)} object has no public key")


def hierarchy_qualified_name(handle: int) -> bytes:
    """The qualified name of a hierarchy is its handle (Part 1 §16)."""
    return u32(handle)


def _sym_def(reader: Reader) -> SymDef:
    algorithm = reader.u16("symmetric.algorithm")
    if algorithm == Alg.NULL:
        return SymDef(Alg.NULL)
    if algorithm == Alg.XOR:
        return SymDef(algorithm, reader.u16("symmetric.hashAlg"))
    key_bits = reader.u16("symmetric.keyBits")
    # TPMI_AES_KEY_BITS (Part 2 §11.1.2): a TPM refuses other sizes, so do we
    if algorithm == Alg.AES and key_bits not in (128, 192, 256):
        raise reader.error(f"AES keyBits {key_bits} is not 128, 192 or 256", reader.pos - 2)
    return SymDef(algorithm, key_bits, reader.u16("symmetric.mode"))


def _scheme(reader: Reader, field: str) -> Scheme:
    scheme = reader.u16(f"{field}.scheme")
    if scheme == Alg.NULL or scheme == Alg.RSAES:  # RSAES carries TPMS_EMPTY
        return Scheme(scheme)
    if scheme in _HASH_SCHEMES or scheme in (Alg.KDF1_SP800_56A, Alg.KDF2, Alg.KDF1_SP800_108,
                                             Alg.MGF1):
        return Scheme(scheme, reader.u16(f"{field}.hashAlg"))
    if scheme == Alg.ECDAA:
        return Scheme(scheme, reader.u16(f"{field}.hashAlg"), reader.u16(f"{field}.count"))
    if scheme == Alg.XOR:
        hash_alg = reader.u16(f"{field}.hashAlg")
        reader.u16(f"{field}.kdf")
        return Scheme(scheme, hash_alg)
    raise reader.error(f"unknown {field} {alg_name(scheme)}", reader.pos - 2)


def parse_tpmt_public(data: bytes) -> TpmPublic:
    """Parse a marshalled TPMT_PUBLIC that must fill `data` exactly."""
    reader = Reader(data, "TPMT_PUBLIC")
    result = _read_tpmt_public(reader)
    reader.expect_end()
    return result


def parse_tpm2b_public(data: bytes) -> TpmPublic:
    """Parse a marshalled TPM2B_PUBLIC (UINT16 size, then TPMT_PUBLIC)."""
    reader = Reader(data, "TPM2B_PUBLIC")
    size = reader.u16("size")
    if size != reader.remaining:
        raise reader.error(f"size field says {size} bytes but {reader.remaining} follow", 0)
    return parse_tpmt_public(data[2:])


def parse_public(data: bytes) -> TpmPublic:
    """Parse either a TPM2B_PUBLIC or a bare TPMT_PUBLIC, telling them apart by the size prefix."""
    if len(data) >= 2 and int.from_bytes(data[:2], "big") == len(data) - 2:
        return parse_tpm2b_public(data)
    return parse_tpmt_public(data)


def _read_tpmt_public(reader: Reader) -> TpmPublic:
    start = reader.pos
    obj_type = reader.u16("type")
    name_alg = reader.u16("nameAlg")
    attributes = ObjectAttributes(reader.u32("objectAttributes"))
    auth_policy = reader.tpm2b("authPolicy", 64)
    parms: RsaParms | EccParms | OtherParms
    if obj_type == Alg.RSA:
        symmetric = _sym_def(reader)
        scheme = _scheme(reader, "scheme")
        key_bits = reader.u16("keyBits")
        exponent = reader.u32("exponent")
        modulus = reader.tpm2b("unique.rsa", 512)
        parms = RsaParms(symmetric, scheme, key_bits, exponent, modulus)
    elif obj_type == Alg.ECC:
        symmetric = _sym_def(reader)
        scheme = _scheme(reader, "scheme")
        curve = reader.u16("curveID")
        kdf = _scheme(reader, "kdf")
        x = reader.tpm2b("unique.ecc.x", 128)
        y = reader.tpm2b("unique.ecc.y", 128)
        parms = EccParms(symmetric, scheme, curve, kdf, x, y)
    elif obj_type in (Alg.KEYEDHASH, Alg.SYMCIPHER):
        parm_start = reader.pos
        if obj_type == Alg.KEYEDHASH:
            _scheme(reader, "scheme")
        else:
            _sym_def(reader)
        parms = OtherParms(reader.since(parm_start), reader.tpm2b("unique", 64))
    else:
        raise reader.error(f"unsupported object type {alg_name(obj_type)}", start)
    raw = reader.since(start)  # exactly the bytes the Name covers
    return TpmPublic(obj_type, name_alg, attributes, auth_policy, parms, raw)


def public_from_key(key: object) -> TpmPublic:
    """A minimal TPMT_PUBLIC for a PEM-supplied key: enough to verify signatures.

    Its Name is not the TPM object's Name (attributes are unknown), so callers that need the
    qualified signer must be given the real TPM2B_PUBLIC.
    """
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        if numbers.e >= 1 << 32:  # TPMS_RSA_PARMS.exponent is a UINT32 (Part 2 §12.2.3.5)
            raise TpmFormatError(f"RSA exponent {numbers.e} does not fit a TPM key (32 bits)")
        modulus = numbers.n.to_bytes((key.key_size + 7) // 8, "big")
        body = (u16(Alg.RSA) + u16(Alg.SHA256) + u32(0) + tpm2b(b"") + u16(Alg.NULL)
                + u16(Alg.NULL) + u16(key.key_size) + u32(0 if numbers.e == 65537 else numbers.e)
                + tpm2b(modulus))
        return parse_tpmt_public(body)
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVE_IDS.get(key.curve.name)
        if curve is None:
            raise TpmFormatError(f"unsupported ECC curve {key.curve.name}")
        size = CURVE_BYTES[curve]
        point = key.public_numbers()
        body = (u16(Alg.ECC) + u16(Alg.SHA256) + u32(0) + tpm2b(b"") + u16(Alg.NULL)
                + u16(Alg.NULL) + u16(curve) + u16(Alg.NULL)
                + tpm2b(point.x.to_bytes(size, "big")) + tpm2b(point.y.to_bytes(size, "big")))
        return parse_tpmt_public(body)
    raise TpmFormatError(f"unsupported public key type {type(key).__name__}")

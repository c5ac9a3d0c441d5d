"""TPM 2.0 constants used by the wire formats (TPM 2.0 Part 2, §6 and §8)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from enum import IntEnum, IntFlag

from cryptography.hazmat.primitives import hashes

#: TPM_GENERATED_VALUE (Part 2 §6.2): the TPM puts it first in every structure it signs, so a
#: caller cannot make the TPM sign bytes that look like an attestation.
TPM_GENERATED_VALUE = 0xFF544347

#: TPM_RH_ENDORSEMENT (Part 2 §7.4): parent of the EK; its qualified name is the handle itself.
TPM_RH_ENDORSEMENT = 0x4000000B
TPM_RH_OWNER = 0x40000001


class Alg(IntEnum):
    """TPM_ALG_ID (Part 2 §6.3)."""

    RSA = 0x0001
    TDES = 0x0003
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    MGF1 = 0x0007
    KEYEDHASH = 0x0008
    XOR = 0x000A
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    SM3_256 = 0x0012
    SM4 = 0x0013
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    SM2 = 0x001B
    ECSCHNORR = 0x001C
    ECMQV = 0x001D
    KDF1_SP800_56A = 0x0020
    KDF2 = 0x0021
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CAMELLIA = 0x0026
    SHA3_256 = 0x0027
    SHA3_384 = 0x0028
    SHA3_512 = 0x0029
    CTR = 0x0040
    OFB = 0x0041
    CBC = 0x0042
    CFB = 0x0043
    ECB = 0x0044


class St(IntEnum):
    """TPM_ST structure tags for attestations (Part 2 §6.9)."""

    ATTEST_NV = 0x8014
    ATTEST_COMMAND_AUDIT = 0x8015
    ATTEST_SESSION_AUDIT = 0x8016
    ATTEST_CERTIFY = 0x8017
    ATTEST_QUOTE = 0x8018
    ATTEST_TIME = 0x8019
    ATTEST_CREATION = 0x801A
    ATTEST_NV_DIGEST = 0x801C


class EccCurve(IntEnum):
    """TPM_ECC_CURVE (Part 2 §6.4)."""

    NIST_P192 = 0x0001
    NIST_P224 = 0x0002
    NIST_P256 = 0x0003
    NIST_P384 = 0x0004
    NIST_P521 = 0x0005
    BN_P256 = 0x0010
    BN_P638 = 0x0011
    SM2_P256 = 0x0020


class ObjectAttributes(IntFlag):
    """TPMA_OBJECT (Part 2 §8.3)."""

    FIXED_TPM = 1 << 1
    ST_CLEAR = 1 << 2
    FIXED_PARENT = 1 << 4
    SENSITIVE_DATA_ORIGIN = 1 << 5
    USER_WITH_AUTH = 1 << 6
    ADMIN_WITH_POLICY = 1 << 7
    NO_DA = 1 << 10
    ENCRYPTED_DUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN_ENCRYPT = 1 << 18
    X509_SIGN = 1 << 19


#: hash algorithms by TPM id, with the bank names used across the product (event logs too)
HASH_NAMES: dict[int, str] = {
    Alg.SHA1: "sha1",
    Alg.SHA256: "sha256",
    Alg.SHA384: "sha384",
    Alg.SHA512: "sha512",
    Alg.SM3_256: "sm3_256",
    Alg.SHA3_256: "sha3_256",
    Alg.SHA3_384: "sha3_384",
    Alg.SHA3_512: "sha3_512",
}
HASH_IDS: dict[str, int] = {name: alg for alg, name in HASH_NAMES.items()}
DIGEST_SIZES: dict[int, int] = {
    Alg.SHA1: 20,
    Alg.SHA256: 32,
    Alg.SHA384: 48,
    Alg.SHA512: 64,
    Alg.SM3_256: 32,
    Alg.SHA3_256: 32,
    Alg.SHA3_384: 48,
    Alg.SHA3_512: 64,
}
#: hashlib constructors of the hashes we compute (PCR banks we can replay, signature hashes)
HASHLIB: dict[int, Callable[[bytes], hashlib._Hash]] = {
    Alg.SHA1: hashlib.sha1,
    Alg.SHA256: hashlib.sha256,
    Alg.SHA384: hashlib.sha384,
    Alg.SHA512: hashlib.sha512,
}
#: the same hashes as `cryptography` objects, for signatures, OAEP and HMAC-based KDFs
CRYPTOGRAPHY_HASHES: dict[int, hashes.HashAlgorithm] = {
    Alg.SHA1: hashes.SHA1(),  # noqa: S303 - SHA-1 is refused unless a caller allows it
    Alg.SHA256: hashes.SHA256(),
    Alg.SHA384: hashes.SHA384(),
    Alg.SHA512: hashes.SHA512(),
}


def alg_name(alg: int) -> str:
    """A readable name for any algorithm id, including ones we do not know."""
    try:
        return Alg(alg).name
    except ValueError:
        return f"0x{alg:04x}"


def hash_supported(alg: int) -> bool:
    return alg in HASHLIB


def digest(alg: int, data: bytes) -> bytes:
    """Hash `data` with the TPM hash algorithm `alg` (SHA-1/SHA-2 family)."""
    try:
        factory = HASHLIB[alg]
    except KeyError:
        raise ValueError(f"unsupported hash algorithm {alg_name(alg)}") from None
    result: bytes = factory(data).digest()
    return result


def hashlib_name(alg: int) -> str:
    """Name for hashlib.new / hmac (e.g. 'sha256')."""
    name = HASH_NAMES.get(alg)
    if name is None or alg not in HASHLIB:
        raise ValueError(f"unsupported hash algorithm {alg_name(alg)}")
    return name

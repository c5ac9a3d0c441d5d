"""MakeCredential on the verifier side (TPM 2.0 Part 1 §24, Part 3 §12.6), KDFa and KDFe.

The verifier wraps a secret so that only the TPM holding the EK *and* a loaded object with
the given Name (the AK) can recover it with TPM2_ActivateCredential. Written here (not through
tpm2-pytss) so the service needs no TSS library and no TPM.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from trustauthority.errors import TpmFormatError
from trustauthority.tpm.constants import (
    CRYPTOGRAPHY_HASHES,
    DIGEST_SIZES,
    Alg,
    alg_name,
    hashlib_name,
)
from trustauthority.tpm.public import CURVE_BYTES, EccParms, RsaParms, TpmPublic
from trustauthority.tpm.reader import tpm2b, u32

_IDENTITY = b"IDENTITY\x00"
_STORAGE = b"STORAGE\x00"
_INTEGRITY = b"INTEGRITY\x00"


def kdfa(hash_alg: int, key: bytes, label: bytes, context_u: bytes, context_v: bytes,
         bits: int) -> bytes:
    """KDFa: SP 800-108 counter-mode KDF with HMAC (Part 1 §11.4.10.2).

    `label` must already carry its terminating NUL (the TPM hashes it).
    """
    name = hashlib_name(hash_alg)
    out = bytearray()
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        out += hmac.new(key, u32(counter) + label + context_u + context_v + u32(bits),
                        name).digest()
    return _truncate(bytes(out), bits)


def kdfe(hash_alg: int, z: bytes, label: bytes, party_u: bytes, party_v: bytes,
         bits: int) -> bytes:
    """KDFe: SP 800-56A concatenation KDF (Part 1 §11.4.10.3)."""
    name = hashlib_name(hash_alg)
    out = bytearray()
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        out += hashlib.new(name, u32(counter) + z + label + party_u + party_v).digest()
    return _truncate(bytes(out), bits)


def _truncate(data: bytes, bits: int) -> bytes:
    size = (bits + 7) // 8
    result = data[:size]
    if bits % 8:
        # Part 1 §11.4.10.2: unused leading bits of the first octet are zeroed
        result = bytes([result[0] & ((1 << (bits % 8)) - 1)]) + result[1:]
    return result


@dataclass(frozen=True)
class Credential:
    """What TPM2_ActivateCredential takes: both fields marshalled with their size prefixes."""

    credential_blob: bytes  # TPM2B_ID_OBJECT
    encrypted_secret: bytes  # TPM2B_ENCRYPTED_SECRET


def make_credential(ek: TpmPublic, object_name: bytes, secret: bytes) -> Credential:
    """Wrap `secret` (≤ the EK nameAlg digest size) for the TPM with `ek` and object `object_name`.

    Steps (Part 1 §24.4 – §24.5):
    1. a seed: RSA-OAEP-encrypted to the EK (label "IDENTITY"), or for an ECC EK derived with
       KDFe from an ephemeral ECDH exchange on the EK's curve;
    2. symKey = KDFa(nameAlg, seed, "STORAGE", Name(object), "", EK's symmetric key bits);
    3. encIdentity = CFB(symKey, IV = 0, TPM2B_DIGEST(secret));
    4. HMACkey = KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits);
       outerHMAC = HMAC(HMACkey, encIdentity || Name(object));
    5. credentialBlob = TPM2B(TPM2B(outerHMAC) || encIdentity).
    """
    name_alg = ek.name_alg
    if name_alg not in CRYPTOGRAPHY_HASHES:
        raise TpmFormatError(f"EK nameAlg {alg_name(name_alg)} is not supported")
    digest_size = DIGEST_SIZES[name_alg]
    if not 0 < len(secret) <= digest_size:
        raise ValueError(f"credential must be 1..{digest_size} bytes")
    parms = ek.parms
    if not isinstance(parms, RsaParms | EccParms):
        raise TpmFormatError("EK must be an RSA or ECC storage key")
    sym = parms.symmetric
    if sym.algorithm != Alg.AES or sym.mode != Alg.CFB:
        raise TpmFormatError(
            f"EK symmetric {alg_name(sym.algorithm)}/{alg_name(sym.mode)} is not AES-CFB")

    # 1. the seed and its encryption to the EK
    seed: bytes
    if isinstance(parms, RsaParms):
        seed = os.urandom(digest_size)
        public_key = ek.public_key
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise TpmFormatError("EK parameters say RSA but the key is not")
        hash_algorithm = CRYPTOGRAPHY_HASHES[name_alg]
        encrypted = public_key.encrypt(
            seed, padding.OAEP(mgf=padding.MGF1(hash_algorithm), algorithm=hash_algorithm,
                               label=_IDENTITY))
        encrypted_secret = tpm2b(encrypted)
    else:
        public_key = ek.public_key
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise TpmFormatError("EK parameters say ECC but the key is not")
        size = CURVE_BYTES[parms.curve]
        ephemeral = ec.generate_private_key(public_key.curve)
        z = ephemeral.exchange(ec.ECDH(), public_key)  # x-coordinate, padded to the curve size
        point = ephemeral.public_key().public_numbers()
        ephemeral_x = point.x.to_bytes(size, "big")
        ephemeral_y = point.y.to_bytes(size, "big")
        seed = kdfe(name_alg, z, _IDENTITY, ephemeral_x, parms.x, digest_size * 8)
        encrypted_secret = tpm2b(tpm2b(ephemeral_x) + tpm2b(ephemeral_y))

    # 2.-3. encrypt the credential
    sym_key = kdfa(name_alg, seed, _STORAGE, object_name, b"", sym.key_bits)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(tpm2b(secret)) + encryptor.finalize()

    # 4.-5. integrity
    hmac_key = kdfa(name_alg, seed, _INTEGRITY, b"", b"", digest_size * 8)
    outer_hmac = hmac.new(hmac_key, enc_identity + object_name, hashlib_name(name_alg)).digest()
    credential_blob = tpm2b(tpm2b(outer_hmac) + enc_identity)
    return Credential(credential_blob, encrypted_secret)

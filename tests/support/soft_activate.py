"""TPM2_ActivateCredential done in software with the EK's private key (Part 1 §24), so unit
tests can check MakeCredential without a TPM; integration tests use the real one."""

from __future__ import annotations

import hmac

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from trustauthority.tpm import Credential, TpmPublic, kdfa, kdfe
from trustauthority.tpm.constants import CRYPTOGRAPHY_HASHES, DIGEST_SIZES, hashlib_name
from trustauthority.tpm.public import CURVE_BYTES, EccParms
from trustauthority.tpm.reader import Reader


def soft_activate(ek_private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, ek: TpmPublic,
                  object_name: bytes, credential: Credential) -> bytes:
    name_alg = ek.name_alg
    size = DIGEST_SIZES[name_alg]
    secret_reader = Reader(credential.encrypted_secret, "secret")
    encrypted = secret_reader.tpm2b("secret", 1024)
    if isinstance(ek_private, rsa.RSAPrivateKey):
        hash_algorithm = CRYPTOGRAPHY_HASHES[name_alg]
        seed = ek_private.decrypt(encrypted, padding.OAEP(
            mgf=padding.MGF1(hash_algorithm), algorithm=hash_algorithm, label=b"IDENTITY\x00"))
    else:
        parms = ek.parms
        assert isinstance(parms, EccParms)
        point = Reader(encrypted, "point")
        x, y = point.tpm2b("x"), point.tpm2b("y")
        ephemeral = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"),
                                                  int.from_bytes(y, "big"),
                                                  ek_private.curve).public_key()
        z = ek_private.exchange(ec.ECDH(), ephemeral).rjust(CURVE_BYTES[parms.curve], b"\0")
        seed = kdfe(name_alg, z, b"IDENTITY\x00", x, parms.x, size * 8)
    blob = Reader(credential.credential_blob, "blob")
    inner = Reader(blob.tpm2b("id", 1024), "id")
    outer_hmac = inner.tpm2b("hmac")
    enc_identity = inner.raw(inner.remaining, "enc")
    hmac_key = kdfa(name_alg, seed, b"INTEGRITY\x00", b"", b"", size * 8)
    expected = hmac.new(hmac_key, enc_identity + object_name, hashlib_name(name_alg)).digest()
    if not hmac.compare_digest(expected, outer_hmac):
        raise ValueError("integrity check failed")
    parms_sym = ek.parms.symmetric  # type: ignore[union-attr]
    sym_key = kdfa(name_alg, seed, b"STORAGE\x00", object_name, b"", parms_sym.key_bits)
    decryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).decryptor()
    plain = decryptor.update(enc_identity) + decryptor.finalize()
    return Reader(plain, "plain").tpm2b("credential")

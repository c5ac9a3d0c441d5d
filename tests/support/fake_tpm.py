"""A software stand-in for a TPM's signing side, for unit tests of the pure verifier.

It marshals TPMS_ATTEST / TPMT_SIGNATURE / TPMT_PUBLIC the way Part 2 describes and signs with
`cryptography`; the integration tests prove the same verifier against real swtpm quotes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from trustauthority.tpm import (
    TPM_GENERATED_VALUE,
    TPM_RH_ENDORSEMENT,
    Alg,
    PcrSelection,
    St,
    TpmPublic,
    hierarchy_qualified_name,
    parse_tpmt_public,
    pcr_digest,
)
from trustauthority.tpm.constants import CRYPTOGRAPHY_HASHES, ObjectAttributes, digest
from trustauthority.tpm.reader import tpm2b, u16, u32, u64

AK_ATTRIBUTES = (ObjectAttributes.FIXED_TPM | ObjectAttributes.FIXED_PARENT
                 | ObjectAttributes.SENSITIVE_DATA_ORIGIN | ObjectAttributes.USER_WITH_AUTH
                 | ObjectAttributes.RESTRICTED | ObjectAttributes.SIGN_ENCRYPT)
#: what AgentTpm.create_binding_key asks the TPM for: an unrestricted decryption key
BINDING_ATTRIBUTES = (ObjectAttributes.FIXED_TPM | ObjectAttributes.FIXED_PARENT
                      | ObjectAttributes.SENSITIVE_DATA_ORIGIN | ObjectAttributes.USER_WITH_AUTH
                      | ObjectAttributes.DECRYPT)


def ecc_public_bytes(key: ec.EllipticCurvePublicKey, *, scheme: int = Alg.ECDSA,
                     hash_alg: int = Alg.SHA256,
                     attributes: int = AK_ATTRIBUTES) -> bytes:
    numbers = key.public_numbers()
    scheme_bytes = u16(scheme) + (u16(hash_alg) if scheme != Alg.NULL else b"")
    return (u16(Alg.ECC) + u16(Alg.SHA256) + u32(attributes) + tpm2b(b"") + u16(Alg.NULL)
            + scheme_bytes + u16(0x0003) + u16(Alg.NULL)
            + tpm2b(numbers.x.to_bytes(32, "big")) + tpm2b(numbers.y.to_bytes(32, "big")))


def rsa_public_bytes(key: rsa.RSAPublicKey, *, scheme: int = Alg.RSASSA,
                     hash_alg: int = Alg.SHA256, attributes: int = AK_ATTRIBUTES) -> bytes:
    numbers = key.public_numbers()
    scheme_bytes = u16(scheme) + (u16(hash_alg) if scheme != Alg.NULL else b"")
    return (u16(Alg.RSA) + u16(Alg.SHA256) + u32(attributes) + tpm2b(b"") + u16(Alg.NULL)
            + scheme_bytes + u16(key.key_size) + u32(0)
            + tpm2b(numbers.n.to_bytes(key.key_size // 8, "big")))


def binding_public_bytes(key: rsa.RSAPublicKey, *, attributes: int = BINDING_ATTRIBUTES,
                         scheme: int = Alg.NULL, hash_alg: int = Alg.SHA256,
                         name_alg: int = Alg.SHA256) -> bytes:
    """A TPMT_PUBLIC for an RSA decryption key (wrap it with `tpm2b` for a TPM2B_PUBLIC)."""
    numbers = key.public_numbers()
    scheme_bytes = u16(scheme) + (u16(hash_alg) if scheme not in (Alg.NULL, Alg.RSAES) else b"")
    return (u16(Alg.RSA) + u16(name_alg) + u32(attributes) + tpm2b(b"") + u16(Alg.NULL)
            + scheme_bytes + u16(key.key_size) + u32(0)
            + tpm2b(numbers.n.to_bytes(key.key_size // 8, "big")))


@dataclass
class FakeAk:
    """An AK with its private key, able to produce quotes."""

    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    public: TpmPublic
    scheme: int
    hash_alg: int = Alg.SHA256
    clock: int = 1000
    reset_count: int = 1
    restart_count: int = 0
    ek_name: bytes = field(default=b"\x00\x0b" + bytes(32))

    @classmethod
    def ecc(cls, hash_alg: int = Alg.SHA256) -> FakeAk:
        key = ec.generate_private_key(ec.SECP256R1())
        public = parse_tpmt_public(ecc_public_bytes(key.public_key(), hash_alg=hash_alg))
        return cls(key, public, Alg.ECDSA, hash_alg)

    @classmethod
    def rsa(cls, scheme: int = Alg.RSASSA, hash_alg: int = Alg.SHA256) -> FakeAk:
        key = rsa.generate_private_key(65537, 2048)
        public = parse_tpmt_public(rsa_public_bytes(key.public_key(), scheme=scheme,
                                                    hash_alg=hash_alg))
        return cls(key, public, scheme, hash_alg)

    @property
    def ek_qualified_name(self) -> bytes:
        endorsement = hierarchy_qualified_name(TPM_RH_ENDORSEMENT)
        return u16(Alg.SHA256) + digest(Alg.SHA256, endorsement + self.ek_name)

    @property
    def qualified_name(self) -> bytes:
        return self.public.qualified_name(self.ek_qualified_name)

    def attest_bytes(self, nonce: bytes, selection: PcrSelection,
                     values: Mapping[str, Mapping[int, bytes]], *,
                     magic: int = TPM_GENERATED_VALUE, attest_type: int = St.ATTEST_QUOTE,
                     signer: bytes | None = None) -> bytes:
        quoted = pcr_digest(self.hash_alg, selection, values)
        return (u32(magic) + u16(attest_type) + tpm2b(signer or self.qualified_name)
                + tpm2b(nonce) + u64(self.clock) + u32(self.reset_count)
                + u32(self.restart_count) + b"\x01" + u64(0x2000_0000_0001)
                + selection.marshal() + tpm2b(quoted))

    def sign(self, message: bytes) -> bytes:
        hash_algorithm = CRYPTOGRAPHY_HASHES[self.hash_alg]
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            der = self.private_key.sign(message, ec.ECDSA(hash_algorithm))
            r, s = decode_dss_signature(der)
            return (u16(Alg.ECDSA) + u16(self.hash_alg) + tpm2b(r.to_bytes(32, "big"))
                    + tpm2b(s.to_bytes(32, "big")))
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
        if self.scheme == Alg.RSAPSS:
            pad = padding.PSS(mgf=padding.MGF1(hash_algorithm),
                              salt_length=padding.PSS.DIGEST_LENGTH)
        signature = self.private_key.sign(message, pad, hash_algorithm)
        return u16(self.scheme) + u16(self.hash_alg) + tpm2b(signature)

    def quote(self, nonce: bytes, values: Mapping[str, Mapping[int, bytes]]) -> tuple[bytes, bytes]:
        """(attest, signature) over `values` as a TPM would produce them."""
        selection = PcrSelection.of({bank: sorted(pcrs) for bank, pcrs in values.items()})
        attest = self.attest_bytes(nonce, selection, values)
        return attest, self.sign(attest)

    def certify(self, nonce: bytes, certified: TpmPublic, *, magic: int = TPM_GENERATED_VALUE,
                attest_type: int = St.ATTEST_CERTIFY,
                signer: bytes | None = None) -> tuple[bytes, bytes]:
        """(attest, signature) of TPM2_Certify over `certified`, a key under the same EK.

        TPMS_ATTEST (Part 2 §10.12) with TPMS_CERTIFY_INFO (§10.12.3): the object's Name and
        its qualified name.
        """
        attest = (u32(magic) + u16(attest_type) + tpm2b(signer or self.qualified_name)
                  + tpm2b(nonce) + u64(self.clock) + u32(self.reset_count)
                  + u32(self.restart_count) + b"\x01" + u64(0x2000_0000_0001)
                  + tpm2b(certified.name) + tpm2b(certified.qualified_name(self.ek_qualified_name)))
        return attest, self.sign(attest)

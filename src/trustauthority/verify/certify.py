"""Verify a TPM2_Certify of a host's binding key by its AK (TPM 2.0 Part 3 §18.2).

A binding key is an RSA decryption key that never leaves the host's TPM; secrets are released
encrypted to it (RSA-OAEP-SHA256) and decrypted inside the TPM with TPM2_RSA_Decrypt. The
certify is what makes the host's claim believable: the AK signs, inside the TPM, the Name of a
loaded object, and a Name is a hash over the whole public area, attributes included. So a public
area whose Name the AK certified is exactly the key in the TPM, with exactly those attributes.

`verify_certify` is the only way to obtain a `CertifiedKey`. It performs, in this order, and
raises a typed `EvidenceError` at the first failure:

1. parse TPMS_ATTEST, TPMT_SIGNATURE and the offered TPM2B_PUBLIC (untrusted bytes ->
   `TpmFormatError`);
2. magic is TPM_GENERATED_VALUE (Part 2 §6.2) -> `BadMagic`;
3. type is TPM_ST_ATTEST_CERTIFY (Part 2 §6.9), so a quote replayed as a certify fails ->
   `WrongAttestationType`;
4. the signature scheme and hash are allowed by the options and fit the AK -> `AlgorithmNotAllowed`;
5. the AK's signature over the attest bytes verifies -> `SignatureInvalid`;
6. qualifiedSigner equals the AK's expected qualified name, when one is given -> `SignatureInvalid`;
7. extraData equals the nonce we issued (qualifyingData, constant time) -> `NonceMismatch`;
8. the certified Name (TPMS_CERTIFY_INFO.name, Part 2 §10.12.3) is the Name of the public area
   offered -> `KeyAttributesError`;
9. that public area is a binding key: RSA of at least `min_rsa_bits`, nameAlg SHA-256 or
   stronger, fixedTPM | fixedParent | sensitiveDataOrigin | decrypt set, restricted and sign
   clear, scheme NULL or OAEP-SHA256 -> `KeyAttributesError`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import cast

from cryptography.hazmat.primitives.asymmetric import rsa

from trustauthority.errors import (
    KeyAttributesError,
    WrongAttestationType,
)
from trustauthority.tpm.attest import CertifyInfo, TpmsAttest, parse_attest
from trustauthority.tpm.constants import Alg, ObjectAttributes, St, alg_name
from trustauthority.tpm.public import RsaParms, TpmPublic, parse_tpm2b_public
from trustauthority.tpm.signature import parse_signature
from trustauthority.verify.quote import QuoteOptions, check_attest

#: what makes a TPM key a binding key (Part 2 §8.3): it cannot be duplicated to another TPM or
#: parent, the TPM generated its private part, and it decrypts
BINDING_REQUIRED = (ObjectAttributes.FIXED_TPM | ObjectAttributes.FIXED_PARENT
                    | ObjectAttributes.SENSITIVE_DATA_ORIGIN | ObjectAttributes.DECRYPT)
#: restricted would make it a storage key (it decrypts only TPM-made structures, not our
#: ciphertexts); one private key that both signs and decrypts breaks key separation
#: (NIST SP 800-57 Part 1 §5.2)
BINDING_FORBIDDEN = ObjectAttributes.RESTRICTED | ObjectAttributes.SIGN_ENCRYPT

#: nameAlgs strong enough that a Name pins the public area; SHA-1 is added only by allow_sha1
_STRONG_NAME_ALGS = frozenset({int(Alg.SHA256), int(Alg.SHA384), int(Alg.SHA512)})
_ATTEST_CERTIFY = int(St.ATTEST_CERTIFY)

#: QuoteOptions is frozen, so one default instance can be shared by every call
_DEFAULT_OPTIONS = QuoteOptions()

#: guards CertifiedKey's constructor: only this module holds it
_MINT = object()


@dataclass(frozen=True)
class CertifiedKey:
    """A binding key whose certify passed every check. Only `verify_certify` can create one."""

    #: the binding key's public area, exactly the one the AK certified
    public: TpmPublic
    attest: TpmsAttest
    _mint: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._mint is not _MINT:
            raise TypeError("CertifiedKey is created only by verify_certify()")

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The key to encrypt secrets to (RSA-OAEP-SHA256)."""
        # check_binding_key_attributes admitted only RSA keys
        return cast(rsa.RSAPublicKey, self.public.public_key)


def check_binding_key_attributes(key: TpmPublic, *,
                                 options: QuoteOptions = _DEFAULT_OPTIONS) -> None:
    """Step 9: `key` is fit to receive secrets; raises `KeyAttributesError` saying why not."""
    if key.type != Alg.RSA or not isinstance(key.parms, RsaParms):
        raise KeyAttributesError(f"binding key must be RSA, not {alg_name(key.type)}")
    allowed_name_algs = _STRONG_NAME_ALGS | ({int(Alg.SHA1)} if options.allow_sha1 else set())
    if key.name_alg not in allowed_name_algs:
        raise KeyAttributesError(
            f"binding key nameAlg {alg_name(key.name_alg)} is refused (SHA-256 or stronger)")
    missing = [flag.name for flag in ObjectAttributes
               if flag & BINDING_REQUIRED and not key.has(flag) and flag.name]
    if missing:
        raise KeyAttributesError(f"binding key lacks required attributes: {', '.join(missing)}")
    forbidden = [flag.name for flag in ObjectAttributes
                 if flag & BINDING_FORBIDDEN and key.has(flag) and flag.name]
    if forbidden:
        raise KeyAttributesError(f"binding key has forbidden attributes: {', '.join(forbidden)}")
    scheme = key.parms.scheme
    # A key fixed to another scheme (RSAES = PKCS#1 v1.5, or OAEP with another hash) could not
    # decrypt what the service encrypts, and v1.5 is a padding oracle waiting to happen.
    if scheme.scheme != Alg.NULL and (scheme.scheme != Alg.OAEP or scheme.hash_alg != Alg.SHA256):
        raise KeyAttributesError(
            f"binding key scheme {alg_name(scheme.scheme)}/{alg_name(scheme.hash_alg)} is "
            "neither NULL nor OAEP-SHA256")
    key_bits = cast(rsa.RSAPublicKey, key.public_key).key_size
    if key_bits < options.min_rsa_bits:
        raise KeyAttributesError(
            f"binding key of {key_bits} bits is below {options.min_rsa_bits}")


def verify_certify(
    *,
    ak: TpmPublic,
    certified_public: bytes,
    raw_attest: bytes,
    raw_signature: bytes,
    expected_nonce: bytes,
    expected_qualified_signer: bytes | None = None,
    options: QuoteOptions = _DEFAULT_OPTIONS,
) -> CertifiedKey:
    """Check a certify of a binding key (see the module docstring for the steps).

    `certified_public` is the binding key's marshalled TPM2B_PUBLIC as the host offers it.
    """
    # 1. parse the untrusted bytes
    attest = parse_attest(raw_attest)
    signature = parse_signature(raw_signature)
    public = parse_tpm2b_public(certified_public)

    # 2.-7. made by a TPM, a certify, signed by the AK we expect, over our nonce
    check_attest(ak, attest, signature, attest_type=_ATTEST_CERTIFY, what="certify",
                 expected_nonce=expected_nonce,
                 expected_qualified_signer=expected_qualified_signer, options=options)
    info = attest.attested
    if not isinstance(info, CertifyInfo):  # parse_attest guarantees it for ATTEST_CERTIFY
        raise WrongAttestationType("attested data is not TPMS_CERTIFY_INFO")

    # 8. the TPM vouched for this public area, not for some other key of the host
    if not hmac.compare_digest(info.name, public.name):
        raise KeyAttributesError("the certified object is not the binding key offered")

    # 9. and that public area describes a key fit to receive secrets
    check_binding_key_attributes(public, options=options)
    return CertifiedKey(public, attest, _MINT)

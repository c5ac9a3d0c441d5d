"""Verify a TPM2_Quote against an AK, a nonce and the PCR values a host claims.

`verify_quote` is the only way to obtain a `VerifiedQuote`. It performs, in this order, and
raises a distinct `QuoteError` subclass at the first failure:

1. parse TPMS_ATTEST and TPMT_SIGNATURE (untrusted bytes -> `TpmFormatError`);
2. magic is TPM_GENERATED_VALUE (Part 2 §6.2) -> `BadMagic`;
3. type is TPM_ST_ATTEST_QUOTE (Part 2 §6.9) -> `WrongAttestationType`;
4. the signature scheme and hash are allowed by the options and fit the AK -> `AlgorithmNotAllowed`;
5. the AK's signature over the attest bytes verifies -> `SignatureInvalid`;
6. qualifiedSigner equals the AK's expected qualified name, when one is given -> `SignatureInvalid`;
7. extraData equals the nonce we issued (constant time) -> `NonceMismatch`;
8. the PCR selection the TPM signed equals the selection of the values supplied, bank by bank and
   PCR by PCR -> `PcrSelectionMismatch` (values for PCR n must be the ones signed for PCR n);
9. pcrDigest equals the digest of the supplied values (Part 3 §18.4) -> `PcrDigestMismatch`;
10. with a previous quote's clock: resetCount/restartCount/clock never go back -> `ClockRegression`,
    and a larger resetCount is reported as a reboot.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from trustauthority.errors import (
    AlgorithmNotAllowed,
    BadMagic,
    ClockRegression,
    NonceMismatch,
    PcrDigestMismatch,
    PcrSelectionMismatch,
    SignatureInvalid,
    WrongAttestationType,
)
from trustauthority.tpm.attest import ClockInfo, QuoteInfo, TpmsAttest, parse_attest
from trustauthority.tpm.constants import (
    CRYPTOGRAPHY_HASHES,
    TPM_GENERATED_VALUE,
    Alg,
    St,
    alg_name,
    digest,
)
from trustauthority.tpm.pcr import PcrSelection
from trustauthority.tpm.public import TpmPublic
from trustauthority.tpm.signature import EccSignature, RsaSignature, Signature, parse_signature

_HASHES = CRYPTOGRAPHY_HASHES  # SHA-1 among them is reached only when allow_sha1 is set
_PKCS1 = padding.PKCS1v15()
# algorithm objects built once: creating them per call costs as much as parsing the quote
_ECDSA = {alg: ec.ECDSA(hash_algorithm) for alg, hash_algorithm in _HASHES.items()}
_PSS = {alg: padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=padding.PSS.AUTO)
        for alg, hash_algorithm in _HASHES.items()}

# Plain ints for the hot path: reading an Enum member costs a descriptor call per access.
_ATTEST_QUOTE = int(St.ATTEST_QUOTE)
_SHA1 = int(Alg.SHA1)
_NULL = int(Alg.NULL)
_ECC = int(Alg.ECC)
_RSA = int(Alg.RSA)
_RSAPSS = int(Alg.RSAPSS)

_BYTES_ONLY = {bytes}

#: guards VerifiedQuote's constructor: only this module holds it
_MINT = object()


@dataclass(frozen=True)
class QuoteOptions:
    """What `verify_quote` accepts. Defaults are the secure choice; each says why."""

    #: SHA-1 is collision-broken: refuse it for signatures and PCR banks unless a fleet of old
    #: TPMs truly needs it.
    allow_sha1: bool = False
    #: signature schemes accepted from an AK; ECDAA/SM2/Schnorr are not verified here
    allowed_schemes: frozenset[int] = frozenset({int(Alg.RSASSA), int(Alg.RSAPSS), int(Alg.ECDSA)})
    #: smallest RSA AK accepted
    min_rsa_bits: int = 2048


@dataclass(frozen=True)
class VerifiedQuote:
    """A quote whose every check passed. Only `verify_quote` can create one."""

    attest: TpmsAttest
    pcr_selection: PcrSelection
    #: bank name -> PCR -> value, exactly the values the TPM signed (read-only)
    pcr_values: Mapping[str, Mapping[int, bytes]]
    clock_info: ClockInfo
    #: True when resetCount grew since the previous quote; None without a previous quote
    rebooted: bool | None
    _mint: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._mint is not _MINT:
            raise TypeError("VerifiedQuote is created only by verify_quote()")

    @property
    def pcr_digest(self) -> bytes:
        info = self.attest.attested
        if not isinstance(info, QuoteInfo):  # unreachable: verify_quote checked the type
            raise TypeError("not a quote")
        return info.pcr_digest


def verify_quote(
    *,
    ak: TpmPublic,
    raw_attest: bytes,
    raw_signature: bytes,
    expected_nonce: bytes,
    unverified_pcr_values: Mapping[str, Mapping[int, bytes]],
    previous_clock: ClockInfo | None = None,
    expected_qualified_signer: bytes | None = None,
    options: QuoteOptions = QuoteOptions(),  # frozen, so sharing the default is safe
) -> VerifiedQuote:
    """Check a quote (see the module docstring for the steps) and return it verified."""
    # 1. parse the untrusted bytes
    attest = parse_attest(raw_attest)
    signature = parse_signature(raw_signature)

    # 2.-7. made by a TPM, a quote, signed by the AK we expect, over our nonce
    check_attest(ak, attest, signature, attest_type=_ATTEST_QUOTE, what="quote",
                 expected_nonce=expected_nonce,
                 expected_qualified_signer=expected_qualified_signer, options=options)
    info = attest.attested
    if not isinstance(info, QuoteInfo):  # parse_attest guarantees it for ATTEST_QUOTE
        raise WrongAttestationType("attested data is not TPMS_QUOTE_INFO")

    # 8. the selection the TPM signed is the selection of the values given
    values, concatenated = _check_selection(info.pcr_select, unverified_pcr_values, options)

    # 9. the values given are the values the TPM quoted (Part 3 §18.4.1: the digest uses the
    # signing scheme's hash, and the values in selection order)
    expected_digest = digest(signature.hash_alg, concatenated)
    if not hmac.compare_digest(expected_digest, info.pcr_digest):
        raise PcrDigestMismatch("the PCR values supplied are not the values the TPM quoted")

    # 10. clock progression
    rebooted = None if previous_clock is None else check_clock(previous_clock, attest.clock_info)

    # Built without the generated __init__ (which costs as much as a check): this module holds
    # the mint, and every field is given.
    verified = object.__new__(VerifiedQuote)
    verified.__dict__.update({
        "attest": attest, "pcr_selection": info.pcr_select, "pcr_values": values,
        "clock_info": attest.clock_info, "rebooted": rebooted, "_mint": _MINT})
    return verified


def check_attest(ak: TpmPublic, attest: TpmsAttest, signature: Signature, *, attest_type: int,
                 what: str, expected_nonce: bytes, expected_qualified_signer: bytes | None,
                 options: QuoteOptions) -> None:
    """Steps 2-7, the same for every structure an AK signs (quote, certify, …)."""
    # 2. made by a TPM
    if attest.magic != TPM_GENERATED_VALUE:
        raise BadMagic(f"magic is 0x{attest.magic:08x}, not TPM_GENERATED_VALUE")
    # 3. the structure we asked for, not another one the same AK signed
    if attest.type != attest_type:
        raise WrongAttestationType(f"attestation type is 0x{attest.type:04x}, not a {what}")
    # 4.-5. the AK signed exactly these bytes, with an allowed scheme
    check_signature(ak, attest.raw, signature, options)
    # 6. signed by the AK we expect inside the TPM we expect
    if expected_qualified_signer is not None and not hmac.compare_digest(
        attest.qualified_signer, expected_qualified_signer
    ):
        raise SignatureInvalid("qualifiedSigner is not the enrolled AK's qualified name")
    # 7. fresh: the nonce we issued, compared in constant time
    if not hmac.compare_digest(attest.extra_data, expected_nonce):
        raise NonceMismatch(f"extraData does not equal the nonce issued for this {what}")


def check_signature(ak: TpmPublic, message: bytes, signature: Signature,
                    options: QuoteOptions) -> None:
    """Steps 4-5: the scheme is allowed and matches the AK; the signature verifies."""
    if signature.sig_alg not in options.allowed_schemes:
        raise AlgorithmNotAllowed(f"signature scheme {alg_name(signature.sig_alg)} is not allowed")
    if signature.hash_alg == _SHA1 and not options.allow_sha1:
        raise AlgorithmNotAllowed("SHA-1 signatures are refused (allow_sha1 is off)")
    hash_algorithm = _HASHES.get(signature.hash_alg)
    if hash_algorithm is None:
        raise AlgorithmNotAllowed(f"signature hash {alg_name(signature.hash_alg)} is not supported")
    ak_scheme = ak.scheme
    # A restricted AK fixes its scheme; a signature made otherwise cannot come from it.
    if ak_scheme.scheme != _NULL and (
        ak_scheme.scheme != signature.sig_alg or ak_scheme.hash_alg != signature.hash_alg
    ):
        raise AlgorithmNotAllowed(
            f"signature uses {alg_name(signature.sig_alg)}/{alg_name(signature.hash_alg)} but "
            f"the AK is fixed to {alg_name(ak_scheme.scheme)}/{alg_name(ak_scheme.hash_alg)}")
    public_key = ak.public_key
    try:
        # the object type decides the key class; comparing ints avoids slow ABC isinstance checks
        if type(signature) is EccSignature:
            if ak.type != _ECC:
                raise AlgorithmNotAllowed("an ECDSA signature cannot come from a non-ECC AK")
            der = encode_dss_signature(int.from_bytes(signature.r, "big"),
                                       int.from_bytes(signature.s, "big"))
            cast(ec.EllipticCurvePublicKey, public_key).verify(
                der, message, _ECDSA[signature.hash_alg])
        elif type(signature) is RsaSignature:
            if ak.type != _RSA:
                raise AlgorithmNotAllowed("an RSA signature cannot come from a non-RSA AK")
            rsa_key = cast(rsa.RSAPublicKey, public_key)
            key_bits = rsa_key.key_size
            if key_bits < options.min_rsa_bits:
                raise AlgorithmNotAllowed(
                    f"RSA AK of {key_bits} bits is below {options.min_rsa_bits}")
            pad = _PSS[signature.hash_alg] if signature.sig_alg == _RSAPSS else _PKCS1
            rsa_key.verify(signature.sig, message, pad, hash_algorithm)
        else:
            raise AlgorithmNotAllowed("HMAC signatures cannot attest to a verifier")
    except InvalidSignature:
        raise SignatureInvalid("the AK's signature over the attestation does not verify") from None


def _check_selection(
    signed: PcrSelection,
    unverified: Mapping[str, Mapping[int, bytes]],
    options: QuoteOptions,
) -> tuple[Mapping[str, Mapping[int, bytes]], bytes]:
    """Step 8: equal selections, sizes right.

    Returns a read-only copy of the supplied values and their concatenation in selection order
    (banks as the TPM lists them, PCRs ascending), which is what the quote's pcrDigest hashes.
    """
    values: dict[str, Mapping[int, bytes]] = {}
    ordered_values: list[bytes] = []
    for selection in signed.banks:
        ordered = selection.ordered
        if not ordered:
            continue
        bank = selection.bank
        if bank == "sha1" and not options.allow_sha1:
            raise AlgorithmNotAllowed("a SHA-1 PCR bank is refused (allow_sha1 is off)")
        size = selection.digest_size
        if size is None:
            raise PcrSelectionMismatch(f"the quote selects unsupported bank {bank}")
        supplied = unverified.get(bank)
        bank_values = {} if supplied is None else dict(supplied)  # the caller cannot change it
        # as many values as PCRs signed, and one for each of them: the same PCRs
        try:
            in_order = (selection.values_in_order(bank_values)
                        if len(bank_values) == len(ordered) else None)
        except KeyError:
            in_order = None
        if in_order is None:
            raise PcrSelectionMismatch(
                f"{bank}: the TPM signed PCRs {_fmt(selection.pcrs)} but values were supplied "
                f"for {_fmt(frozenset(bank_values))}")
        # immutable bytes of the bank's size only; checked with set() to keep the loop in C
        if set(map(type, in_order)) != _BYTES_ONLY or set(map(len, in_order)) != {size}:
            pcr = next(pcr for pcr, value in zip(ordered, in_order, strict=True)
                       if type(value) is not bytes or len(value) != size)
            raise PcrSelectionMismatch(f"{bank} PCR {pcr}: value must be {size} bytes")
        values[bank] = MappingProxyType(bank_values)
        ordered_values += in_order
    if not values:
        raise PcrSelectionMismatch("the quote selects no PCRs")
    # every bank in `values` came from `unverified`, so equal sizes mean no bank is left over
    if len(unverified) != len(values):
        extra = [bank for bank, pcrs in unverified.items() if pcrs and bank not in values]
        if extra:
            raise PcrSelectionMismatch(f"values supplied for banks the TPM did not quote: "
                                       f"{', '.join(sorted(extra))}")
    return MappingProxyType(values), b"".join(ordered_values)


def check_clock(previous: ClockInfo, current: ClockInfo) -> bool:
    """Step 10: counters never go back; returns True when the host rebooted in between.

    Part 1 §36.6: resetCount grows on every TPM Reset (reboot) and restartCount on every
    Restart/Resume; clock is advanced in NV and only moves back if `safe` was lost.
    """
    if current.reset_count < previous.reset_count:
        raise ClockRegression(
            f"resetCount went back from {previous.reset_count} to {current.reset_count}")
    if current.reset_count > previous.reset_count:
        return True
    if current.restart_count < previous.restart_count:
        raise ClockRegression(
            f"restartCount went back from {previous.restart_count} to {current.restart_count} "
            "without a reboot")
    if current.clock < previous.clock:
        raise ClockRegression(
            f"clock went back from {previous.clock} to {current.clock} without a reboot")
    return False


def _fmt(pcrs: frozenset[int]) -> str:
    # keys come from the host: sort numbers first, anything else by its text, never fail
    ordered = sorted(pcrs, key=lambda pcr: (0, pcr, "") if type(pcr) is int else (1, 0, str(pcr)))
    return "{" + ",".join(str(p) for p in ordered) + "}"

"""EK certificate chains (TCG EK Credential Profile 2.0 §3) and EK/AK identity checks.

Hand-written chain building: `cryptography`'s PolicyBuilder refuses TCG EK certificates (no EKU
it knows, TPM-specific SAN), so each link is checked here: signature, validity period, basic
constraints and key usage of every CA; intermediates offered by the host are allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from trustauthority.errors import CertificateError, KeyAttributesError
from trustauthority.tpm.constants import ObjectAttributes
from trustauthority.tpm.public import TpmPublic

_MAX_CHAIN = 6

#: an AK must be a restricted signing key that never leaves its TPM (Part 1 §24, Part 2 §8.3)
AK_REQUIRED = (ObjectAttributes.RESTRICTED | ObjectAttributes.SIGN_ENCRYPT
               | ObjectAttributes.FIXED_TPM | ObjectAttributes.FIXED_PARENT
               | ObjectAttributes.SENSITIVE_DATA_ORIGIN)


def trim_der(data: bytes) -> bytes:
    """Drop NV padding after a DER SEQUENCE (TPMs may store certificates in larger indices)."""
    if len(data) >= 4 and data[0] == 0x30 and data[1] & 0x80:
        length_bytes = data[1] & 0x7F
        if 1 <= length_bytes <= 4 and len(data) >= 2 + length_bytes:
            total = 2 + length_bytes + int.from_bytes(data[2 : 2 + length_bytes], "big")
            if total <= len(data):
                return data[:total]
    return data


def load_certificate(raw: bytes) -> x509.Certificate:
    """DER or PEM; a TPM NV index may pad DER with trailing bytes, which are cut."""
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(trim_der(raw))
    except ValueError as error:
        raise CertificateError(f"not an X.509 certificate: {error}") from None


def verify_ek_certificate(
    ek_certificate: x509.Certificate,
    trusted_cas: Sequence[x509.Certificate],
    *,
    at: datetime,
    intermediates: Sequence[x509.Certificate] = (),
) -> list[x509.Certificate]:
    """Return the chain [EK cert, …, trusted CA] or raise `CertificateError`.

    The chain may end at any trusted CA (a manufacturer's root or an intermediate a trust-admin
    chose to trust). Every certificate must be valid at `at`; every issuer must be a CA allowed
    to sign certificates.
    """
    try:
        return _build_chain(ek_certificate, trusted_cas, at, intermediates)
    except (ValueError, UnsupportedAlgorithm) as error:
        # `cryptography` parses names and extensions lazily: damage surfaces only here
        raise CertificateError(f"malformed certificate: {error}") from None


def _build_chain(ek_certificate: x509.Certificate, trusted_cas: Sequence[x509.Certificate],
                 at: datetime, intermediates: Sequence[x509.Certificate],
                 ) -> list[x509.Certificate]:
    _check_validity(ek_certificate, at, "EK certificate")
    pool = list(intermediates)
    chain = [ek_certificate]
    current = ek_certificate
    for _ in range(_MAX_CHAIN):
        anchor = _find_issuer(current, trusted_cas)
        if anchor is not None:
            _check_ca(anchor, at)
            chain.append(anchor)
            return chain
        issuer = _find_issuer(current, pool)
        if issuer is None:
            raise CertificateError(
                f"{_subject(current)} is issued by {current.issuer.rfc4514_string()!r}, "
                "which is neither a trusted TPM CA nor an intermediate supplied")
        _check_ca(issuer, at)
        pool.remove(issuer)
        chain.append(issuer)
        current = issuer
    raise CertificateError(f"certificate chain longer than {_MAX_CHAIN}")


def ek_matches_certificate(ek: TpmPublic, certificate: x509.Certificate) -> None:
    """The EK the TPM presents must be the key its certificate certifies."""
    try:
        certified_key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CertificateError(f"EK certificate key cannot be read: {error}") from None
    if certified_key != ek.public_key:
        raise CertificateError("the EK public key is not the key in the EK certificate")


def check_ak_attributes(ak: TpmPublic) -> None:
    """An AK must be restricted, signing-only, fixedTPM/fixedParent, TPM-generated."""
    missing = [flag.name for flag in ObjectAttributes
               if flag & AK_REQUIRED and not ak.has(flag) and flag.name]
    if missing:
        raise KeyAttributesError(f"AK lacks required attributes: {', '.join(missing)}")
    if ak.has(ObjectAttributes.DECRYPT):
        raise KeyAttributesError("AK must not be a decryption key")


def _find_issuer(certificate: x509.Certificate,
                 candidates: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return candidate
    return None


def _check_validity(certificate: x509.Certificate, at: datetime, what: str) -> None:
    if at < certificate.not_valid_before_utc:
        raise CertificateError(f"{what} {_subject(certificate)} is not valid before "
                               f"{certificate.not_valid_before_utc:%Y-%m-%d}")
    if at > certificate.not_valid_after_utc:
        raise CertificateError(f"{what} {_subject(certificate)} expired on "
                               f"{certificate.not_valid_after_utc:%Y-%m-%d}")


def _check_ca(certificate: x509.Certificate, at: datetime) -> None:
    _check_validity(certificate, at, "CA certificate")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CertificateError(f"{_subject(certificate)} has no basic constraints: "
                               "not a CA") from None
    if not constraints.ca:
        raise CertificateError(f"{_subject(certificate)} is not a CA certificate")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return  # RFC 5280 §4.2.1.3: without the extension, usage is not restricted
    if not usage.key_cert_sign:
        raise CertificateError(f"{_subject(certificate)} may not sign certificates")


def _subject(certificate: x509.Certificate) -> str:
    return repr(certificate.subject.rfc4514_string() or "(empty subject)")

"""EK certificate chains: malformed or unfit certificates are refused with CertificateError."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from trustauthority.errors import CertificateError
from trustauthority.verify.ekcert import load_certificate, trim_der, verify_ek_certificate

NOW = datetime.now(UTC)
KEY = ec.generate_private_key(ec.SECP256R1())


def _certificate(name: str, issuer: str, *, extension: x509.ExtensionType | None,
                 days: int = 1) -> x509.Certificate:
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(KEY.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - timedelta(days=2)).not_valid_after(NOW + timedelta(days)))
    if extension is not None:
        builder = builder.add_extension(extension, critical=True)
    return builder.sign(KEY, hashes.SHA256())


CA = _certificate("ca", "ca", extension=x509.BasicConstraints(ca=True, path_length=None))
EK = _certificate("ek", "ca", extension=None)


def test_an_ek_issued_by_a_trusted_ca_verifies() -> None:
    assert verify_ek_certificate(EK, [CA], at=NOW) == [EK, CA]


def test_garbage_in_a_lazily_parsed_extension_is_a_certificate_error() -> None:
    broken_ca = _certificate("ca", "ca", extension=x509.UnrecognizedExtension(
        ExtensionOID.BASIC_CONSTRAINTS, b"\x04\x01\x00"))
    with pytest.raises(CertificateError, match="malformed"):
        verify_ek_certificate(EK, [broken_ca], at=NOW)


def test_an_issuer_that_is_not_a_ca_is_refused() -> None:
    not_ca = _certificate("ca", "ca", extension=x509.BasicConstraints(ca=False, path_length=None))
    with pytest.raises(CertificateError, match="not a CA"):
        verify_ek_certificate(EK, [not_ca], at=NOW)


def test_an_expired_ek_certificate_is_refused() -> None:
    with pytest.raises(CertificateError, match="expired"):
        verify_ek_certificate(EK, [CA], at=NOW + timedelta(days=30))


@pytest.mark.parametrize("raw", [b"", b"\x30\x82\xff\xff", b"-----BEGIN CERTIFICATE-----\nxx"])
def test_unparseable_bytes_are_a_certificate_error(raw: bytes) -> None:
    with pytest.raises(CertificateError):
        load_certificate(raw)


def test_nv_padding_after_the_der_is_cut() -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    der = EK.public_bytes(Encoding.DER)
    assert trim_der(der + b"\xff" * 40) == der
    assert load_certificate(der + b"\x00" * 40) == EK

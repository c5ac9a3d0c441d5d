"""The service's own small PKI: a TLS CA, the server certificate, mTLS client certificates.

Pure: keys and certificates in, certificates out; no files, no database. ECDSA P-256 everywhere,
so handshakes and signatures stay cheap. Client certificates are issued from a CSR the client
made itself, so a principal's private key never leaves the machine that uses it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustauthority.errors import UsageError

CA_LIFETIME = timedelta(days=3650)
SERVER_LIFETIME = timedelta(days=825)
CLIENT_LIFETIME = timedelta(days=365)
#: issued certificates start a little in the past, for clocks that lag ours
_BACKDATE = timedelta(minutes=5)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Trust Authority"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_ca(common_name: str, now: datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = new_key()
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(public).serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE).not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _leaf(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, subject: x509.Name,
          public: ec.EllipticCurvePublicKey, now: datetime, lifetime: timedelta,
          usage: x509.ObjectIdentifier) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(ca.subject)
        .public_key(public).serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + lifetime, ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=True, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )


def issue_server_certificate(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
                             hostnames: Iterable[str], now: datetime,
                             ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if not names:
        raise UsageError("the server certificate needs at least one host name")
    key = new_key()
    first = next(iter(hostnames))
    certificate = (
        _leaf(ca_key, ca, _name(first), key.public_key(), now, SERVER_LIFETIME,
              ExtendedKeyUsageOID.SERVER_AUTH)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def load_csr(raw_csr_pem: str) -> x509.CertificateSigningRequest:
    """An untrusted CSR: PEM, self-signed correctly, with a P-256 or P-384 key."""
    try:
        csr = x509.load_pem_x509_csr(raw_csr_pem.encode())
    except ValueError:
        raise UsageError("not a PEM certificate signing request") from None
    try:
        # both parse the key lazily: an unknown key or signature algorithm surfaces here
        signed = csr.is_signature_valid
        public = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError("the certificate signing request's key or signature algorithm is "
                         "not one this service knows") from None
    if not signed:
        raise UsageError("the certificate signing request is not signed by its own key")
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name not in (
            "secp256r1", "secp384r1"):
        raise UsageError("client certificates need an ECDSA P-256 or P-384 key")
    return csr


def issue_client_certificate(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
                             csr: x509.CertificateSigningRequest, principal_name: str,
                             now: datetime, lifetime: timedelta = CLIENT_LIFETIME,
                             ) -> x509.Certificate:
    """A client certificate for `principal_name`; the CSR's subject is ignored, its key used."""
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise UsageError("client certificates need an ECDSA key")
    return (_leaf(ca_key, ca, _name(principal_name), public, now, lifetime,
                  ExtendedKeyUsageOID.CLIENT_AUTH)
            .sign(ca_key, hashes.SHA256()))


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()

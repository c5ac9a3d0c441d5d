"""MakeCredential, KDFa and KDFe (Part 1 §11.4.10, §24) against independent implementations."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.soft_activate import soft_activate
from trustauthority.errors import TpmFormatError
from trustauthority.tpm import Alg, kdfa, kdfe, make_credential, parse_tpmt_public
from trustauthority.tpm.reader import tpm2b, u16, u32

# EK templates of TCG EK Credential Profile 2.0 §B.3.3 (L-1, RSA-2048) and §B.4.4 (H-3, P-384)
_EK_ATTRS = 0x000300B2
_POLICY_A_SHA256 = bytes.fromhex(
    "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
_POLICY_B_SHA384 = bytes.fromhex(
    "b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419ca"
    "cb47ba09699646150f9fc000f3f80e12")


def rsa_ek(key: rsa.RSAPrivateKey) -> bytes:
    modulus = key.public_key().public_numbers().n.to_bytes(256, "big")
    return (u16(Alg.RSA) + u16(Alg.SHA256) + u32(_EK_ATTRS) + tpm2b(_POLICY_A_SHA256)
            + u16(Alg.AES) + u16(128) + u16(Alg.CFB) + u16(Alg.NULL) + u16(2048) + u32(0)
            + tpm2b(modulus))


def ecc_ek(key: ec.EllipticCurvePrivateKey) -> bytes:
    point = key.public_key().public_numbers()
    return (u16(Alg.ECC) + u16(Alg.SHA384) + u32(_EK_ATTRS | 0x40) + tpm2b(_POLICY_B_SHA384)
            + u16(Alg.AES) + u16(256) + u16(Alg.CFB) + u16(Alg.NULL) + u16(0x0004)
            + u16(Alg.NULL) + tpm2b(point.x.to_bytes(48, "big"))
            + tpm2b(point.y.to_bytes(48, "big")))


@settings(max_examples=50, deadline=None)
@given(key=st.binary(min_size=1, max_size=64), label=st.binary(max_size=16),
       context=st.binary(max_size=64), bits=st.sampled_from([128, 256, 384, 512]))
def test_kdfa_equals_sp800_108_counter_mode(key: bytes, label: bytes, context: bytes,
                                            bits: int) -> None:
    reference = KBKDFHMAC(hashes.SHA256(), Mode.CounterMode, bits // 8, 4, 4,
                          CounterLocation.BeforeFixed, label, context, None)  # adds the NUL
    assert kdfa(Alg.SHA256, key, label + b"\x00", context, b"", bits) == reference.derive(key)


@settings(max_examples=50, deadline=None)
@given(z=st.binary(min_size=32, max_size=48), u=st.binary(max_size=48), v=st.binary(max_size=48))
def test_kdfe_equals_sp800_56a_concatenation(z: bytes, u: bytes, v: bytes) -> None:
    reference = ConcatKDFHash(hashes.SHA384(), 48, b"IDENTITY\x00" + u + v)
    assert kdfe(Alg.SHA384, z, b"IDENTITY\x00", u, v, 384) == reference.derive(z)


def test_kdfa_zeroes_unused_leading_bits() -> None:
    assert kdfa(Alg.SHA256, b"k", b"L\x00", b"", b"", 12)[0] < 0x10


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_make_credential_round_trips_through_activate(kind: str) -> None:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "rsa":
        private = rsa.generate_private_key(65537, 2048)
        ek = parse_tpmt_public(rsa_ek(private))
    else:
        private = ec.generate_private_key(ec.SECP384R1())
        ek = parse_tpmt_public(ecc_ek(private))
    ak_name = b"\x00\x0b" + os.urandom(32)
    secret = os.urandom(32)
    credential = make_credential(ek, ak_name, secret)
    assert soft_activate(private, ek, ak_name, credential) == secret
    with pytest.raises(ValueError, match="integrity"):
        soft_activate(private, ek, b"\x00\x0b" + os.urandom(32), credential)


def test_make_credential_refuses_a_non_storage_ek() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_numbers()
    signing_key = parse_tpmt_public(
        u16(Alg.ECC) + u16(Alg.SHA256) + u32(0x00050072) + tpm2b(b"") + u16(Alg.NULL)
        + u16(Alg.ECDSA) + u16(Alg.SHA256) + u16(0x0003) + u16(Alg.NULL)
        + tpm2b(point.x.to_bytes(32, "big")) + tpm2b(point.y.to_bytes(32, "big")))
    with pytest.raises(TpmFormatError, match="AES-CFB"):
        make_credential(signing_key, b"\x00\x0b" + bytes(32), b"secret")

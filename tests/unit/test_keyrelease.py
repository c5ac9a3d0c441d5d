"""The wrapped-key blob and the release JWE: strict parsing, and a JWE that only the binding
key's holder opens (decrypted here with a software key standing in for the TPM's)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given
from hypothesis import strategies as st

from trustauthority.errors import WrappedKeyInvalid
from trustauthority.keyrelease.blob import WrappedKeyBlob, b64url, header_aad, parse_blob
from trustauthority.keyrelease.jwe import decrypt_with_tpm, encrypt_to_binding_key

BLOB = WrappedKeyBlob(key_id="4f1c", workload="vm-42/disk0", provider_id="p-1",
                      primary_version=2, kind="kmip", wrapped=bytes(range(73)))


def test_a_blob_round_trips_and_its_aad_is_what_the_key_server_authenticated() -> None:
    parsed = parse_blob(BLOB.encode())
    assert parsed == BLOB
    assert parsed.aad == header_aad("4f1c", "vm-42/disk0", "p-1", 2, "kmip")
    assert parsed.aad != header_aad("4f1c", "vm-43/disk0", "p-1", 2, "kmip")


@pytest.mark.parametrize("text", [
    "", "tak1", "tak1..", "tak2." + BLOB.encode().split(".", 1)[1],
    BLOB.encode() + ".extra", BLOB.encode().replace(".", "!", 1), "tak1.e30." + b64url(b"x"),
    "tak1." + b64url(b"not json") + ".AA", "x" * 5000,
    "tak1." + b64url(json.dumps({"key": "k", "workload": "w", "provider": "p", "version": 0,
                                 "kind": "kmip"}).encode()) + ".AA",
    "tak1." + b64url(json.dumps({"key": "k", "workload": "w", "provider": "p", "version": True,
                                 "kind": "kmip"}).encode()) + ".AA",
    # a version no column holds would reach the store as an overflow, not a refusal
    "tak1." + b64url(json.dumps({"key": "k", "workload": "w", "provider": "p", "version": 2**63,
                                 "kind": "kmip"}, sort_keys=True,
                                separators=(",", ":")).encode()) + ".AA",
])
def test_anything_but_a_blob_is_refused_as_such(text: str) -> None:
    with pytest.raises(WrappedKeyInvalid):
        parse_blob(text)


def test_a_header_in_another_json_spelling_is_refused() -> None:
    """One encoding per header: a re-spaced header would carry another aad than was wrapped."""
    header = json.dumps({"key": "4f1c", "workload": "vm-42/disk0", "provider": "p-1",
                         "version": 2, "kind": "kmip"}, indent=1)
    with pytest.raises(WrappedKeyInvalid, match="canonical"):
        parse_blob(f"tak1.{b64url(header.encode())}.{b64url(b'wrapped')}")


@given(st.text(max_size=300))
def test_parsing_never_fails_otherwise(text: str) -> None:
    with contextlib.suppress(WrappedKeyInvalid):
        parse_blob(text)


@pytest.fixture(scope="module")
def binding_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _tpm(key: rsa.RSAPrivateKey) -> Callable[[bytes], bytes]:
    return lambda encrypted: key.decrypt(encrypted, padding.OAEP(
        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))


def test_the_jwe_opens_with_the_binding_key_only(binding_key: rsa.RSAPrivateKey) -> None:
    token = encrypt_to_binding_key(binding_key.public_key(), b'{"key":"secret"}', "jkt")
    assert decrypt_with_tpm(token, _tpm(binding_key)) == b'{"key":"secret"}'
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ValueError, match="Decryption failed"):  # not this key's content key
        decrypt_with_tpm(token, _tpm(other))


def test_an_altered_jwe_is_refused(binding_key: rsa.RSAPrivateKey) -> None:
    token = encrypt_to_binding_key(binding_key.public_key(), b"payload", "jkt")
    protected, key, iv, ciphertext, tag = token.split(".")
    flipped = ciphertext[:-2] + ("A" if ciphertext[-2] != "A" else "B") + ciphertext[-1]
    for bad in (".".join((protected, key, iv, flipped, tag)),
                ".".join((b64url(b'{"alg":"RSA-OAEP","enc":"A256GCM"}'), key, iv, ciphertext,
                          tag)),
                ".".join((protected, key, iv, ciphertext)), "x" * 9000):
        with pytest.raises(WrappedKeyInvalid):
            decrypt_with_tpm(bad, _tpm(binding_key))

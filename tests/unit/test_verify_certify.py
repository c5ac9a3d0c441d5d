"""verify_certify: a binding key certified by an AK, each check with its typed error."""

from __future__ import annotations

import contextlib
from functools import cache

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.fake_tpm import (
    BINDING_ATTRIBUTES,
    FakeAk,
    binding_public_bytes,
    ecc_public_bytes,
)
from trustauthority import errors
from trustauthority.tpm import Alg, St, TpmPublic, parse_tpmt_public
from trustauthority.tpm.constants import ObjectAttributes
from trustauthority.verify import (
    CertifiedKey,
    QuoteOptions,
    check_binding_key_attributes,
    verify_certify,
)

NONCE = b"n" * 32
_F = ObjectAttributes


@cache
def _rsa_key(bits: int, index: int) -> rsa.RSAPrivateKey:
    """RSA key generation is slow: each (size, index) is made once per session."""
    del index  # only part of the cache key
    return rsa.generate_private_key(65537, bits)


def _binding(bits: int = 2048, index: int = 0, **kwargs: int) -> TpmPublic:
    return parse_tpmt_public(binding_public_bytes(_rsa_key(bits, index).public_key(), **kwargs))


@pytest.fixture(scope="module", params=["ecc", "rsa"])
def ak(request: pytest.FixtureRequest) -> FakeAk:
    return FakeAk.ecc() if request.param == "ecc" else FakeAk.rsa()


def _verify(ak: FakeAk, public: TpmPublic | bytes, attest: bytes, signature: bytes,
            nonce: bytes = NONCE, **kwargs: object) -> CertifiedKey:
    offered = public.tpm2b if isinstance(public, TpmPublic) else public
    return verify_certify(ak=ak.public, certified_public=offered, raw_attest=attest,
                          raw_signature=signature, expected_nonce=nonce,
                          **kwargs)  # type: ignore[arg-type]


# -- the happy path ---------------------------------------------------------------------------


def test_valid_certify_verifies(ak: FakeAk) -> None:
    binding = _binding()
    attest, signature = ak.certify(NONCE, binding)
    result = _verify(ak, binding, attest, signature, expected_qualified_signer=ak.qualified_name)
    assert result.public == binding
    assert result.public_key.public_numbers() == _rsa_key(2048, 0).public_key().public_numbers()
    assert result.attest.extra_data == NONCE
    assert result.attest.type == St.ATTEST_CERTIFY


def test_certified_key_cannot_be_built_outside_the_verifier(ak: FakeAk) -> None:
    binding = _binding()
    result = _verify(ak, binding, *ak.certify(NONCE, binding))
    with pytest.raises(TypeError, match="only by verify_certify"):
        CertifiedKey(result.public, result.attest, object())


@pytest.mark.parametrize(("scheme", "hash_alg"), [(Alg.NULL, Alg.NULL), (Alg.OAEP, Alg.SHA256)])
def test_null_or_oaep_sha256_scheme_is_accepted(scheme: int, hash_alg: int) -> None:
    check_binding_key_attributes(_binding(scheme=scheme, hash_alg=hash_alg))


def test_sha1_name_alg_only_when_allowed() -> None:
    binding = _binding(name_alg=Alg.SHA1)
    with pytest.raises(errors.KeyAttributesError, match="nameAlg SHA1"):
        check_binding_key_attributes(binding)
    check_binding_key_attributes(binding, options=QuoteOptions(allow_sha1=True))


# -- each check, with its own error -----------------------------------------------------------


def test_bad_magic(ak: FakeAk) -> None:
    binding = _binding()
    attest, signature = ak.certify(NONCE, binding, magic=0xFF544348)
    with pytest.raises(errors.BadMagic):
        _verify(ak, binding, attest, signature)


def test_quote_presented_as_certify_is_refused(ak: FakeAk) -> None:
    attest, signature = ak.quote(NONCE, {"sha256": {0: bytes(32)}})
    with pytest.raises(errors.WrongAttestationType, match="not a certify"):
        _verify(ak, _binding(), attest, signature)


def test_certify_info_under_another_type_is_refused(ak: FakeAk) -> None:
    binding = _binding()
    attest, signature = ak.certify(NONCE, binding, attest_type=St.ATTEST_CREATION)
    with pytest.raises(errors.WrongAttestationType):
        _verify(ak, binding, attest, signature)


def test_certify_by_another_ak_is_refused(ak: FakeAk) -> None:
    other = FakeAk.ecc() if ak.public.type == Alg.ECC else FakeAk.rsa()
    binding = _binding()
    attest, signature = other.certify(NONCE, binding, signer=ak.qualified_name)
    with pytest.raises(errors.SignatureInvalid, match="does not verify"):
        _verify(ak, binding, attest, signature)


def test_signature_of_another_kind_of_ak_is_refused(ak: FakeAk) -> None:
    other = FakeAk.rsa() if ak.public.type == Alg.ECC else FakeAk.ecc()
    binding = _binding()
    attest, signature = other.certify(NONCE, binding)
    with pytest.raises(errors.AlgorithmNotAllowed):
        _verify(ak, binding, attest, signature)


def test_wrong_nonce_is_a_replay(ak: FakeAk) -> None:
    binding = _binding()
    attest, signature = ak.certify(NONCE, binding)
    with pytest.raises(errors.NonceMismatch):
        _verify(ak, binding, attest, signature, nonce=b"m" * 32)
    with pytest.raises(errors.NonceMismatch):
        _verify(ak, binding, attest, signature, nonce=NONCE[:-1])


def test_wrong_qualified_signer_is_refused(ak: FakeAk) -> None:
    binding = _binding()
    # the same AK under another EK: signed by the right key, in the wrong TPM hierarchy
    attest, signature = ak.certify(NONCE, binding, signer=b"\x00\x0b" + bytes(32))
    with pytest.raises(errors.SignatureInvalid, match="qualifiedSigner"):
        _verify(ak, binding, attest, signature, expected_qualified_signer=ak.qualified_name)


def test_certify_of_another_key_is_refused(ak: FakeAk) -> None:
    binding, other = _binding(), _binding(index=1)
    attest, signature = ak.certify(NONCE, other)
    with pytest.raises(errors.KeyAttributesError, match="not the binding key offered"):
        _verify(ak, binding, attest, signature)


def test_same_key_with_other_attributes_is_another_name(ak: FakeAk) -> None:
    """The Name covers the attributes: a key certified as signing cannot be offered as binding."""
    certified = _binding(attributes=BINDING_ATTRIBUTES | _F.SIGN_ENCRYPT)
    attest, signature = ak.certify(NONCE, certified)
    with pytest.raises(errors.KeyAttributesError, match="not the binding key offered"):
        _verify(ak, _binding(), attest, signature)


@pytest.mark.parametrize(("attributes", "why"), [
    (BINDING_ATTRIBUTES | _F.RESTRICTED, "forbidden attributes: RESTRICTED"),
    (BINDING_ATTRIBUTES | _F.SIGN_ENCRYPT, "forbidden attributes: SIGN_ENCRYPT"),
    (BINDING_ATTRIBUTES & ~_F.FIXED_TPM, "lacks required attributes: FIXED_TPM"),
    (BINDING_ATTRIBUTES & ~_F.FIXED_PARENT, "lacks required attributes: FIXED_PARENT"),
    (BINDING_ATTRIBUTES & ~_F.SENSITIVE_DATA_ORIGIN,
     "lacks required attributes: SENSITIVE_DATA_ORIGIN"),
    (BINDING_ATTRIBUTES & ~_F.DECRYPT, "lacks required attributes: DECRYPT"),
])
def test_binding_key_attributes_are_enforced(ak: FakeAk, attributes: int, why: str) -> None:
    binding = _binding(attributes=attributes)
    attest, signature = ak.certify(NONCE, binding)
    with pytest.raises(errors.KeyAttributesError, match=why):
        _verify(ak, binding, attest, signature)


def test_small_rsa_binding_key_is_refused(ak: FakeAk) -> None:
    binding = _binding(bits=1024)
    attest, signature = ak.certify(NONCE, binding)
    with pytest.raises(errors.KeyAttributesError, match="1024 bits is below 2048"):
        _verify(ak, binding, attest, signature)


def test_ecc_binding_key_is_refused(ak: FakeAk) -> None:
    ecc_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    binding = parse_tpmt_public(
        ecc_public_bytes(ecc_key, scheme=Alg.NULL, attributes=BINDING_ATTRIBUTES))
    attest, signature = ak.certify(NONCE, binding)
    with pytest.raises(errors.KeyAttributesError, match="must be RSA"):
        _verify(ak, binding, attest, signature)


@pytest.mark.parametrize(("scheme", "hash_alg"), [
    (Alg.RSAES, Alg.NULL),  # PKCS#1 v1.5
    (Alg.OAEP, Alg.SHA1),
    (Alg.RSASSA, Alg.SHA256),
])
def test_binding_key_fixed_to_another_scheme_is_refused(scheme: int, hash_alg: int) -> None:
    with pytest.raises(errors.KeyAttributesError, match="neither NULL nor OAEP-SHA256"):
        check_binding_key_attributes(_binding(scheme=scheme, hash_alg=hash_alg))


# -- malformed input -------------------------------------------------------------------------


def test_truncated_attest_is_a_format_error(ak: FakeAk) -> None:
    binding = _binding()
    attest, signature = ak.certify(NONCE, binding)
    for cut in (0, 6, 40, len(attest) - 1):
        with pytest.raises(errors.TpmFormatError):
            _verify(ak, binding, attest[:cut], signature)
    with pytest.raises(errors.MalformedEvidence):
        _verify(ak, binding, attest + b"\x00", signature)


def test_truncated_public_is_a_format_error(ak: FakeAk) -> None:
    binding = _binding()
    attest, signature = ak.certify(NONCE, binding)
    with pytest.raises(errors.TpmFormatError):
        _verify(ak, binding.tpm2b[:-1], attest, signature)
    with pytest.raises(errors.TpmFormatError):  # a bare TPMT_PUBLIC is not a TPM2B_PUBLIC
        _verify(ak, binding.raw, attest, signature)


def test_every_flipped_bit_is_refused() -> None:
    ak = _fuzz_ak()
    binding = _binding()
    attest, signature = ak.certify(NONCE, binding)
    blobs = (attest, signature, binding.tpm2b)
    for which, blob in enumerate(blobs):
        for bit in range(len(blob) * 8):
            mutated = bytearray(blob)
            mutated[bit // 8] ^= 1 << (bit % 8)
            args = [*blobs]
            args[which] = bytes(mutated)
            with pytest.raises(errors.EvidenceError):
                _verify(ak, args[2], args[0], args[1])


@cache
def _fuzz_ak() -> FakeAk:
    return FakeAk.ecc()


@cache
def _fuzz_certify() -> tuple[bytes, bytes, bytes]:
    binding = _binding()
    attest, signature = _fuzz_ak().certify(NONCE, binding)
    return attest, signature, binding.tpm2b


@settings(max_examples=200, deadline=None)
@given(attest=st.binary(max_size=300), signature=st.binary(max_size=300),
       public=st.binary(max_size=400))
def test_garbage_is_a_typed_error(attest: bytes, signature: bytes, public: bytes) -> None:
    with pytest.raises(errors.EvidenceError):
        _verify(_fuzz_ak(), public, attest, signature)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_certify_raises_only_evidence_errors(data: st.DataObject) -> None:
    blobs = list(_fuzz_certify())
    which = data.draw(st.integers(0, 2), label="which")
    blob = bytearray(blobs[which])
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        edit = data.draw(st.sampled_from(["set", "cut", "insert", "delete"]), label="edit")
        pos = data.draw(st.integers(0, len(blob)), label="pos")
        if edit == "set" and pos < len(blob):
            blob[pos] = data.draw(st.integers(0, 255), label="byte")
        elif edit == "cut":
            del blob[pos:]
        elif edit == "insert":
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=8), label="inserted")
        elif pos < len(blob):
            del blob[pos]
    blobs[which] = bytes(blob)
    # refusing is allowed (a mutation can also be a no-op); any other exception fails the test
    with contextlib.suppress(errors.EvidenceError):
        _verify(_fuzz_ak(), blobs[2], blobs[0], blobs[1])


def test_quote_options_reach_the_signature_check() -> None:
    ak = FakeAk.ecc()
    binding = _binding()
    attest, signature = ak.certify(NONCE, binding)
    options = QuoteOptions(allowed_schemes=frozenset({int(Alg.RSASSA)}))
    with pytest.raises(errors.AlgorithmNotAllowed):
        _verify(ak, binding, attest, signature, options=options)


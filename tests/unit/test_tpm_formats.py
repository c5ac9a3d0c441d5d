"""TPM wire formats, cross-checked against tpm2-pytss's marshal/unmarshal on the same bytes."""

from __future__ import annotations

import contextlib
import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.fake_tpm import AK_ATTRIBUTES, FakeAk
from tests.support.sim_host import ek_public_bytes
from trustauthority.errors import TpmFormatError
from trustauthority.tpm import (
    Alg,
    CertifyInfo,
    EccSignature,
    PcrSelection,
    QuoteInfo,
    RsaSignature,
    St,
    parse_attest,
    parse_public,
    parse_signature,
    parse_tpm2b_public,
    parse_tpmt_public,
    public_from_key,
)
from trustauthority.tpm import attest as attest_module
from trustauthority.tpm.constants import ObjectAttributes

tpm2 = pytest.importorskip("tpm2_pytss")
from tpm2_pytss import types as tt  # noqa: E402 - only after the skip check

PCRS = {"sha256": {i: bytes([i]) * 32 for i in (0, 1, 2, 3, 7, 14)}}


@pytest.mark.parametrize("template", [
    "ecc256:ecdsa-sha256:null", "rsa2048:rsassa-sha256:null", "ecc384:ecdsa-sha384:null",
    "rsa2048:rsapss-sha256:null", "rsa2048:null:aes128cfb", "ecc256:null:aes128cfb",
])
def test_public_area_parses_like_tpm2_pytss(template: str) -> None:
    attrs = int(AK_ATTRIBUTES) if "null:aes" not in template else 0x00030072
    theirs = tt.TPM2B_PUBLIC.parse(template, objectAttributes=attrs)
    # the unique field of a template is empty: give it a real key so public_key works
    ours = parse_tpm2b_public(theirs.marshal())
    area = theirs.publicArea
    assert ours.type == int(area.type)
    assert ours.name_alg == int(area.nameAlg)
    assert int(ours.attributes) == int(area.objectAttributes)
    assert ours.name == bytes(theirs.get_name().marshal())[2:]  # TPM2B_NAME without its size
    assert ours.tpm2b == theirs.marshal()
    assert parse_public(bytes(area.marshal())) == ours  # bare TPMT_PUBLIC too


def test_public_key_and_qualified_name_from_a_real_key() -> None:
    ak = FakeAk.ecc()
    theirs = tt.TPM2B_PUBLIC.from_pem(
        ak.public.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
        objectAttributes=int(AK_ATTRIBUTES),
        scheme=tt.TPMT_ASYM_SCHEME(scheme=Alg.ECDSA,
                                   details=tt.TPMU_ASYM_SCHEME(ecdsa=tt.TPMS_SCHEME_HASH(
                                       hashAlg=Alg.SHA256))),
        symmetric=tt.TPMT_SYM_DEF_OBJECT(algorithm=Alg.NULL))
    ours = parse_tpm2b_public(theirs.marshal())
    assert ours.name == bytes(theirs.get_name().marshal())[2:]
    assert ours.public_key.public_numbers() == ak.public.public_key.public_numbers()
    assert ours.has(ObjectAttributes.RESTRICTED)
    assert ours.has(ObjectAttributes.SIGN_ENCRYPT)
    assert not ours.has(ObjectAttributes.DECRYPT)
    assert ours.scheme.scheme == Alg.ECDSA
    assert ours.scheme.hash_alg == Alg.SHA256
    parent_qn = b"\x00\x0b" + os.urandom(32)
    assert ours.qualified_name(parent_qn) == b"\x00\x0b" + hashlib.sha256(
        parent_qn + ours.name).digest()


def test_public_from_pem_key_round_trips() -> None:
    ak = FakeAk.rsa()
    minimal = public_from_key(ak.public.public_key)
    assert minimal.public_key.public_numbers() == ak.public.public_key.public_numbers()


def test_quote_attest_matches_tpm2_pytss_unmarshal() -> None:
    ak = FakeAk.ecc()
    nonce = os.urandom(20)
    attest, signature = ak.quote(nonce, PCRS)
    ours = parse_attest(attest)
    theirs, consumed = tt.TPMS_ATTEST.unmarshal(attest)
    assert consumed == len(attest)
    assert ours.magic == int(theirs.magic)
    assert ours.type == int(theirs.type) == St.ATTEST_QUOTE
    assert ours.qualified_signer == bytes(theirs.qualifiedSigner.marshal())[2:]
    assert ours.extra_data == bytes(theirs.extraData) == nonce
    assert ours.clock_info.clock == int(theirs.clockInfo.clock)
    assert ours.clock_info.reset_count == int(theirs.clockInfo.resetCount)
    assert ours.clock_info.restart_count == int(theirs.clockInfo.restartCount)
    assert ours.clock_info.safe == bool(theirs.clockInfo.safe)
    assert ours.firmware_version == int(theirs.firmwareVersion)
    assert isinstance(ours.attested, QuoteInfo)
    assert ours.attested.pcr_digest == bytes(theirs.attested.quote.pcrDigest)
    assert ours.attested.pcr_select.marshal() == bytes(theirs.attested.quote.pcrSelect.marshal())
    their_sig, _ = tt.TPMT_SIGNATURE.unmarshal(signature)
    parsed = parse_signature(signature)
    assert isinstance(parsed, EccSignature)
    assert parsed.r == bytes(their_sig.signature.ecdsa.signatureR)
    assert parsed.s == bytes(their_sig.signature.ecdsa.signatureS)
    assert parsed.marshal() == signature


def test_pcr_selection_marshals_like_tpm2_pytss() -> None:
    ours = PcrSelection.of({"sha1": [0, 7], "sha256": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14, 23]})
    theirs = tt.TPML_PCR_SELECTION.parse("sha1:0,7+sha256:0,1,2,3,4,5,6,7,8,9,14,23")
    assert ours.marshal() == theirs.marshal()


def _quote_attest(selection: str) -> bytes:
    quote = tt.TPMS_ATTEST(
        magic=0xFF544347, type=St.ATTEST_QUOTE,
        qualifiedSigner=tt.TPM2B_NAME(b"\x00\x0b" + bytes(32)), extraData=tt.TPM2B_DATA(b"n"),
        attested=tt.TPMU_ATTEST(quote=tt.TPMS_QUOTE_INFO(
            pcrSelect=tt.TPML_PCR_SELECTION.parse(selection),
            pcrDigest=tt.TPM2B_DIGEST(bytes(32)))))
    return bytes(quote.marshal())


def test_quotes_with_many_selections_parse_right_and_the_selection_cache_stays_bounded() -> None:
    """Parsed selections are shared between quotes, up to a bound hostile hosts cannot raise."""
    for pcr in range(24):
        for other in range(24):
            attest = _quote_attest(f"sha1:{other}+sha256:{pcr},{other}")
            info = parse_attest(attest).attested
            assert isinstance(info, QuoteInfo)
            assert info.pcr_select.as_dict() == {"sha1": frozenset({other}),
                                                 "sha256": frozenset({pcr, other})}
            assert [bank.ordered for bank in info.pcr_select.banks] == [
                (other,), tuple(sorted({pcr, other}))]
    assert len(attest_module._SELECTIONS) <= attest_module._MAX_SELECTIONS


def test_certify_attest_parses() -> None:
    certify = tt.TPMS_ATTEST(
        magic=0xFF544347, type=St.ATTEST_CERTIFY,
        qualifiedSigner=tt.TPM2B_NAME(b"\x00\x0b" + bytes(32)), extraData=tt.TPM2B_DATA(b"n"),
        attested=tt.TPMU_ATTEST(certify=tt.TPMS_CERTIFY_INFO(
            name=tt.TPM2B_NAME(b"\x00\x0b" + b"\x01" * 32),
            qualifiedName=tt.TPM2B_NAME(b"\x00\x0b" + b"\x02" * 32))))
    ours = parse_attest(bytes(certify.marshal()))
    assert isinstance(ours.attested, CertifyInfo)
    assert ours.attested.name == b"\x00\x0b" + b"\x01" * 32
    assert ours.attested.qualified_name == b"\x00\x0b" + b"\x02" * 32


def test_rsa_signature_marshals_like_tpm2_pytss() -> None:
    ak = FakeAk.rsa()
    signature = ak.sign(b"message")
    parsed = parse_signature(signature)
    assert isinstance(parsed, RsaSignature)
    theirs, _ = tt.TPMT_SIGNATURE.unmarshal(signature)
    assert parsed.sig == bytes(theirs.signature.rsassa.sig)
    assert parsed.marshal() == bytes(theirs.marshal())


@pytest.mark.parametrize("parser", [parse_attest, parse_signature, parse_tpm2b_public])
def test_every_truncation_is_a_typed_error_with_offset(parser: object) -> None:
    ak = FakeAk.ecc()
    attest, signature = ak.quote(b"nonce", PCRS)
    blob = {parse_attest: attest, parse_signature: signature,
            parse_tpm2b_public: ak.public.tpm2b}[parser]  # type: ignore[index]
    for cut in range(len(blob)):
        with pytest.raises(TpmFormatError) as info:
            parser(blob[:cut])  # type: ignore[operator]
        assert info.value.offset is not None
    with pytest.raises(TpmFormatError, match=r"trailing|follow"):
        parser(blob + b"\x00")  # type: ignore[operator]


def test_oversized_fields_are_refused_before_allocation() -> None:
    huge_signer = b"\xff\x54\x43\x47\x80\x18\xff\xff"
    with pytest.raises(TpmFormatError, match="exceed"):
        parse_attest(huge_signer)
    with pytest.raises(TpmFormatError, match="exceed"):
        parse_attest(bytes(5000))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_parsers_raise_only_typed_errors(data: bytes) -> None:
    for parser in (parse_attest, parse_signature, parse_public):
        try:
            parsed = parser(data)
        except TpmFormatError:
            continue
        if parser is parse_public:
            try:
                _ = parsed.public_key  # type: ignore[union-attr]
                _ = parsed.name  # type: ignore[union-attr]
            except TpmFormatError:
                pass


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_real_structures_raise_only_typed_errors(data: st.DataObject) -> None:
    ak = _AK
    attest, signature = ak.quote(b"nonce", PCRS)
    for blob, parser in ((attest, parse_attest), (signature, parse_signature),
                         (ak.public.tpm2b, parse_public)):
        position = data.draw(st.integers(0, len(blob) - 1))
        replacement = data.draw(st.binary(min_size=0, max_size=4))
        mutated = blob[:position] + replacement + blob[position + 1:]
        with contextlib.suppress(TpmFormatError):
            parser(mutated)


_AK = FakeAk.ecc()


def test_an_aes_key_size_no_tpm_has_is_a_format_error() -> None:
    """An EK claiming AES-384 would otherwise reach MakeCredential's cipher (found by fuzzing
    enrollment): TPMI_AES_KEY_BITS allows 128, 192 and 256 only."""
    good = ek_public_bytes(rsa.generate_private_key(65537, 2048).public_key())
    key_bits = 2 + 2 + 4 + 2 + 32 + 2  # type, nameAlg, attributes, authPolicy, symmetric alg
    bad = good[:key_bits] + (384).to_bytes(2, "big") + good[key_bits + 2:]
    with pytest.raises(TpmFormatError, match="AES keyBits 384"):
        parse_tpmt_public(bad)


def test_an_rsa_key_whose_exponent_no_tpm_holds_is_a_format_error() -> None:
    modulus = rsa.generate_private_key(65537, 2048).public_key().public_numbers().n
    huge = rsa.RSAPublicNumbers(2**33 + 1, modulus).public_key()
    with pytest.raises(TpmFormatError, match="32 bits"):
        public_from_key(huge)
    assert public_from_key(rsa.RSAPublicNumbers(3, modulus).public_key()).public_key \
        == rsa.RSAPublicNumbers(3, modulus).public_key()

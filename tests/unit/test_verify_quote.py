"""verify_quote: each check, in order, with a distinct error; and the happy paths."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.fake_tpm import FakeAk
from trustauthority import errors
from trustauthority.tpm import Alg, PcrSelection, St
from trustauthority.tpm.attest import ClockInfo
from trustauthority.verify.quote import QuoteOptions, VerifiedQuote, verify_quote

PCRS = {"sha256": {i: hashlib.sha256(bytes([i])).digest() for i in range(8)}}


def _new_ak(kind: str) -> FakeAk:
    if kind == "ecc":
        return FakeAk.ecc()
    if kind == "rsa":
        return FakeAk.rsa()
    return FakeAk.rsa(scheme=Alg.RSAPSS)


@pytest.fixture(scope="module", params=["ecc", "rsa", "rsapss"])
def ak_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def ak(ak_kind: str) -> FakeAk:
    return _new_ak(ak_kind)


def _verify(ak: FakeAk, attest: bytes, signature: bytes, nonce: bytes,
            values: dict[str, dict[int, bytes]] | None = None, **kwargs: object) -> VerifiedQuote:
    return verify_quote(ak=ak.public, raw_attest=attest, raw_signature=signature,
                        expected_nonce=nonce, unverified_pcr_values=values or PCRS,
                        **kwargs)  # type: ignore[arg-type]


def test_valid_quote_verifies(ak: FakeAk) -> None:
    nonce = os.urandom(32)
    attest, signature = ak.quote(nonce, PCRS)
    result = _verify(ak, attest, signature, nonce, expected_qualified_signer=ak.qualified_name)
    assert result.pcr_values["sha256"][7] == PCRS["sha256"][7]
    assert result.pcr_selection.as_dict() == {"sha256": frozenset(range(8))}
    assert result.rebooted is None
    with pytest.raises(TypeError):
        result.pcr_values["sha256"][7] = b"x"  # type: ignore[index]


def test_verified_quote_cannot_be_built_outside_the_verifier(ak: FakeAk) -> None:
    nonce = os.urandom(32)
    result = _verify(ak, *ak.quote(nonce, PCRS), nonce)
    with pytest.raises(TypeError, match="only by verify_quote"):
        VerifiedQuote(result.attest, result.pcr_selection, result.pcr_values,
                      result.clock_info, None, object())


def test_wrong_nonce_is_a_replay(ak: FakeAk) -> None:
    attest, signature = ak.quote(b"n" * 32, PCRS)
    with pytest.raises(errors.NonceMismatch):
        _verify(ak, attest, signature, b"m" * 32)


def test_bad_magic(ak: FakeAk) -> None:
    selection = PcrSelection.of({"sha256": range(8)})
    attest = ak.attest_bytes(b"n", selection, PCRS, magic=0xFF544348)
    with pytest.raises(errors.BadMagic):
        _verify(ak, attest, ak.sign(attest), b"n")


def test_certify_structure_is_not_a_quote(ak: FakeAk) -> None:
    selection = PcrSelection.of({"sha256": range(8)})
    attest = ak.attest_bytes(b"n", selection, PCRS, attest_type=St.ATTEST_TIME)
    with pytest.raises(errors.WrongAttestationType):
        _verify(ak, attest, ak.sign(attest), b"n")


def test_another_aks_signature_is_refused(ak: FakeAk, ak_kind: str) -> None:
    other = _new_ak(ak_kind)
    nonce = b"n" * 16
    attest, _ = ak.quote(nonce, PCRS)
    with pytest.raises(errors.SignatureInvalid):
        _verify(ak, attest, other.sign(attest), nonce)


def test_qualified_signer_must_match_when_given(ak: FakeAk) -> None:
    nonce = b"n" * 16
    attest, signature = ak.quote(nonce, PCRS)
    with pytest.raises(errors.SignatureInvalid, match="qualifiedSigner"):
        _verify(ak, attest, signature, nonce, expected_qualified_signer=b"\x00\x0b" + bytes(32))


def test_every_flipped_bit_in_attest_or_signature_is_refused() -> None:
    ak = FakeAk.ecc()
    nonce = b"n" * 32
    attest, signature = ak.quote(nonce, PCRS)
    for blob_index, blob in enumerate((attest, signature)):
        for bit in range(len(blob) * 8):
            mutated = bytearray(blob)
            mutated[bit // 8] ^= 1 << (bit % 8)
            pair = (bytes(mutated), signature) if blob_index == 0 else (attest, bytes(mutated))
            with pytest.raises(errors.EvidenceError):
                _verify(ak, pair[0], pair[1], nonce)


def test_changed_pcr_value_is_refused(ak: FakeAk) -> None:
    nonce = b"n" * 32
    attest, signature = ak.quote(nonce, PCRS)
    tampered = {"sha256": dict(PCRS["sha256"])}
    tampered["sha256"][4] = hashlib.sha256(b"evil kernel").digest()
    with pytest.raises(errors.PcrDigestMismatch):
        _verify(ak, attest, signature, nonce, tampered)


def test_relabelled_pcr_selection_is_refused() -> None:
    """Values for PCR 7 offered as PCR 8: same bytes, same digest, wrong meaning."""
    ak = FakeAk.ecc()
    nonce = b"n" * 32
    signed = {"sha256": {0: b"\x00" * 32, 7: b"\x07" * 32}}
    attest, signature = ak.quote(nonce, signed)
    relabelled = {"sha256": {0: b"\x00" * 32, 8: b"\x07" * 32}}
    with pytest.raises(errors.PcrSelectionMismatch, match="signed PCRs"):
        _verify(ak, attest, signature, nonce, relabelled)


def test_one_pcr_and_two_banks_verify_and_keep_the_tpms_bank_order() -> None:
    ak = FakeAk.ecc()
    nonce = b"n" * 32
    one = {"sha256": {7: b"\x07" * 32}}
    assert _verify(ak, *ak.quote(nonce, one), nonce, one).pcr_values == one
    two = {"sha384": {0: b"\x01" * 48, 2: b"\x02" * 48}, "sha256": {1: b"\x03" * 32}}
    result = _verify(ak, *ak.quote(nonce, two), nonce, dict(reversed(two.items())))
    assert [bank.bank for bank in result.pcr_selection.banks] == ["sha384", "sha256"]
    assert result.pcr_values == two


def test_verified_values_are_a_copy_the_caller_cannot_change() -> None:
    ak = FakeAk.ecc()
    nonce = b"n" * 32
    values = {"sha256": dict(PCRS["sha256"])}
    result = _verify(ak, *ak.quote(nonce, values), nonce, values)
    values["sha256"][0] = b"\xff" * 32
    values["sha1"] = {0: bytes(20)}
    assert result.pcr_values["sha256"][0] == PCRS["sha256"][0]
    assert set(result.pcr_values) == {"sha256"}


_SEVEN: dict[object, bytes] = {i: PCRS["sha256"][i] for i in range(7)}


@pytest.mark.parametrize("supplied", [
    _SEVEN,  # one missing
    {**PCRS["sha256"], 8: bytes(32)},  # one too many
    {**_SEVEN, "7": PCRS["sha256"][7]},  # a key that is text
    {},
])
def test_other_pcrs_than_the_signed_ones_are_refused_by_name(supplied: dict[int, bytes]) -> None:
    ak = FakeAk.ecc()
    nonce = b"n" * 32
    attest, signature = ak.quote(nonce, PCRS)
    with pytest.raises(errors.PcrSelectionMismatch, match=r"signed PCRs \{0,1,2,3,4,5,6,7\}"):
        _verify(ak, attest, signature, nonce, {"sha256": supplied})


def test_a_missing_bank_is_refused() -> None:
    ak = FakeAk.ecc()
    nonce = b"n" * 32
    attest, signature = ak.quote(nonce, PCRS)
    with pytest.raises(errors.PcrSelectionMismatch, match=r"supplied for \{\}"):
        _verify(ak, attest, signature, nonce, {"sha384": {0: bytes(48)}})


def test_values_for_an_unquoted_bank_are_refused() -> None:
    ak = FakeAk.ecc()
    nonce = b"n" * 32
    attest, signature = ak.quote(nonce, PCRS)
    extra = {**PCRS, "sha384": {0: bytes(48)}}
    with pytest.raises(errors.PcrSelectionMismatch, match="did not quote"):
        _verify(ak, attest, signature, nonce, extra)


def test_wrong_length_pcr_value_is_refused() -> None:
    ak = FakeAk.ecc()
    nonce = b"n" * 32
    attest, signature = ak.quote(nonce, PCRS)
    short = {"sha256": {**PCRS["sha256"], 3: b"\x01" * 20}}
    with pytest.raises(errors.PcrSelectionMismatch, match="32 bytes"):
        _verify(ak, attest, signature, nonce, short)


def test_sha1_signature_refused_by_default_and_allowed_on_request() -> None:
    ak = FakeAk.ecc(hash_alg=Alg.SHA1)
    nonce = b"n" * 20
    attest, signature = ak.quote(nonce, PCRS)
    with pytest.raises(errors.AlgorithmNotAllowed, match="SHA-1"):
        _verify(ak, attest, signature, nonce)
    assert _verify(ak, attest, signature, nonce, options=QuoteOptions(allow_sha1=True))


def test_sha1_only_pcr_bank_refused_by_default() -> None:
    ak = FakeAk.ecc()
    nonce = b"n" * 20
    values = {"sha1": {0: b"\x00" * 20}}
    attest, signature = ak.quote(nonce, values)
    with pytest.raises(errors.AlgorithmNotAllowed, match="SHA-1 PCR bank"):
        _verify(ak, attest, signature, nonce, values)
    _verify(ak, attest, signature, nonce, values, options=QuoteOptions(allow_sha1=True))


def test_signature_scheme_must_match_the_aks_fixed_scheme() -> None:
    ak = FakeAk.rsa(scheme=Alg.RSASSA)
    nonce = b"n" * 20
    attest, _ = ak.quote(nonce, PCRS)
    ak.scheme = Alg.RSAPSS
    with pytest.raises(errors.AlgorithmNotAllowed, match="fixed to"):
        _verify(ak, attest, ak.sign(attest), nonce)


def test_clock_progression_and_reboot_detection() -> None:
    ak = FakeAk.ecc()
    nonce = b"n" * 20
    first = _verify(ak, *ak.quote(nonce, PCRS), nonce)
    ak.clock += 5000
    second = _verify(ak, *ak.quote(nonce, PCRS), nonce, previous_clock=first.clock_info)
    assert second.rebooted is False
    ak.reset_count += 1
    ak.clock = 10
    third = _verify(ak, *ak.quote(nonce, PCRS), nonce, previous_clock=second.clock_info)
    assert third.rebooted is True


@pytest.mark.parametrize(("previous", "why"), [
    (ClockInfo(1000, 2, 0, True), "resetCount went back"),
    (ClockInfo(1000, 1, 3, True), "restartCount went back"),
    (ClockInfo(99999, 1, 0, True), "clock went back"),
])
def test_clock_regression_is_refused(previous: ClockInfo, why: str) -> None:
    ak = FakeAk.ecc()
    nonce = b"n" * 20
    with pytest.raises(errors.ClockRegression, match=why):
        _verify(ak, *ak.quote(nonce, PCRS), nonce, previous_clock=previous)


_GARBAGE_AK = FakeAk.ecc()


@settings(max_examples=200, deadline=None)
@given(attest=st.binary(max_size=300), signature=st.binary(max_size=300))
def test_garbage_is_a_typed_error(attest: bytes, signature: bytes) -> None:
    ak = _GARBAGE_AK
    with pytest.raises(errors.EvidenceError):
        _verify(ak, attest, signature, b"n")

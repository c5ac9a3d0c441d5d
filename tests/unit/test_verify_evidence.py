"""verify_evidence: the log is believed only where it replays to the quoted PCRs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.support.fake_tpm import FakeAk
from trustauthority import errors
from trustauthority.eventlog import (
    EventSpec,
    EventType,
    build_crypto_agile_log,
    ipl_string,
    parse_event_log,
    replay,
)
from trustauthority.verify import (
    PcrReplayMismatch,
    VerifiedEvidence,
    VerifiedQuote,
    verify_evidence,
    verify_quote,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "eventlogs"
EVENTS = [EventSpec(0, EventType.EV_S_CRTM_VERSION, b"1\x00"),
          EventSpec(8, EventType.EV_IPL, ipl_string("grub_cmd: linux /vmlinuz")),
          EventSpec(9, EventType.EV_IPL, ipl_string("/vmlinuz"), measured=b"kernel"),
          EventSpec(9, EventType.EV_IPL, ipl_string("/initrd"), measured=b"initrd")]
AK = FakeAk.ecc()


def _quote(values: dict[str, dict[int, bytes]]) -> VerifiedQuote:
    attest, signature = AK.quote(b"nonce", values)
    return verify_quote(ak=AK.public, raw_attest=attest, raw_signature=signature,
                        expected_nonce=b"nonce", unverified_pcr_values=values)


def test_log_matching_the_quote_verifies_and_names_confirmed_pcrs() -> None:
    log = parse_event_log(build_crypto_agile_log(EVENTS))
    values = {"sha256": {**replay(log)["sha256"], 14: bytes(32)}}
    evidence = verify_evidence(_quote(values), log)
    assert evidence.confirmed_pcrs == {0, 8, 9}
    assert evidence.unlogged_pcrs == {14}
    assert [e.pcr for e in evidence.verified_events] == [0, 8, 9, 9]


def test_events_of_unquoted_pcrs_are_not_offered_as_verified() -> None:
    log = parse_event_log(build_crypto_agile_log(EVENTS))
    values = {"sha256": {9: replay(log)["sha256"][9]}}
    evidence = verify_evidence(_quote(values), log)
    assert {e.pcr for e in evidence.verified_events} == {9}


def test_startup_locality_sets_pcr0_start() -> None:
    log = parse_event_log(build_crypto_agile_log(EVENTS, startup_locality=3))
    start = (3).to_bytes(32, "big")
    expected = hashlib.sha256(start + hashlib.sha256(b"1\x00").digest()).digest()
    assert replay(log)["sha256"][0] == expected
    assert verify_evidence(_quote({"sha256": {0: expected}}), log).confirmed_pcrs == {0}
    zero_start = hashlib.sha256(bytes(32) + hashlib.sha256(b"1\x00").digest()).digest()
    with pytest.raises(PcrReplayMismatch):
        verify_evidence(_quote({"sha256": {0: zero_start}}), log)


def test_multi_bank_quote_checks_every_bank() -> None:
    log = parse_event_log(build_crypto_agile_log(EVENTS, banks=("sha256", "sha384")))
    replayed = replay(log)
    good = {"sha256": replayed["sha256"], "sha384": replayed["sha384"]}
    assert verify_evidence(_quote(good), log).confirmed_pcrs == {0, 8, 9}
    bad = {"sha256": replayed["sha256"], "sha384": {**replayed["sha384"], 8: bytes(48)}}
    with pytest.raises(PcrReplayMismatch) as info:
        verify_evidence(_quote(bad), log)
    assert (info.value.bank, info.value.pcr) == ("sha384", 8)


def test_quote_bank_missing_from_log_is_refused() -> None:
    raw = (SHARED / "uefi-sha1-log.bin").read_bytes()
    log = parse_event_log(raw)
    with pytest.raises(errors.EventLogMismatch, match="records only sha1"):
        verify_evidence(_quote({"sha256": {0: bytes(32)}}), log)


def test_extra_events_at_the_end_are_named() -> None:
    log = parse_event_log(build_crypto_agile_log(EVENTS))
    quoted = replay(parse_event_log(build_crypto_agile_log(EVENTS[:3])))["sha256"]
    with pytest.raises(PcrReplayMismatch) as info:
        verify_evidence(_quote({"sha256": quoted}), log)
    assert info.value.pcr == 9
    assert info.value.first_unmeasured_event is not None
    assert info.value.first_unmeasured_event.describe() == "/initrd"


def test_log_the_tpm_never_saw_names_its_first_event() -> None:
    log = parse_event_log(build_crypto_agile_log(EVENTS))
    with pytest.raises(PcrReplayMismatch, match="measured none"):
        verify_evidence(_quote({"sha256": {8: bytes(32)}}), log)


def test_verified_evidence_cannot_be_forged() -> None:
    log = parse_event_log(build_crypto_agile_log(EVENTS))
    quote = _quote({"sha256": replay(log)["sha256"]})
    with pytest.raises(TypeError):
        VerifiedEvidence(quote, log, frozenset({0}), frozenset(), object())

"""The evidence core against real software TPMs: quotes, event logs and credentials from swtpm
checked by the pure verifier, and every tampering refused."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from tests.conftest import SwtpmFactory
from trustauthority import errors
from trustauthority.agent import simboot
from trustauthority.agent.swtpm import SoftwareTpm, SoftwareTpmCa
from trustauthority.agent.tpm import AgentTpm, AkHandleInfo
from trustauthority.eventlog import EventLog, parse_event_log
from trustauthority.tpm import (
    TPM_RH_ENDORSEMENT,
    TpmPublic,
    hierarchy_qualified_name,
    make_credential,
    parse_tpm2b_public,
)
from trustauthority.verify import (
    PcrReplayMismatch,
    VerifiedQuote,
    verify_evidence,
    verify_quote,
)
from trustauthority.verify.ekcert import (
    check_ak_attributes,
    ek_matches_certificate,
    load_certificate,
    verify_ek_certificate,
)

pytestmark = pytest.mark.swtpm
PCRS = tuple(range(10))


@dataclass
class BootedHost:
    tpm: SoftwareTpm
    agent: AgentTpm
    ak_info: AkHandleInfo
    ak: TpmPublic
    raw_log: bytes
    log: EventLog


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory,
         swtpm_ca: SoftwareTpmCa) -> Iterator[BootedHost]:
    """One software TPM booted with the golden image, with an ECC AK under the RSA EK."""
    tpm = SoftwareTpm(tmp_path_factory.mktemp("host"), swtpm_ca)
    with tpm, AgentTpm(tpm.tcti) as agent:
        _events, raw_log = simboot.measure(agent)
        ak_info = agent.create_ak("ecc", ek_kind="rsa")
        yield BootedHost(tpm, agent, ak_info, parse_tpm2b_public(ak_info.public), raw_log,
                         parse_event_log(raw_log))


def _verify(host: BootedHost, attest: bytes, signature: bytes, nonce: bytes,
            values: dict[int, bytes]) -> VerifiedQuote:
    return verify_quote(ak=host.ak, raw_attest=attest, raw_signature=signature,
                        expected_nonce=nonce, unverified_pcr_values={"sha256": values})


@pytest.mark.parametrize(("ak_kind", "ek_kind"), [("ecc", "rsa"), ("rsa", "rsa"),
                                                  ("ecc", "ecc"), ("rsa", "ecc")])
def test_quote_and_log_from_swtpm_verify(swtpm_factory: SwtpmFactory, ak_kind: str,
                                         ek_kind: str) -> None:
    tpm = swtpm_factory()
    with AgentTpm(tpm.tcti) as agent:
        events, raw_log = simboot.measure(agent)
        ak_info = agent.create_ak(ak_kind, ek_kind=ek_kind)  # type: ignore[arg-type]
        ak = parse_tpm2b_public(ak_info.public)
        check_ak_attributes(ak)
        ek = parse_tpm2b_public(agent.ek_public(ek_kind))  # type: ignore[arg-type]
        qualified = ak.qualified_name(ek.qualified_name(
            hierarchy_qualified_name(TPM_RH_ENDORSEMENT)))
        nonce = os.urandom(32)
        quote = agent.quote(ak_info, nonce, PCRS)
    verified = verify_quote(ak=ak, raw_attest=quote.attest, raw_signature=quote.signature,
                            expected_nonce=nonce,
                            unverified_pcr_values={"sha256": quote.pcr_values},
                            expected_qualified_signer=qualified)
    evidence = verify_evidence(verified, parse_event_log(raw_log))
    assert evidence.confirmed_pcrs == frozenset(PCRS)
    assert len(evidence.verified_events) == len(events)


@pytest.mark.parametrize("ek_kind", ["rsa", "ecc"])
def test_our_make_credential_is_activated_by_the_tpm(swtpm_factory: SwtpmFactory,
                                                     ek_kind: str) -> None:
    tpm = swtpm_factory()
    with AgentTpm(tpm.tcti) as agent:
        ek = parse_tpm2b_public(agent.ek_public(ek_kind))  # type: ignore[arg-type]
        ak_info = agent.create_ak("ecc", ek_kind=ek_kind)  # type: ignore[arg-type]
        ak = parse_tpm2b_public(ak_info.public)
        assert ak.name == ak_info.name
        secret = os.urandom(32)
        credential = make_credential(ek, ak.name, secret)
        assert agent.activate_credential(ak_info, credential.credential_blob,
                                         credential.encrypted_secret) == secret
        # bound to this AK's Name: a credential made for another object is refused by the TPM
        wrong = make_credential(ek, b"\x00\x0b" + os.urandom(32), secret)
        with pytest.raises(errors.TrustAuthorityError):
            agent.activate_credential(ak_info, wrong.credential_blob, wrong.encrypted_secret)


@pytest.mark.parametrize("ek_kind", ["rsa", "ecc"])
def test_ek_certificate_chains_to_the_swtpm_ca(swtpm_factory: SwtpmFactory,
                                               ek_kind: str) -> None:
    tpm = swtpm_factory()
    with AgentTpm(tpm.tcti) as agent:
        raw = agent.ek_certificate(ek_kind)  # type: ignore[arg-type]
        ek = parse_tpm2b_public(agent.ek_public(ek_kind))  # type: ignore[arg-type]
    assert raw is not None
    certificate = load_certificate(raw)
    cas = [load_certificate(pem) for pem in tpm.ca.certificates()]
    chain = verify_ek_certificate(certificate, cas, at=datetime.now(UTC))
    assert chain[0] == certificate
    ek_matches_certificate(ek, certificate)
    root_only = [ca for ca in cas if ca.subject == ca.issuer]
    intermediates = [ca for ca in cas if ca.subject != ca.issuer]
    assert len(verify_ek_certificate(certificate, root_only, at=datetime.now(UTC),
                                     intermediates=intermediates)) == 3
    with pytest.raises(errors.CertificateError, match="neither a trusted"):
        verify_ek_certificate(certificate, root_only, at=datetime.now(UTC))
    with pytest.raises(errors.CertificateError, match=r"expired|not valid before"):
        verify_ek_certificate(certificate, cas, at=datetime(1990, 1, 1, tzinfo=UTC))


def test_wrong_nonce(host: BootedHost) -> None:
    quote = host.agent.quote(host.ak_info, b"a" * 32, PCRS)
    with pytest.raises(errors.NonceMismatch):
        _verify(host, quote.attest, quote.signature, b"b" * 32, quote.pcr_values)


def test_flipped_bits_in_real_attest_and_signature(host: BootedHost) -> None:
    nonce = os.urandom(32)
    quote = host.agent.quote(host.ak_info, nonce, PCRS)
    for blob_index, blob in enumerate((quote.attest, quote.signature)):
        for byte in range(len(blob)):
            mutated = bytearray(blob)
            mutated[byte] ^= 0x10
            attest, signature = ((bytes(mutated), quote.signature) if blob_index == 0
                                 else (quote.attest, bytes(mutated)))
            with pytest.raises(errors.EvidenceError):
                _verify(host, attest, signature, nonce, quote.pcr_values)


def test_changed_pcr_value(host: BootedHost) -> None:
    nonce = os.urandom(32)
    quote = host.agent.quote(host.ak_info, nonce, PCRS)
    values = dict(quote.pcr_values)
    values[4] = bytes(32)
    with pytest.raises(errors.PcrDigestMismatch):
        _verify(host, quote.attest, quote.signature, nonce, values)


def test_relabelled_pcr_selection(host: BootedHost) -> None:
    nonce = os.urandom(32)
    quote = host.agent.quote(host.ak_info, nonce, PCRS)
    values = dict(quote.pcr_values)
    values[15] = values.pop(9)
    with pytest.raises(errors.PcrSelectionMismatch):
        _verify(host, quote.attest, quote.signature, nonce, values)


def test_another_tpms_ak(host: BootedHost, swtpm_factory: SwtpmFactory) -> None:
    other = swtpm_factory()
    with AgentTpm(other.tcti) as agent:
        other_ak = parse_tpm2b_public(agent.create_ak("ecc").public)
    nonce = os.urandom(32)
    quote = host.agent.quote(host.ak_info, nonce, PCRS)
    with pytest.raises(errors.SignatureInvalid):
        verify_quote(ak=other_ak, raw_attest=quote.attest, raw_signature=quote.signature,
                     expected_nonce=nonce, unverified_pcr_values={"sha256": quote.pcr_values})


def test_sha1_only_evidence_is_refused(host: BootedHost) -> None:
    nonce = os.urandom(32)
    quote = host.agent.quote(host.ak_info, nonce, PCRS, bank="sha1")
    with pytest.raises(errors.AlgorithmNotAllowed, match="SHA-1"):
        verify_quote(ak=host.ak, raw_attest=quote.attest, raw_signature=quote.signature,
                     expected_nonce=nonce, unverified_pcr_values={"sha1": quote.pcr_values})


def _events_cut(raw_log: bytes, log: EventLog, keep: list[int]) -> bytes:
    """Rebuild a log from the byte ranges of the chosen events (header always kept)."""
    bounds = [event.offset for event in log.events] + [len(raw_log)]
    pieces = {event.index: raw_log[bounds[i]:bounds[i + 1]] for i, event in enumerate(log.events)}
    return b"".join(pieces[index] for index in keep)


@pytest.mark.parametrize("tamper", ["remove", "reorder", "alter"])
def test_tampered_event_log_is_refused(host: BootedHost, tamper: str) -> None:
    nonce = os.urandom(32)
    quote = host.agent.quote(host.ak_info, nonce, PCRS)
    verified = _verify(host, quote.attest, quote.signature, nonce, quote.pcr_values)
    indices = [event.index for event in host.log.events]
    kernel = next(e.index for e in host.log.events if e.pcr == 9)
    if tamper == "remove":
        raw = _events_cut(host.raw_log, host.log, [i for i in indices if i != kernel])
    elif tamper == "reorder":
        initrd = max(e.index for e in host.log.events if e.pcr == 9)
        swapped = [initrd if i == kernel else kernel if i == initrd else i for i in indices]
        raw = _events_cut(host.raw_log, host.log, swapped)
    else:
        event = host.log.events[kernel]
        digest_at = host.raw_log.index(event.digests["sha256"], event.offset)
        raw = host.raw_log[:digest_at] + bytes(32) + host.raw_log[digest_at + 32:]
    with pytest.raises(PcrReplayMismatch) as info:
        verify_evidence(verified, parse_event_log(raw))
    assert info.value.pcr == 9


def test_extra_logged_event_is_named(host: BootedHost) -> None:
    nonce = os.urandom(32)
    quote = host.agent.quote(host.ak_info, nonce, PCRS)
    verified = _verify(host, quote.attest, quote.signature, nonce, quote.pcr_values)
    events, _ = simboot.boot_log()
    from trustauthority.eventlog import EventSpec, EventType, build_crypto_agile_log, ipl_string
    longer = build_crypto_agile_log(
        [*events, EventSpec(8, EventType.EV_IPL, ipl_string("grub_cmd: boot"))])
    with pytest.raises(PcrReplayMismatch) as info:
        verify_evidence(verified, parse_event_log(longer))
    assert info.value.first_unmeasured_event is not None
    assert info.value.first_unmeasured_event.describe() == "grub_cmd: boot"


def test_reboot_is_detected_and_pcrs_reset(swtpm_factory: SwtpmFactory) -> None:
    tpm = swtpm_factory()
    with AgentTpm(tpm.tcti) as agent:
        ak_info = agent.create_ak("ecc")
        ak = parse_tpm2b_public(ak_info.public)
        agent.pcr_extend(9, {"sha256": bytes(32), "sha1": bytes(20)})
        first = agent.quote(ak_info, b"1", (9,))
        before = verify_quote(ak=ak, raw_attest=first.attest, raw_signature=first.signature,
                              expected_nonce=b"1",
                              unverified_pcr_values={"sha256": first.pcr_values})
        tpm.reboot()
        second = agent.quote(ak_info, b"2", (9,))
    after = verify_quote(ak=ak, raw_attest=second.attest, raw_signature=second.signature,
                         expected_nonce=b"2", unverified_pcr_values={"sha256": second.pcr_values},
                         previous_clock=before.clock_info)
    assert after.rebooted is True
    assert after.pcr_values["sha256"][9] == bytes(32)
    with pytest.raises(errors.ClockRegression):
        verify_quote(ak=ak, raw_attest=first.attest, raw_signature=first.signature,
                     expected_nonce=b"1", unverified_pcr_values={"sha256": first.pcr_values},
                     previous_clock=after.clock_info)

"""The evidence walk-through (`ta demo --evidence-only`): one software TPM, no service.

A TPM with an EK certificate from a TPM CA, an AK proven to live beside that EK, a measured
boot, a quote checked with its event log, and the attacks the verifier refuses — the checks the
service makes on every attestation, shown one by one. Every step asserts its outcome.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from trustauthority.agent import simboot
from trustauthority.agent.swtpm import SoftwareTpm
from trustauthority.agent.tpm import AgentTpm
from trustauthority.cli.demo_steps import DemoFailure, expect_refusal, ok, step
from trustauthority.cli.output import PlainTable, console, styled
from trustauthority.errors import EvidenceError
from trustauthority.eventlog import parse_event_log, replay
from trustauthority.tpm import TPM_RH_ENDORSEMENT, hierarchy_qualified_name, make_credential
from trustauthority.tpm.public import parse_tpm2b_public
from trustauthority.verify import (
    VerifiedEvidence,
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

#: the PCRs a boot policy looks at: firmware, boot config, boot manager, Secure Boot, GRUB
QUOTED_PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
_REAL_LOG = Path("../shared/testdata/eventlogs/arch-linux.bin")


def run_evidence_demo(tpm: SoftwareTpm) -> None:
    with step("1. A host's TPM, with an EK certificate from its manufacturer's CA"):
        with console.status("provisioning a software TPM (EK certificates from a local TPM CA)"):
            tpm.provision()
            tpm.start()
        trusted_cas = [load_certificate(pem) for pem in tpm.ca.certificates()]
        ok(f"software TPM running ({tpm.tcti})")

    with AgentTpm(tpm.tcti) as agent:
        raw_cert = agent.ek_certificate("rsa")
        if raw_cert is None:
            raise DemoFailure("the TPM has no RSA EK certificate")
        ek_cert = load_certificate(raw_cert)
        chain = verify_ek_certificate(ek_cert, trusted_cas, at=datetime.now(UTC))
        ek = parse_tpm2b_public(agent.ek_public("rsa"))
        ek_matches_certificate(ek, ek_cert)
        ok("EK certificate chains to the trusted TPM CA: EK → "
            + " → ".join(_cn(cert) for cert in chain[1:]))
        ok("the EK in the TPM is the key its certificate certifies")
        expect_refusal("the same certificate against an unrelated CA list", EvidenceError,
                        lambda: verify_ek_certificate(ek_cert, [], at=datetime.now(UTC)))

        with step("2. An attestation key, proven to live in the same TPM (MakeCredential)"):
            ak_info = agent.create_ak("ecc", ek_kind="rsa")
            ak = parse_tpm2b_public(ak_info.public)
            check_ak_attributes(ak)
            ok("AK is an ECC P-256 restricted signing key, fixedTPM, fixedParent")
            secret = os.urandom(32)
            credential = make_credential(ek, ak.name, secret)
            if agent.activate_credential(ak_info, credential.credential_blob,
                                         credential.encrypted_secret) != secret:
                raise DemoFailure("ActivateCredential returned another secret")
            ok("the TPM decrypted our MakeCredential challenge: the AK sits beside the EK")
            ek_qualified = ek.qualified_name(hierarchy_qualified_name(TPM_RH_ENDORSEMENT))
            ak_qualified = ak.qualified_name(ek_qualified)

        with step("3. Measured boot: firmware, Secure Boot, shim, GRUB, kernel, initrd"):
            _events, raw_log = simboot.measure(agent, simboot.GOLDEN_IMAGE)
            log = parse_event_log(raw_log)
            ok(f"{len(log.events)} events measured into PCRs 0-9 and written to the event log")

        with step("4. Challenge and quote: the verifier checks everything"):
            nonce = os.urandom(32)
            quote = agent.quote(ak_info, nonce, QUOTED_PCRS)
            values = {"sha256": quote.pcr_values}
            verified = verify_quote(ak=ak, raw_attest=quote.attest,
                                    raw_signature=quote.signature, expected_nonce=nonce,
                                    unverified_pcr_values=values,
                                    expected_qualified_signer=ak_qualified)
            evidence = verify_evidence(verified, log)
            ok("quote: TPM-generated, signed by the enrolled AK, fresh nonce, PCR selection "
                "and digest match")
            ok(f"event log replays to the quoted PCRs {sorted(evidence.confirmed_pcrs)}")
            _show_evidence(evidence)

        with step("5. Attacks the verifier refuses"):
            expect_refusal("a replayed quote (an old nonce)", EvidenceError, lambda: verify_quote(
                ak=ak, raw_attest=quote.attest, raw_signature=quote.signature,
                expected_nonce=os.urandom(32), unverified_pcr_values=values))
            relabelled = dict(quote.pcr_values)
            relabelled[10] = relabelled.pop(9)
            expect_refusal("PCR values relabelled (PCR 9's value offered as PCR 10)",
                            EvidenceError, lambda: verify_quote(
                                ak=ak, raw_attest=quote.attest, raw_signature=quote.signature,
                                expected_nonce=nonce, unverified_pcr_values={"sha256": relabelled}))
            flipped = bytearray(quote.attest)
            flipped[-40] ^= 1
            expect_refusal("one bit flipped in the signed attestation", EvidenceError,
                            lambda: verify_quote(
                                ak=ak, raw_attest=bytes(flipped), raw_signature=quote.signature,
                                expected_nonce=nonce, unverified_pcr_values=values))
            other_ak = parse_tpm2b_public(agent.create_ak("ecc", ek_kind="rsa").public)
            expect_refusal("the quote checked against another AK", EvidenceError,
                            lambda: verify_quote(
                                ak=other_ak, raw_attest=quote.attest,
                                raw_signature=quote.signature, expected_nonce=nonce,
                                unverified_pcr_values=values))
            trimmed = parse_event_log(raw_log[: log.events[-1].offset])
            expect_refusal("an event log with its last event (the kernel) removed",
                            EvidenceError, lambda: verify_evidence(verified, trimmed))

        with step("6. The host reboots into a kernel nobody approved"):
            tpm.reboot()
            _bad_events, bad_log = simboot.measure(agent, simboot.MODIFIED_KERNEL_IMAGE)
            nonce2 = os.urandom(32)
            quote2 = agent.quote(ak_info, nonce2, QUOTED_PCRS)
            verified2 = verify_quote(ak=ak, raw_attest=quote2.attest,
                                     raw_signature=quote2.signature, expected_nonce=nonce2,
                                     unverified_pcr_values={"sha256": quote2.pcr_values},
                                     previous_clock=verified.clock_info)
            if not verified2.rebooted:
                raise DemoFailure("the reboot was not detected")
            ok(f"reboot detected: resetCount {verified.clock_info.reset_count} → "
                f"{verified2.clock_info.reset_count}")
            expect_refusal("the host presents the golden event log for its new boot",
                            EvidenceError, lambda: verify_evidence(verified2, log))
            evidence2 = verify_evidence(verified2, parse_event_log(bad_log))
            ok("its true log verifies, and shows what changed (a policy will refuse it):")
            _show_kernel_difference(evidence, evidence2)

    with step("7. A real firmware event log"):
        _show_real_log()


def _cn(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else certificate.subject.rfc4514_string() or "(TPM)"


def _show_evidence(evidence: VerifiedEvidence) -> None:
    quote: VerifiedQuote = evidence.quote
    table = PlainTable("PCR", "sha256 value", "what the log says was measured", show_lines=False)
    for pcr, value in sorted(quote.pcr_values["sha256"].items()):
        described = [event.describe() for event in evidence.verified_events
                     if event.pcr == pcr and event.type_name != "EV_SEPARATOR"]
        summary = "; ".join(described[:2]) + (" …" if len(described) > 2 else "")
        table.add_row(str(pcr), value.hex()[:16] + "…",
                      summary[:70] or styled("(separator only)", "dim"))
    console.print(table)


def _show_kernel_difference(good: VerifiedEvidence, bad: VerifiedEvidence) -> None:
    good_events = {(e.pcr, e.describe()): e for e in good.verified_events}
    for event in bad.verified_events:
        before = good_events.get((event.pcr, event.describe()))
        if before is not None and before.digests["sha256"] != event.digests["sha256"]:
            console.print(f"    PCR {event.pcr} [bold]{event.describe()}[/]: "
                          f"expected {before.digests['sha256'].hex()[:16]}…, "
                          f"got [red]{event.digests['sha256'].hex()[:16]}…[/]")


def _show_real_log() -> None:
    if not _REAL_LOG.exists():
        console.print("  [dim](no shared test logs beside the project; skipped)[/]")
        return
    log = parse_event_log(_REAL_LOG.read_bytes())
    pcrs = replay(log)
    secure_boot = next((event.describe() for event in log.events
                        if "SecureBoot" in event.describe()), "SecureBoot not measured")
    ok(f"{_REAL_LOG.name}: {len(log.events)} events, banks {', '.join(log.banks)}; "
        f"{secure_boot}")
    ok(f"replayed PCR 7 (sha256) = {pcrs['sha256'][7].hex()[:32]}…  "
        "(`ta eventlog show` lists every event)")

"""Appraisal against baselines: every real log against itself and against other machines, the
simulated golden and modified-kernel boots, unknown events, strict mode, several baselines,
verified evidence and the gate that raises."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.fake_tpm import FakeAk
from trustauthority.agent.simboot import (
    GOLDEN_IMAGE,
    MODIFIED_KERNEL_IMAGE,
    BootImage,
    boot_events,
)
from trustauthority.errors import PolicyViolation, UsageError
from trustauthority.eventlog import (
    EventLog,
    EventSpec,
    EventType,
    build_crypto_agile_log,
    efi_action,
    image_load_event_data,
    ipl_string,
    parse_event_log,
    replay,
)
from trustauthority.eventlog.constants import HASHES
from trustauthority.policy import (
    BANK_CHECK,
    BASELINES_CHECK,
    DEFAULT_PCRS,
    PCR_CHECK,
    AppraisalFailed,
    Baseline,
    ComponentKind,
    Difference,
    Policy,
    appraise,
    appraise_evidence,
    appraise_or_raise,
    baseline_from_event_log,
    diff_baselines,
)
from trustauthority.verify import VerifiedEvidence, verify_evidence, verify_quote
from trustauthority.verify.quote import QuoteOptions

LOG_DIR = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "eventlogs"
LOGS = sorted(LOG_DIR.glob("*.bin"))
AK = FakeAk.ecc()
ALL_PCRS = frozenset(range(24))


def _load(name: str) -> EventLog:
    return parse_event_log((LOG_DIR / f"{name}.bin").read_bytes())


def _bank(log: EventLog) -> str:
    return "sha256" if "sha256" in log.banks else "sha1"


def _baseline(name: str, *, strict: bool = False) -> Baseline:
    log = _load(name)
    return baseline_from_event_log(log, name=name, bank=_bank(log), strict=strict)


def _boot(events: list[EventSpec]) -> EventLog:
    return parse_event_log(build_crypto_agile_log(events))


GOLDEN = _boot(boot_events(GOLDEN_IMAGE))
MODIFIED = _boot(boot_events(MODIFIED_KERNEL_IMAGE))
GOLDEN_BASELINE = baseline_from_event_log(GOLDEN, name="golden", strict=True)


def _evidence(log: EventLog, pcrs: frozenset[int] | None = None, bank: str = "sha256",
              extra: dict[int, bytes] | None = None) -> VerifiedEvidence:
    """Evidence for `log` quoted over `pcrs` (default: every PCR it extends)."""
    replayed = replay(log)[bank]
    values = {pcr: value for pcr, value in replayed.items() if pcrs is None or pcr in pcrs}
    values.update(extra or {})
    attest, signature = AK.quote(b"nonce", {bank: values})
    quote = verify_quote(ak=AK.public, raw_attest=attest, raw_signature=signature,
                         expected_nonce=b"nonce", unverified_pcr_values={bank: values},
                         options=QuoteOptions(allow_sha1=True))
    return verify_evidence(quote, log)


def _only(differences: tuple[Difference, ...], component: str) -> Difference:
    matching = [difference for difference in differences if difference.component == component]
    assert len(matching) == 1, differences
    return matching[0]


# ---------------------------------------------------------------------------------------------
# Every real log against itself


@pytest.mark.parametrize("log_path", LOGS, ids=lambda path: path.stem)
def test_every_real_log_matches_its_own_baseline(log_path: Path) -> None:
    log = parse_event_log(log_path.read_bytes())
    baseline = baseline_from_event_log(log, name=log_path.stem, bank=_bank(log), strict=True)
    # require Secure Boot only where the log shows it on
    policy = Policy(require_secure_boot=baseline.secure_boot is True)
    appraisal = appraise(log, [baseline], policy)
    assert appraisal.trusted, appraisal.summary
    assert appraisal.matched is baseline
    assert appraisal.closest is baseline
    assert appraisal.differences == ()
    assert appraisal.secure_boot is baseline.secure_boot
    # and with every PCR compared, bit for bit
    everything = Policy(require_secure_boot=baseline.secure_boot is True, pcrs=ALL_PCRS,
                        strict=True)
    assert appraise(log, [baseline], everything).trusted


SECURE_BOOT_OFF = [("arch-linux", 3), ("bootorder", 4), ("sd-boot-fedora37", 4),
                   ("ubuntu-2104-no-secure-boot", 3), ("uefi-sha1-log", 1)]


@pytest.mark.parametrize(("name", "event_index"), SECURE_BOOT_OFF)
def test_secure_boot_off_fails_when_required(name: str, event_index: int) -> None:
    log = _load(name)
    appraisal = appraise(log, [_baseline(name)], Policy())
    assert not appraisal.trusted
    difference = _only(appraisal.differences, "secure-boot")
    assert (difference.pcr, difference.expected, difference.found) == (7, "enabled", "disabled")
    assert difference.event_index == event_index
    assert difference.reason == (f"Secure Boot is disabled (event #{event_index} in PCR 7) but "
                                 "the policy requires it")
    assert len(appraisal.differences) == 1  # the boot itself matches
    assert appraisal.closest is not None
    assert appraisal.closest.name == name


@pytest.mark.parametrize("name", ["uefiaction", "uefiservices"])
def test_no_secure_boot_variable_is_not_secure_boot(name: str) -> None:
    appraisal = appraise(_load(name), [_baseline(name)], Policy())
    difference = _only(appraisal.differences, "secure-boot")
    assert difference.found is None
    assert "Secure Boot state is unknown (the log has no SecureBoot variable event in PCR 7)" \
        in difference.reason


# ---------------------------------------------------------------------------------------------
# Another machine's log


CROSS: list[tuple[str, str, str, int, int | None, str]] = [
    # the same GCE firmware (PCR 0 equal); RHEL's shim instead of Ubuntu's
    ("ubuntu-2104-no-secure-boot", "rhel8-uefi", "boot-applications", 4, 23,
     "boot-applications differs at its event 1 of 2: expected 6265b732b005… "
     "(\\EFI\\ubuntu\\shimx64.efi), found 40d6cae02973… (\\EFI\\redhat\\shimx64.efi), "
     "event #23 in PCR 4"),
    # GCE firmware with AMD SEV on: the non-host info byte differs
    ("rhel8-uefi", "cos-85-amd-sev", "platform-firmware", 0, 2,
     "platform-firmware differs at its event 2 of 3: expected 7b74dea34ce9… "
     "(474345204e6f6e486f7374496e666f0000000000000000000000000000000000), found 6ac9241348a8… "
     "(474345204e6f6e486f7374496e666f0001000000000000000000000000000000), event #2 in PCR 0"),
    # two OVMF builds: the same firmware volume at the same address, other contents
    ("bootorder", "sd-boot-fedora37", "platform-firmware", 0, 2,
     "platform-firmware differs at its event 2 of 4: expected 163240b109aa… (blob at "
     "0x820000, length 0xe0000), found a4bec904c70a… (blob at 0x820000, length 0xe0000), "
     "event #2 in PCR 0"),
    # two SHA-1-only logs
    ("debian-10", "uefi-sha1-log", "platform-firmware", 0, 0,
     "platform-firmware differs at its event 1 of 3: expected 3f708bdbaff2… (GCE Virtual "
     "Firmware v1), found c42fedad2682… (546bfb1e-1d0c-4055-a4ad-4ef4bf17b83a), event #0 in "
     "PCR 0"),
    # the kernel GRUB read: Ubuntu's by path, RHEL's by its linuxefi label
    ("ubuntu-2104-no-secure-boot", "rhel8-uefi", "kernel", 9, 76,
     "kernel differs: expected 47e598b7b944… (/boot/vmlinuz-5.11.0-1006-gcp), found "
     "9f2a35ee745e… (grub_linuxefi Kernel), event #76 in PCR 9"),
    # Ubuntu booted without an initrd; RHEL's is an unknown component to its baseline
    ("ubuntu-2104-no-secure-boot", "rhel8-uefi", "initrd", 9, 80,
     "unexpected initrd event in PCR 9: found df08d49b7c52… (grub_linuxefi Initrd), event #80; "
     "baseline ubuntu-2104-no-secure-boot v1 has no initrd component for PCR 9"),
    ("rhel8-uefi", "ubuntu-2104-no-secure-boot", "initrd", 9, None,
     "initrd differs: expected df08d49b7c52… (grub_linuxefi Initrd), found nothing: PCR 9 has "
     "no initrd event"),
    # Secure Boot: the SecureBoot variable itself is a PCR 7 digest
    ("rhel8-uefi", "ubuntu-2104-no-secure-boot", "secure-boot", 7, 3,
     "secure-boot differs at its event 1 of 6: expected ccfc4bb32888… (SecureBoot = enabled), "
     "found 115aa827dbcc… (SecureBoot = disabled), event #3 in PCR 7"),
    # the Arch firmware logs no "Calling EFI Application" action in PCR 4; Fedora's does
    ("arch-linux", "sd-boot-fedora37", "boot-manager", 4, 15,
     "boot-manager differs: expected df3f619804a9… (separator 0x00000000), found 3d6772b4f84e… "
     "(Calling EFI Application from Boot Option), event #15 in PCR 4; an extra event was "
     "measured before the expected one"),
]


@pytest.mark.parametrize(("baseline", "log", "component", "pcr", "event_index", "reason"), CROSS,
                         ids=[f"{case[0]}<-{case[1]}:{case[2]}" for case in CROSS])
def test_another_machines_log_fails_with_a_readable_difference(
        baseline: str, log: str, component: str, pcr: int, event_index: int | None,
        reason: str) -> None:
    appraisal = appraise(_load(log), [_baseline(baseline)], Policy(require_secure_boot=False))
    assert not appraisal.trusted
    assert appraisal.matched is None
    difference = _only(appraisal.differences, component)
    assert (difference.pcr, difference.event_index) == (pcr, event_index)
    assert difference.reason == reason
    assert appraisal.summary.startswith(f"not trusted: closest baseline {baseline} v1: ")


def test_a_baseline_in_a_bank_the_log_lacks_cannot_match() -> None:
    appraisal = appraise(_load("debian-10"), [_baseline("rhel8-uefi")], Policy())
    difference = _only(appraisal.differences, BANK_CHECK)
    assert difference.reason == ("baseline rhel8-uefi v1 is in the sha256 bank, but the log has "
                                 "only sha1")


# ---------------------------------------------------------------------------------------------
# The simulated boots: golden and a modified kernel


def test_golden_boot_matches_and_modified_kernel_is_named() -> None:
    assert appraise(GOLDEN, [GOLDEN_BASELINE], Policy()).trusted
    appraisal = appraise(MODIFIED, [GOLDEN_BASELINE], Policy())
    assert not appraisal.trusted
    kernel = _only(appraisal.differences, "kernel")
    event = next(event for event in MODIFIED.events
                 if event.pcr == 9 and event.describe() == GOLDEN_IMAGE.kernel_path)
    golden_digest = HASHES["sha256"](GOLDEN_IMAGE.kernel).hexdigest()
    modified_digest = HASHES["sha256"](MODIFIED_KERNEL_IMAGE.kernel).hexdigest()
    assert kernel == Difference(
        "kernel", 9,
        f"kernel differs: expected {golden_digest[:12]}… (/boot/vmlinuz-6.1.0-28-amd64), found "
        f"{modified_digest[:12]}… (/boot/vmlinuz-6.1.0-28-amd64), event #{event.index} in PCR 9",
        golden_digest, "/boot/vmlinuz-6.1.0-28-amd64", modified_digest,
        "/boot/vmlinuz-6.1.0-28-amd64", event.index, 0)
    # shim loads the same kernel as an EFI application: PCR 4 names it as well
    application = _only(appraisal.differences, "boot-applications")
    assert application.pcr == 4
    assert application.expected_label == application.found_label == \
        "\\boot\\vmlinuz-6.1.0-28-amd64"
    assert application.position == 2
    assert [difference.component for difference in appraisal.differences] == [
        "boot-applications", "kernel"]


def _with(events: list[EventSpec], extra: EventSpec, after: int | None = None) -> EventLog:
    at = len(events) if after is None else after
    return _boot([*events[:at], extra, *events[at:]])


MOK = EventSpec(14, EventType.EV_IPL, ipl_string("MokList"), measured=b"machine owner keys")


def test_an_event_of_an_unknown_kind_is_refused_unless_allowed() -> None:
    log = _with(boot_events(GOLDEN_IMAGE), MOK)
    policy = Policy(pcrs=DEFAULT_PCRS | {14})
    appraisal = appraise(log, [GOLDEN_BASELINE], policy)
    difference = _only(appraisal.differences, "mok")
    assert difference.pcr == 14
    assert difference.event_index == len(log) - 1
    assert difference.found_label == "MokList"
    assert difference.reason.startswith("unexpected mok event in PCR 14: found ")
    assert difference.reason.endswith("baseline golden v1 has no mok component for PCR 14")
    assert appraise(log, [GOLDEN_BASELINE],
                    dataclasses.replace(policy, allow_unknown_events=True)).trusted
    # a PCR the policy does not compare is not looked at
    assert appraise(log, [GOLDEN_BASELINE], Policy()).trusted


def test_an_extra_event_in_a_known_component_is_refused_even_when_unknown_ones_are_allowed(
        ) -> None:
    rogue = EventSpec(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
                      image_load_event_data("\\EFI\\rogue.efi"), measured=b"rogue")
    log = _with(boot_events(GOLDEN_IMAGE), rogue)
    appraisal = appraise(log, [GOLDEN_BASELINE], Policy(allow_unknown_events=True))
    difference = _only(appraisal.differences, "boot-applications")
    assert difference.reason.startswith("boot-applications differs: found an extra event ")
    assert "(\\EFI\\rogue.efi)" in difference.reason
    assert difference.reason.endswith("in PCR 4, after the 3 the baseline expects")
    assert difference.position == 3
    assert difference.expected is None


def test_strict_mode_catches_an_event_the_component_view_lets_through() -> None:
    log = _with(boot_events(GOLDEN_IMAGE), MOK)
    loose = Policy(pcrs=DEFAULT_PCRS | {14}, allow_unknown_events=True)
    assert appraise(log, [GOLDEN_BASELINE], loose).trusted
    appraisal = appraise(log, [GOLDEN_BASELINE], dataclasses.replace(loose, strict=True))
    difference = _only(appraisal.differences, PCR_CHECK)
    assert difference.pcr == 14
    assert difference.expected == "00" * 32  # the golden boot never extended PCR 14
    assert difference.found == replay(log)["sha256"][14].hex()
    assert difference.reason == (f"PCR 14 differs (strict): expected {'0' * 12}…, found "
                                 f"{difference.found[:12]}…")


def test_strict_mode_catches_a_reordering_across_components() -> None:
    events = boot_events(GOLDEN_IMAGE)
    action = next(number for number, event in enumerate(events)
                  if event.event_type == EventType.EV_EFI_ACTION)
    shim = next(number for number, event in enumerate(events)
                if event.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION)
    # shim runs before the boot attempt is logged: each PCR 4 component is as before, in order
    moved = [*events[:action], events[shim], *events[action:shim], *events[shim + 1:]]
    log = _boot(moved)
    assert replay(log)["sha256"][4] != replay(GOLDEN)["sha256"][4]
    assert appraise(log, [GOLDEN_BASELINE], Policy()).trusted
    appraisal = appraise(log, [GOLDEN_BASELINE], Policy(strict=True))
    assert [(difference.component, difference.pcr) for difference in appraisal.differences] == [
        (PCR_CHECK, 4)]


def test_strict_policy_compares_components_only_for_a_baseline_without_pinned_values() -> None:
    log = _with(boot_events(GOLDEN_IMAGE), MOK)
    unpinned = baseline_from_event_log(GOLDEN, name="golden")
    policy = Policy(pcrs=DEFAULT_PCRS | {14}, allow_unknown_events=True, strict=True)
    assert appraise(log, [unpinned], policy).trusted
    assert not appraise(log, [GOLDEN_BASELINE], policy).trusted


# ---------------------------------------------------------------------------------------------
# Several baselines


def test_several_baselines_the_right_one_is_matched() -> None:
    names = ["rhel8-uefi", "cos-85-amd-sev", "ubuntu-2104-no-secure-boot", "bootorder"]
    baselines = [_baseline(name) for name in names]
    for name, baseline in zip(names, baselines, strict=True):
        appraisal = appraise(_load(name), baselines, Policy(require_secure_boot=False))
        assert appraisal.trusted
        assert appraisal.matched is baseline
        assert set(appraisal.by_baseline) == {f"{other} v1" for other in names}
        assert appraisal.by_baseline[f"{name} v1"] == ()
        assert all(appraisal.by_baseline[f"{other} v1"] for other in names if other != name)


def test_a_rolling_upgrade_matches_either_version() -> None:
    old = dataclasses.replace(GOLDEN_BASELINE, name="debian", version=1)
    new = dataclasses.replace(baseline_from_event_log(MODIFIED, name="debian", version=2,
                                                      strict=True))
    assert appraise(GOLDEN, [old, new], Policy()).matched is old
    assert appraise(MODIFIED, [old, new], Policy()).matched is new


def test_the_closest_baseline_is_the_one_with_fewest_differences() -> None:
    other_image = BootImage(grub=b"grubx64.efi 2.06", kernel=b"vmlinuz-5.10", cmdline="quiet")
    farther = baseline_from_event_log(_boot(boot_events(other_image)), name="other")
    sha384 = baseline_from_event_log(parse_event_log(build_crypto_agile_log(
        boot_events(MODIFIED_KERNEL_IMAGE), banks=("sha384",))), name="sha384", bank="sha384")
    baselines = [sha384, _baseline("rhel8-uefi"), farther, GOLDEN_BASELINE, _baseline("debian-10")]
    appraisal = appraise(MODIFIED, baselines, Policy())
    assert appraisal.closest is GOLDEN_BASELINE
    assert len(appraisal.differences) == 2
    assert len(appraisal.by_baseline["other v1"]) > 2
    # a baseline in a bank the log lacks is never the closest, however few its differences
    assert appraisal.by_baseline["sha384 v1"] == (
        Difference(BANK_CHECK, None, "baseline sha384 v1 is in the sha384 bank, but the log has "
                   "only sha1, sha256", "sha384"),)
    assert appraise(MODIFIED, [sha384, farther], Policy()).closest is farther


def test_no_baselines_is_not_trusted() -> None:
    appraisal = appraise(GOLDEN, [], Policy())
    assert not appraisal.trusted
    assert appraisal.closest is None
    assert [difference.component for difference in appraisal.differences] == [BASELINES_CHECK]


# ---------------------------------------------------------------------------------------------
# Verified evidence and the gate


def test_evidence_of_the_golden_boot_passes_the_gate() -> None:
    appraisal = appraise_or_raise(_evidence(GOLDEN), [GOLDEN_BASELINE], Policy(strict=True))
    assert appraisal.trusted
    assert appraisal.secure_boot is True
    assert appraisal.summary == "trusted: matches baseline golden v1"


def test_evidence_of_a_modified_kernel_is_stopped_at_the_gate() -> None:
    evidence = _evidence(MODIFIED)
    assert not appraise_evidence(evidence, [GOLDEN_BASELINE], Policy()).trusted
    with pytest.raises(PolicyViolation) as info:
        appraise_or_raise(evidence, [GOLDEN_BASELINE], Policy())
    assert isinstance(info.value, AppraisalFailed)
    appraisal = info.value.appraisal
    assert appraisal.closest is GOLDEN_BASELINE
    assert {difference.component for difference in appraisal.differences} == {
        "kernel", "boot-applications"}
    assert str(info.value) == appraisal.summary
    assert str(info.value).startswith("not trusted: closest baseline golden v1: "
                                      "boot-applications differs at its event 3 of 3")
    assert str(info.value).endswith("(and 1 more)")
    assert info.value.error_type == "policy_violation"


def test_evidence_compares_only_what_the_quote_covers() -> None:
    firmware_quote = _evidence(GOLDEN, pcrs=frozenset(range(8)))
    appraisal = appraise_evidence(firmware_quote, [GOLDEN_BASELINE], Policy())
    assert [(difference.component, difference.pcr) for difference in appraisal.differences] == [
        (PCR_CHECK, 8), (PCR_CHECK, 9)]
    assert appraisal.differences[0].reason == "PCR 8 is compared but the quote does not cover it"
    # the events of PCRs the quote does not cover are never compared: a log whose PCR 9 says
    # anything at all gives the same report
    events = boot_events(GOLDEN_IMAGE)
    events = [dataclasses.replace(event, measured=b"anything") if event.pcr == 9 else event
              for event in events]
    forged = appraise_evidence(_evidence(_boot(events), pcrs=frozenset(range(8))),
                               [GOLDEN_BASELINE], Policy())
    assert forged.differences == appraisal.differences
    assert appraise_evidence(firmware_quote, [GOLDEN_BASELINE],
                             Policy(pcrs=frozenset(range(8)))).trusted
    # the modified kernel is still caught in PCR 4 (shim loads it as an EFI application)
    modified = appraise_evidence(_evidence(MODIFIED, pcrs=frozenset(range(8))),
                                 [GOLDEN_BASELINE], Policy(pcrs=frozenset(range(8))))
    assert [difference.component for difference in modified.differences] == [
        "boot-applications"]


def test_evidence_without_pcr7_gives_no_secure_boot() -> None:
    no_pcr7 = _evidence(GOLDEN, pcrs=DEFAULT_PCRS - {7})
    appraisal = appraise_evidence(no_pcr7, [GOLDEN_BASELINE], Policy(pcrs=DEFAULT_PCRS - {7}))
    difference = _only(appraisal.differences, "secure-boot")
    assert difference.found is None
    assert appraisal.secure_boot is None
    assert appraise_evidence(no_pcr7, [GOLDEN_BASELINE],
                             Policy(pcrs=DEFAULT_PCRS - {7}, require_secure_boot=False)).trusted


def test_a_pcr_extended_without_a_log_entry_is_a_difference() -> None:
    policy = Policy(pcrs=DEFAULT_PCRS | {14})
    unlogged = _evidence(GOLDEN, extra={14: b"\x42" * 32})
    difference = _only(appraise_evidence(unlogged, [GOLDEN_BASELINE], policy).differences,
                       PCR_CHECK)
    assert difference.pcr == 14
    assert difference.reason == ("PCR 14 was extended (the TPM quoted 424242424242…) but the "
                                 "log records no event for it")
    untouched = _evidence(GOLDEN, extra={14: bytes(32)})
    assert appraise_evidence(untouched, [GOLDEN_BASELINE], policy).trusted


def test_a_baseline_in_a_bank_the_quote_lacks_cannot_match() -> None:
    sha1 = baseline_from_event_log(GOLDEN, name="golden-sha1", bank="sha1")
    assert appraise(GOLDEN, [sha1], Policy()).trusted  # the log has sha1 digests …
    appraisal = appraise_evidence(_evidence(GOLDEN), [sha1], Policy())  # … the quote does not
    assert _only(appraisal.differences, BANK_CHECK).reason == (
        "baseline golden-sha1 v1 is in the sha1 bank, but the quote has only sha256")


def test_a_lying_secure_boot_event_is_not_believed() -> None:
    from trustauthority.eventlog import EFI_GLOBAL_VARIABLE, efi_variable_data

    events = boot_events(GOLDEN_IMAGE)
    number = next(number for number, event in enumerate(events)
                  if b"S\x00e\x00c\x00u\x00r\x00e\x00B\x00o\x00o\x00t\x00" in event.data)
    off = efi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x00")
    events[number] = dataclasses.replace(events[number], measured=off)  # data still says on
    log = _boot(events)
    appraisal = appraise_evidence(_evidence(log), [GOLDEN_BASELINE], Policy())
    state, digest = appraisal.differences
    assert (state.component, state.expected, state.found) == ("secure-boot", "enabled", None)
    assert state.reason == ("Secure Boot state is unknown (the SecureBoot event #3 has data that "
                            "does not hash to its sha256 digest) but the policy requires it on")
    assert appraisal.secure_boot is None
    # and the digest itself is not the golden one either
    assert (digest.component, digest.position, digest.event_index) == ("secure-boot", 0, 3)


# ---------------------------------------------------------------------------------------------
# diff_baselines, reports, policies


def test_diff_baselines() -> None:
    modified = baseline_from_event_log(MODIFIED, name="modified", strict=True)
    assert diff_baselines(GOLDEN_BASELINE, GOLDEN_BASELINE) == []
    differences = diff_baselines(GOLDEN_BASELINE, modified)
    kernel = _only(tuple(differences), "kernel")
    assert kernel.event_index is None
    assert kernel.position == 0
    assert kernel.reason.startswith("kernel differs: expected ef1eef62e8f3… "
                                    "(/boot/vmlinuz-6.1.0-28-amd64), found fcea30ed3c26… (")
    assert kernel.reason.endswith(") in PCR 9")
    assert {(difference.component, difference.pcr) for difference in differences} == {
        ("boot-applications", 4), ("kernel", 9), (PCR_CHECK, 4), (PCR_CHECK, 9)}


def test_diff_baselines_secure_boot_bank_and_pins() -> None:
    insecure = baseline_from_event_log(_boot(boot_events(BootImage(secure_boot=False))),
                                       name="insecure")
    differences = diff_baselines(GOLDEN_BASELINE, insecure)
    assert differences[0].reason == "Secure Boot: golden v1 has it enabled, insecure v1 disabled"
    assert ("secure-boot", 7, 0) in {(difference.component, difference.pcr, difference.position)
                                     for difference in differences}
    assert differences[-1].reason == "only golden v1 pins exact PCR values"
    sha1 = baseline_from_event_log(GOLDEN, name="golden-sha1", bank="sha1")
    assert [difference.component for difference in diff_baselines(GOLDEN_BASELINE, sha1)] == [
        BANK_CHECK]


def test_appraisal_report_is_json() -> None:
    appraisal = appraise(MODIFIED, [GOLDEN_BASELINE], Policy())
    document = json.loads(json.dumps(appraisal.to_json()))
    assert document["trusted"] is False
    assert document["matched"] is None
    assert document["closest"] == {"name": "golden", "version": 1}
    assert [difference["component"] for difference in document["differences"]] == [
        "boot-applications", "kernel"]
    assert document["differences"][1]["event_index"] == appraisal.differences[1].event_index


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pcrs": frozenset()}, "at least one PCR"),
    ({"pcrs": frozenset({24})}, "0-23, got 24"),
    ({"pcrs": frozenset({-1})}, "got -1"),
    ({"pcrs": frozenset({True})}, "got True"),
    ({"pcrs": "0247"}, "a set of PCR numbers"),
    ({"pcrs": [0, 7]}, "a set of PCR numbers"),
    ({"strict": "yes"}, "strict must be true or false"),
    ({"require_secure_boot": 0}, "require_secure_boot must be true or false"),
])
def test_policy_refuses_nonsense(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Policy(**kwargs)  # type: ignore[arg-type]


def test_default_policy_is_the_documented_one() -> None:
    policy = Policy()
    assert policy.require_secure_boot is True
    assert policy.pcrs == frozenset({0, 2, 3, 4, 7, 8, 9})
    assert policy.allow_unknown_events is False
    assert policy.strict is False
    assert Policy(pcrs={1, 2}).pcrs == frozenset({1, 2})  # type: ignore[arg-type]


def test_efi_action_text_is_a_boot_manager_label() -> None:
    log = _boot([EventSpec(4, EventType.EV_EFI_ACTION, efi_action("Calling EFI Application"))])
    baseline = baseline_from_event_log(log, name="a")
    component = baseline.component(ComponentKind.BOOT_MANAGER, 4)
    assert component is not None
    assert component.events[0].label == "Calling EFI Application"


# ---------------------------------------------------------------------------------------------
# A changed reference value never passes


def _strict_baselines() -> dict[str, tuple[EventLog, Baseline]]:
    found = {}
    for path in LOGS:
        log = parse_event_log(path.read_bytes())
        found[path.stem] = (log, baseline_from_event_log(log, name=path.stem, bank=_bank(log),
                                                         strict=True))
    found["golden"] = (GOLDEN, GOLDEN_BASELINE)
    return found


STRICT_BASELINES = _strict_baselines()
EVERYTHING = Policy(require_secure_boot=False, pcrs=ALL_PCRS, strict=True)


def _flip(digest: str, byte: int, mask: int) -> str:
    raw = bytearray(bytes.fromhex(digest))
    raw[byte % len(raw)] ^= mask
    return raw.hex()


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_flipping_any_digest_byte_of_a_baseline_never_passes(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(STRICT_BASELINES)), label="log")
    log, baseline = STRICT_BASELINES[name]
    byte = data.draw(st.integers(0, 63), label="byte")
    mask = data.draw(st.integers(1, 255), label="mask")
    assert baseline.strict_pcrs is not None
    targets: list[tuple[int, int] | int] = [
        (number, position) for number, component in enumerate(baseline.components)
        for position in range(len(component.events))]
    targets += list(baseline.strict_pcrs)
    target = data.draw(st.sampled_from(targets), label="target")
    expected: tuple[str, int, int | None]
    if isinstance(target, tuple):
        number, position = target
        component = baseline.components[number]
        event = component.events[position]
        changed = dataclasses.replace(component, events=(
            *component.events[:position],
            dataclasses.replace(event, digest=_flip(event.digest, byte, mask)),
            *component.events[position + 1:]))
        mutated = dataclasses.replace(baseline, components=(
            *baseline.components[:number], changed, *baseline.components[number + 1:]))
        expected = (str(component.kind), component.pcr, position)
    else:
        pinned = dict(baseline.strict_pcrs)
        pinned[target] = _flip(pinned[target], byte, mask)
        mutated = dataclasses.replace(baseline, strict_pcrs=pinned)
        expected = (PCR_CHECK, target, None)
    appraisal = appraise(log, [mutated], EVERYTHING)
    assert not appraisal.trusted
    assert expected in {(difference.component, difference.pcr, difference.position)
                        for difference in appraisal.differences}
    # the same document through JSON is refused in the same way
    assert not appraise(log, [Baseline.from_json(mutated.to_json())], EVERYTHING).trusted

"""Baselines: import from every real log and from verified evidence, the JSON document both ways,
and `from_json` refusing malformed documents."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_tpm import FakeAk
from trustauthority.agent.simboot import GOLDEN_IMAGE, boot_events, boot_log
from trustauthority.errors import UsageError
from trustauthority.eventlog import (
    EFI_GLOBAL_VARIABLE,
    Event,
    EventLog,
    EventSpec,
    EventType,
    build_crypto_agile_log,
    efi_variable_data,
    ipl_string,
    parse_event_log,
    replay,
)
from trustauthority.policy import (
    KIND_PCRS,
    SCHEMA,
    Baseline,
    Component,
    ComponentKind,
    ReferenceEvent,
    baseline_from_event_log,
    baseline_from_evidence,
    classify,
)
from trustauthority.policy.baseline import MAX_COMPONENTS, MAX_EVENTS
from trustauthority.verify import VerifiedEvidence, verify_evidence, verify_quote
from trustauthority.verify.quote import QuoteOptions

LOG_DIR = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "eventlogs"
LOGS = sorted(LOG_DIR.glob("*.bin"))
AK = FakeAk.ecc()


def _load(name: str) -> EventLog:
    return parse_event_log((LOG_DIR / f"{name}.bin").read_bytes())


def _bank(log: EventLog) -> str:
    """sha256 where the log has it; the SHA-1-only logs can only be sha1 baselines."""
    return "sha256" if "sha256" in log.banks else "sha1"


def _evidence(log: EventLog, values: dict[str, dict[int, bytes]]) -> VerifiedEvidence:
    attest, signature = AK.quote(b"nonce", values)
    quote = verify_quote(ak=AK.public, raw_attest=attest, raw_signature=signature,
                         expected_nonce=b"nonce", unverified_pcr_values=values,
                         options=QuoteOptions(allow_sha1=True))
    return verify_evidence(quote, log)


def test_corpus_is_there() -> None:
    assert len(LOGS) == 11


# ---------------------------------------------------------------------------------------------
# Import from the real logs


@pytest.mark.parametrize("log_path", LOGS, ids=lambda path: path.stem)
@pytest.mark.parametrize("strict", [False, True], ids=["components", "strict"])
def test_every_real_baseline_round_trips_through_json(log_path: Path, strict: bool) -> None:
    log = parse_event_log(log_path.read_bytes())
    baseline = baseline_from_event_log(log, name=log_path.stem, version=3, bank=_bank(log),
                                       strict=strict)
    text = json.dumps(baseline.to_json())
    again = Baseline.from_json(json.loads(text))
    assert again == baseline
    assert again.to_json() == baseline.to_json()
    assert hash(again) == hash(baseline)
    assert (baseline.strict_pcrs is not None) == strict


@pytest.mark.parametrize("log_path", LOGS, ids=lambda path: path.stem)
def test_every_measured_event_lands_in_exactly_one_component(log_path: Path) -> None:
    log = parse_event_log(log_path.read_bytes())
    bank = _bank(log)
    baseline = baseline_from_event_log(log, name="x", bank=bank)
    measured = [event for event in log.events if event.event_type != EventType.EV_NO_ACTION]
    assert sum(len(component.events) for component in baseline.components) == len(measured)
    for pcr in {event.pcr for event in measured}:
        in_log = sorted(event.digests[bank].hex() for event in measured if event.pcr == pcr)
        in_baseline = sorted(event.digest for component in baseline.components
                             if component.pcr == pcr for event in component.events)
        assert in_baseline == in_log, pcr


#: the components of each real log, as `classify` sorts them (kind, PCR, number of events)
EXPECTED_COMPONENTS: dict[str, set[tuple[str, int, int]]] = {
    # systemd-boot and an EFI-stub kernel: both PCR 4 applications; the command line in PCR 8
    "arch-linux": {("platform-firmware", 0, 3), ("firmware-config", 1, 5), ("option-roms", 2, 2),
                   ("firmware-config", 3, 1), ("boot-manager", 4, 1),
                   ("boot-applications", 4, 2), ("boot-manager", 5, 1),
                   ("partition-table", 5, 1), ("platform-specific", 6, 1),
                   ("secure-boot", 7, 6), ("cmdline", 8, 1)},
    # GRUB: 64 commands, kernel and initrd as PCR 9 files
    "bootorder": {("platform-firmware", 0, 4), ("firmware-config", 1, 5), ("option-roms", 2, 3),
                  ("firmware-config", 3, 1), ("boot-manager", 4, 2),
                  ("boot-applications", 4, 2), ("boot-manager", 5, 3),
                  ("partition-table", 5, 1), ("platform-specific", 6, 1), ("secure-boot", 7, 6),
                  ("boot-loader-config", 8, 64), ("cmdline", 8, 1),
                  ("boot-loader-config", 9, 8), ("kernel", 9, 1), ("initrd", 9, 1)},
    # COS boots its kernel through shim too: three PCR 4 applications; no initrd
    "cos-85-amd-sev": {("platform-firmware", 0, 3), ("firmware-config", 1, 4),
                       ("option-roms", 2, 1), ("firmware-config", 3, 1),
                       ("boot-manager", 4, 2), ("boot-applications", 4, 3),
                       ("boot-manager", 5, 3), ("partition-table", 5, 1),
                       ("platform-specific", 6, 1), ("secure-boot", 7, 6),
                       ("secure-boot-authority", 7, 3), ("boot-loader-config", 8, 14),
                       ("cmdline", 8, 1), ("boot-loader-config", 9, 1), ("kernel", 9, 1)},
    # GRUB without its TPM module: nothing in PCRs 8 and 9
    "debian-10": {("platform-firmware", 0, 3), ("firmware-config", 1, 4), ("option-roms", 2, 1),
                  ("firmware-config", 3, 1), ("boot-manager", 4, 2),
                  ("boot-applications", 4, 3), ("boot-manager", 5, 1),
                  ("partition-table", 5, 1), ("platform-specific", 6, 1),
                  ("secure-boot", 7, 6), ("secure-boot-authority", 7, 2)},
    # RHEL's GRUB: "grub_cmd …", "grub_linuxefi Kernel"; shim's MOK lists in PCR 14
    "rhel8-uefi": {("platform-firmware", 0, 3), ("firmware-config", 1, 5), ("option-roms", 2, 1),
                   ("firmware-config", 3, 1), ("boot-manager", 4, 2),
                   ("boot-applications", 4, 3), ("boot-manager", 5, 3),
                   ("partition-table", 5, 1), ("platform-specific", 6, 1),
                   ("secure-boot", 7, 6), ("secure-boot-authority", 7, 2),
                   ("boot-loader-config", 8, 49), ("cmdline", 8, 1), ("kernel", 9, 1),
                   ("initrd", 9, 1), ("mok", 14, 2)},
    # systemd-stub ≥ 251: command line in PCR 12; the kernel's initrd tag in PCR 9
    "sd-boot-fedora37": {("platform-firmware", 0, 4), ("firmware-config", 1, 6),
                         ("option-roms", 2, 1), ("firmware-config", 3, 1),
                         ("boot-manager", 4, 2), ("boot-manager", 5, 3),
                         ("platform-specific", 6, 1), ("secure-boot", 7, 6), ("initrd", 9, 1),
                         ("cmdline", 12, 2)},
    "ubuntu-2104-no-secure-boot": {
        ("platform-firmware", 0, 3), ("firmware-config", 1, 6), ("option-roms", 2, 1),
        ("firmware-config", 3, 1), ("boot-manager", 4, 2), ("boot-applications", 4, 2),
        ("boot-manager", 5, 3), ("partition-table", 5, 1), ("platform-specific", 6, 1),
        ("secure-boot", 7, 6), ("secure-boot-authority", 7, 1), ("boot-loader-config", 8, 66),
        ("cmdline", 8, 1), ("boot-loader-config", 9, 8), ("kernel", 9, 1), ("mok", 14, 2)},
    "uefi-sha1-log": {("platform-firmware", 0, 2), ("firmware-config", 1, 1),
                      ("option-roms", 2, 1), ("firmware-config", 3, 1), ("boot-manager", 4, 1),
                      ("boot-applications", 4, 2), ("boot-manager", 5, 1),
                      ("partition-table", 5, 1), ("platform-specific", 6, 1),
                      ("secure-boot", 7, 6)},
    "uefiaction": {("boot-manager", 4, 1)},
    "uefiservices": {("option-roms", 2, 1)},
    "uefivar": {("secure-boot", 7, 1)},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_COMPONENTS))
def test_components_of_the_real_logs(name: str) -> None:
    log = _load(name)
    baseline = baseline_from_event_log(log, name=name, bank=_bank(log))
    assert {(str(component.kind), component.pcr, len(component.events))
            for component in baseline.components} == EXPECTED_COMPONENTS[name]
    assert [component.pcr for component in baseline.components] == sorted(
        component.pcr for component in baseline.components)


@pytest.mark.parametrize(("name", "kind", "pcr", "labels"), [
    ("bootorder", ComponentKind.KERNEL, 9, ["/boot/vmlinuz-5.4.0-45-generic"]),
    ("bootorder", ComponentKind.INITRD, 9, ["/boot/initrd.img-5.4.0-45-generic"]),
    ("cos-85-amd-sev", ComponentKind.KERNEL, 9, ["/syslinux/vmlinuz.A"]),
    ("rhel8-uefi", ComponentKind.KERNEL, 9, ["grub_linuxefi Kernel"]),
    ("rhel8-uefi", ComponentKind.INITRD, 9, ["grub_linuxefi Initrd"]),
    ("rhel8-uefi", ComponentKind.MOK, 14, ["MokList", "MokListX"]),
    ("arch-linux", ComponentKind.BOOT_APPLICATIONS, 4,
     ["\\EFI\\SYSTEMD\\SYSTEMD-BOOTX64.EFI", "\\vmlinuz-linux-lts"]),
    ("ubuntu-2104-no-secure-boot", ComponentKind.BOOT_APPLICATIONS, 4,
     ["\\EFI\\ubuntu\\shimx64.efi", "\\EFI\\ubuntu\\grubx64.efi"]),
    ("debian-10", ComponentKind.SECURE_BOOT_AUTHORITY, 7,
     ["db = CN=Microsoft Corporation UEFI CA 2011,O=Microsoft Corporation,L=Redmond,"
      "ST=Washington,C=US", "Shim = CN=Debian Secure Boot CA"]),
    ("sd-boot-fedora37", ComponentKind.CMDLINE, 12,
     [" console=ttyS0 console=tty0 efi=debug "] * 2),
    ("sd-boot-fedora37", ComponentKind.INITRD, 9, ["tag 0x8f3b22ec: 4c696e757820696e6974726400"]),
])
def test_labels_name_what_was_measured(name: str, kind: ComponentKind, pcr: int,
                                       labels: list[str]) -> None:
    log = _load(name)
    component = baseline_from_event_log(log, name=name, bank=_bank(log)).component(kind, pcr)
    assert component is not None
    assert [event.label for event in component.events] == labels


def test_long_labels_are_cut_and_printable() -> None:
    baseline = baseline_from_event_log(_load("bootorder"), name="b")
    labels = [event.label for component in baseline.components for event in component.events]
    assert max(len(text) for text in labels) == 160
    submenu = next(text for text in labels if text.startswith("grub_cmd: submenu"))
    assert "\t" not in submenu
    assert "\\x09" in submenu  # GRUB's menu entries carry tabs; a label shows them escaped
    assert submenu.endswith("…")


@pytest.mark.parametrize(("name", "secure_boot"), [
    ("arch-linux", False), ("bootorder", False), ("cos-85-amd-sev", True), ("debian-10", True),
    ("rhel8-uefi", True), ("sd-boot-fedora37", False), ("ubuntu-2104-no-secure-boot", False),
    ("uefi-sha1-log", False), ("uefiaction", None), ("uefiservices", None), ("uefivar", True),
])
def test_secure_boot_flag_of_the_real_logs(name: str, secure_boot: bool | None) -> None:
    log = _load(name)
    assert baseline_from_event_log(log, name=name, bank=_bank(log)).secure_boot is secure_boot


def test_secure_boot_flag_is_believed_only_when_the_data_hashes_to_the_digest() -> None:
    on = efi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01")
    off = efi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x00")
    honest = parse_event_log(build_crypto_agile_log(
        [EventSpec(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, on)]))
    assert baseline_from_event_log(honest, name="h").secure_boot is True
    # the log says "enabled" next to the digest of "disabled"
    lying = parse_event_log(build_crypto_agile_log(
        [EventSpec(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, on, measured=off)]))
    assert baseline_from_event_log(lying, name="l").secure_boot is None


@pytest.mark.parametrize("name", ["debian-10", "uefi-sha1-log"])
def test_sha1_only_logs_need_bank_sha1(name: str) -> None:
    log = _load(name)
    with pytest.raises(UsageError, match=r"has no sha256 bank; it has sha1 .*bank='sha1'"):
        baseline_from_event_log(log, name=name)
    assert baseline_from_event_log(log, name=name, bank="sha1").bank == "sha1"


def test_missing_or_unknown_bank_is_refused_naming_the_banks_there_are() -> None:
    with pytest.raises(UsageError, match=r"has no sha384 bank; it has sha1, sha256$"):
        baseline_from_event_log(_load("uefivar"), name="u", bank="sha384")
    with pytest.raises(UsageError, match="unknown bank 'md5'"):
        baseline_from_event_log(_load("uefivar"), name="u", bank="md5")


def test_strict_baseline_pins_pcrs_0_to_15_as_replayed() -> None:
    log = _load("rhel8-uefi")
    baseline = baseline_from_event_log(log, name="r", strict=True)
    assert baseline.strict_pcrs is not None
    replayed = replay(log)["sha256"]
    assert dict(baseline.strict_pcrs) == {
        pcr: replayed.get(pcr, bytes(32)).hex() for pcr in range(16)}
    assert baseline.strict_pcrs[10] == "00" * 32  # never extended: pinned at its start


# ---------------------------------------------------------------------------------------------
# Import from verified evidence


def test_baseline_from_evidence_equals_the_logs_when_everything_is_quoted() -> None:
    _, raw = boot_log(GOLDEN_IMAGE)
    log = parse_event_log(raw)
    evidence = _evidence(log, {"sha256": replay(log)["sha256"]})
    from_evidence = baseline_from_evidence(evidence, name="golden", strict=True)
    from_log = baseline_from_event_log(log, name="golden")
    assert from_evidence.components == from_log.components
    assert from_evidence.secure_boot is True
    assert from_evidence.bank == "sha256"
    assert dict(from_evidence.strict_pcrs or {}) == {
        pcr: value.hex() for pcr, value in replay(log)["sha256"].items()}


def test_baseline_from_evidence_takes_only_confirmed_pcrs() -> None:
    _, raw = boot_log(GOLDEN_IMAGE)
    log = parse_event_log(raw)
    replayed = replay(log)["sha256"]
    firmware_only = _evidence(log, {"sha256": {pcr: replayed[pcr] for pcr in range(8)}})
    baseline = baseline_from_evidence(firmware_only, name="fw")
    assert {component.pcr for component in baseline.components} == set(range(8))
    assert baseline.secure_boot is True
    without_pcr7 = _evidence(log, {"sha256": {pcr: replayed[pcr] for pcr in range(7)}})
    baseline = baseline_from_evidence(without_pcr7, name="no7")
    assert {component.pcr for component in baseline.components} == set(range(7))
    assert baseline.secure_boot is None  # PCR 7's events are not vouched for


def test_baseline_from_evidence_bank_choice() -> None:
    log = parse_event_log(build_crypto_agile_log(boot_events(GOLDEN_IMAGE),
                                                 banks=("sha1", "sha256", "sha384")))
    replayed = replay(log)
    both = _evidence(log, {"sha1": replayed["sha1"], "sha384": replayed["sha384"]})
    assert baseline_from_evidence(both, name="b").bank == "sha384"  # sha256 not quoted
    assert baseline_from_evidence(both, name="b", bank="sha1").bank == "sha1"
    with pytest.raises(UsageError, match="the quote has no sha256 bank; it has sha1, sha384"):
        baseline_from_evidence(both, name="b", bank="sha256")


# ---------------------------------------------------------------------------------------------
# The classifier agrees with what a baseline accepts


@pytest.mark.parametrize("pcr", range(24))
def test_every_kind_classify_produces_is_one_a_baseline_accepts(pcr: int) -> None:
    texts = [b"", ipl_string("grub_cmd: linux /vmlinuz"), ipl_string("kernel_cmdline: x"),
             ipl_string("console=tty0", utf16=True), ipl_string("/vmlinuz"),
             (0x8F3B22EC).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"abc\x00"]
    events = [Event(number, 0, pcr, int(event_type), {"sha256": bytes(32)}, data)
              for number, (event_type, data) in enumerate(
                  (event_type, data) for event_type in EventType for data in texts)]
    kinds = {kind for _event, kind in classify(events)}
    assert kinds
    for kind in kinds:
        assert pcr in KIND_PCRS[kind], kind


# ---------------------------------------------------------------------------------------------
# from_json refuses malformed documents


def _golden_document() -> dict[str, Any]:
    _, raw = boot_log(GOLDEN_IMAGE)
    return baseline_from_event_log(parse_event_log(raw), name="golden", strict=True).to_json()


GOLDEN = _golden_document()
Mutation = Callable[[dict[str, Any]], Any]


def _step(target: Any, part: str) -> Any:
    """`part` is a list index in a list, a key in an object."""
    return int(part) if isinstance(target, list) else part


def _set(path: str, value: object) -> Mutation:
    """A mutation that sets the field at a dotted path."""
    def mutate(document: dict[str, Any]) -> dict[str, Any]:
        *parents, last = path.split(".")
        target: Any = document
        for part in parents:
            target = target[_step(target, part)]
        target[_step(target, last)] = value
        return document
    return mutate


def _delete(path: str) -> Mutation:
    def mutate(document: dict[str, Any]) -> dict[str, Any]:
        *parents, last = path.split(".")
        target: Any = document
        for part in parents:
            target = target[_step(target, part)]
        del target[_step(target, last)]
        return document
    return mutate


def _kernel_index(document: dict[str, Any]) -> int:
    return next(number for number, component in enumerate(document["components"])
                if component["kind"] == "kernel")


KERNEL = str(_kernel_index(GOLDEN))
DIGEST = GOLDEN["components"][0]["events"][0]["digest"]

MALFORMED: list[tuple[str, Mutation, str]] = [
    # not a document
    ("a list", lambda _document: [GOLDEN], "document: expected an object, got list"),
    ("a string", lambda _document: json.dumps(GOLDEN), "expected an object, got str"),
    ("null", lambda _document: None, "expected an object, got NoneType"),
    # missing fields
    ("no schema", _delete("schema"), "missing field 'schema'"),
    ("no name", _delete("name"), "missing field 'name'"),
    ("no version", _delete("version"), "missing field 'version'"),
    ("no bank", _delete("bank"), "missing field 'bank'"),
    ("no components", _delete("components"), "missing field 'components'"),
    ("component without kind", _delete("components.0.kind"),
     r"components\[0\]: missing field 'kind'"),
    ("component without pcr", _delete("components.0.pcr"), "missing field 'pcr'"),
    ("component without events", _delete("components.0.events"), "missing field 'events'"),
    ("event without digest", _delete("components.0.events.0.digest"),
     r"components\[0\]\.events\[0\]: missing field 'digest'"),
    ("event without label", _delete("components.0.events.0.label"), "missing field 'label'"),
    # wrong types
    ("name is a number", _set("name", 7), "name: expected a string, got int"),
    ("version is text", _set("version", "1"), "version: expected an integer, got str"),
    ("version is true", _set("version", True), "version: expected an integer, got bool"),
    ("version is a float", _set("version", 1.0), "version: expected an integer, got float"),
    ("bank is a number", _set("bank", 256), "bank: 256 is not a bank"),
    ("components is an object", _set("components", {}), "components: expected a list"),
    ("component is a list", _set("components.0", []), r"components\[0\]: expected an object"),
    ("pcr is text", _set("components.0.pcr", "0"), r"components\[0\]\.pcr: expected an integer"),
    ("pcr is true", _set("components.0.pcr", True), "expected an integer, got bool"),
    ("events is an object", _set("components.0.events", {}), "events: expected a list"),
    ("event is text", _set("components.0.events.0", DIGEST), "expected an object, got str"),
    ("digest is a number", _set("components.0.events.0.digest", 12),
     "digest: expected a hex string, got int"),
    ("label is null", _set("components.0.events.0.label", None),
     "label: expected a string, got NoneType"),
    ("secure_boot is text", _set("secure_boot", "yes"), "secure_boot: expected true, false"),
    ("secure_boot is 1", _set("secure_boot", 1), "secure_boot: expected true, false"),
    ("strict_pcrs is a list", _set("strict_pcrs", []), "strict_pcrs: expected an object"),
    ("strict value is a number", _set("strict_pcrs.0", 0), r"strict_pcrs\[0\]: expected a hex"),
    # unknown names
    ("unknown kind", _set("components.0.kind", "bootkit"), "'bootkit' is not a component kind"),
    ("kind in the wrong PCR", _set(f"components.{KERNEL}.pcr", 0),
     "kernel events are never measured into PCR 0"),
    ("unknown bank", _set("bank", "md5"), "'md5' is not a bank"),
    ("unknown schema", _set("schema", "trustauthority.baseline/v2"), "schema: expected"),
    ("unknown top field", _set("strict_pcr", {}), "document: unknown field 'strict_pcr'"),
    ("unknown component field", _set("components.0.note", "x"), "unknown field 'note'"),
    ("unknown event field", _set("components.0.events.0.pcr", 0), "unknown field 'pcr'"),
    ("strict key not a number", _set("strict_pcrs.x", DIGEST), "'x' is not a PCR number"),
    ("strict key with a sign", _set("strict_pcrs.+1", DIGEST), "'\\+1' is not a PCR number"),
    ("strict key with zero padding", _set("strict_pcrs.07", DIGEST), "'07' is not a PCR number"),
    # bad hex
    ("digest not hex", _set("components.0.events.0.digest", "zz" * 32),
     "expected 64 lowercase hex digits"),
    ("digest one digit short", _set("components.0.events.0.digest", DIGEST[:-1]),
     "expected 64 lowercase hex digits"),
    ("a sha1 digest in a sha256 baseline", _set("components.0.events.0.digest", "ab" * 20),
     r"\(a sha256 digest\)"),
    ("digest with spaces", _set("components.0.events.0.digest", " " + DIGEST[1:]),
     "expected 64 lowercase hex digits"),
    ("strict value not hex", _set("strict_pcrs.4", "0x" + DIGEST[2:]),
     r"strict_pcrs\[4\]: expected 64"),
    # huge or out-of-range values
    ("version 2**64", _set("version", 2**64), r"version: a 65-bit number is outside 1\.\."),
    ("version 10**400", _set("version", 10**400), "version: a 1329-bit number is outside"),
    ("version 0", _set("version", 0), "version: 0 is outside 1..2147483647"),
    ("pcr 24", _set("components.0.pcr", 24), r"pcr: 24 is outside 0\.\.23"),
    ("pcr -1", _set("components.0.pcr", -1), r"pcr: -1 is outside 0\.\.23"),
    ("pcr 2**70", _set("components.0.pcr", 2**70), "a 71-bit number is outside"),
    ("strict pcr 24", _set("strict_pcrs.24", DIGEST), r"strict_pcrs\[24\]: 24 is outside"),
    ("strict pcr huge", _set("strict_pcrs.99999999999999999999", DIGEST), "is not a PCR number"),
    ("name of 100 000 characters", _set("name", "n" * 100_000),
     "name: 100000 characters, more than 128"),
    ("label of a million characters", _set("components.0.events.0.label", "y" * 1_000_000),
     "label: 1000000 characters, more than 1024"),
    ("too many events", _set("components.0.events", [GOLDEN["components"][0]["events"][0]]
                             * (MAX_EVENTS + 1)), f"more than {MAX_EVENTS} events in all"),
    ("too many components", _set("components", [GOLDEN["components"][0]] * (MAX_COMPONENTS + 1)),
     f"components: {MAX_COMPONENTS + 1} components, more than {MAX_COMPONENTS}"),
    # well-typed nonsense
    ("empty name", _set("name", ""), "name: empty"),
    ("blank name", _set("name", "   "), "name: empty"),
    ("terminal escape in the name", _set("name", "golden\x1b[2J"), "name: control or unprint"),
    ("newline in a label", _set("components.0.events.0.label", "a\nb"), "label: control or"),
    ("the same component twice", lambda document: {
        **document, "components": [document["components"][0]] * 2},
     r"platform-firmware \(PCR 0\): appears twice"),
    ("nothing pinned", lambda document: {**document, "components": [], "strict_pcrs": None},
     "the baseline pins nothing"),
]


def test_the_golden_document_itself_is_accepted() -> None:
    assert GOLDEN["schema"] == SCHEMA == "trustauthority.baseline/v1"
    assert Baseline.from_json(copy.deepcopy(GOLDEN)).to_json() == GOLDEN


@pytest.mark.parametrize(("mutate", "message"), [(mutate, message)
                                                 for _, mutate, message in MALFORMED],
                         ids=[case for case, _, _ in MALFORMED])
def test_from_json_refuses_malformed_documents(mutate: Mutation, message: str) -> None:
    document = mutate(copy.deepcopy(GOLDEN))
    with pytest.raises(UsageError, match=message) as info:
        Baseline.from_json(document)
    assert str(info.value).startswith("malformed baseline: ")
    assert len(str(info.value)) < 300  # bounded, however large the bad value


def test_from_json_accepts_upper_case_hex_and_normalises_it() -> None:
    document = copy.deepcopy(GOLDEN)
    document["components"][0]["events"][0]["digest"] = DIGEST.upper()
    document["strict_pcrs"]["0"] = document["strict_pcrs"]["0"].upper()
    assert Baseline.from_json(document) == Baseline.from_json(GOLDEN)


def test_optional_fields_may_be_left_out() -> None:
    document = copy.deepcopy(GOLDEN)
    del document["secure_boot"], document["strict_pcrs"]
    baseline = Baseline.from_json(document)
    assert baseline.secure_boot is None
    assert baseline.strict_pcrs is None


def test_the_constructor_checks_too() -> None:
    event = ReferenceEvent("ab" * 32, "x")
    component = Component(ComponentKind.KERNEL, 9, (event,))
    assert Baseline(name="ok", components=(component,)).component(ComponentKind.KERNEL, 9)
    with pytest.raises(UsageError, match="expected 40 lowercase hex digits"):
        Baseline(name="sha1", bank="sha1", components=(component,))
    with pytest.raises(UsageError, match="never measured into PCR 8"):
        Component(ComponentKind.KERNEL, 8, (event,))
    with pytest.raises(UsageError, match="not lowercase hex"):
        ReferenceEvent("AB" * 32, "x")
    with pytest.raises(UsageError, match="version: 0 is outside"):
        Baseline(name="v", version=0, components=(component,))
    with pytest.raises(UsageError, match="strict_pcrs"):
        Baseline(name="s", components=(component,), strict_pcrs={99: "00" * 32})


def test_strict_pcrs_are_a_read_only_copy() -> None:
    pinned = {1: "11" * 32, 0: "00" * 32}
    baseline = Baseline(name="s", components=(), strict_pcrs=pinned)
    pinned[0] = "ff" * 32
    assert baseline.strict_pcrs is not None
    assert baseline.strict_pcrs[0] == "00" * 32
    assert list(baseline.strict_pcrs) == [0, 1]
    with pytest.raises(TypeError):
        baseline.strict_pcrs[0] = "ff" * 32  # type: ignore[index]

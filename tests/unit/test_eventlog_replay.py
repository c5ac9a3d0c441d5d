"""Replay of real firmware logs against tpm2_eventlog's PCRs, and golden decoding checks."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

from trustauthority.eventlog import (
    BANKS,
    BootOption,
    BootOrder,
    EfiSignature,
    EfiVariable,
    EventLog,
    EventType,
    GptData,
    ImageLoad,
    LogFormat,
    RawData,
    SecureBootState,
    Separator,
    SignatureDatabase,
    SpecIdEvent,
    Text,
    Undecoded,
    parse_event_log,
    replay,
    replay_steps,
    to_jsonable,
)
from trustauthority.eventlog.constants import DIGEST_SIZES, HASHES

LOG_DIR = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "eventlogs"
LOGS = sorted(LOG_DIR.glob("*.bin"))


def _load(name: str) -> EventLog:
    return parse_event_log((LOG_DIR / f"{name}.bin").read_bytes())


def _expected_pcrs(log_path: Path) -> dict[str, dict[int, bytes]]:
    """The `pcrs:` section of tpm2_eventlog's YAML; PyYAML reads the 0x… values as ints."""
    text = log_path.with_suffix(".tpm2_eventlog.yaml").read_text()
    section: dict[str, dict[int, int]] = yaml.safe_load(text[text.index("\npcrs:"):])["pcrs"]
    return {bank: {pcr: value.to_bytes(DIGEST_SIZES[bank], "big") for pcr, value in pcrs.items()}
            for bank, pcrs in section.items()}


def test_corpus_is_there() -> None:
    assert len(LOGS) == 11


@pytest.mark.parametrize("log_path", LOGS, ids=lambda path: path.stem)
def test_replay_matches_tpm2_eventlog(log_path: Path) -> None:
    expected = _expected_pcrs(log_path)
    replayed = replay(parse_event_log(log_path.read_bytes()))
    assert set(replayed) == set(expected)
    for bank, pcrs in expected.items():
        assert replayed[bank] == pcrs, bank


@pytest.mark.parametrize("log_path", LOGS, ids=lambda path: path.stem)
def test_every_event_decodes_and_serialises(log_path: Path) -> None:
    log = parse_event_log(log_path.read_bytes())
    for event in log.events:
        assert not isinstance(event.decoded, Undecoded), (event.index, event.decoded)
        assert event.describe()
        json.dumps(to_jsonable(event.decoded))


@pytest.mark.parametrize("log_path", LOGS, ids=lambda path: path.stem)
def test_replay_steps_end_at_replay(log_path: Path) -> None:
    log = parse_event_log(log_path.read_bytes())
    for bank in log.banks:
        last: dict[int, bytes] = {}
        for step in replay_steps(log, bank):
            assert step.extended == (step.event.event_type != EventType.EV_NO_ACTION)
            if step.extended:
                last[step.event.pcr] = step.pcr_value
        assert last == replay(log)[bank]


def test_replay_steps_refuses_a_missing_bank() -> None:
    with pytest.raises(ValueError, match="sha256"):
        list(replay_steps(_load("debian-10"), "sha256"))


def test_formats_and_banks() -> None:
    assert _load("uefi-sha1-log").format is LogFormat.SHA1
    assert _load("debian-10").spec_id is None
    cos = _load("cos-85-amd-sev")
    assert cos.format is LogFormat.CRYPTO_AGILE
    assert cos.banks == ("sha1", "sha256", "sha384")
    assert isinstance(cos.events[0].decoded, SpecIdEvent)
    assert cos.spec_id is not None
    assert cos.spec_id.uintn_size == 8
    # The tpm2-tools fixtures declare sha384 and sha512 but carry only sha1 and sha256.
    uefivar = _load("uefivar")
    assert uefivar.spec_id is not None
    assert [alg.name for alg in uefivar.spec_id.algorithms] == list(BANKS)
    assert uefivar.banks == ("sha1", "sha256")
    assert all(parse_event_log(path.read_bytes()).startup_locality is None for path in LOGS)


def _variable(log: EventLog, name: str, event_type: int | None = None) -> EfiVariable:
    for event in log.events:
        decoded = event.decoded
        if (isinstance(decoded, EfiVariable) and decoded.name == name
                and (event_type is None or event.event_type == event_type)):
            return decoded
    raise AssertionError(f"no {name} variable")


def test_secure_boot_variable() -> None:
    assert _variable(_load("rhel8-uefi"), "SecureBoot").value == SecureBootState(enabled=True)
    off = _variable(_load("ubuntu-2104-no-secure-boot"), "SecureBoot")
    assert off.value == SecureBootState(enabled=False)
    assert off.data == b"\x00"


def test_signature_databases() -> None:
    log = _load("arch-linux")
    pk = _variable(log, "PK").value
    assert isinstance(pk, SignatureDatabase)
    assert [sig.subject for sig in pk.signatures] == ["CN=Joe Richey (PK)"]
    dbx = _variable(log, "dbx").value
    assert isinstance(dbx, SignatureDatabase)
    assert {sig.signature_type for sig in dbx.signatures} == {"sha256"}
    assert len(dbx.signatures) == 77
    db = _variable(log, "db").value
    assert isinstance(db, SignatureDatabase)
    assert any(sig.subject is not None and "Microsoft Corporation UEFI CA 2011" in sig.subject
               for sig in db.signatures)


def test_authority_events() -> None:
    log = _load("debian-10")
    shim = _variable(log, "Shim", EventType.EV_EFI_VARIABLE_AUTHORITY).value
    assert isinstance(shim, EfiSignature)
    assert shim.subject == "CN=Debian Secure Boot CA"
    db = _variable(log, "db", EventType.EV_EFI_VARIABLE_AUTHORITY).value
    assert isinstance(db, EfiSignature)
    assert db.owner is not None
    assert db.subject is not None
    assert "Microsoft Corporation UEFI CA 2011" in db.subject
    sbat = _variable(_load("ubuntu-2104-no-secure-boot"), "SbatLevel").value
    assert sbat is not None
    assert sbat.describe() == "sbat,1,2021030218"


def test_boot_variables() -> None:
    log = _load("arch-linux")
    assert _variable(log, "BootOrder").value == BootOrder((0, 3, 2))
    boot = _variable(log, "Boot0000").value
    assert isinstance(boot, BootOption)
    assert boot.description == "Linux Boot Manager"
    assert boot.device_path == ("HD(1,GPT,1A504613-19B5-4B44-A83D-D926D40DAA1C,0x800,0x80000)/"
                                "\\EFI\\SYSTEMD\\SYSTEMD-BOOTX64.EFI")
    assert boot.active


def test_boot_application_device_path() -> None:
    log = _load("arch-linux")
    images = [event.decoded for event in log.events
              if event.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION]
    assert isinstance(images[0], ImageLoad)
    assert images[0].device_path == (
        "PciRoot(0x0)/Pci(0x17,0x0)/Sata(0x1,0xffff,0x0)/"
        "HD(1,GPT,1A504613-19B5-4B44-A83D-D926D40DAA1C,0x800,0x80000)/"
        "\\EFI\\SYSTEMD\\SYSTEMD-BOOTX64.EFI")
    cos = [event.decoded for event in _load("cos-85-amd-sev").events
           if event.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION]
    assert isinstance(cos[0], ImageLoad)
    assert cos[0].device_path.startswith(
        "PciRoot(0x0)/Pci(0x4,0x0)/NVMe(0x1,00-00-00-00-00-00-00-00)/")
    assert cos[0].device_path.endswith("/\\EFI\\BOOT\\BOOTX64.EFI")


def _ipl_texts(log: EventLog) -> list[Text]:
    return [event.decoded for event in log.events
            if event.event_type == EventType.EV_IPL and isinstance(event.decoded, Text)]


def test_kernel_command_lines() -> None:
    grub = [text.text for text in _ipl_texts(_load("cos-85-amd-sev"))
            if text.text.startswith("kernel_cmdline:")]
    assert grub[0].startswith("kernel_cmdline: /syslinux/vmlinuz.A init=/usr/lib/systemd/systemd")
    # systemd-stub logs UTF-16LE with a NUL; the arch log's 365 bytes end in half a CHAR16.
    arch = _ipl_texts(_load("arch-linux"))[0]
    assert arch.encoding == "utf-16-le"
    assert arch.text.startswith("initrd=\\intel-ucode.img initrd=\\initramfs-linux-lts.img")
    assert arch.text.endswith("l1tf=off")
    sd_boot = _ipl_texts(_load("sd-boot-fedora37"))
    assert [text.text for text in sd_boot] == [" console=ttyS0 console=tty0 efi=debug "] * 2


def test_other_decoders() -> None:
    arch = _load("arch-linux")
    assert arch.events[1].decoded == Text("546bfb1e-1d0c-4055-a4ad-4ef4bf17b83a", "guid")
    gpt = next(event.decoded for event in arch.events if isinstance(event.decoded, GptData))
    assert [part.name for part in gpt.partitions] == ["EFI System", "Linux RAID",
                                                       "Linux filesystem"]
    separators = [event.decoded for event in arch.events if isinstance(event.decoded, Separator)]
    assert len(separators) == 8
    assert not any(sep.is_error for sep in separators)
    nonhost = _load("debian-10").events[1]
    assert nonhost.type_name == "EV_NONHOST_INFO"
    assert isinstance(nonhost.decoded, RawData)


def _insert_startup_locality(raw: bytes, log: EventLog, locality: int, position: int) -> bytes:
    """A TCG_PCR_EVENT2 StartupLocality event (zero digests) put before record `position`."""
    zeros = b"".join(struct.pack("<H", {"sha1": 4, "sha256": 11}[bank]) + bytes(DIGEST_SIZES[bank])
                     for bank in log.digest_names)
    data = b"StartupLocality\x00" + bytes((locality,))
    event = (struct.pack("<III", 0, EventType.EV_NO_ACTION, len(log.digest_names)) + zeros
             + struct.pack("<I", len(data)) + data)
    at = log.records[position][0]
    return raw[:at] + event + raw[at:]


def test_startup_locality_sets_pcr0_start_in_a_real_log() -> None:
    raw = (LOG_DIR / "arch-linux.bin").read_bytes()
    plain = parse_event_log(raw)
    assert plain.records[0][1] == 0  # PCR 0's first extend is the first record after the header
    log = parse_event_log(_insert_startup_locality(raw, plain, 3, 0))
    assert log.startup_locality == 3
    for bank in log.banks:
        expected: dict[int, bytes] = {0: bytes(DIGEST_SIZES[bank] - 1) + b"\x03"}
        for event in log.events:
            if event.event_type != EventType.EV_NO_ACTION:
                start = expected.get(event.pcr, bytes(DIGEST_SIZES[bank]))
                expected[event.pcr] = HASHES[bank](start + event.digests[bank]).digest()
        replayed = replay(log)[bank]
        assert replayed == dict(sorted(expected.items()))
        assert replayed[0] != replay(plain)[bank][0]
        assert {pcr: value for pcr, value in replayed.items() if pcr} == {
            pcr: value for pcr, value in replay(plain)[bank].items() if pcr}


def test_events_view_matches_records() -> None:
    log = _load("rhel8-uefi")
    assert len(log) == len(log.events) == 83
    for event, record in zip(log.events[1:], log.records, strict=True):
        assert (event.offset, event.pcr, event.event_type, event.data) == (
            record[0], record[1], record[2], record[4])
        assert event.digests == dict(zip(log.digest_names, record[3], strict=True))


def test_json_of_decoded_data() -> None:
    decoded: Any = to_jsonable(_variable(_load("arch-linux"), "Boot0000"))
    assert decoded["kind"] == "efi_variable"
    assert decoded["variable_guid"] == "8be4df61-93ca-11d2-aa0d-00e098032b8c"
    assert decoded["value"]["kind"] == "boot_option"
    assert decoded["value"]["description"] == "Linux Boot Manager"

"""A simulated UEFI measured boot for software TPMs: the events real firmware and GRUB write.

swtpm has no firmware, so development hosts, the demo and the tests "boot" by extending PCRs
with these events while writing the matching crypto-agile log, exactly as a PC Client platform
would (TCG PC Client PFP §3.3.4, §10.4): CRTM and firmware in PCR 0, boot variables in PCR 1,
boot applications in PCR 4, Secure Boot policy in PCR 7, GRUB commands in PCR 8 and the files
it loads in PCR 9.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from trustauthority.eventlog import (
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    EventSpec,
    EventType,
    build_crypto_agile_log,
    efi_action,
    efi_variable_data,
    event_digest,
    image_load_event_data,
    ipl_string,
    separator,
)

#: EFI_CERT_SHA256_GUID: a signature list entry holding a SHA-256 image digest
_EFI_CERT_SHA256 = "c1c41626-504c-4092-aca9-41f936934328"
_OWNER = "77fa9abd-0359-4d32-bd60-28f4e78f784b"  # Microsoft's owner GUID, as on real machines


@dataclass(frozen=True)
class BootImage:
    """What a host boots. Two hosts with equal images produce equal PCRs."""

    firmware: bytes = b"OVMF firmware volume 2024.02"
    secure_boot: bool = True
    shim: bytes = b"shimx64.efi 15.8"
    grub: bytes = b"grubx64.efi 2.12"
    kernel: bytes = b"vmlinuz-6.1.0-28-amd64"
    initrd: bytes = b"initrd.img-6.1.0-28-amd64"
    kernel_path: str = "/boot/vmlinuz-6.1.0-28-amd64"
    initrd_path: str = "/boot/initrd.img-6.1.0-28-amd64"
    cmdline: str = "root=UUID=4f3c0b7e-6a1d-4c1e-9a53-1f2e3d4c5b6a ro quiet"


GOLDEN_IMAGE = BootImage()
#: a kernel nobody approved (say, one with a rootkit), booted the same way
MODIFIED_KERNEL_IMAGE = BootImage(kernel=b"vmlinuz-6.1.0-28-amd64 (patched)")


def _signature_list(entries: Sequence[bytes]) -> bytes:
    """EFI_SIGNATURE_LIST of SHA-256 entries (UEFI 2.10 §32.4.1)."""
    header_size = 0
    entry_size = 16 + 32
    body = b"".join(uuid.UUID(_OWNER).bytes_le + entry for entry in entries)
    return (uuid.UUID(_EFI_CERT_SHA256).bytes_le
            + (28 + len(body)).to_bytes(4, "little")
            + header_size.to_bytes(4, "little")
            + entry_size.to_bytes(4, "little")
            + body)


def boot_events(image: BootImage = GOLDEN_IMAGE) -> list[EventSpec]:
    """The events of one boot, in the order firmware and GRUB measure them."""
    digest = hashlib.sha256
    pk = _signature_list([digest(b"platform key").digest()])
    kek = _signature_list([digest(b"key exchange key").digest()])
    db = _signature_list([digest(image.shim).digest(), digest(b"vendor ca").digest()])
    dbx = _signature_list([digest(b"revoked bootloader").digest()])
    events = [
        # PCR 0: the CRTM and platform firmware (PFP §3.3.4.1)
        EventSpec(0, EventType.EV_S_CRTM_VERSION, "1.0\0".encode("utf-16-le")),
        EventSpec(0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB,
                  (0xFFC00000).to_bytes(8, "little") + len(image.firmware).to_bytes(8, "little"),
                  measured=image.firmware),
        # PCR 7: Secure Boot policy (PFP §3.3.4.8)
        EventSpec(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, efi_variable_data(
            EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01" if image.secure_boot else b"\x00")),
        EventSpec(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
                  efi_variable_data(EFI_GLOBAL_VARIABLE, "PK", pk)),
        EventSpec(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
                  efi_variable_data(EFI_GLOBAL_VARIABLE, "KEK", kek)),
        EventSpec(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
                  efi_variable_data(EFI_IMAGE_SECURITY_DATABASE, "db", db)),
        EventSpec(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
                  efi_variable_data(EFI_IMAGE_SECURITY_DATABASE, "dbx", dbx)),
        # PCR 1: boot configuration (PFP §3.3.4.2)
        EventSpec(1, EventType.EV_EFI_VARIABLE_BOOT,
                  efi_variable_data(EFI_GLOBAL_VARIABLE, "BootOrder", b"\x01\x00")),
        EventSpec(1, EventType.EV_EFI_VARIABLE_BOOT, efi_variable_data(
            EFI_GLOBAL_VARIABLE, "Boot0001",
            b"\x01\x00\x00\x00\x00\x00" + "debian\0".encode("utf-16-le"))),
        # PCR 4: the boot manager calls the boot application (PFP §3.3.4.5)
        EventSpec(4, EventType.EV_EFI_ACTION,
                  efi_action("Calling EFI Application from Boot Option")),
    ]
    # the separators close the pre-OS measurements of PCRs 0-7 (PFP §3.3.2.2)
    events += [EventSpec(pcr, EventType.EV_SEPARATOR, separator()) for pcr in range(8)]
    events += [
        EventSpec(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
                  image_load_event_data("\\EFI\\debian\\shimx64.efi"), measured=image.shim),
        EventSpec(7, EventType.EV_EFI_VARIABLE_AUTHORITY, efi_variable_data(
            EFI_IMAGE_SECURITY_DATABASE, "db", digest(image.shim).digest())),
        EventSpec(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
                  image_load_event_data("\\EFI\\debian\\grubx64.efi"), measured=image.grub),
        # GRUB: every command into PCR 8, every file it loads into PCR 9 (GRUB manual §18.2)
        EventSpec(8, EventType.EV_IPL, ipl_string(f"grub_cmd: linux {image.kernel_path} "
                                                  f"{image.cmdline}")),
        EventSpec(9, EventType.EV_IPL, ipl_string(image.kernel_path), measured=image.kernel),
        EventSpec(8, EventType.EV_IPL, ipl_string(f"kernel_cmdline: {image.kernel_path} "
                                                  f"{image.cmdline}")),
        EventSpec(8, EventType.EV_IPL, ipl_string(f"grub_cmd: initrd {image.initrd_path}")),
        EventSpec(9, EventType.EV_IPL, ipl_string(image.initrd_path), measured=image.initrd),
        EventSpec(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
                  image_load_event_data(image.kernel_path.replace("/", "\\")),
                  measured=image.kernel),
    ]
    return events


def boot_log(image: BootImage = GOLDEN_IMAGE,
             banks: Sequence[str] = ("sha1", "sha256")) -> tuple[list[EventSpec], bytes]:
    """The events of a boot and the crypto-agile log that records them."""
    events = boot_events(image)
    return events, build_crypto_agile_log(events, banks)


def extends(events: Sequence[EventSpec],
            banks: Sequence[str]) -> list[tuple[int, dict[str, bytes]]]:
    """What a TPM must be extended with, event by event: (PCR, {bank: digest})."""
    return [(event.pcr, {bank: event_digest(event, bank) for bank in banks}) for event in events
            if event.event_type != EventType.EV_NO_ACTION]


class Extendable(Protocol):
    """What `measure` needs of a TPM (AgentTpm has it)."""

    def pcr_extend(self, pcr: int, digests: Mapping[str, bytes]) -> None: ...


def measure(tpm: Extendable, image: BootImage = GOLDEN_IMAGE,
            banks: Sequence[str] = ("sha1", "sha256")) -> tuple[list[EventSpec], bytes]:
    """Boot `image` on `tpm`, as firmware would: extend its PCRs event by event. Returns the
    events and the event log that records them."""
    events, raw_log = boot_log(image, banks)
    for pcr, digests in extends(events, banks):
        tpm.pcr_extend(pcr, digests)
    return events, raw_log


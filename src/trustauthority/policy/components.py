"""Sort a log's measured events into named boot components (firmware, Secure Boot, kernel, …).

Baselines store, and appraisal compares, the digests of each component in order; this module
decides which component an event belongs to and reads the Secure Boot flag.

Where the component comes from. PCRs 0-7 follow the PCR usage of the TCG PC Client PFP 1.05
(§3.3.4.1-§3.3.4.8) and the event types of §10.4.1 (Table 9); that part is fixed by the spec.
PCRs 8-15 are left to the OS (PFP §3.3.4) and no spec says what is in them, so that part reads
what boot loaders are known to write, as the real logs in our test corpus show:

* GRUB 2 (Ubuntu, Debian, COS, RHEL): each command as EV_IPL text in PCR 8 (``grub_cmd: …``;
  RHEL's older patches write ``grub_cmd …`` with no colon), the command line it hands the kernel
  in PCR 8 (``kernel_cmdline: …``, RHEL: ``grub_kernel_cmdline …``) and every file it reads in
  PCR 9. *Heuristic*: a PCR 9 file is the ``kernel`` when the last PCR 8 command was ``linux``
  (``linuxefi``, ``linux16``) and an ``initrd`` after ``initrd`` (…), or when RHEL names it
  ``grub_linuxefi Kernel``/``Initrd``; every other PCR 8/9 event is ``boot-loader-config``.
* systemd-boot / systemd-stub and the Linux EFI stub (Arch, Fedora): the stub logs the kernel
  command line as UTF-16 EV_IPL text, in PCR 8 before systemd 251 and PCR 12 since (*heuristic*:
  any UTF-16 EV_IPL in PCR 8 and any EV_IPL in PCR 12 is ``cmdline``); Linux ≥ 5.17 measures
  the initrd it loads into PCR 9 as EV_EVENT_TAG 0x8F3B22EC ("Linux initrd") and ≥ 6.1 its
  load options as 0x8F3B22ED: those are ``initrd`` and ``cmdline``.
* A kernel started as an EFI application (EFI stub, or by shim after GRUB) is also measured by
  the firmware into PCR 4 with its Authenticode digest; it is one of the ``boot-applications``
  there (its label, the device path, names the file when the firmware records one).
* shim's MokList/MokListX/MokListTrusted (EV_IPL in PCR 14) are ``mok``.
* Unified kernel images (systemd-stub measuring its sections into PCR 11) are in no log we
  have, so they are not recognised: such events, and any other in PCRs 10-23, are ``other``.

Security: the event type and data that choose an event's component are not covered by the
quote. They decide *where* a verified digest is compared and what it is called, never *whether*
it is compared: every measured event of a compared PCR is either matched against the baseline or
reported (see `appraise`). The Secure Boot flag is believed only when the event's digest is the
hash of its data, which PFP §3.3.4.8 and §10.4.1 require of EV_EFI_VARIABLE_DRIVER_CONFIG.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from trustauthority.eventlog import (
    EFI_GLOBAL_VARIABLE,
    EfiVariable,
    Event,
    EventType,
    ImageLoad,
    SecureBootState,
    TaggedEvent,
    Text,
)
from trustauthority.eventlog.constants import HASHES, PCR_COUNT


class ComponentKind(StrEnum):
    """What a group of measured events is. Values are the names baselines store."""

    #: PCR 0: S-CRTM version and contents, firmware volumes, POST code, non-host info (§3.3.4.1)
    PLATFORM_FIRMWARE = "platform-firmware"
    #: PCRs 1 and 3: platform configuration, Boot#### and BootOrder, SMBIOS (§3.3.4.2, §3.3.4.4)
    FIRMWARE_CONFIG = "firmware-config"
    #: PCR 2: UEFI drivers and applications from option ROMs and pluggable devices (§3.3.4.3)
    OPTION_ROMS = "option-roms"
    #: PCR 4 EV_EFI_ACTION ("Calling EFI Application from Boot Option"), PCR 5 ExitBootServices
    #: actions and the separators of both (§3.3.4.5, §3.3.4.6)
    BOOT_MANAGER = "boot-manager"
    #: PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION: Authenticode digests of shim, GRUB,
    #: systemd-boot, an EFI-stub kernel, … (§3.3.4.5, §10.2.3)
    BOOT_APPLICATIONS = "boot-applications"
    #: PCR 5 EV_EFI_GPT_EVENT: the boot disk's GPT header and partition entries (§3.3.4.6)
    PARTITION_TABLE = "partition-table"
    #: PCR 6: host platform manufacturer specific (§3.3.4.7)
    PLATFORM_SPECIFIC = "platform-specific"
    #: PCR 7 configuration: SecureBoot, PK, KEK, db, dbx, … and the separator (§3.3.4.8)
    SECURE_BOOT = "secure-boot"
    #: PCR 7 EV_EFI_VARIABLE_AUTHORITY: the db entry (or shim's key) that verified each loaded
    #: image, and shim's SbatLevel (§3.3.4.8)
    SECURE_BOOT_AUTHORITY = "secure-boot-authority"
    #: PCRs 8-9: boot loader commands and the files it reads other than kernel and initrd
    BOOT_LOADER_CONFIG = "boot-loader-config"
    #: PCR 9: the kernel file the boot loader read
    KERNEL = "kernel"
    #: PCR 9: the initrd file(s)
    INITRD = "initrd"
    #: PCRs 8, 9, 12: the kernel command line
    CMDLINE = "cmdline"
    #: PCR 14: shim's Machine Owner Key lists
    MOK = "mok"
    #: PCRs 10-23 otherwise: events no rule above names
    OTHER = "other"


#: the PCRs each kind can occur in: exactly what `classify` produces (a test checks it), and what
#: `Baseline` accepts, so a document naming e.g. a PCR 0 kernel is refused as malformed
KIND_PCRS: Final[dict[ComponentKind, frozenset[int]]] = {
    ComponentKind.PLATFORM_FIRMWARE: frozenset({0}),
    ComponentKind.FIRMWARE_CONFIG: frozenset({1, 3}),
    ComponentKind.OPTION_ROMS: frozenset({2}),
    ComponentKind.BOOT_MANAGER: frozenset({4, 5}),
    ComponentKind.BOOT_APPLICATIONS: frozenset({4}),
    ComponentKind.PARTITION_TABLE: frozenset({5}),
    ComponentKind.PLATFORM_SPECIFIC: frozenset({6}),
    ComponentKind.SECURE_BOOT: frozenset({7}),
    ComponentKind.SECURE_BOOT_AUTHORITY: frozenset({7}),
    ComponentKind.BOOT_LOADER_CONFIG: frozenset({8, 9}),
    ComponentKind.KERNEL: frozenset({9}),
    ComponentKind.INITRD: frozenset({9}),
    ComponentKind.CMDLINE: frozenset({8, 9, 12}),
    ComponentKind.MOK: frozenset({14}),
    ComponentKind.OTHER: frozenset(range(10, PCR_COUNT)),
}

#: PCRs 0-7 with one kind for every event type not singled out below
_PCR_KIND: Final[dict[int, ComponentKind]] = {
    0: ComponentKind.PLATFORM_FIRMWARE,
    1: ComponentKind.FIRMWARE_CONFIG,
    2: ComponentKind.OPTION_ROMS,
    3: ComponentKind.FIRMWARE_CONFIG,
    4: ComponentKind.BOOT_MANAGER,
    5: ComponentKind.BOOT_MANAGER,
    6: ComponentKind.PLATFORM_SPECIFIC,
    7: ComponentKind.SECURE_BOOT,
}

#: (PCR, event type) pairs with a kind of their own
_TYPE_KIND: Final[dict[tuple[int, int], ComponentKind]] = {
    (4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION): ComponentKind.BOOT_APPLICATIONS,
    (5, EventType.EV_EFI_GPT_EVENT): ComponentKind.PARTITION_TABLE,
    (7, EventType.EV_EFI_VARIABLE_AUTHORITY): ComponentKind.SECURE_BOOT_AUTHORITY,
}

_NO_ACTION: Final = int(EventType.EV_NO_ACTION)
_IPL: Final = int(EventType.EV_IPL)
_EVENT_TAG: Final = int(EventType.EV_EVENT_TAG)
_VARIABLE_DRIVER_CONFIG: Final = int(EventType.EV_EFI_VARIABLE_DRIVER_CONFIG)

# GRUB 2 (grub-core/kern/tpm.c and distribution patches)
_GRUB_COMMAND: Final = re.compile(r"^grub_cmd:? (\S+)")
_GRUB_CMDLINE_PREFIXES: Final = ("kernel_cmdline: ", "grub_kernel_cmdline ")
_GRUB_KERNEL_COMMANDS: Final = frozenset({"linux", "linuxefi", "linux16"})
_GRUB_INITRD_COMMANDS: Final = frozenset({"initrd", "initrdefi", "initrd16"})
_RHEL_KERNEL: Final = "grub_linuxefi Kernel"
_RHEL_INITRD: Final = "grub_linuxefi Initrd"
# Linux EFI stub (drivers/firmware/efi/libstub/efistub.h)
_LINUX_INITRD_TAG: Final = 0x8F3B22EC
_LINUX_LOAD_OPTIONS_TAG: Final = 0x8F3B22ED

#: longest label kept; device paths and GRUB menu entries run to hundreds of characters
MAX_LABEL: Final = 160


def classify(events: Iterable[Event]) -> Iterator[tuple[Event, ComponentKind]]:
    """Each measured event (EV_NO_ACTION ones are skipped: never extended, PFP §10.4.5) with its
    component kind, in log order. Events must be a whole log, in order: GRUB's PCR 9 files are
    told apart by the PCR 8 command before them."""
    after_command: ComponentKind | None = None  # what GRUB's next PCR 9 file is
    for event in events:
        if event.event_type == _NO_ACTION:
            continue
        pcr = event.pcr
        if pcr < 8:
            yield event, _TYPE_KIND.get((pcr, event.event_type), _PCR_KIND[pcr])
            continue
        text = _ipl_text(event)
        if pcr == 8:
            kind, after_command = _pcr8(text, after_command)
        elif pcr == 9:
            kind, after_command = _pcr9(event, text, after_command)
        elif pcr == 12 and text is not None:
            kind = ComponentKind.CMDLINE
        elif pcr == 14 and text is not None:
            kind = ComponentKind.MOK
        else:
            kind = ComponentKind.OTHER
        yield event, kind


def _ipl_text(event: Event) -> Text | None:
    if event.event_type != _IPL:
        return None
    decoded = event.decoded
    return decoded if isinstance(decoded, Text) else None


def _pcr8(text: Text | None,
          after_command: ComponentKind | None) -> tuple[ComponentKind, ComponentKind | None]:
    if text is None:
        return ComponentKind.BOOT_LOADER_CONFIG, after_command
    if text.text.startswith(_GRUB_CMDLINE_PREFIXES):
        return ComponentKind.CMDLINE, after_command
    command = _GRUB_COMMAND.match(text.text)
    if command is not None:
        word = command.group(1)
        if word in _GRUB_KERNEL_COMMANDS:
            return ComponentKind.BOOT_LOADER_CONFIG, ComponentKind.KERNEL
        if word in _GRUB_INITRD_COMMANDS:
            return ComponentKind.BOOT_LOADER_CONFIG, ComponentKind.INITRD
        return ComponentKind.BOOT_LOADER_CONFIG, None
    if text.encoding == "utf-16-le":  # systemd-stub before 251
        return ComponentKind.CMDLINE, after_command
    return ComponentKind.BOOT_LOADER_CONFIG, after_command


def _pcr9(event: Event, text: Text | None,
          after_command: ComponentKind | None) -> tuple[ComponentKind, ComponentKind | None]:
    if event.event_type == _EVENT_TAG:
        decoded = event.decoded
        tag = decoded.tag_id if isinstance(decoded, TaggedEvent) else None
        if tag == _LINUX_INITRD_TAG:
            return ComponentKind.INITRD, after_command
        if tag == _LINUX_LOAD_OPTIONS_TAG:
            return ComponentKind.CMDLINE, after_command
        return ComponentKind.BOOT_LOADER_CONFIG, after_command
    if text is None:
        return ComponentKind.BOOT_LOADER_CONFIG, after_command
    if text.text == _RHEL_KERNEL:
        return ComponentKind.KERNEL, None
    if text.text == _RHEL_INITRD:
        return ComponentKind.INITRD, after_command
    if after_command is ComponentKind.KERNEL:
        return ComponentKind.KERNEL, None  # one kernel file per `linux` command
    if after_command is ComponentKind.INITRD:
        return ComponentKind.INITRD, after_command  # `initrd` may name several files
    return ComponentKind.BOOT_LOADER_CONFIG, after_command


def label(event: Event) -> str:
    """A short, printable description of an event for people (never compared)."""
    decoded = event.decoded
    if isinstance(decoded, ImageLoad) and "\\" in decoded.device_path:
        # the file path node is what identifies a boot application; the hardware path before
        # it (PciRoot(0x0)/Pci(…)/Sata(…)/HD(…)) differs from host to host
        text = decoded.device_path[decoded.device_path.index("\\"):]
    else:
        text = event.describe()
    return printable(text, MAX_LABEL)


def printable(text: str, limit: int) -> str:
    """`text` with control and other unprintable characters escaped, cut to `limit`."""
    escaped = text
    if not text.isprintable():
        escaped = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 0x100
                          else f"\\u{ord(ch):04x}" for ch in text)
    return escaped if len(escaped) <= limit else escaped[:limit - 1] + "…"


@dataclass(frozen=True)
class SecureBootObservation:
    """The SecureBoot variable as PCR 7 records it (UEFI 2.10 §3.3: 1 when Secure Boot is on)."""

    #: True or False when every SecureBoot event's digest is the hash of its data; else None
    enabled: bool | None
    #: the (first) SecureBoot event, if any
    event: Event | None
    #: why `enabled` is None, for a reason line
    problem: str | None = None


def secure_boot_state(events: Iterable[Event], bank: str) -> SecureBootObservation:
    """Read the Secure Boot flag from the PCR 7 EV_EFI_VARIABLE_DRIVER_CONFIG SecureBoot events.

    The decoded value is believed only where the event's `bank` digest equals the hash of its
    data (the UEFI_VARIABLE_DATA), so a log cannot claim "enabled" next to the digest of
    "disabled". Several SecureBoot events must all say enabled.
    """
    hash_ = HASHES[bank]
    first: Event | None = None
    states: list[bool] = []
    for event in events:
        if event.pcr != 7 or event.event_type != _VARIABLE_DRIVER_CONFIG:
            continue
        if not event.names_variable(EFI_GLOBAL_VARIABLE, "SecureBoot"):
            continue  # PK, KEK, db, dbx: their (costly) decoding is not needed here
        decoded = event.decoded
        if not isinstance(decoded, EfiVariable):
            continue
        if first is None:
            first = event
        if hash_(event.data).digest() != event.digests.get(bank):
            return SecureBootObservation(
                None, event, f"the SecureBoot event #{event.index} has data that does not hash "
                             f"to its {bank} digest")
        states.append(isinstance(decoded.value, SecureBootState) and decoded.value.enabled)
    if first is None:
        return SecureBootObservation(None, None, "the log has no SecureBoot variable event in "
                                                 "PCR 7")
    return SecureBootObservation(all(states), first)

"""Build crypto-agile event logs (pure): the log a measured boot into a software TPM would leave.

Tests and the demo extend a swtpm with `event_digest(spec, bank)` for each event and hand the
verifier `build_crypto_agile_log(specs)`; replaying that log gives the PCRs the TPM holds.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from uuid import UUID

from trustauthority.eventlog.constants import (
    ALGORITHM_IDS,
    BANKS,
    DIGEST_SIZES,
    HASHES,
    MAX_EVENT_DATA_SIZE,
    PCR_COUNT,
    SPEC_ID_EVENT03,
    STARTUP_LOCALITY,
    EventType,
)
from trustauthority.eventlog.devicepath import device_path_from_text

_NO_ACTION: Final = int(EventType.EV_NO_ACTION)
_UINTN_64BIT: Final = 2  # Spec ID uintnSize code for 8-byte UINTN


@dataclass(frozen=True)
class EventSpec:
    """One event to put in a built log."""

    pcr: int
    event_type: int  # e.g. EventType.EV_EFI_BOOT_SERVICES_APPLICATION
    data: bytes  # the event data written to the log
    measured: bytes | None = None  # bytes whose hash is the digest; None -> the hash of `data`


def event_digest(spec: EventSpec, bank: str) -> bytes:
    """What the TPM must be extended with for `spec` in `bank`.

    Raises ValueError for EV_NO_ACTION events: they are logged with zero digests and never
    extended (PFP §10.4.5), so there is nothing to extend.
    """
    if spec.event_type == _NO_ACTION:
        raise ValueError("EV_NO_ACTION events are never extended")
    if bank not in HASHES:
        raise ValueError(f"unknown bank {bank!r} (one of {', '.join(BANKS)})")
    return HASHES[bank](spec.data if spec.measured is None else spec.measured).digest()


def _check_banks(banks: Sequence[str]) -> tuple[str, ...]:
    if isinstance(banks, str):
        raise TypeError("banks is a sequence of bank names, not one string")
    chosen = tuple(banks)
    if not chosen:
        raise ValueError("at least one bank is needed")
    for bank in chosen:
        if bank not in HASHES:
            raise ValueError(f"unknown bank {bank!r} (one of {', '.join(BANKS)})")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"a bank is listed twice in {list(chosen)}")
    return chosen


def _spec_id_event(banks: tuple[str, ...]) -> bytes:
    """TCG_PCClientPCREvent carrying TCG_EfiSpecIdEvent (PFP §10.4.5.1): PC Client platform
    class 0, spec 2.0 errata 0, 64-bit UINTN, the banks, no vendor info."""
    body = SPEC_ID_EVENT03 + struct.pack("<IBBBBI", 0, 0, 2, 0, _UINTN_64BIT, len(banks))
    body += b"".join(struct.pack("<HH", ALGORITHM_IDS[bank], DIGEST_SIZES[bank]) for bank in banks)
    body += b"\x00"  # vendorInfoSize
    return struct.pack("<II", 0, _NO_ACTION) + bytes(20) + struct.pack("<I", len(body)) + body


def _event2(pcr: int, event_type: int, digests: Sequence[tuple[str, bytes]], data: bytes) -> bytes:
    """TCG_PCR_EVENT2 (PFP §10.2.2)."""
    out = [struct.pack("<III", pcr, event_type, len(digests))]
    out.extend(struct.pack("<H", ALGORITHM_IDS[bank]) + digest for bank, digest in digests)
    out.append(struct.pack("<I", len(data)) + data)
    return b"".join(out)


def build_crypto_agile_log(events: Sequence[EventSpec], banks: Sequence[str] = ("sha1", "sha256"),
                           startup_locality: int | None = None) -> bytes:
    """A crypto-agile log: the Spec ID event, an optional StartupLocality event, then `events`.

    EV_NO_ACTION specs are logged with zero digests, as firmware does. Raises ValueError for a
    PCR outside 0-23, an unknown or repeated bank, oversized data or a locality outside 0-255.
    """
    chosen = _check_banks(banks)
    parts = [_spec_id_event(chosen)]
    zeros = [(bank, bytes(DIGEST_SIZES[bank])) for bank in chosen]
    if startup_locality is not None:
        if not 0 <= startup_locality <= 0xFF:
            raise ValueError(f"startup locality {startup_locality} is not a byte")
        parts.append(_event2(0, _NO_ACTION, zeros, STARTUP_LOCALITY + bytes((startup_locality,))))
    for spec in events:
        if not 0 <= spec.pcr < PCR_COUNT:
            raise ValueError(f"PCR {spec.pcr} is not a PC Client PCR (0-{PCR_COUNT - 1})")
        if not 0 <= spec.event_type <= 0xFFFFFFFF:
            raise ValueError(f"event type {spec.event_type} does not fit a UINT32")
        if len(spec.data) > MAX_EVENT_DATA_SIZE:
            raise ValueError(f"event data of {len(spec.data)} bytes exceeds the parser's limit")
        if spec.event_type == _NO_ACTION:
            digests = zeros
        else:
            digests = [(bank, event_digest(spec, bank)) for bank in chosen]
        parts.append(_event2(spec.pcr, spec.event_type, digests, spec.data))
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# Event data as firmware and boot loaders write it.


def efi_variable_data(guid: UUID | str, name: str, data: bytes) -> bytes:
    """UEFI_VARIABLE_DATA: VariableName GUID, name length in CHAR16s, data length, name, data."""
    variable_guid = guid if isinstance(guid, UUID) else UUID(guid)
    encoded = name.encode("utf-16-le")
    return (variable_guid.bytes_le + struct.pack("<QQ", len(encoded) // 2, len(data))
            + encoded + data)


def image_load_event_data(path: str | bytes, *, location: int = 0, length: int = 0,
                          link_time_address: int = 0) -> bytes:
    """UEFI_IMAGE_LOAD_EVENT (PFP §10.2.3) with 64-bit UINTNs.

    `path` is either device-path bytes or UEFI device-path text such as
    `PciRoot(0x0)/Pci(0x1,0x1)/HD(1,GPT,<guid>,0x800,0x100000)/\\EFI\\BOOT\\BOOTX64.EFI`
    (see `devicepath.device_path_from_text` for the nodes it understands).
    """
    device_path = path if isinstance(path, bytes) else device_path_from_text(path)
    return struct.pack("<QQQQ", location, length, link_time_address, len(device_path)) + device_path


def ipl_string(text: str, *, utf16: bool = False) -> bytes:
    """EV_IPL data: grub writes UTF-8 with a NUL; systemd-boot writes UTF-16LE with a NUL."""
    return (text + "\x00").encode("utf-16-le" if utf16 else "utf-8")


def efi_action(text: str) -> bytes:
    """EV_EFI_ACTION data: the ASCII action string, without a NUL (PFP §10.4.1)."""
    return text.encode("ascii")


def separator(*, error: bool = False) -> bytes:
    """EV_SEPARATOR data: UINT32 0, or 1 when the phase ended with an error (PFP §10.4.1)."""
    return struct.pack("<I", 1 if error else 0)

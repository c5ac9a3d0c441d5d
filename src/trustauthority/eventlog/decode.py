"""Event data bytes to the typed views of `data.py`, chosen by event type.

Decoding is lazy (`Event.decoded`) and forgiving: data that does not decode becomes `Undecoded`
with the reason, because the digests, not the data, are what a verifier checks. Only the Spec ID
header, which says how to read the rest of the log, is parsed strictly (by `parse.py`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final
from uuid import UUID

from cryptography import x509

from trustauthority.errors import EventLogFormatError
from trustauthority.eventlog.constants import (
    ALGORITHM_NAMES,
    DIGEST_SIZES,
    EFI_CERT_X509_GUID,
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    MAX_DIGEST_SIZE,
    MAX_DIGESTS,
    SHIM_LOCK_GUID,
    SIGNATURE_TYPES,
    SPEC_ID_EVENT03,
    STARTUP_LOCALITY,
    EventType,
    algorithm_name,
)
from trustauthority.eventlog.data import (
    AlgorithmSize,
    BootOption,
    BootOrder,
    EfiSignature,
    EfiVariable,
    EventData,
    FirmwareBlob,
    GptData,
    GptPartition,
    ImageLoad,
    NoActionData,
    RawData,
    SecureBootState,
    Separator,
    SignatureDatabase,
    SpecIdEvent,
    StartupLocality,
    TaggedEvent,
    Text,
    Undecoded,
    VariableText,
    VariableValue,
)
from trustauthority.eventlog.devicepath import device_path_to_text
from trustauthority.eventlog.reader import Reader

_BOOT_OPTION: Final = re.compile(r"^Boot[0-9A-Fa-f]{4}$")
_GPT_SIGNATURE: Final = b"EFI PART"
_GPT_HEADER_SIZE: Final = 92  # EFI_PARTITION_TABLE_HEADER as UEFI 2.10 §5.3.2 defines it
_MIN_GPT_ENTRY_SIZE: Final = 128
_EFI_SIGNATURE_LIST_HEADER: Final = 28  # SignatureType GUID + three UINT32 sizes
_DER_SEQUENCE: Final = 0x30


def parse_spec_id(reader: Reader) -> SpecIdEvent:
    """TCG_EfiSpecIdEvent (PFP §10.4.5.1), strictly: its sizes decide how every event is read."""
    signature = reader.take(16, "Spec ID signature")
    platform_class = reader.u32("Spec ID platformClass")
    minor, major, errata, uintn_code = reader.take(4, "Spec ID version fields")
    if uintn_code not in (1, 2):
        raise reader.fail(f"Spec ID uintnSize {uintn_code} is neither 1 (32-bit) nor 2 (64-bit)",
                          reader.pos - 1)
    count_at = reader.pos
    count = reader.u32("Spec ID numberOfAlgorithms")
    if not 1 <= count <= MAX_DIGESTS:
        raise reader.fail(f"Spec ID declares {count} algorithms (1 to {MAX_DIGESTS} allowed)",
                          count_at)
    algorithms: list[AlgorithmSize] = []
    seen: set[int] = set()
    for _ in range(count):
        entry_at = reader.pos
        alg_id = reader.u16("Spec ID algorithmId")
        size = reader.u16("Spec ID digestSize")
        name = algorithm_name(alg_id)
        if alg_id in seen:
            raise reader.fail(f"Spec ID declares algorithm {name} twice", entry_at)
        expected = DIGEST_SIZES.get(name) if alg_id in ALGORITHM_NAMES else None
        if expected is not None and size != expected:
            raise reader.fail(f"Spec ID declares {name} with digest size {size}, not {expected}",
                              entry_at)
        if not 1 <= size <= MAX_DIGEST_SIZE:
            raise reader.fail(f"Spec ID declares digest size {size} for {name}", entry_at)
        seen.add(alg_id)
        algorithms.append(AlgorithmSize(alg_id, name, size))
    vendor_size = reader.u8("Spec ID vendorInfoSize")
    vendor_info = reader.take(vendor_size, "Spec ID vendorInfo")
    return SpecIdEvent(
        signature=signature.rstrip(b"\x00").decode("ascii", errors="replace"),
        platform_class=platform_class,
        spec_version_major=major,
        spec_version_minor=minor,
        spec_errata=errata,
        uintn_size=4 if uintn_code == 1 else 8,
        algorithms=tuple(algorithms),
        vendor_info=vendor_info,
    )


def decode_text(raw: bytes) -> Text:
    """Firmware and boot loaders log strings as UTF-8/ASCII or UTF-16LE, often NUL-terminated.

    UTF-16LE is chosen only when every high byte is zero (Latin-1 text, which is what grub,
    shim and systemd-boot put in these events); otherwise the bytes must be UTF-8, or this
    raises ValueError (UnicodeDecodeError) and the event stays undecoded.
    """
    even = len(raw) & ~1
    if (even >= 2 and not any(raw[1:even:2]) and any(raw[0:even:2])
            and not raw[even:].strip(b"\0")):
        return Text(raw[:even].decode("utf-16-le").rstrip("\x00"), "utf-16-le")
    return Text(raw.rstrip(b"\x00").decode("utf-8"), "utf-8")


def _certificate_subject(der: bytes) -> str | None:
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except (ValueError, TypeError, x509.InvalidVersion):
        # How cryptography refuses damaged DER: ValueError mostly, InvalidVersion (not a
        # ValueError) for a bad version, TypeError for attribute values of the wrong ASN.1 type
        # (found by fuzzing). The entry stays, without a subject.
        return None


def _signature(type_guid: UUID | None, kind: str, owner: UUID | None, data: bytes) -> EfiSignature:
    subject = _certificate_subject(data) if kind == "x509" else None
    return EfiSignature(kind, type_guid, owner, data, subject)


def _signature_lists(raw: bytes) -> SignatureDatabase:
    """A sequence of EFI_SIGNATURE_LIST (UEFI 2.10 §32.4.1), flattened."""
    reader = Reader(raw)
    signatures: list[EfiSignature] = []
    while not reader.at_end():
        list_at = reader.pos
        type_guid = reader.guid("SignatureType")
        list_size = reader.u32("SignatureListSize")
        header_size = reader.u32("SignatureHeaderSize")
        signature_size = reader.u32("SignatureSize")
        if signature_size < 16:
            raise reader.fail(f"SignatureSize {signature_size} is smaller than the owner GUID",
                              list_at)
        body = list_size - _EFI_SIGNATURE_LIST_HEADER - header_size
        if body < 0 or body % signature_size:
            raise reader.fail(f"SignatureListSize {list_size} does not hold whole signatures",
                              list_at)
        reader.need(header_size + body, "EFI_SIGNATURE_LIST")
        reader.take(header_size, "SignatureHeader")
        kind = SIGNATURE_TYPES.get(type_guid, str(type_guid))
        for _ in range(body // signature_size):
            owner = reader.guid("SignatureOwner")
            data = reader.take(signature_size - 16, "SignatureData")
            signatures.append(_signature(type_guid, kind, owner, data))
    return SignatureDatabase(tuple(signatures))


def _authority(raw: bytes) -> EfiSignature | None:
    """EV_EFI_VARIABLE_AUTHORITY data: the db entry (EFI_SIGNATURE_DATA) that allowed an image,
    or, from shim, a bare DER certificate."""
    if raw[:1] == bytes((_DER_SEQUENCE,)):
        subject = _certificate_subject(raw)
        if subject is not None:
            return EfiSignature("x509", EFI_CERT_X509_GUID, None, raw, subject)
    if len(raw) > 16:
        owner, data = UUID(bytes_le=raw[:16]), raw[16:]
        subject = _certificate_subject(data) if data[:1] == bytes((_DER_SEQUENCE,)) else None
        if subject is not None:
            return EfiSignature("x509", EFI_CERT_X509_GUID, owner, data, subject)
        if len(data) == 32:
            return EfiSignature("sha256", None, owner, data)
    return None


def _boot_option(raw: bytes) -> BootOption:
    """EFI_LOAD_OPTION (UEFI 2.10 §3.1.3)."""
    reader = Reader(raw)
    attributes = reader.u32("Attributes")
    path_length = reader.u16("FilePathListLength")
    description_at = reader.pos
    end = raw.find(b"\0\0", description_at)
    while end != -1 and (end - description_at) % 2:  # the NUL must be a whole CHAR16
        end = raw.find(b"\0\0", end + 1)
    if end == -1:
        raise reader.fail("Description has no NUL terminator", description_at)
    description = raw[description_at:end].decode("utf-16-le", errors="replace")
    reader.pos = end + 2
    device_path = reader.take(path_length, "FilePathList")
    return BootOption(attributes, description, device_path_to_text(device_path), reader.rest())


def _variable_value(event_type: int, guid: UUID, name: str, data: bytes) -> VariableValue | None:
    if event_type == EventType.EV_EFI_VARIABLE_AUTHORITY:
        if guid == SHIM_LOCK_GUID and name == "SbatLevel":
            return VariableText(decode_text(data).text)
        return _authority(data)
    if guid == EFI_GLOBAL_VARIABLE:
        if name == "SecureBoot":
            return SecureBootState(enabled=data[:1] == b"\x01")
        if name in ("PK", "KEK"):
            return _signature_lists(data)
        if name == "BootOrder":
            if len(data) % 2:
                raise EventLogFormatError("BootOrder has an odd length", len(data))
            return BootOrder(tuple(int.from_bytes(data[i : i + 2], "little")
                                   for i in range(0, len(data), 2)))
        if _BOOT_OPTION.match(name):
            return _boot_option(data)
    if guid == EFI_IMAGE_SECURITY_DATABASE and name in ("db", "dbx", "dbt", "dbr"):
        return _signature_lists(data)
    return None


def _efi_variable(event_type: int, raw: bytes, uintn_size: int) -> EfiVariable:
    """UEFI_VARIABLE_DATA: GUID, UINT64 name length (CHAR16s), UINT64 data length, name, data."""
    reader = Reader(raw)
    guid = reader.guid("VariableName")
    name_length = reader.u64("UnicodeNameLength")
    data_length = reader.u64("VariableDataLength")
    name = reader.take(2 * name_length, "UnicodeName").decode("utf-16-le", errors="replace")
    data = reader.take(data_length, "VariableData")
    return EfiVariable(guid, name, data, _variable_value(event_type, guid, name, data))


def names_variable(raw: bytes, guid: UUID, name: str) -> bool:
    """Whether `raw` is UEFI_VARIABLE_DATA for variable `guid`/`name`, read from its header only.

    For callers that look for one variable among many (the SecureBoot flag among PK, KEK, db
    and dbx): decoding each value, signature lists and certificates included, costs far more.
    """
    encoded = name.encode("utf-16-le")
    end = 32 + len(encoded)
    return (len(raw) >= end and raw[:16] == guid.bytes_le
            and int.from_bytes(raw[16:24], "little") == len(encoded) // 2  # CHAR16s
            and raw[32:end] == encoded)


def _image_load(event_type: int, raw: bytes, uintn_size: int) -> ImageLoad:
    """UEFI_IMAGE_LOAD_EVENT (PFP §10.2.3); the three lengths are UINTN."""
    reader = Reader(raw)
    location = reader.u64("ImageLocationInMemory")
    length = reader.uint(uintn_size, "ImageLengthInMemory")
    link_time_address = reader.uint(uintn_size, "ImageLinkTimeAddress")
    path_length = reader.uint(uintn_size, "LengthOfDevicePath")
    path = reader.take(path_length, "DevicePath")
    return ImageLoad(location, length, link_time_address, device_path_to_text(path), path)


def _no_action(event_type: int, raw: bytes, uintn_size: int) -> EventData:
    """EV_NO_ACTION data opens with a 16-byte signature naming its structure (PFP §10.4.5)."""
    signature = raw[:16]
    if signature == SPEC_ID_EVENT03:
        return parse_spec_id(Reader(raw))
    if signature == STARTUP_LOCALITY and len(raw) >= 17:
        return StartupLocality(raw[16])
    if len(raw) < 16:
        return RawData(raw)
    return NoActionData(signature.rstrip(b"\x00").decode("ascii", errors="replace"), raw[16:])


def _separator(event_type: int, raw: bytes, uintn_size: int) -> Separator:
    if len(raw) != 4:
        raise EventLogFormatError(f"separator data is {len(raw)} bytes, not 4", 0)
    return Separator(int.from_bytes(raw, "little"))


def _blob(event_type: int, raw: bytes, uintn_size: int) -> FirmwareBlob:
    reader = Reader(raw)
    description = None
    if event_type == EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2:
        size = reader.u8("BlobDescriptionSize")
        description = decode_text(reader.take(size, "BlobDescription")).text
    base = reader.u64("BlobBase")
    length = reader.u64("BlobLength")
    return FirmwareBlob(base, length, description)


def _post_code(event_type: int, raw: bytes, uintn_size: int) -> FirmwareBlob | Text:
    # EV_POST_CODE carries either a UEFI_PLATFORM_FIRMWARE_BLOB or an ASCII label such as
    # "ACPI DATA" (PFP §10.4.1, Table 9 notes); a 16-byte printable string is a label.
    if len(raw) == 16 and not (raw.isascii() and raw.decode("ascii").isprintable()):
        return _blob(event_type, raw, uintn_size)
    return decode_text(raw)


def _tagged(event_type: int, raw: bytes, uintn_size: int) -> TaggedEvent:
    reader = Reader(raw)
    tag_id = reader.u32("taggedEventID")
    size = reader.u32("taggedEventDataSize")
    return TaggedEvent(tag_id, reader.take(size, "taggedEventData"))


def _gpt(event_type: int, raw: bytes, uintn_size: int) -> GptData:
    """UEFI_GPT_DATA: the GPT header, UINT64 NumberOfPartitions, then the entries in use."""
    reader = Reader(raw)
    header = Reader(reader.take(_GPT_HEADER_SIZE, "EFI_PARTITION_TABLE_HEADER"))
    if header.take(8, "GPT signature") != _GPT_SIGNATURE:
        raise header.fail("GPT header signature is not 'EFI PART'", 0)
    header.pos = 56
    disk_guid = header.guid("DiskGUID")
    header.pos = 84
    entry_size = header.u32("SizeOfPartitionEntry")
    if entry_size < _MIN_GPT_ENTRY_SIZE:
        raise header.fail(f"SizeOfPartitionEntry {entry_size} is below 128", 84)
    count = reader.u64("NumberOfPartitions")
    reader.need(count * entry_size, "partition entries")
    partitions: list[GptPartition] = []
    for _ in range(count):
        entry = Reader(reader.take(entry_size, "EFI_PARTITION_ENTRY"))
        type_guid = entry.guid("PartitionTypeGUID")
        unique_guid = entry.guid("UniquePartitionGUID")
        first_lba = entry.u64("StartingLBA")
        last_lba = entry.u64("EndingLBA")
        attributes = entry.u64("Attributes")
        name = entry.take(72, "PartitionName").decode("utf-16-le", errors="replace")
        partitions.append(GptPartition(type_guid, unique_guid, first_lba, last_lba, attributes,
                                       name.split("\x00", 1)[0]))
    return GptData(disk_guid, tuple(partitions))


def _text(event_type: int, raw: bytes, uintn_size: int) -> Text:
    return decode_text(raw)


def _crtm_version(event_type: int, raw: bytes, uintn_size: int) -> Text:
    """EV_S_CRTM_VERSION: a UCS-2 version string, or (EDK2/OVMF) a 16-byte version GUID."""
    try:
        return decode_text(raw)
    except ValueError:
        if len(raw) != 16:
            raise
        return Text(str(UUID(bytes_le=raw)), "guid")


_Decoder = Callable[[int, bytes, int], EventData]

_DECODERS: Final[dict[int, _Decoder]] = {
    EventType.EV_NO_ACTION: _no_action,
    EventType.EV_SEPARATOR: _separator,
    EventType.EV_POST_CODE: _post_code,
    EventType.EV_ACTION: _text,
    EventType.EV_EFI_ACTION: _text,
    EventType.EV_IPL: _text,
    EventType.EV_S_CRTM_VERSION: _crtm_version,
    EventType.EV_EVENT_TAG: _tagged,
    EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB: _blob,
    EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2: _blob,
    EventType.EV_EFI_VARIABLE_DRIVER_CONFIG: _efi_variable,
    EventType.EV_EFI_VARIABLE_BOOT: _efi_variable,
    EventType.EV_EFI_VARIABLE_BOOT2: _efi_variable,
    EventType.EV_EFI_VARIABLE_AUTHORITY: _efi_variable,
    EventType.EV_EFI_BOOT_SERVICES_APPLICATION: _image_load,
    EventType.EV_EFI_BOOT_SERVICES_DRIVER: _image_load,
    EventType.EV_EFI_RUNTIME_SERVICES_DRIVER: _image_load,
    EventType.EV_EFI_GPT_EVENT: _gpt,
}


def decode_event_data(event_type: int, raw: bytes, uintn_size: int = 8) -> EventData:
    """The typed view of one event's data; never raises for any bytes."""
    decoder = _DECODERS.get(event_type)
    if decoder is None:
        return RawData(raw)
    try:
        return decoder(event_type, raw, uintn_size)
    except EventLogFormatError as exc:
        return Undecoded(raw, f"{exc.reason} at data offset {exc.offset}")
    except ValueError as exc:
        # Text that is not UTF-8 (UnicodeDecodeError is a ValueError) and the like.
        return Undecoded(raw, str(exc))

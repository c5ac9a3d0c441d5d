"""Typed, frozen views of event data (what an event says it measured), and their JSON form.

Event data is informational: a verifier trusts digests, never these. Each class has `describe()`
(one line for people) and `to_jsonable()` turns any of them into plain JSON values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar
from uuid import UUID

#: JSON-able values as `to_jsonable` produces them
JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]

_PREVIEW = 32  # bytes of undecoded data shown in a one-line description


def _preview(raw: bytes) -> str:
    if len(raw) <= _PREVIEW:
        return raw.hex()
    return f"{raw[:_PREVIEW].hex()}… ({len(raw)} bytes)"


@dataclass(frozen=True)
class AlgorithmSize:
    """One TCG_EfiSpecIdEventAlgorithmSize entry of the Spec ID header (PFP §10.4.5.1)."""

    algorithm_id: int
    name: str
    digest_size: int


@dataclass(frozen=True)
class SpecIdEvent:
    """TCG_EfiSpecIdEvent (PFP §10.4.5.1): the header that makes a log crypto-agile."""

    kind: ClassVar[str] = "spec_id"
    signature: str
    platform_class: int
    spec_version_major: int
    spec_version_minor: int
    spec_errata: int
    #: bytes in a UINTN on the platform (the header encodes 1 for 4 bytes, 2 for 8)
    uintn_size: int
    algorithms: tuple[AlgorithmSize, ...]
    vendor_info: bytes

    def describe(self) -> str:
        names = ", ".join(alg.name for alg in self.algorithms)
        return (f"{self.signature} v{self.spec_version_major}.{self.spec_version_minor}"
                f" errata {self.spec_errata}; banks {names}")


@dataclass(frozen=True)
class StartupLocality:
    """TCG_EfiStartupLocalityEvent (PFP §10.4.5.3): the locality TPM2_Startup came from."""

    kind: ClassVar[str] = "startup_locality"
    locality: int

    def describe(self) -> str:
        return f"StartupLocality {self.locality}"


@dataclass(frozen=True)
class NoActionData:
    """Another EV_NO_ACTION payload (PFP §10.4.5), kept as its signature and bytes."""

    kind: ClassVar[str] = "no_action"
    signature: str
    payload: bytes

    def describe(self) -> str:
        return f"{self.signature}: {_preview(self.payload)}" if self.payload else self.signature


@dataclass(frozen=True)
class Text:
    """Event data that is a string: EV_IPL, EV_EFI_ACTION, EV_ACTION, EV_S_CRTM_VERSION, …"""

    kind: ClassVar[str] = "text"
    text: str
    #: how the bytes were read: "utf-8", "utf-16-le", or "guid" (a version GUID as text)
    encoding: str

    def describe(self) -> str:
        return self.text.replace("\n", "\\n") if self.text else "(empty string)"


@dataclass(frozen=True)
class Separator:
    """EV_SEPARATOR data (PFP §10.4.1): 0 ends a phase normally, 1 says the phase failed."""

    kind: ClassVar[str] = "separator"
    value: int

    @property
    def is_error(self) -> bool:
        return self.value == 1

    def describe(self) -> str:
        return f"separator 0x{self.value:08x}{' (error)' if self.is_error else ''}"


@dataclass(frozen=True)
class FirmwareBlob:
    """UEFI_PLATFORM_FIRMWARE_BLOB(2) (PFP 1.05): where a measured firmware volume lies."""

    kind: ClassVar[str] = "firmware_blob"
    base: int
    length: int
    description: str | None = None

    def describe(self) -> str:
        where = f"blob at 0x{self.base:x}, length 0x{self.length:x}"
        return f"{self.description}: {where}" if self.description else where


@dataclass(frozen=True)
class TaggedEvent:
    """TCG_PCClientTaggedEvent (EV_EVENT_TAG): an id chosen by the measuring software."""

    kind: ClassVar[str] = "tagged_event"
    tag_id: int
    payload: bytes

    def describe(self) -> str:
        return f"tag 0x{self.tag_id:08x}: {_preview(self.payload)}"


@dataclass(frozen=True)
class ImageLoad:
    """UEFI_IMAGE_LOAD_EVENT (PFP §10.2.3): an EFI application or driver that was measured."""

    kind: ClassVar[str] = "image_load"
    location: int
    length: int
    link_time_address: int
    #: the UEFI text form of the device path (UEFI 2.10 §10.6); generic nodes where unknown
    device_path: str
    device_path_bytes: bytes

    def describe(self) -> str:
        return self.device_path or f"image at 0x{self.location:x} (no device path)"


@dataclass(frozen=True)
class SecureBootState:
    """The SecureBoot variable: one byte, 1 when Secure Boot is on."""

    kind: ClassVar[str] = "secure_boot"
    enabled: bool

    def describe(self) -> str:
        return "enabled" if self.enabled else "disabled"


@dataclass(frozen=True)
class EfiSignature:
    """One EFI_SIGNATURE_DATA (UEFI 2.10 §32.4.1): a certificate or hash and its owner."""

    kind: ClassVar[str] = "efi_signature"
    #: "x509", "sha256", … (see constants.SIGNATURE_TYPES) or the type GUID as text
    signature_type: str
    type_guid: UUID | None
    owner: UUID | None
    data: bytes
    #: the certificate's subject (RFC 4514) when `cryptography` parses it
    subject: str | None = None

    def describe(self) -> str:
        if self.subject is not None:
            return self.subject
        if self.signature_type == "x509":
            return "x509 certificate"
        return f"{self.signature_type} {_preview(self.data)}"


@dataclass(frozen=True)
class SignatureDatabase:
    """PK, KEK, db, dbx, …: EFI_SIGNATURE_LISTs flattened into their signatures."""

    kind: ClassVar[str] = "signature_database"
    signatures: tuple[EfiSignature, ...]

    def describe(self) -> str:
        if not self.signatures:
            return "empty"
        subjects = [sig.subject for sig in self.signatures if sig.subject]
        counts: dict[str, int] = {}
        for sig in self.signatures:
            counts[sig.signature_type] = counts.get(sig.signature_type, 0) + 1
        summary = ", ".join(f"{count} {kind}" for kind, count in counts.items())
        return f"{summary}: {'; '.join(subjects)}" if subjects else summary


@dataclass(frozen=True)
class BootOrder:
    """BootOrder: the Boot#### options in the order firmware tries them."""

    kind: ClassVar[str] = "boot_order"
    entries: tuple[int, ...]

    def describe(self) -> str:
        return ",".join(f"Boot{entry:04X}" for entry in self.entries) or "empty"


@dataclass(frozen=True)
class BootOption:
    """A Boot#### variable: EFI_LOAD_OPTION (UEFI 2.10 §3.1.3)."""

    kind: ClassVar[str] = "boot_option"
    attributes: int
    description: str
    device_path: str
    optional_data: bytes

    @property
    def active(self) -> bool:
        return bool(self.attributes & 0x1)  # LOAD_OPTION_ACTIVE

    def describe(self) -> str:
        return f"{self.description}: {self.device_path}" if self.device_path else self.description


@dataclass(frozen=True)
class VariableText:
    """A variable whose value is text (e.g. shim's SbatLevel)."""

    kind: ClassVar[str] = "variable_text"
    text: str

    def describe(self) -> str:
        return self.text.replace("\n", " ").strip()


#: typed values of the variables we recognise
VariableValue = (SecureBootState | SignatureDatabase | EfiSignature | BootOrder | BootOption
                 | VariableText)


@dataclass(frozen=True)
class EfiVariable:
    """UEFI_VARIABLE_DATA (PFP 1.05) of EV_EFI_VARIABLE_* events."""

    kind: ClassVar[str] = "efi_variable"
    variable_guid: UUID
    name: str
    data: bytes
    #: the variable's value decoded, for the variables we recognise; else None
    value: VariableValue | None

    def describe(self) -> str:
        if self.value is not None:
            return f"{self.name} = {self.value.describe()}"
        return f"{self.name} ({len(self.data)} bytes)"


@dataclass(frozen=True)
class GptPartition:
    """One EFI_PARTITION_ENTRY (UEFI 2.10 §5.3.3)."""

    type_guid: UUID
    unique_guid: UUID
    first_lba: int
    last_lba: int
    attributes: int
    name: str


@dataclass(frozen=True)
class GptData:
    """UEFI_GPT_DATA (PFP 1.05): the GPT header's disk GUID and the partitions used."""

    kind: ClassVar[str] = "gpt"
    disk_guid: UUID
    partitions: tuple[GptPartition, ...]

    def describe(self) -> str:
        names = ", ".join(part.name or str(part.unique_guid) for part in self.partitions)
        return f"GPT disk {self.disk_guid}: {len(self.partitions)} partitions ({names})"


@dataclass(frozen=True)
class RawData:
    """Data of an event type we do not decode; the bytes are all there is."""

    kind: ClassVar[str] = "raw"
    data: bytes

    def describe(self) -> str:
        return _preview(self.data) if self.data else "(no data)"


@dataclass(frozen=True)
class Undecoded:
    """Data that should have decoded but did not. The event's digests still count."""

    kind: ClassVar[str] = "undecoded"
    data: bytes
    error: str

    def describe(self) -> str:
        return f"undecoded ({self.error}): {_preview(self.data)}"


#: everything `Event.decoded` can be
EventData = (SpecIdEvent | StartupLocality | NoActionData | Text | Separator | FirmwareBlob
             | TaggedEvent | ImageLoad | EfiVariable | GptData | RawData | Undecoded)


def to_jsonable(value: object) -> JsonValue:
    """Plain JSON values for decoded data: bytes as hex, GUIDs as text, `kind` on each object."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, tuple | list):
        return [to_jsonable(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        document: dict[str, JsonValue] = {}
        kind = getattr(value, "kind", None)
        if isinstance(kind, str):
            document["kind"] = kind
        for item in dataclasses.fields(value):
            document[item.name] = to_jsonable(getattr(value, item.name))
        return document
    raise TypeError(f"no JSON form for {type(value).__name__}")

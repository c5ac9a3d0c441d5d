"""TCG PC Client firmware event logs: parse, decode, replay and build. Pure: bytes in, frozen
dataclasses out; no I/O, configuration or network.

Why hand-written: no maintained Python library parses TCG event logs in pure Python, and
tpm2-tools' `tpm2_eventlog` is C behind a subprocess (~30 logs/s, YAML out). This parser reads and
replays a two-bank, 100-event log in about 0.3 ms and names the byte offset of any damage.
References: TCG PC Client Platform Firmware Profile (PFP) 1.05; UEFI 2.10 for UEFI structures.

Public API::

    parse_event_log(raw: bytes) -> EventLog          # raises EventLogFormatError(msg, offset)
    EventLog: .format (LogFormat.SHA1 | LogFormat.CRYPTO_AGILE), .spec_id, .events,
        .algorithms (carried by every extended event), .banks (replayable, BANKS order),
        .startup_locality, .records (compact tuples that replay reads), len(log)
    Event(index, offset, pcr, event_type, digests: Mapping[str, bytes], data)
        .type_name, .decoded (lazy, cached), .describe()
    replay(log) -> dict[str, dict[int, bytes]]       # bank -> PCR index -> value
    replay_bank(log, bank) -> dict[int, bytes]
    replay_steps(log, bank) -> Iterator[ReplayStep]  # ReplayStep(event, pcr_value, extended)
    EventType (IntEnum), BANKS = ("sha1", "sha256", "sha384", "sha512"), event_type_name(value)
    EventSpec(pcr, event_type, data, measured=None)
    build_crypto_agile_log(events, banks=("sha1", "sha256"), startup_locality=None) -> bytes
    event_digest(spec, bank) -> bytes                # what the TPM is extended with
    efi_variable_data(guid, name, data), image_load_event_data(path, *, location, length,
        link_time_address), ipl_string(text, *, utf16=False), efi_action(text),
        separator(*, error=False)                    # realistic event data for the builder
    device_path_to_text(raw) -> str, device_path_from_text(text) -> bytes
    decoded data types (module `data`): SpecIdEvent, StartupLocality, NoActionData, Text,
        Separator, FirmwareBlob, TaggedEvent, ImageLoad, EfiVariable (value: SecureBootState |
        SignatureDatabase | EfiSignature | BootOrder | BootOption | VariableText), GptData,
        RawData (no decoder for the type), Undecoded (decoding failed); to_jsonable(value)

Security: only digests are evidence. Decoded data is what the firmware *says* it measured and
is for display and policy hints after the digests have been verified against a quote.
"""

from __future__ import annotations

from trustauthority.eventlog.builder import (
    EventSpec,
    build_crypto_agile_log,
    efi_action,
    efi_variable_data,
    event_digest,
    image_load_event_data,
    ipl_string,
    separator,
)
from trustauthority.eventlog.constants import (
    BANKS,
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    EventType,
    event_type_name,
)
from trustauthority.eventlog.data import (
    BootOption,
    BootOrder,
    EfiSignature,
    EfiVariable,
    EventData,
    FirmwareBlob,
    GptData,
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
    to_jsonable,
)
from trustauthority.eventlog.devicepath import device_path_from_text, device_path_to_text
from trustauthority.eventlog.model import Event, EventLog, LogFormat
from trustauthority.eventlog.parse import parse_event_log
from trustauthority.eventlog.replay import ReplayStep, replay, replay_bank, replay_steps

__all__ = [
    "BANKS",
    "EFI_GLOBAL_VARIABLE",
    "EFI_IMAGE_SECURITY_DATABASE",
    "BootOption",
    "BootOrder",
    "EfiSignature",
    "EfiVariable",
    "Event",
    "EventData",
    "EventLog",
    "EventSpec",
    "EventType",
    "FirmwareBlob",
    "GptData",
    "ImageLoad",
    "LogFormat",
    "NoActionData",
    "RawData",
    "ReplayStep",
    "SecureBootState",
    "Separator",
    "SignatureDatabase",
    "SpecIdEvent",
    "StartupLocality",
    "TaggedEvent",
    "Text",
    "Undecoded",
    "VariableText",
    "build_crypto_agile_log",
    "device_path_from_text",
    "device_path_to_text",
    "efi_action",
    "efi_variable_data",
    "event_digest",
    "event_type_name",
    "image_load_event_data",
    "ipl_string",
    "parse_event_log",
    "replay",
    "replay_bank",
    "replay_steps",
    "separator",
    "to_jsonable",
]

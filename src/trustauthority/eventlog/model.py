"""The parsed log: a frozen `EventLog` of compact records, and the `Event` view of each.

Parsing keeps each entry as a plain tuple (`EventRecord`) and replay reads those directly:
building a frozen dataclass per entry would cost more than parsing and replaying it. `Event`
objects, with their lazily decoded data, are made on first access to `EventLog.events`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from uuid import UUID

from trustauthority.eventlog.constants import BANKS, event_type_name
from trustauthority.eventlog.data import EventData, SpecIdEvent
from trustauthority.eventlog.decode import decode_event_data, names_variable

#: (offset, pcr, event_type, digests in `EventLog.digest_names` order (b"": absent), data)
EventRecord = tuple[int, int, int, tuple[bytes, ...], bytes]


class LogFormat(StrEnum):
    """The two layouts of a TCG PC Client event log."""

    #: TCG_PCClientPCREvent entries only, one SHA-1 digest each (PFP §10.2.1; TPM 1.2 era)
    SHA1 = "sha1"
    #: a Spec ID header, then TCG_PCR_EVENT2 entries with one digest per bank (PFP §10.2.2)
    CRYPTO_AGILE = "crypto-agile"


@dataclass(frozen=True)
class Event:
    """One log entry. `digests` are what was extended; `data` is only what the firmware says."""

    #: position in the log; 0 is the first entry (the Spec ID header in crypto-agile logs)
    index: int
    #: byte offset of the entry in the log
    offset: int
    pcr: int
    #: the raw type value; `EventType(event_type)` when it is a known one
    event_type: int
    #: algorithm name ("sha256", or "alg_0x…" for one only the header knows) -> digest
    digests: Mapping[str, bytes] = field(hash=False)
    data: bytes
    #: UINTN width the Spec ID header declares, needed to decode image-load data
    uintn_size: int = field(default=8, repr=False, compare=False)

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)

    @cached_property
    def decoded(self) -> EventData:
        """The data decoded (lazily, once); `Undecoded`/`RawData` where it cannot be."""
        return decode_event_data(self.event_type, self.data, self.uintn_size)

    def describe(self) -> str:
        """One line about the data, for people."""
        return self.decoded.describe()

    def names_variable(self, guid: UUID, name: str) -> bool:
        """Whether the data is UEFI_VARIABLE_DATA of `guid`/`name` (without decoding its value)."""
        return names_variable(self.data, guid, name)


@dataclass(frozen=True)
class EventLog:
    """A parsed event log. Build it with `parse_event_log`; replay it with `replay`."""

    format: LogFormat
    #: the crypto-agile header (also `events[0].decoded`); None for SHA-1 logs
    spec_id: SpecIdEvent | None
    #: the Spec ID entry itself (SHA-1 layout, never extended); None for SHA-1 logs
    header: Event | None
    #: the entries after the header, compact; `events` is the readable view
    records: tuple[EventRecord, ...] = field(repr=False)
    #: the algorithm of each position in a record's digests (the header's order)
    digest_names: tuple[str, ...]
    #: algorithms every extended event carries, in the header's order
    algorithms: tuple[str, ...]
    #: the locality a StartupLocality event reports (PFP §10.4.5.3), which sets PCR 0's start
    startup_locality: int | None = None
    #: UINTN width from the Spec ID header (8 when there is none)
    uintn_size: int = 8

    @property
    def banks(self) -> tuple[str, ...]:
        """The replayable banks of this log, in `BANKS` order."""
        return tuple(bank for bank in BANKS if bank in self.algorithms)

    @cached_property
    def events(self) -> tuple[Event, ...]:
        """Every entry, the header included, as `Event`s (made on first access)."""
        names = self.digest_names
        first = 0 if self.header is None else 1
        built = [] if self.header is None else [self.header]
        for index, (offset, pcr, event_type, digests, data) in enumerate(self.records, first):
            by_name = {name: digest for name, digest in zip(names, digests, strict=True)
                       if digest}
            built.append(Event(index, offset, pcr, event_type, by_name, data, self.uintn_size))
        return tuple(built)

    def __len__(self) -> int:
        return len(self.records) + (self.header is not None)

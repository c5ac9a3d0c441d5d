"""The parsed log: frozen `EventLog` and `Event` records; event data decodes on first use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from trustauthority.eventlog.constants import BANKS, event_type_name
from trustauthority.eventlog.data import EventData, SpecIdEvent
from trustauthority.eventlog.decode import decode_event_data


class LogFormat(StrEnum):
    """The two layouts of a TCG PC Client event log."""

    #: TCG_PCClientPCREvent entries only, one SHA-1 digest each (PFP §10.2.1; TPM 1.2 era)
    SHA1 = "sha1"
    #: a Spec ID header, then TCG_PCR_EVENT2 entries with one digest per bank (PFP §10.2.2)
    CRYPTO_AGILE = "crypto-agile"


@dataclass(frozen=True, init=False)
class Event:
    """One log entry. `digests` are what was extended; `data` is only what the firmware says."""

    #: position in the log; 0 is the first entry (the Spec ID header in crypto-agile logs)
    index: int
    #: byte offset of the entry in the log
    offset: int
    pcr: int
    #: the raw type value; `EventType(event_type)` when it is a known one
    event_type: int
    #: bank name ("sha256", or "alg_0x…" for algorithms only the header knows) -> digest
    digests: Mapping[str, bytes] = field(hash=False)
    data: bytes
    #: UINTN width the Spec ID header declares, needed to decode image-load data
    uintn_size: int = field(default=8, repr=False, compare=False)

    def __init__(self, index: int, offset: int, pcr: int, event_type: int,
                 digests: Mapping[str, bytes], data: bytes, uintn_size: int = 8) -> None:
        # A frozen dataclass's generated __init__ sets each field through object.__setattr__,
        # which made building Event objects most of the parse time; one update of the instance
        # dict stores the same fields and keeps the instance just as frozen afterwards.
        self.__dict__.update(index=index, offset=offset, pcr=pcr, event_type=event_type,
                             digests=digests, data=data, uintn_size=uintn_size)

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


@dataclass(frozen=True)
class EventLog:
    """A parsed event log. Build it with `parse_event_log`; replay it with `replay`."""

    format: LogFormat
    #: the crypto-agile header (also `events[0].decoded`); None for SHA-1 logs
    spec_id: SpecIdEvent | None
    events: tuple[Event, ...]
    #: digest algorithms every extended event carries, in the header's order
    algorithms: tuple[str, ...]
    #: the locality a StartupLocality event reports (PFP §10.4.5.3), which sets PCR 0's start
    startup_locality: int | None = None

    @property
    def banks(self) -> tuple[str, ...]:
        """The replayable banks of this log, in `BANKS` order."""
        return tuple(bank for bank in BANKS if bank in self.algorithms)

    def __len__(self) -> int:
        return len(self.events)

"""Bytes of a TCG PC Client firmware event log to an `EventLog`, or EventLogFormatError.

Structure is checked strictly (sizes, digest counts, algorithms, bounds) because replay depends
on it; event data is only sliced here and decoded later, on demand.
"""

from __future__ import annotations

from typing import Final

from trustauthority.errors import EventLogFormatError
from trustauthority.eventlog.constants import (
    MAX_EVENT_DATA_SIZE,
    MAX_EVENTS,
    MAX_LOG_SIZE,
    PCR_COUNT,
    SPEC_ID_EVENT03,
    STARTUP_LOCALITY,
    EventType,
)
from trustauthority.eventlog.data import SpecIdEvent
from trustauthority.eventlog.decode import parse_spec_id
from trustauthority.eventlog.model import Event, EventLog, LogFormat
from trustauthority.eventlog.reader import Reader

_NO_ACTION: Final = int(EventType.EV_NO_ACTION)
_SHA1_SIZE: Final = 20


class _State:
    """Per-log bookkeeping shared by both layouts."""

    __slots__ = ("pcr0_extended", "startup_locality")

    def __init__(self) -> None:
        self.startup_locality: int | None = None
        self.pcr0_extended = False


def _check_pcr(reader: Reader, at: int, pcr: int, state: _State) -> None:
    """For extended events (EV_NO_ACTION is never extended, so its PCR index does not matter)."""
    if pcr >= PCR_COUNT:
        raise reader.fail(f"PCR index {pcr} is not a PC Client PCR (0-{PCR_COUNT - 1})", at)
    if pcr == 0:
        state.pcr0_extended = True


def _note_no_action(reader: Reader, at: int, pcr: int, data: bytes, state: _State) -> None:
    """A StartupLocality event (PFP §10.4.5.3) sets PCR 0's starting value, so it must come
    once, on PCR 0, before anything is extended into PCR 0."""
    if data[:16] != STARTUP_LOCALITY:
        return
    if len(data) != 17 or pcr != 0:
        raise reader.fail("StartupLocality event is not 17 bytes on PCR 0", at)
    if state.startup_locality is not None:
        raise reader.fail("second StartupLocality event", at)
    if state.pcr0_extended:
        raise reader.fail("StartupLocality event after PCR 0 was extended", at)
    state.startup_locality = data[16]


def _sha1_event(reader: Reader, index: int, state: _State, uintn_size: int) -> Event:
    """TCG_PCClientPCREvent (PFP §10.2.1): PCR, type, one SHA-1 digest, sized data."""
    at = reader.pos
    pcr, event_type = reader.u32_pair("event header")
    if event_type != _NO_ACTION:
        _check_pcr(reader, at, pcr, state)
    digest = reader.take(_SHA1_SIZE, "SHA-1 digest")
    data = reader.sized_u32(MAX_EVENT_DATA_SIZE, "event data")
    if event_type == _NO_ACTION:
        _note_no_action(reader, at, pcr, data, state)
    return Event(index, at, pcr, event_type, {"sha1": digest}, data, uintn_size)


def _parse_sha1_log(raw: bytes) -> EventLog:
    reader = Reader(raw)
    state = _State()
    events: list[Event] = []
    while not reader.at_end():
        if len(events) >= MAX_EVENTS:
            raise reader.fail(f"more than {MAX_EVENTS} events")
        events.append(_sha1_event(reader, len(events), state, 8))
    return EventLog(LogFormat.SHA1, None, tuple(events), ("sha1",), state.startup_locality)


def _parse_crypto_agile_log(raw: bytes, reader: Reader, header: Event,
                            spec_id: SpecIdEvent) -> EventLog:
    """TCG_PCR_EVENT2 entries (PFP §10.2.2) after the Spec ID event.

    Each digest must use an algorithm the header declares, at the header's size, at most once
    per event. Events should carry every declared algorithm, but real logs (tpm2-tools'
    fixtures among them) declare more than they carry, so a bank is replayable only when every
    extended event carries it; `EventLog.algorithms` lists those.
    """
    sizes = {alg.algorithm_id: alg.digest_size for alg in spec_id.algorithms}
    names = {alg.algorithm_id: alg.name for alg in spec_id.algorithms}
    expected = len(sizes)
    uintn_size = spec_id.uintn_size
    declared = tuple(alg.name for alg in spec_id.algorithms)
    carried = set(declared)
    state = _State()
    events: list[Event] = [header]
    index = 1
    # The hot loop: a few bounds-checked reads and one Event per entry, nothing decoded.
    while not reader.at_end():
        if index >= MAX_EVENTS:
            raise reader.fail(f"more than {MAX_EVENTS} events")
        at = reader.pos
        pcr, event_type, count = reader.u32_triple("event header")
        if event_type != _NO_ACTION:
            _check_pcr(reader, at, pcr, state)
        if not 0 < count <= expected:
            raise reader.fail(f"digest count {count} where the Spec ID header declares "
                              f"{expected} algorithms", at + 8)
        digests: dict[str, bytes] = {}
        for _ in range(count):
            alg_id, digest = reader.u16_and_take(sizes, "digest algorithm")
            name = names[alg_id]
            if name in digests:
                raise reader.fail(f"second {name} digest in one event", reader.pos - len(digest) - 2)
            digests[name] = digest
        data = reader.sized_u32(MAX_EVENT_DATA_SIZE, "event data")
        if event_type == _NO_ACTION:
            _note_no_action(reader, at, pcr, data, state)
        elif count != expected:
            carried.intersection_update(digests)
            if not carried:
                raise reader.fail("no digest algorithm is common to all extended events", at)
        events.append(Event(index, at, pcr, event_type, digests, data, uintn_size))
        index += 1
    algorithms = tuple(name for name in declared if name in carried)
    return EventLog(LogFormat.CRYPTO_AGILE, spec_id, tuple(events), algorithms,
                    state.startup_locality)


def parse_event_log(raw: bytes | bytearray | memoryview) -> EventLog:
    """Parse a firmware event log as read from /sys/kernel/security/tpm0/binary_bios_measurements.

    The first entry is always in the SHA-1 layout. If it is an EV_NO_ACTION event whose data
    begins "Spec ID Event03" (PFP §10.4.5.1), the log is crypto-agile and the header's algorithm
    table sizes the digests of every later TCG_PCR_EVENT2; otherwise the whole log is SHA-1.
    Raises EventLogFormatError (with the byte offset) for any structural damage.
    """
    if not isinstance(raw, bytes):
        raw = bytes(raw)  # the events keep slices, which must not change under them
    if not raw:
        raise EventLogFormatError("empty event log", 0)
    if len(raw) > MAX_LOG_SIZE:
        raise EventLogFormatError(f"event log is larger than {MAX_LOG_SIZE} bytes", MAX_LOG_SIZE)
    reader = Reader(raw)
    first = _sha1_event(reader, 0, _State(), 8)
    if first.event_type != _NO_ACTION or first.data[:16] != SPEC_ID_EVENT03:
        return _parse_sha1_log(raw)
    spec_reader = Reader(first.data, base=first.offset + 32)
    spec_id = parse_spec_id(spec_reader)
    if not spec_reader.at_end():
        raise spec_reader.fail(f"{spec_reader.remaining} bytes after the Spec ID event")
    header = Event(0, 0, first.pcr, first.event_type, first.digests, first.data,
                   spec_id.uintn_size)
    return _parse_crypto_agile_log(raw, reader, header, spec_id)

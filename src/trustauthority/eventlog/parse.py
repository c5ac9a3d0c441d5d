"""Bytes of a TCG PC Client firmware event log to an `EventLog`, or EventLogFormatError.

Structure is checked strictly (sizes, digest counts, algorithms, bounds) because replay depends
on it; event data is only sliced here and decoded later, on demand.
"""

from __future__ import annotations

import struct
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
from trustauthority.eventlog.model import Event, EventLog, EventRecord, LogFormat
from trustauthority.eventlog.reader import Reader

_NO_ACTION: Final = int(EventType.EV_NO_ACTION)
_SHA1_SIZE: Final = 20
_SHA1_HEADER_SIZE: Final = 32  # pcrIndex, eventType, SHA-1 digest, eventDataSize


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


def _sha1_record(reader: Reader, state: _State) -> EventRecord:
    """TCG_PCClientPCREvent (PFP §10.2.1): PCR, type, one SHA-1 digest, sized data."""
    at = reader.pos
    pcr, event_type = reader.u32_pair("event header")
    if event_type != _NO_ACTION:
        _check_pcr(reader, at, pcr, state)
    digest = reader.take(_SHA1_SIZE, "SHA-1 digest")
    data = reader.sized_u32(MAX_EVENT_DATA_SIZE, "event data")
    if event_type == _NO_ACTION:
        _note_no_action(reader, at, pcr, data, state)
    return at, pcr, event_type, (digest,), data


def _parse_sha1_log(raw: bytes) -> EventLog:
    reader = Reader(raw)
    state = _State()
    records: list[EventRecord] = []
    while not reader.at_end():
        if len(records) >= MAX_EVENTS:
            raise reader.fail(f"more than {MAX_EVENTS} events")
        records.append(_sha1_record(reader, state))
    return EventLog(LogFormat.SHA1, None, None, tuple(records), ("sha1",), ("sha1",),
                    state.startup_locality)


def _general_event2(reader: Reader, positions: dict[int, int], sizes: dict[int, int],
                    names: dict[int, str]) -> tuple[int, int, int, tuple[bytes, ...], bytes]:
    """One TCG_PCR_EVENT2 read field by field: any digest order or subset, and exact errors."""
    at = reader.pos
    expected = len(sizes)
    pcr, event_type, count = reader.u32_triple("event header")
    if not 0 < count <= expected:
        raise reader.fail(f"digest count {count} where the Spec ID header declares "
                          f"{expected} algorithms", at + 8)
    digests: list[bytes] = [b""] * expected  # b"": not carried by this event
    for _ in range(count):
        alg_at = reader.pos
        alg_id, digest = reader.u16_and_take(sizes, "digest algorithm", "digest")
        if digests[positions[alg_id]]:
            raise reader.fail(f"second {names[alg_id]} digest in one event", alg_at)
        digests[positions[alg_id]] = digest
    data = reader.sized_u32(MAX_EVENT_DATA_SIZE, "event data")
    return pcr, event_type, count, tuple(digests), data


def _parse_crypto_agile_log(reader: Reader, header: Event, spec_id: SpecIdEvent) -> EventLog:
    """TCG_PCR_EVENT2 entries (PFP §10.2.2) after the Spec ID event.

    Each digest must use an algorithm the header declares, at the header's size, at most once
    per event. Events should carry every declared algorithm, but real logs (tpm2-tools'
    fixtures among them) declare more than they carry, so a bank is replayable only when every
    extended event carries it; `EventLog.algorithms` lists those.
    """
    algorithms = spec_id.algorithms
    sizes = {alg.algorithm_id: alg.digest_size for alg in algorithms}
    names = {alg.algorithm_id: alg.name for alg in algorithms}
    positions = {alg.algorithm_id: position for position, alg in enumerate(algorithms)}
    expected = len(algorithms)
    declared_ids = tuple(alg.algorithm_id for alg in algorithms)
    # Nearly every event carries all declared digests in the header's order: then the event
    # header, the digests and the data size unpack in one step. Anything else, including
    # every malformed event, takes the general path, which names what is wrong.
    usual = struct.Struct("<III" + "".join(f"H{alg.digest_size}s" for alg in algorithms) + "I")
    usual_size = usual.size
    unpack_usual = usual.unpack_from
    carried = set(range(expected))
    state = _State()
    records: list[EventRecord] = []
    append = records.append
    # The usual event is read here with local variables instead of the reader's methods (a
    # Python call per field costs as much as the field): same bounds checks, same errors.
    raw, end = reader.raw, reader.end
    pos = reader.pos
    while pos < end:
        if len(records) >= MAX_EVENTS:
            raise reader.fail(f"more than {MAX_EVENTS} events", pos)
        at = pos
        fields = unpack_usual(raw, pos) if end - pos >= usual_size else None
        if fields is not None and fields[2] == expected and fields[3:-1:2] == declared_ids:
            pcr, event_type, size = fields[0], fields[1], fields[-1]
            digests = fields[4:-1:2]
            pos += usual_size
            if size > MAX_EVENT_DATA_SIZE:
                raise reader.fail(f"event data size {size} exceeds the "
                                  f"{MAX_EVENT_DATA_SIZE}-byte limit", pos - 4)
            if end - pos < size:
                reader.pos = pos
                reader.need(size, "event data")
            data = raw[pos : pos + size]
            pos += size
        else:
            reader.pos = pos
            pcr, event_type, count, digests, data = _general_event2(reader, positions, sizes,
                                                                    names)
            pos = reader.pos
            if count != expected and event_type != _NO_ACTION:
                carried.intersection_update(i for i, digest in enumerate(digests) if digest)
                if not carried:
                    raise reader.fail("no digest algorithm is common to all extended events", at)
        if event_type == _NO_ACTION:
            _note_no_action(reader, at, pcr, data, state)
        elif pcr >= PCR_COUNT or pcr == 0:
            _check_pcr(reader, at, pcr, state)
        append((at, pcr, event_type, digests, data))
    reader.pos = pos
    digest_names = tuple(alg.name for alg in algorithms)
    return EventLog(
        LogFormat.CRYPTO_AGILE, spec_id, header, tuple(records), digest_names,
        tuple(name for position, name in enumerate(digest_names) if position in carried),
        state.startup_locality, spec_id.uintn_size)


def parse_event_log(raw: bytes | bytearray | memoryview) -> EventLog:
    """Parse a firmware event log as read from /sys/kernel/security/tpm0/binary_bios_measurements.

    The first entry is always in the SHA-1 layout. If it is an EV_NO_ACTION event whose data
    begins "Spec ID Event03" (PFP §10.4.5.1), the log is crypto-agile and the header's algorithm
    table sizes the digests of every later TCG_PCR_EVENT2; otherwise the whole log is SHA-1.
    Raises EventLogFormatError (with the byte offset) for any structural damage.
    """
    if not isinstance(raw, bytes):
        raw = bytes(raw)  # the records keep slices, which must not change under them
    if not raw:
        raise EventLogFormatError("empty event log", 0)
    if len(raw) > MAX_LOG_SIZE:
        raise EventLogFormatError(f"event log is larger than {MAX_LOG_SIZE} bytes", MAX_LOG_SIZE)
    reader = Reader(raw)
    offset, pcr, event_type, (sha1_digest,), data = _sha1_record(reader, _State())
    if event_type != _NO_ACTION or data[:16] != SPEC_ID_EVENT03:
        return _parse_sha1_log(raw)
    spec_reader = Reader(data, base=_SHA1_HEADER_SIZE)
    spec_id = parse_spec_id(spec_reader)
    if not spec_reader.at_end():
        raise spec_reader.fail(f"{spec_reader.remaining} bytes after the Spec ID event")
    header = Event(0, offset, pcr, event_type, {"sha1": sha1_digest}, data, spec_id.uintn_size)
    return _parse_crypto_agile_log(reader, header, spec_id)

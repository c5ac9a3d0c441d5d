"""Malformed event logs: every structural fault is an EventLogFormatError naming its offset."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustauthority.errors import EventLogFormatError
from trustauthority.eventlog import (
    EFI_GLOBAL_VARIABLE,
    EfiVariable,
    EventType,
    Undecoded,
    efi_variable_data,
    image_load_event_data,
    parse_event_log,
    replay,
    to_jsonable,
)
from trustauthority.eventlog import parse as parse_module
from trustauthority.eventlog.constants import MAX_LOG_SIZE, SHIM_LOCK_GUID

LOG_DIR = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "eventlogs"
REAL_LOGS = {path.stem: path.read_bytes() for path in sorted(LOG_DIR.glob("*.bin"))}

SHA1, SHA256, SM3 = 0x0004, 0x000B, 0x0012
NO_ACTION, IPL = int(EventType.EV_NO_ACTION), int(EventType.EV_IPL)

# Offsets inside the logs `_log()` builds with the default two banks (sha1, sha256):
HEADER_SIZE = 32 + 16 + 4 + 4 + 4 + 2 * 4 + 1  # the Spec ID event: 69 bytes
FIRST = HEADER_SIZE  # first TCG_PCR_EVENT2
COUNT_AT = FIRST + 8
FIRST_ALG_AT = FIRST + 12
SECOND_ALG_AT = FIRST_ALG_AT + 2 + 20
DATA_SIZE_AT = SECOND_ALG_AT + 2 + 32


def _spec_data(algorithms: list[tuple[int, int]], *, uintn: int = 2, count: int | None = None,
               vendor: bytes = b"", vendor_size: int | None = None) -> bytes:
    body = b"Spec ID Event03\x00" + struct.pack(
        "<IBBBBI", 0, 0, 2, 0, uintn, len(algorithms) if count is None else count)
    body += b"".join(struct.pack("<HH", alg, size) for alg, size in algorithms)
    return body + bytes((len(vendor) if vendor_size is None else vendor_size,)) + vendor


def _sha1_event(pcr: int, event_type: int, data: bytes, *, size: int | None = None) -> bytes:
    return (struct.pack("<II", pcr, event_type) + bytes(20)
            + struct.pack("<I", len(data) if size is None else size) + data)


def _event2(pcr: int, event_type: int, digests: list[tuple[int, int]], data: bytes = b"x", *,
            count: int | None = None, size: int | None = None) -> bytes:
    out = struct.pack("<III", pcr, event_type, len(digests) if count is None else count)
    out += b"".join(struct.pack("<H", alg) + bytes([0xAB]) * length for alg, length in digests)
    return out + struct.pack("<I", len(data) if size is None else size) + data


BOTH = [(SHA1, 20), (SHA256, 32)]


def _log(*events: bytes, algorithms: list[tuple[int, int]] = BOTH) -> bytes:
    return _sha1_event(0, NO_ACTION, _spec_data(algorithms)) + b"".join(events)


def _locality(locality: int = 3, pcr: int = 0, extra: bytes = b"") -> bytes:
    return _event2(pcr, NO_ACTION, BOTH, b"StartupLocality\x00" + bytes((locality,)) + extra)


CASES: list[tuple[str, bytes, int, str]] = [
    ("empty", b"", 0, "empty event log"),
    ("short first header", bytes(5), 0, "truncated event header"),
    ("legacy data size huge", _sha1_event(0, 8, b"", size=0xFFFFFFFF), 28, "exceeds"),
    ("legacy data truncated", _sha1_event(0, 8, b"abc", size=100), 32, "truncated event data"),
    ("legacy digest truncated", struct.pack("<II", 0, 8) + bytes(7), 8, "truncated SHA-1 digest"),
    ("uintn size 3", _sha1_event(0, NO_ACTION, _spec_data(BOTH, uintn=3)), 55, "uintnSize"),
    ("no algorithms", _sha1_event(0, NO_ACTION, _spec_data([])), 56, "declares 0 algorithms"),
    ("2^32-1 algorithms", _sha1_event(0, NO_ACTION, _spec_data(BOTH, count=0xFFFFFFFF)), 56,
     "algorithms"),
    ("nine algorithms", _sha1_event(0, NO_ACTION, _spec_data(BOTH, count=9)), 56, "algorithms"),
    ("sha256 of 20 bytes", _sha1_event(0, NO_ACTION, _spec_data([(SHA256, 20)])), 60,
     "digest size 20, not 32"),
    ("algorithm twice", _sha1_event(0, NO_ACTION, _spec_data([(SHA1, 20), (SHA1, 20)])), 64,
     "twice"),
    ("unknown algorithm of size 0", _sha1_event(0, NO_ACTION, _spec_data([(0x7777, 0)])), 60,
     "digest size 0"),
    ("unknown algorithm of size 65", _sha1_event(0, NO_ACTION, _spec_data([(0x7777, 65)])), 60,
     "digest size 65"),
    ("vendor info beyond event", _sha1_event(0, NO_ACTION, _spec_data(BOTH, vendor_size=200)),
     HEADER_SIZE, "truncated Spec ID vendorInfo"),
    ("bytes after Spec ID", _sha1_event(0, NO_ACTION, _spec_data(BOTH) + b"zz"), HEADER_SIZE,
     "2 bytes after the Spec ID event"),
    ("Spec ID shorter than its table", _sha1_event(0, NO_ACTION, _spec_data(BOTH, count=3)),
     HEADER_SIZE - 1, "truncated Spec ID"),
    ("zero digests", _log(_event2(0, IPL, BOTH, count=0)), COUNT_AT, "digest count 0"),
    ("nine digests", _log(_event2(0, IPL, BOTH, count=9)), COUNT_AT, "digest count 9"),
    ("more digests than banks", _log(_event2(0, IPL, BOTH, count=3)), COUNT_AT, "digest count 3"),
    ("algorithm not in header", _log(_event2(0, IPL, [(SM3, 32), (SHA1, 20)])), FIRST_ALG_AT,
     "0x0012 is not one the log declares"),
    ("digest twice", _log(_event2(0, IPL, [(SHA1, 20), (SHA1, 20)])), SECOND_ALG_AT,
     "second sha1 digest"),
    ("data size 2 MiB", _log(_event2(0, IPL, BOTH, size=2 << 20)), DATA_SIZE_AT, "exceeds"),
    ("data size 2^32-1", _log(_event2(0, IPL, BOTH, size=0xFFFFFFFF)), DATA_SIZE_AT, "exceeds"),
    ("data beyond log", _log(_event2(0, IPL, BOTH, b"abc", size=10)), DATA_SIZE_AT + 4,
     "truncated event data"),
    ("digest cut short", _log(_event2(0, IPL, BOTH))[: FIRST_ALG_AT + 12], FIRST_ALG_AT + 2,
     "truncated digest"),
    ("header cut short", _log(_event2(0, IPL, BOTH))[: FIRST + 5], FIRST, "truncated event header"),
    ("PCR 24", _log(_event2(24, IPL, BOTH)), FIRST, "PCR index 24"),
    ("StartupLocality after PCR 0 extend", _log(_event2(0, IPL, BOTH), _locality()),
     FIRST + len(_event2(0, IPL, BOTH)), "after PCR 0 was extended"),
    ("second StartupLocality", _log(_locality(), _locality()), FIRST + len(_locality()),
     "second StartupLocality"),
    ("StartupLocality of 18 bytes", _log(_locality(extra=b"!")), FIRST, "not 17 bytes"),
    ("StartupLocality on PCR 1", _log(_locality(pcr=1)), FIRST, "on PCR 0"),
    ("no common bank", _log(_event2(1, IPL, [(SHA1, 20)]), _event2(2, IPL, [(SHA256, 32)])),
     FIRST + len(_event2(1, IPL, [(SHA1, 20)])), "no digest algorithm is common"),
]


@pytest.mark.parametrize(("raw", "offset", "message"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_malformed_log_names_offset(raw: bytes, offset: int, message: str) -> None:
    with pytest.raises(EventLogFormatError) as caught:
        parse_event_log(raw)
    assert caught.value.offset == offset
    assert message in caught.value.reason
    assert str(caught.value).endswith(f"at byte offset {offset}")


def test_the_crafted_base_log_is_valid() -> None:
    log = parse_event_log(_log(_locality(), _event2(0, IPL, BOTH), _event2(4, IPL, BOTH)))
    assert log.startup_locality == 3
    assert [event.pcr for event in log.events] == [0, 0, 0, 4]


def test_no_action_events_may_name_any_pcr() -> None:
    log = parse_event_log(_log(_event2(0xFFFFFFFF, NO_ACTION, BOTH, b"SP800-155 Event\x00")))
    assert log.events[1].pcr == 0xFFFFFFFF
    assert replay(log) == {"sha1": {}, "sha256": {}}


def test_oversized_log() -> None:
    with pytest.raises(EventLogFormatError) as caught:
        parse_event_log(bytes(MAX_LOG_SIZE + 1))
    assert caught.value.offset == MAX_LOG_SIZE


def test_too_many_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse_module, "MAX_EVENTS", 3)
    parse_event_log(_log(*[_event2(1, IPL, BOTH)] * 3))
    with pytest.raises(EventLogFormatError, match="more than 3 events"):
        parse_event_log(_log(*[_event2(1, IPL, BOTH)] * 4))
    with pytest.raises(EventLogFormatError, match="more than 3 events"):
        parse_event_log(b"".join(_sha1_event(1, IPL, b"") for _ in range(4)))


def _boundaries(raw: bytes) -> set[int]:
    log = parse_event_log(raw)
    ends = {len(raw)}
    if log.header is not None:
        ends.add(log.records[0][0] if log.records else len(raw))
    ends.update(record[0] for record in log.records)
    return ends


@pytest.mark.parametrize(("name", "step"), [("uefivar", 1), ("arch-linux", 7), ("debian-10", 11),
                                            ("cos-85-amd-sev", 13)])
def test_every_truncation(name: str, step: int) -> None:
    raw = REAL_LOGS[name]
    boundaries = _boundaries(raw)
    for cut in range(1, len(raw), step):
        if cut in boundaries:
            replay(parse_event_log(raw[:cut]))
            continue
        with pytest.raises(EventLogFormatError) as caught:
            parse_event_log(raw[:cut])
        assert caught.value.offset is not None
        assert 0 <= caught.value.offset <= cut


def test_memoryview_and_bytearray_inputs() -> None:
    raw = REAL_LOGS["uefivar"]
    expected = parse_event_log(raw)
    assert parse_event_log(memoryview(raw)) == parse_event_log(bytearray(raw)) == expected


def test_damaged_event_data_stays_undecoded_but_counts() -> None:
    variable = efi_variable_data(EFI_GLOBAL_VARIABLE, "BootOrder", b"\x01\x00\x02")  # odd size
    image = image_load_event_data(b"")[:20]  # cut inside the UINTN fields
    log = parse_event_log(_log(_event2(1, int(EventType.EV_EFI_VARIABLE_BOOT), BOTH, variable),
                               _event2(4, int(EventType.EV_EFI_BOOT_SERVICES_APPLICATION), BOTH,
                                       image),
                               _event2(8, IPL, BOTH, b"\xff\xfe\xfd not text")))
    assert [type(event.decoded) for event in log.events[1:]] == [Undecoded] * 3
    assert "BootOrder has an odd length" in log.events[1].describe()
    assert replay(log)["sha256"].keys() == {1, 4, 8}


def test_certificate_with_invalid_version_keeps_the_entry() -> None:
    debian = parse_event_log(REAL_LOGS["debian-10"])
    shim = next(event.decoded for event in debian.events
                if isinstance(event.decoded, EfiVariable) and event.decoded.name == "Shim")
    certificate = bytearray(shim.data)
    version = certificate.find(bytes.fromhex("a003020102"))
    certificate[version + 4] = 7  # X.509 version 8: cryptography raises InvalidVersion
    data = efi_variable_data(SHIM_LOCK_GUID, "Shim", bytes(certificate))
    log = parse_event_log(_log(_event2(7, int(EventType.EV_EFI_VARIABLE_AUTHORITY), BOTH, data)))
    decoded = log.events[1].decoded
    assert isinstance(decoded, EfiVariable)
    assert decoded.value is None  # no subject to show; the bytes stay in `decoded.data`
    assert decoded.data == bytes(certificate)


# ---------------------------------------------------------------------------------------------
# Mutations of the real logs: the parser either succeeds or raises EventLogFormatError.

INTERESTING_U32 = [0, 1, 2, 3, 0x7F, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


@st.composite
def mutated_logs(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(sorted(REAL_LOGS.values(), key=len))))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "insert", "delete", "u32"]))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "flip" and raw:
            raw[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del raw[at:]
        elif kind == "splice":
            other = draw(st.sampled_from(list(REAL_LOGS.values())))
            start = draw(st.integers(0, len(other) - 1))
            raw[at:at] = other[start : start + draw(st.integers(1, 400))]
        elif kind == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del raw[at : at + draw(st.integers(1, 64))]
        elif kind == "u32" and len(raw) >= 4:
            at = min(at, len(raw) - 4)
            raw[at : at + 4] = struct.pack("<I", draw(st.sampled_from(INTERESTING_U32)))
    return bytes(raw)


def _parse_fully_or_fail_cleanly(raw: bytes) -> None:
    """Parse, replay and decode everything; only EventLogFormatError (with an offset) may
    escape, and pytest reports anything else (IndexError, struct.error, …) as a failure."""
    error: EventLogFormatError | None = None
    try:
        log = parse_event_log(raw)
    except EventLogFormatError as exc:
        error = exc
    if error is not None:
        assert error.offset is not None
        assert 0 <= error.offset <= max(len(raw), 1)
        return
    replay(log)
    for event in log.events:  # data decoding never raises, whatever the bytes
        event.describe()
        json.dumps(to_jsonable(event.decoded))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_logs())
def test_mutated_logs_parse_or_raise_format_error(raw: bytes) -> None:
    started = time.perf_counter()
    _parse_fully_or_fail_cleanly(raw)
    assert time.perf_counter() - started < 2.0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_parse_or_raise_format_error(raw: bytes) -> None:
    _parse_fully_or_fail_cleanly(raw)

"""The builder: logs it makes parse back to the same events and replay to hashlib's extends."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustauthority.eventlog import (
    BANKS,
    EFI_GLOBAL_VARIABLE,
    EfiVariable,
    Event,
    EventSpec,
    EventType,
    ImageLoad,
    LogFormat,
    SecureBootState,
    Separator,
    StartupLocality,
    Text,
    build_crypto_agile_log,
    device_path_from_text,
    device_path_to_text,
    efi_action,
    efi_variable_data,
    event_digest,
    image_load_event_data,
    ipl_string,
    parse_event_log,
    replay,
    replay_steps,
    separator,
)

BOOT_PATH = ("PciRoot(0x0)/Pci(0x1,0x1)/HD(1,GPT,1A504613-19B5-4B44-A83D-D926D40DAA1C,0x800,"
             "0x100000)/\\EFI\\BOOT\\BOOTX64.EFI")

MEASURED_BOOT = [
    EventSpec(0, EventType.EV_S_CRTM_VERSION, "1.0\x00".encode("utf-16-le")),
    EventSpec(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
              efi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01")),
    *[EventSpec(pcr, EventType.EV_SEPARATOR, separator()) for pcr in range(8)],
    EventSpec(4, EventType.EV_EFI_ACTION, efi_action("Calling EFI Application from Boot Option")),
    EventSpec(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, image_load_event_data(BOOT_PATH),
              measured=b"the PE image, hashed as Authenticode would"),
    EventSpec(8, EventType.EV_IPL, ipl_string("grub_cmd: linux /vmlinuz root=/dev/sda1")),
    EventSpec(9, EventType.EV_IPL, ipl_string("/vmlinuz")),
]


def _manual_replay(specs: Sequence[EventSpec], bank: str,
                   startup_locality: int | None = None) -> dict[int, bytes]:
    size = hashlib.new(bank).digest_size
    pcrs: dict[int, bytes] = {}
    if startup_locality is not None:
        pcrs[0] = startup_locality.to_bytes(size, "big")
    for spec in specs:
        if spec.event_type == EventType.EV_NO_ACTION:
            continue
        measured = spec.data if spec.measured is None else spec.measured
        start = pcrs.get(spec.pcr, bytes(size))
        pcrs[spec.pcr] = hashlib.new(bank, start + hashlib.new(bank, measured).digest()).digest()
    return dict(sorted(pcrs.items()))


def test_round_trip_of_a_measured_boot() -> None:
    log = parse_event_log(build_crypto_agile_log(MEASURED_BOOT))
    assert log.format is LogFormat.CRYPTO_AGILE
    assert log.banks == ("sha1", "sha256")
    assert len(log) == len(MEASURED_BOOT) + 1
    for spec, event in zip(MEASURED_BOOT, log.events[1:], strict=True):
        assert (event.pcr, event.event_type, event.data) == (spec.pcr, spec.event_type, spec.data)
        assert event.digests == {bank: event_digest(spec, bank) for bank in ("sha1", "sha256")}
    assert replay(log) == {bank: _manual_replay(MEASURED_BOOT, bank) for bank in ("sha1", "sha256")}


def test_measured_bytes_decide_the_digest() -> None:
    spec = MEASURED_BOOT[11]
    assert spec.measured is not None
    assert event_digest(spec, "sha256") == hashlib.sha256(spec.measured).digest()
    assert event_digest(spec, "sha256") != hashlib.sha256(spec.data).digest()


def test_helpers_decode_as_firmware_data() -> None:
    events = parse_event_log(build_crypto_agile_log(MEASURED_BOOT)).events
    assert events[1].decoded == Text("1.0", "utf-16-le")
    variable = events[2].decoded
    assert isinstance(variable, EfiVariable)
    assert (variable.variable_guid, variable.name) == (EFI_GLOBAL_VARIABLE, "SecureBoot")
    assert variable.value == SecureBootState(enabled=True)
    assert events[3].decoded == Separator(0)
    assert events[11].decoded == Text("Calling EFI Application from Boot Option", "utf-8")
    image = events[12].decoded
    assert isinstance(image, ImageLoad)
    assert image.device_path == BOOT_PATH
    assert events[13].decoded == Text("grub_cmd: linux /vmlinuz root=/dev/sda1", "utf-8")
    assert ipl_string("console=ttyS0", utf16=True) == "console=ttyS0\x00".encode("utf-16-le")
    error = parse_event_log(build_crypto_agile_log(
        [EventSpec(0, EventType.EV_SEPARATOR, separator(error=True))])).events[1].decoded
    assert isinstance(error, Separator)
    assert error.is_error


@pytest.mark.parametrize("locality", [0, 3, 4])
def test_startup_locality(locality: int) -> None:
    specs = [EventSpec(0, EventType.EV_POST_CODE, b"POST CODE"), MEASURED_BOOT[1]]
    raw = build_crypto_agile_log(specs, banks=BANKS, startup_locality=locality)
    log = parse_event_log(raw)
    assert log.startup_locality == locality
    assert log.events[1].decoded == StartupLocality(locality)
    assert replay(log) == {bank: _manual_replay(specs, bank, locality) for bank in BANKS}
    assert replay(log)["sha256"][0] == hashlib.sha256(
        bytes(31) + bytes((locality,)) + hashlib.sha256(b"POST CODE").digest()).digest()
    steps = list(replay_steps(log, "sha1"))
    assert not steps[1].extended
    assert steps[1].pcr_value == bytes(19) + bytes((locality,))


def test_startup_locality_alone_sets_pcr0() -> None:
    log = parse_event_log(build_crypto_agile_log([], banks=("sha256",), startup_locality=3))
    assert replay(log) == {"sha256": {0: bytes(31) + b"\x03"}}


def test_no_action_events_are_logged_not_extended() -> None:
    note = EventSpec(0, EventType.EV_NO_ACTION, b"SP800-155 Event\x00payload")
    with pytest.raises(ValueError, match="never extended"):
        event_digest(note, "sha256")
    log = parse_event_log(build_crypto_agile_log([note, MEASURED_BOOT[0]]))
    assert log.events[1].digests == {"sha1": bytes(20), "sha256": bytes(32)}
    assert replay(log) == {bank: _manual_replay([MEASURED_BOOT[0]], bank)
                           for bank in ("sha1", "sha256")}


def test_bank_order_follows_the_caller() -> None:
    log = parse_event_log(build_crypto_agile_log(MEASURED_BOOT, banks=("sha512", "sha1")))
    assert log.spec_id is not None
    assert [alg.name for alg in log.spec_id.algorithms] == ["sha512", "sha1"]
    assert log.banks == ("sha1", "sha512")


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"banks": ()}, ValueError),
    ({"banks": ("sha1", "sha1")}, ValueError),
    ({"banks": ("md5",)}, ValueError),
    ({"banks": "sha256"}, TypeError),
    ({"startup_locality": 256}, ValueError),
    ({"startup_locality": -1}, ValueError),
])
def test_builder_refuses_bad_arguments(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        build_crypto_agile_log(MEASURED_BOOT, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("spec", "message"), [
    (EventSpec(24, EventType.EV_IPL, b""), "PCR 24"),
    (EventSpec(-1, EventType.EV_IPL, b""), "PCR -1"),
    (EventSpec(0, 1 << 32, b""), "does not fit a UINT32"),
    (EventSpec(0, EventType.EV_IPL, bytes((1 << 20) + 1)), "exceeds"),
])
def test_builder_refuses_bad_events(spec: EventSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_crypto_agile_log([spec])


def test_unknown_bank_digest() -> None:
    with pytest.raises(ValueError, match="unknown bank"):
        event_digest(MEASURED_BOOT[0], "md5")


@pytest.mark.parametrize("text", [
    BOOT_PATH,
    "PcieRoot(0x1)/Pci(0x2,0x0)/Sata(0x0,0xffff,0x0)/HD(2,MBR,0x0000abcd,0x800,0x1000)",
    "Fv(7CB8BDC9-F8EB-4F34-AAEA-3EE4AF6516A1)/FvFile(462CAA21-7614-4503-836E-8AB6F4662331)",
    "\\EFI\\ubuntu\\grubx64.efi",
])
def test_device_path_text_round_trip(text: str) -> None:
    assert device_path_to_text(device_path_from_text(text)) == text
    assert image_load_event_data(text) == image_load_event_data(device_path_from_text(text))


def test_device_path_text_refuses_unknown_nodes() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        device_path_from_text("PciRoot(0x0)/Floppy(0x0)")


def test_device_path_rendering_never_fails() -> None:
    assert device_path_to_text(b"\x01\x01\x03\x00") == "Malformed(01010300)"
    assert device_path_to_text(b"\x09\x09\x06\x00\xab\xcd") == "Path(9,9,ABCD)"
    assert device_path_to_text(b"\x01\x01") == "Malformed(0101)"
    assert device_path_to_text(b"") == ""


def test_efi_variable_data_layout() -> None:
    guid = UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
    data = efi_variable_data(str(guid), "db", b"\x01\x02")
    assert data == guid.bytes_le + (2).to_bytes(8, "little") + (2).to_bytes(8, "little") + \
        "db".encode("utf-16-le") + b"\x01\x02"


SPECS = st.builds(
    EventSpec,
    pcr=st.integers(0, 23),
    event_type=st.one_of(st.sampled_from([t for t in EventType if t != EventType.EV_NO_ACTION]),
                         st.integers(4, 0xFFFFFFFF)),
    data=st.binary(max_size=64),
    measured=st.none() | st.binary(max_size=64),
)


@settings(max_examples=150, deadline=None)
@given(specs=st.lists(SPECS, max_size=24),
       banks=st.lists(st.sampled_from(BANKS), min_size=1, max_size=4, unique=True),
       locality=st.none() | st.integers(0, 4))
def test_hypothesis_round_trip(specs: list[EventSpec], banks: list[str],
                               locality: int | None) -> None:
    log = parse_event_log(build_crypto_agile_log(specs, banks=banks, startup_locality=locality))
    first = 1 if locality is None else 2
    assert [(e.pcr, e.event_type, e.data) for e in log.events[first:]] == [
        (s.pcr, s.event_type, s.data) for s in specs]
    assert log.startup_locality == locality
    assert replay(log) == {bank: _manual_replay(specs, bank, locality)
                           for bank in BANKS if bank in banks}


# names whose value any bytes decode to (PK or db with bad data would be `Undecoded`)
VARIABLE_NAMES = st.sampled_from(["SecureBoot", "Secure", "SecureBoot2", "P", "PKK", "Boot"])


@given(name=VARIABLE_NAMES, data=st.binary(max_size=40))
def test_names_variable_agrees_with_the_full_decoder_on_built_variables(name: str,
                                                                       data: bytes) -> None:
    raw = efi_variable_data(EFI_GLOBAL_VARIABLE, name, data)
    event = Event(1, 0, 7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, {}, raw)
    decoded = event.decoded
    assert isinstance(decoded, EfiVariable)
    for guid in (EFI_GLOBAL_VARIABLE, UUID(int=1)):
        for asked in ("SecureBoot", "PK", "db"):
            assert event.names_variable(guid, asked) == (
                decoded.variable_guid == guid and decoded.name == asked)


@given(guid=st.sampled_from([EFI_GLOBAL_VARIABLE, UUID(int=7)]),
       declared=st.integers(min_value=0, max_value=12),
       name=st.sampled_from([b"S\x00e\x00c\x00u\x00r\x00e\x00B\x00o\x00o\x00t\x00",
                             b"S\x00e\x00c\x00u\x00r\x00e\x00", b"\xff\xfe" * 10, b""]),
       tail=st.binary(max_size=24))
def test_names_variable_and_the_decoder_agree_on_damaged_headers(
        guid: UUID, declared: int, name: bytes, tail: bytes) -> None:
    # a GUID, a name length that may lie, name bytes, then anything (data length and data)
    raw = guid.bytes_le + declared.to_bytes(8, "little") + len(tail).to_bytes(8, "little") \
        + name + tail
    event = Event(1, 0, 7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, {}, raw)
    decoded = event.decoded
    found = isinstance(decoded, EfiVariable) and decoded.variable_guid == EFI_GLOBAL_VARIABLE \
        and decoded.name == "SecureBoot"
    if found:  # what the decoder reads as the SecureBoot variable, the header check finds
        assert event.names_variable(EFI_GLOBAL_VARIABLE, "SecureBoot")
    if event.names_variable(EFI_GLOBAL_VARIABLE, "SecureBoot"):
        # and it claims nothing more (an Undecoded body, a bad data length, is not a match)
        assert found or not isinstance(decoded, EfiVariable)


def test_names_variable_reads_a_truncated_header_as_no() -> None:
    raw = efi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01")
    for cut in range(len(raw) - 1):
        truncated = raw[:cut]
        if cut < 32 + len("SecureBoot") * 2:
            event = Event(1, 0, 7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, {}, truncated)
            assert not event.names_variable(EFI_GLOBAL_VARIABLE, "SecureBoot")

"""Baselines (vTA's "accepted base images"): the reference digests of a known-good boot, by
component, imported from a host's event log or verified evidence, and their JSON document.

A baseline is bank-specific: its digests are of one hash algorithm (`bank`), the one the
appraised evidence must be compared in. `Baseline.from_json` reads a document from outside
(a file, an API body) and refuses anything malformed with a `UsageError` naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from trustauthority.errors import UsageError
from trustauthority.eventlog import BANKS, Event, EventLog, replay_bank
from trustauthority.eventlog.constants import DIGEST_SIZES, PCR_COUNT
from trustauthority.policy.components import (
    KIND_PCRS,
    ComponentKind,
    classify,
    label,
    printable,
    secure_boot_state,
)
from trustauthority.verify import VerifiedEvidence

#: names this document format; a later, incompatible format gets another
SCHEMA: Final = "trustauthority.baseline/v1"

# Bounds on a document from outside. Real baselines have ~15 components and a few hundred
# events (GRUB logs every command of grub.cfg); these leave ample room and keep a hostile
# document from costing more than a bounded amount of memory and time.
MAX_NAME: Final = 128
MAX_VERSION: Final = 2**31 - 1
MAX_COMPONENTS: Final = 64
MAX_EVENTS: Final = 10_000
MAX_LABEL_LENGTH: Final = 1024

#: PCRs a strict baseline from an event log pins: PCRs 0-15 start at zero on TPM2_Startup (PCR 0
#: at the startup locality, PFP §10.4.5.3), so the log alone gives their values, including zero
#: for one nothing extended. PCRs 16-23 (debug, DRTM, application) are not the log's to tell.
LOG_PINNED_PCRS: Final = range(16)

#: banks a baseline from evidence prefers, in order, when none is named
_BANK_PREFERENCE: Final = ("sha256", "sha384", "sha512", "sha1")

_HEX: Final = re.compile(r"[0-9a-f]+")
_PCR_KEY: Final = re.compile(r"0|[1-9][0-9]?")
_TOP_FIELDS: Final = frozenset({"schema", "name", "version", "bank", "components", "secure_boot",
                                "strict_pcrs"})
_REQUIRED_TOP: Final = frozenset({"schema", "name", "version", "bank", "components"})
_COMPONENT_FIELDS: Final = frozenset({"kind", "pcr", "events"})
_EVENT_FIELDS: Final = frozenset({"digest", "label"})


def _malformed(where: str, problem: str) -> UsageError:
    return UsageError(f"malformed baseline: {where}: {problem}")


def _shown(value: object) -> str:
    """A bounded rendering of an untrusted value for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}…"


def _check_int(value: object, low: int, high: int, where: str) -> int:
    # bool is an int in Python, never in a baseline
    if type(value) is not int:
        raise _malformed(where, f"expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        shown = str(value) if value.bit_length() < 64 else f"a {value.bit_length()}-bit number"
        raise _malformed(where, f"{shown} is outside {low}..{high}")
    return value


def _check_text(value: object, limit: int, where: str) -> str:
    if not isinstance(value, str):
        raise _malformed(where, f"expected a string, got {type(value).__name__}")
    if len(value) > limit:
        raise _malformed(where, f"{len(value)} characters, more than {limit}")
    if printable(value, limit) != value:
        raise _malformed(where, "control or unprintable characters")
    return value


def _check_digest(value: object, size: int, bank: str, where: str) -> str:
    if not isinstance(value, str):
        raise _malformed(where, f"expected a hex string, got {type(value).__name__}")
    if len(value) != 2 * size or _HEX.fullmatch(value) is None:
        raise _malformed(where, f"expected {2 * size} lowercase hex digits (a {bank} digest), "
                                f"got {_shown(value)}")
    return value


def _check_bank(value: object, where: str) -> str:
    if not isinstance(value, str) or value not in BANKS:
        raise _malformed(where, f"{_shown(value)} is not a bank (one of {', '.join(BANKS)})")
    return value


@dataclass(frozen=True)
class ReferenceEvent:
    """One expected event: the digest the TPM must have been extended with, and what it was."""

    #: lowercase hex, of the baseline's bank
    digest: str
    #: for people (from `Event.describe()` or the decoded data); never compared
    label: str

    def __post_init__(self) -> None:
        if not isinstance(self.digest, str) or _HEX.fullmatch(self.digest) is None:
            raise _malformed("digest", f"{_shown(self.digest)} is not lowercase hex")
        _check_text(self.label, MAX_LABEL_LENGTH, "label")


@dataclass(frozen=True)
class Component:
    """The events of one kind in one PCR, in the order they were measured."""

    kind: ComponentKind
    pcr: int
    events: tuple[ReferenceEvent, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ComponentKind):
            raise _malformed("kind", f"{_shown(self.kind)} is not a ComponentKind")
        _check_int(self.pcr, 0, PCR_COUNT - 1, "pcr")
        if self.pcr not in KIND_PCRS[self.kind]:
            raise _malformed(self.name, f"{self.kind} events are never measured into PCR "
                                        f"{self.pcr} (only {sorted(KIND_PCRS[self.kind])})")
        if not isinstance(self.events, tuple) or not all(
                isinstance(event, ReferenceEvent) for event in self.events):
            raise _malformed(self.name, "events must be a tuple of ReferenceEvent")

    @property
    def name(self) -> str:
        return f"{self.kind} (PCR {self.pcr})"


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """Named, versioned reference values of one accepted boot, in one PCR bank.

    Build one with `baseline_from_event_log`, `baseline_from_evidence` or `from_json`; the
    constructor checks every field (`UsageError`), so a Baseline in hand is well formed.
    """

    name: str
    version: int = 1
    #: the hash algorithm of every digest here; evidence is compared in this bank only
    bank: str = "sha256"
    #: by (PCR, first measured), each (kind, PCR) at most once
    components: tuple[Component, ...]
    #: Secure Boot as the reference host's SecureBoot variable said; None when it had none
    secure_boot: bool | None = None
    #: exact final PCR values (hex) for strict mode; None when not pinned
    strict_pcrs: Mapping[int, str] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        _check_text(self.name, MAX_NAME, "name")
        if not self.name.strip():
            raise _malformed("name", "empty")
        _check_int(self.version, 1, MAX_VERSION, "version")
        _check_bank(self.bank, "bank")
        size = DIGEST_SIZES[self.bank]
        if not isinstance(self.components, tuple) or not all(
                isinstance(component, Component) for component in self.components):
            raise _malformed("components", "must be a tuple of Component")
        if len(self.components) > MAX_COMPONENTS:
            raise _malformed("components", f"{len(self.components)} components, more than "
                                           f"{MAX_COMPONENTS}")
        if sum(len(component.events) for component in self.components) > MAX_EVENTS:
            raise _malformed("components", f"more than {MAX_EVENTS} events in all")
        seen: set[tuple[ComponentKind, int]] = set()
        for component in self.components:
            if (component.kind, component.pcr) in seen:
                raise _malformed(component.name, "appears twice")
            seen.add((component.kind, component.pcr))
            for position, event in enumerate(component.events):
                _check_digest(event.digest, size, self.bank,
                              f"{component.name} event {position}")
        if self.secure_boot is not None and not isinstance(self.secure_boot, bool):
            raise _malformed("secure_boot", "expected true, false or null")
        if self.strict_pcrs is not None:
            pinned = {}
            for pcr, value in dict(self.strict_pcrs).items():
                _check_int(pcr, 0, PCR_COUNT - 1, "strict_pcrs")
                pinned[pcr] = _check_digest(value, size, self.bank, f"strict_pcrs[{pcr}]")
            # a sorted, read-only copy: the caller's dict must not change a frozen baseline
            object.__setattr__(self, "strict_pcrs", MappingProxyType(dict(sorted(pinned.items()))))
        if not self.components and not self.strict_pcrs:
            raise _malformed("components", "the baseline pins nothing (no component, no "
                                           "strict PCR value)")

    @property
    def label(self) -> str:
        """`name v<version>`, how reports name a baseline."""
        return f"{self.name} v{self.version}"

    def component(self, kind: ComponentKind, pcr: int) -> Component | None:
        for component in self.components:
            if component.kind is kind and component.pcr == pcr:
                return component
        return None

    def to_json(self) -> dict[str, Any]:
        """The JSON document (`from_json` reads it back to an equal Baseline)."""
        return {
            "schema": SCHEMA,
            "name": self.name,
            "version": self.version,
            "bank": self.bank,
            "secure_boot": self.secure_boot,
            "components": [
                {"kind": str(component.kind), "pcr": component.pcr,
                 "events": [{"digest": event.digest, "label": event.label}
                            for event in component.events]}
                for component in self.components],
            "strict_pcrs": (None if self.strict_pcrs is None
                            else {str(pcr): value for pcr, value in self.strict_pcrs.items()}),
        }

    @classmethod
    def from_json(cls, raw_document: object) -> Baseline:
        """A Baseline from an untrusted JSON document (as `json.loads` returns it).

        Every field is checked for type, range and size; unknown fields are refused so that a
        misspelt one is not silently ignored. Hex digits may be in either case.
        """
        document = _object(raw_document, "document", _TOP_FIELDS, _REQUIRED_TOP)
        if document["schema"] != SCHEMA:
            raise _malformed("schema", f"expected {SCHEMA!r}, got {_shown(document['schema'])}")
        name = _check_text(document["name"], MAX_NAME, "name")
        version = _check_int(document["version"], 1, MAX_VERSION, "version")
        bank = _check_bank(document["bank"], "bank")
        size = DIGEST_SIZES[bank]
        secure_boot = document.get("secure_boot")
        if secure_boot is not None and not isinstance(secure_boot, bool):
            raise _malformed("secure_boot", "expected true, false or null")
        raw_components = document["components"]
        if not isinstance(raw_components, list):
            raise _malformed("components", "expected a list")
        if len(raw_components) > MAX_COMPONENTS:
            raise _malformed("components", f"{len(raw_components)} components, more than "
                                           f"{MAX_COMPONENTS}")
        budget = MAX_EVENTS
        components = []
        for number, raw_component in enumerate(raw_components):
            where = f"components[{number}]"
            component = _component(raw_component, where, bank, size, budget)
            budget -= len(component.events)
            components.append(component)
        return cls(name=name, version=version, bank=bank, components=tuple(components),
                   secure_boot=secure_boot,
                   strict_pcrs=_strict_pcrs(document.get("strict_pcrs"), bank, size))


def _object(value: object, where: str, allowed: frozenset[str],
            required: frozenset[str]) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _malformed(where, f"expected an object, got {type(value).__name__}")
    if not all(isinstance(key, str) for key in value):
        raise _malformed(where, "field names must be strings")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _malformed(where, f"unknown field {_shown(unknown[0])}")
    missing = sorted(required - set(value))
    if missing:
        raise _malformed(where, f"missing field {missing[0]!r}")
    return value


def _component(value: object, where: str, bank: str, size: int, budget: int) -> Component:
    raw = _object(value, where, _COMPONENT_FIELDS, _COMPONENT_FIELDS)
    raw_kind = raw["kind"]
    kinds = [str(kind) for kind in ComponentKind]
    if not isinstance(raw_kind, str) or raw_kind not in kinds:
        raise _malformed(f"{where}.kind", f"{_shown(raw_kind)} is not a component kind (one of "
                                          f"{', '.join(kinds)})")
    kind = ComponentKind(raw_kind)
    pcr = _check_int(raw["pcr"], 0, PCR_COUNT - 1, f"{where}.pcr")
    if pcr not in KIND_PCRS[kind]:
        raise _malformed(f"{where}.pcr", f"{kind} events are never measured into PCR {pcr} "
                                         f"(only {sorted(KIND_PCRS[kind])})")
    raw_events = raw["events"]
    if not isinstance(raw_events, list):
        raise _malformed(f"{where}.events", "expected a list")
    if len(raw_events) > budget:
        raise _malformed(f"{where}.events", f"more than {MAX_EVENTS} events in all")
    events = []
    for number, raw_event in enumerate(raw_events):
        at = f"{where}.events[{number}]"
        entry = _object(raw_event, at, _EVENT_FIELDS, _EVENT_FIELDS)
        digest = entry["digest"]
        if isinstance(digest, str):
            digest = digest.lower()
        events.append(ReferenceEvent(_check_digest(digest, size, bank, f"{at}.digest"),
                                     _check_text(entry["label"], MAX_LABEL_LENGTH,
                                                 f"{at}.label")))
    return Component(kind, pcr, tuple(events))


def _strict_pcrs(value: object, bank: str, size: int) -> dict[int, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _malformed("strict_pcrs", "expected an object of PCR number -> hex value, or null")
    pinned = {}
    for key, digest in value.items():
        if not isinstance(key, str) or _PCR_KEY.fullmatch(key) is None:
            raise _malformed("strict_pcrs", f"{_shown(key)} is not a PCR number")
        pcr = _check_int(int(key), 0, PCR_COUNT - 1, f"strict_pcrs[{key}]")
        if isinstance(digest, str):
            digest = digest.lower()
        pinned[pcr] = _check_digest(digest, size, bank, f"strict_pcrs[{key}]")
    return pinned


# ---------------------------------------------------------------------------------------------
# Import from a known-good host


def _require_bank(bank: str, available: Iterable[str], source: str) -> None:
    if bank not in BANKS:
        raise UsageError(f"unknown bank {bank!r} (one of {', '.join(BANKS)})")
    have = tuple(available)
    if bank not in have:
        hint = (" (a SHA-1-only log can be a baseline only with bank='sha1')"
                if have == ("sha1",) else "")
        raise UsageError(f"{source} has no {bank} bank; it has "
                         f"{', '.join(have) or 'no replayable bank'}{hint}")


def _components(pairs: Iterable[tuple[Event, ComponentKind]], bank: str) -> tuple[Component, ...]:
    grouped: dict[tuple[ComponentKind, int], list[ReferenceEvent]] = {}
    first: dict[tuple[ComponentKind, int], int] = {}
    for event, kind in pairs:
        key = (kind, event.pcr)
        first.setdefault(key, event.index)
        grouped.setdefault(key, []).append(ReferenceEvent(event.digests[bank].hex(),
                                                          label(event)))
    order = sorted(grouped, key=lambda key: (key[1], first[key]))
    return tuple(Component(kind, pcr, tuple(grouped[(kind, pcr)])) for kind, pcr in order)


def baseline_from_event_log(log: EventLog, *, name: str, version: int = 1, bank: str = "sha256",
                            strict: bool = False) -> Baseline:
    """The baseline of the boot `log` records, taken at its word (no quote vouches for it).

    For a file from a trusted source, or tests; the Attestation Service imports from a host with
    `baseline_from_evidence`. `strict` also pins the final values of PCRs 0-15 as the log
    replays them. Raises `UsageError` when the log has no `bank` (naming the banks it has).
    """
    _require_bank(bank, log.banks, "the event log")
    events = log.events
    strict_pcrs = None
    if strict:
        replayed = replay_bank(log, bank)
        zero = bytes(DIGEST_SIZES[bank])
        strict_pcrs = {pcr: replayed.get(pcr, zero).hex() for pcr in LOG_PINNED_PCRS}
    return Baseline(name=name, version=version, bank=bank,
                    components=_components(classify(events), bank),
                    secure_boot=secure_boot_state(events, bank).enabled,
                    strict_pcrs=strict_pcrs)


def baseline_from_evidence(evidence: VerifiedEvidence, *, name: str, version: int = 1,
                           bank: str | None = None, strict: bool = False) -> Baseline:
    """The baseline of a host's verified boot: only events of PCRs the quote confirmed.

    `bank` defaults to the quote's sha256 bank (else sha384, sha512, sha1, the first quoted).
    `strict` pins every PCR value of that bank exactly as the TPM quoted it. The Secure Boot
    flag is read only from a confirmed PCR 7. Raises `UsageError` when the quote has no `bank`.
    """
    quoted = evidence.quote.pcr_values
    if bank is None:
        bank = next((candidate for candidate in _BANK_PREFERENCE if candidate in quoted),
                    "sha256")
    _require_bank(bank, [candidate for candidate in BANKS if candidate in quoted], "the quote")
    confirmed = evidence.confirmed_pcrs
    pairs = [(event, kind) for event, kind in classify(evidence.event_log.events)
             if event.pcr in confirmed]
    strict_pcrs = ({pcr: value.hex() for pcr, value in quoted[bank].items()} if strict
                   else None)
    return Baseline(name=name, version=version, bank=bank, components=_components(pairs, bank),
                    secure_boot=secure_boot_state(evidence.verified_events, bank).enabled,
                    strict_pcrs=strict_pcrs)

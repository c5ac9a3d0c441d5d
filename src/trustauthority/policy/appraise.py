"""Appraise a host's boot against a cluster's baselines under its `Policy`: a frozen report of
which baseline matched or, when none did, the closest one and every way the boot differs from it.

`appraise_evidence` (verified evidence) is what the Attestation Service calls, and
`appraise_or_raise` is the gate before a token or a key: it raises `PolicyViolation`. `appraise`
takes a bare event log at its word (files, tests); `diff_baselines` compares two baselines.

Checks, against each baseline in turn (every failed check is a `Difference`; none stops the rest,
so the report is complete):

1. the baseline's bank is one the evidence vouches for (else it cannot be compared at all);
2. Secure Boot is on, when the policy requires it, as a SecureBoot event whose digest is the hash
   of its data says (PFP §3.3.4.8; see `components.secure_boot_state`);
3. every PCR the policy compares is covered: with evidence, the quote confirmed the log's events
   for it, or the log has none and the TPM's value is still the initial one;
4. each baseline component of a compared PCR: the log's events of that kind in that PCR have
   exactly the baseline's digests in the baseline's order (the first divergence is reported);
5. events of a kind the baseline has no component for, in a compared PCR, are refused unless
   `Policy.allow_unknown_events`;
6. in strict mode, when the baseline pins PCR values: each compared PCR's value equals the
   pinned one (the quoted value for evidence, the replayed one for a bare log).

A baseline passes when it has no Difference; the first passing baseline, in the order given, is
the match. Only digests decide (decoded data labels events, sorts them into components and gives
the Secure Boot flag, which itself must hash to its digest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from trustauthority.errors import PolicyViolation, UsageError
from trustauthority.eventlog import Event, EventLog, replay_bank
from trustauthority.eventlog.constants import DIGEST_SIZES, PCR_COUNT
from trustauthority.policy.baseline import Baseline, Component, ReferenceEvent
from trustauthority.policy.components import (
    ComponentKind,
    SecureBootObservation,
    classify,
    label,
    secure_boot_state,
)
from trustauthority.verify import VerifiedEvidence

#: PCRs a default Policy compares (see `Policy.pcrs` for why these)
DEFAULT_PCRS: Final = frozenset({0, 2, 3, 4, 7, 8, 9})

#: `Difference.component` values other than a `ComponentKind`
PCR_CHECK: Final = "pcr"  # a PCR's exact value (strict mode) or its coverage by the quote
BANK_CHECK: Final = "bank"  # the baseline's bank is not one the evidence carries
BASELINES_CHECK: Final = "baselines"  # there was no baseline to appraise against

_KIND_ORDER: Final = {kind: number for number, kind in enumerate(ComponentKind)}
_SHORT: Final = 12  # hex digits of a digest shown in a reason


@dataclass(frozen=True)
class Policy:
    """A cluster's appraisal knobs. Every default is the secure choice; each says why."""

    #: Secure Boot must be on: without it the firmware runs any boot loader, and PCR 4 is the
    #: only record of which one. A host whose log has no (verifiable) SecureBoot variable fails.
    require_secure_boot: bool = True
    #: PCRs compared. The default, {0, 2, 3, 4, 7, 8, 9}, is all the code and the Secure Boot
    #: policy of a boot: firmware (0), option ROMs and their configuration (2, 3), boot loaders
    #: and an EFI-stub kernel (4), Secure Boot keys and the authorities used (7), GRUB's commands,
    #: kernel command line, kernel and initrd (8, 9). Left out, because they differ between
    #: hosts of the same image and would make a baseline fit only the host it came from: PCR 1
    #: (Boot#### entries carry the ESP's partition GUID, BootOrder changes with PXE and installer
    #: entries; SMBIOS tables carry serial numbers), PCR 5 (the GPT event carries the disk and
    #: partition GUIDs) and PCR 6 (manufacturer specific, PFP §3.3.4.7). A cluster of identical
    #: clones can add them; a host's PCR 4 and 7 still show a changed boot order's effect.
    pcrs: frozenset[int] = DEFAULT_PCRS
    #: Events of a kind the baseline has no component for (e.g. shim's PCR 14 MOK lists when
    #: PCR 14 is compared) are refused. Allowing them is a real loosening: an event's kind is
    #: read from its type and data, which the quote does not cover, so a host that controls its
    #: log can present any extra event in a compared PCR as one of an unknown kind.
    allow_unknown_events: bool = False
    #: Also compare the exact PCR values a baseline pins (`Baseline.strict_pcrs`; baselines
    #: without them are compared by component only). Off by default because exact values also
    #: pin what the component view deliberately tolerates, such as the interleaving of
    #: components within a PCR; on, a host must reproduce the reference boot bit for bit.
    strict: bool = False

    def __post_init__(self) -> None:
        raw_pcrs: object = self.pcrs
        if isinstance(raw_pcrs, str) or not isinstance(raw_pcrs, frozenset | set):
            raise UsageError("policy pcrs must be a set of PCR numbers")
        bad = [pcr for pcr in raw_pcrs if type(pcr) is not int or not 0 <= pcr < PCR_COUNT]
        if bad:
            raise UsageError(f"policy pcrs must be PCR numbers 0-{PCR_COUNT - 1}, got "
                             f"{bad[0]!r}")
        if not raw_pcrs:
            raise UsageError("a policy must compare at least one PCR")
        object.__setattr__(self, "pcrs", frozenset(raw_pcrs))
        for name in ("require_secure_boot", "allow_unknown_events", "strict"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"policy {name} must be true or false")


@dataclass(frozen=True)
class Difference:
    """One way a boot (or a baseline, for `diff_baselines`) differs from a baseline."""

    #: a `ComponentKind` value, or PCR_CHECK, BANK_CHECK or BASELINES_CHECK
    component: str
    #: the PCR concerned, if one is
    pcr: int | None
    #: one line for people, naming all of the below that is known
    reason: str
    #: what the baseline expects: a hex digest or PCR value, or "enabled" for Secure Boot
    expected: str | None = None
    expected_label: str | None = None
    #: what the evidence has instead (None: nothing there)
    found: str | None = None
    found_label: str | None = None
    #: the first diverging event's index in the appraised log (`Event.index`)
    event_index: int | None = None
    #: its position among the component's events (0 is the first)
    position: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"component": self.component, "pcr": self.pcr, "reason": self.reason,
                "expected": self.expected, "expected_label": self.expected_label,
                "found": self.found, "found_label": self.found_label,
                "event_index": self.event_index, "position": self.position}


@dataclass(frozen=True)
class Appraisal:
    """The outcome of appraising one boot against a cluster's baselines."""

    trusted: bool
    #: the baseline the boot matches; None when it matches none
    matched: Baseline | None
    #: the baseline with the fewest differences (the match itself when trusted); None when
    #: there were no baselines
    closest: Baseline | None
    #: how the boot differs from `closest`, in check order; empty when trusted
    differences: tuple[Difference, ...] = ()
    #: Secure Boot as the log shows it, in the closest baseline's bank (None: unknown)
    secure_boot: bool | None = None
    #: `differences` against every baseline appraised, by `Baseline.label`
    by_baseline: Mapping[str, tuple[Difference, ...]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.trusted != (self.matched is not None) or (self.trusted and self.differences):
            raise ValueError("a trusted appraisal has a match and no differences")

    @property
    def summary(self) -> str:
        """One line: the match, or the closest baseline and the first difference."""
        if self.matched is not None:
            return f"trusted: matches baseline {self.matched.label}"
        first = self.differences[0].reason if self.differences else "no differences recorded"
        more = len(self.differences) - 1
        closest = f"closest baseline {self.closest.label}: " if self.closest else ""
        return f"not trusted: {closest}{first}" + (f" (and {more} more)" if more > 0 else "")

    def to_json(self) -> dict[str, Any]:
        def named(baseline: Baseline | None) -> dict[str, Any] | None:
            return None if baseline is None else {"name": baseline.name,
                                                  "version": baseline.version}
        return {"trusted": self.trusted, "matched": named(self.matched),
                "closest": named(self.closest), "secure_boot": self.secure_boot,
                "summary": self.summary,
                "differences": [difference.to_json() for difference in self.differences]}


class AppraisalFailed(PolicyViolation):
    """The boot matches none of the cluster's baselines; `appraisal` says how it differs."""

    def __init__(self, appraisal: Appraisal) -> None:
        self.appraisal = appraisal
        super().__init__(appraisal.summary)


# ---------------------------------------------------------------------------------------------
# What is appraised


class _Seen:
    """A measured event of the appraised log, in one bank.

    The label is made only when a difference is reported: describing every event of every
    attestation, most of which pass, was a fifth of the appraisal's time.
    """

    __slots__ = ("_event", "_label", "digest", "index")

    def __init__(self, index: int | None, digest: str, label_: str | None = None,
                 event: Event | None = None) -> None:
        #: `Event.index`; None for a baseline's event (`diff_baselines`)
        self.index = index
        self.digest = digest
        self._label = label_
        self._event = event

    @property
    def label(self) -> str:
        if self._label is None:
            self._label = label(self._event) if self._event is not None else ""
        return self._label

    @property
    def where(self) -> str:
        return "" if self.index is None else f", event #{self.index}"


@dataclass(frozen=True)
class _View:
    """The appraised boot in one bank: what may be compared, and how it is grouped."""

    #: (kind, PCR) -> the events of usable PCRs, in log order
    groups: Mapping[tuple[ComponentKind, int], tuple[_Seen, ...]]
    #: PCR -> why its events cannot be used (absent: they can)
    uncovered: Mapping[int, str]
    #: final PCR values, where known
    values: Mapping[int, bytes]
    secure_boot: SecureBootObservation


class _Subject:
    """A log with what may be believed of it: all of it (bare log) or what a quote vouches for."""

    def __init__(self, log: EventLog, evidence: VerifiedEvidence | None) -> None:
        self.log = log
        self.evidence = evidence
        self.classified = tuple(classify(log.events))
        self._views: dict[str, _View] = {}

    @property
    def banks(self) -> tuple[str, ...]:
        if self.evidence is None:
            return self.log.banks
        return tuple(bank for bank in self.log.banks if bank in self.evidence.quote.pcr_values)

    def describe_banks(self) -> str:
        source = "log" if self.evidence is None else "quote"
        return f"the {source} has only {', '.join(self.banks) or 'no usable bank'}"

    def view(self, bank: str) -> _View:
        if bank not in self._views:
            self._views[bank] = self._make_view(bank)
        return self._views[bank]

    def _make_view(self, bank: str) -> _View:
        uncovered: dict[int, str] = {}
        if self.evidence is None:
            usable_events = self.log.events
            values = replay_bank(self.log, bank)
        else:
            quoted = self.evidence.quote.pcr_values[bank]
            values = dict(quoted)
            zero = bytes(DIGEST_SIZES[bank])
            for pcr in range(PCR_COUNT):
                if pcr in self.evidence.confirmed_pcrs:
                    continue
                if pcr not in quoted:
                    uncovered[pcr] = f"PCR {pcr} is compared but the quote does not cover it"
                elif pcr not in self.evidence.unlogged_pcrs:
                    # quoted in this bank but not confirmed in every quoted bank
                    uncovered[pcr] = (f"PCR {pcr} is compared but the quote does not confirm "
                                      "the log's events for it in every bank")
                elif quoted[pcr] != zero:
                    uncovered[pcr] = (f"PCR {pcr} was extended (the TPM quoted "
                                      f"{_short(quoted[pcr].hex())}) but the log records no "
                                      "event for it")
            usable_events = self.evidence.verified_events
        groups: dict[tuple[ComponentKind, int], list[_Seen]] = {}
        for event, kind in self.classified:
            if event.pcr not in uncovered:
                groups.setdefault((kind, event.pcr), []).append(_seen(event, bank))
        return _View({key: tuple(seen) for key, seen in groups.items()}, uncovered, values,
                     secure_boot_state(usable_events, bank))


def _seen(event: Event, bank: str) -> _Seen:
    return _Seen(event.index, event.digests[bank].hex(), event=event)


# ---------------------------------------------------------------------------------------------
# Comparison


def _short(digest: str) -> str:
    return digest if len(digest) <= _SHORT else f"{digest[:_SHORT]}…"


def _sort_key(key: tuple[ComponentKind, int]) -> tuple[int, int]:
    return key[1], _KIND_ORDER[key[0]]


@dataclass(frozen=True)
class _Result:
    baseline: Baseline
    differences: tuple[Difference, ...]
    #: False when the baseline could not be compared at all (another bank)
    comparable: bool
    #: events (or checks) that differ, to break ties between baselines
    distance: int
    secure_boot: bool | None

    @property
    def score(self) -> tuple[int, int, int]:
        return (not self.comparable, len(self.differences), self.distance)


def _diverge(kind: str, pcr: int, expected: Sequence[ReferenceEvent],
             found: Sequence[_Seen]) -> tuple[Difference | None, int]:
    """The first difference between two event sequences, and how many positions differ."""
    mismatches = sum(1 for want, have in zip(expected, found, strict=False)
                     if want.digest != have.digest) + abs(len(expected) - len(found))
    if not mismatches:
        return None, 0
    position = next((number for number, (want, have) in enumerate(zip(expected, found,
                                                                       strict=False))
                     if want.digest != have.digest), min(len(expected), len(found)))
    count = len(expected)
    where = f" at its event {position + 1} of {count}" if count > 1 else ""
    if position < len(expected) and position < len(found):
        want, have = expected[position], found[position]
        hint = ""
        if any(later.digest == want.digest for later in found[position + 1:position + 2]):
            hint = "; an extra event was measured before the expected one"
        elif any(later.digest == have.digest for later in expected[position + 1:position + 2]):
            hint = "; the expected event is missing"
        reason = (f"{kind} differs{where}: expected {_short(want.digest)} ({want.label}), "
                  f"found {_short(have.digest)} ({have.label}){have.where} in PCR {pcr}{hint}")
        return Difference(kind, pcr, reason, want.digest, want.label, have.digest, have.label,
                          have.index, position), mismatches
    if position < len(expected):
        want = expected[position]
        has = (f"PCR {pcr} has only {len(found)} {kind} event{'s' if len(found) != 1 else ''}"
               if found else f"PCR {pcr} has no {kind} event")
        reason = (f"{kind} differs{where}: expected {_short(want.digest)} ({want.label}), "
                  f"found nothing: {has}")
        return Difference(kind, pcr, reason, want.digest, want.label, position=position), \
            mismatches
    have = found[position]
    reason = (f"{kind} differs: found an extra event {_short(have.digest)} ({have.label})"
              f"{have.where} in PCR {pcr}, after the {count} the baseline expects")
    return Difference(kind, pcr, reason, found=have.digest, found_label=have.label,
                      event_index=have.index, position=position), mismatches


def _secure_boot_difference(observed: SecureBootObservation) -> Difference:
    event = observed.event
    if observed.enabled is False and event is not None:
        return Difference(str(ComponentKind.SECURE_BOOT), 7,
                          f"Secure Boot is disabled (event #{event.index} in PCR 7) but the "
                          "policy requires it", "enabled", None, "disabled", None, event.index)
    return Difference(str(ComponentKind.SECURE_BOOT), 7,
                      f"Secure Boot state is unknown ({observed.problem}) but the policy "
                      "requires it on", "enabled", None, None, None,
                      None if event is None else event.index)


def _compare(baseline: Baseline, subject: _Subject, policy: Policy) -> _Result:
    # 1. the bank
    if baseline.bank not in subject.banks:
        reason = (f"baseline {baseline.label} is in the {baseline.bank} bank, but "
                  f"{subject.describe_banks()}")
        return _Result(baseline, (Difference(BANK_CHECK, None, reason, baseline.bank),),
                       False, 0, None)
    view = subject.view(baseline.bank)
    differences: list[Difference] = []
    distance = 0
    # 2. Secure Boot
    if policy.require_secure_boot and view.secure_boot.enabled is not True:
        differences.append(_secure_boot_difference(view.secure_boot))
        distance += 1
    # 3. coverage
    compared = sorted(policy.pcrs)
    for pcr in compared:
        if pcr in view.uncovered:
            differences.append(Difference(PCR_CHECK, pcr, view.uncovered[pcr]))
            distance += 1
    usable = {pcr for pcr in compared if pcr not in view.uncovered}
    # 4. and 5. components, in PCR order
    expected = {(component.kind, component.pcr): component for component in baseline.components
                if component.pcr in usable}
    present = {key for key in view.groups if key[1] in usable}
    for key in sorted(expected.keys() | present, key=_sort_key):
        kind, pcr = key
        found = view.groups.get(key, ())
        component: Component | None = expected.get(key)
        if component is None:
            if not policy.allow_unknown_events:
                first = found[0]
                differences.append(Difference(
                    str(kind), pcr, f"unexpected {kind} event in PCR {pcr}: found "
                    f"{_short(first.digest)} ({first.label}), event #{first.index}; baseline "
                    f"{baseline.label} has no {kind} component for PCR {pcr}",
                    found=first.digest, found_label=first.label, event_index=first.index,
                    position=0))
                distance += len(found)
            continue
        difference, mismatches = _diverge(str(kind), pcr, component.events, found)
        if difference is not None:
            differences.append(difference)
            distance += mismatches
    # 6. exact values
    if policy.strict and baseline.strict_pcrs:
        zero = bytes(DIGEST_SIZES[baseline.bank])
        for pcr in compared:
            pinned = baseline.strict_pcrs.get(pcr)
            if pinned is None or pcr in view.uncovered:
                continue
            actual = view.values.get(pcr, zero).hex()
            if actual != pinned:
                differences.append(Difference(
                    PCR_CHECK, pcr, f"PCR {pcr} differs (strict): expected {_short(pinned)}, "
                    f"found {_short(actual)}", pinned, None, actual))
                distance += 1
    return _Result(baseline, tuple(differences), True, distance, view.secure_boot.enabled)


def _appraise(subject: _Subject, baselines: Sequence[Baseline], policy: Policy) -> Appraisal:
    if not isinstance(policy, Policy):
        raise TypeError("policy must be a Policy")
    results = [_compare(baseline, subject, policy) for baseline in baselines]
    by_baseline = {result.baseline.label: result.differences for result in results}
    for result in results:
        if not result.differences:
            return Appraisal(True, result.baseline, result.baseline, (), result.secure_boot,
                             MappingProxyType(by_baseline))
    if not results:
        return Appraisal(False, None, None, (Difference(
            BASELINES_CHECK, None, "no baseline to appraise against: the cluster accepts none"),))
    closest = min(results, key=lambda result: result.score)  # min keeps the first of equals
    return Appraisal(False, None, closest.baseline, closest.differences, closest.secure_boot,
                     MappingProxyType(by_baseline))


def appraise(evidence_log: EventLog, baselines: Sequence[Baseline], policy: Policy) -> Appraisal:
    """Appraise the boot a bare event log records, taking the log at its word.

    For files and tests; with a host's evidence use `appraise_evidence`, which believes only
    what the quote vouches for.
    """
    return _appraise(_Subject(evidence_log, None), baselines, policy)


def appraise_evidence(evidence: VerifiedEvidence, baselines: Sequence[Baseline],
                      policy: Policy) -> Appraisal:
    """Appraise a host's verified evidence (the checks in the module docstring).

    Only the events of PCRs the quote confirmed are compared; strict mode compares the quoted
    PCR values; a baseline in a bank the quote does not cover cannot match.
    """
    return _appraise(_Subject(evidence.event_log, evidence), baselines, policy)


def appraise_or_raise(evidence: VerifiedEvidence, baselines: Sequence[Baseline],
                      policy: Policy) -> Appraisal:
    """The gate before a token or a key: the trusted appraisal, or `AppraisalFailed` (a
    `PolicyViolation` carrying the appraisal) when the boot matches no baseline."""
    appraisal = appraise_evidence(evidence, baselines, policy)
    if not appraisal.trusted:
        raise AppraisalFailed(appraisal)
    return appraisal


def diff_baselines(a: Baseline, b: Baseline) -> list[Difference]:
    """How baseline `b` differs from `a` (`a` is "expected", `b` "found"), for `baseline diff`.

    Compares bank, Secure Boot, every component of either (first divergence of each) and the
    PCR values both pin. Positions are within components; there is no log, so no event index.
    """
    if a.bank != b.bank:
        return [Difference(BANK_CHECK, None, f"{a.label} is in the {a.bank} bank and {b.label} "
                           f"in {b.bank}: their digests cannot be compared", a.bank, None,
                           b.bank)]
    differences: list[Difference] = []
    if a.secure_boot != b.secure_boot:
        def state(value: bool | None) -> str:
            return {True: "enabled", False: "disabled", None: "unknown"}[value]
        differences.append(Difference(
            str(ComponentKind.SECURE_BOOT), 7, f"Secure Boot: {a.label} has it "
            f"{state(a.secure_boot)}, {b.label} {state(b.secure_boot)}", state(a.secure_boot),
            None, state(b.secure_boot)))
    mine = {(component.kind, component.pcr): component for component in a.components}
    theirs = {(component.kind, component.pcr): component for component in b.components}
    for key in sorted(mine.keys() | theirs.keys(), key=_sort_key):
        kind, pcr = key
        found = [_Seen(None, event.digest, event.label)
                 for event in (theirs[key].events if key in theirs else ())]
        expected = mine[key].events if key in mine else ()
        difference, _ = _diverge(str(kind), pcr, expected, found)
        if difference is not None:
            differences.append(difference)
    if (a.strict_pcrs is None) != (b.strict_pcrs is None):
        pins = a.label if a.strict_pcrs is not None else b.label
        differences.append(Difference(PCR_CHECK, None, f"only {pins} pins exact PCR values"))
    elif a.strict_pcrs is not None and b.strict_pcrs is not None:
        for pcr in sorted(a.strict_pcrs.keys() & b.strict_pcrs.keys()):
            if a.strict_pcrs[pcr] != b.strict_pcrs[pcr]:
                differences.append(Difference(
                    PCR_CHECK, pcr, f"PCR {pcr} differs: {a.label} pins "
                    f"{_short(a.strict_pcrs[pcr])}, {b.label} {_short(b.strict_pcrs[pcr])}",
                    a.strict_pcrs[pcr], None, b.strict_pcrs[pcr]))
    return differences


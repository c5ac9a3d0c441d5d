"""Baselines ("accepted base images") and the appraisal of a host's verified boot against them.
Pure: frozen dataclasses in, a frozen report out (or `PolicyViolation` at the gate); no I/O.

Public API::

    Baseline(name, version=1, bank="sha256", components, secure_boot=None, strict_pcrs=None)
        .to_json() -> dict, Baseline.from_json(raw_document) -> Baseline   # UsageError if bad
        .component(kind, pcr) -> Component | None, .label ("name vN")
    Component(kind: ComponentKind, pcr, events: tuple[ReferenceEvent, ...]), .name
    ReferenceEvent(digest: hex str, label: str)
    ComponentKind (StrEnum): platform-firmware, firmware-config, option-roms, boot-manager,
        boot-applications, partition-table, platform-specific, secure-boot,
        secure-boot-authority, boot-loader-config, kernel, initrd, cmdline, mok, other
    baseline_from_event_log(log, *, name, version=1, bank="sha256", strict=False) -> Baseline
    baseline_from_evidence(evidence, *, name, version=1, bank=None, strict=False) -> Baseline
    Policy(require_secure_boot=True, pcrs=DEFAULT_PCRS, allow_unknown_events=False,
        strict=False)                                  # DEFAULT_PCRS = {0, 2, 3, 4, 7, 8, 9}
    appraise_evidence(evidence: VerifiedEvidence, baselines, policy) -> Appraisal
    appraise_or_raise(evidence, baselines, policy) -> Appraisal     # raises AppraisalFailed
    appraise(log: EventLog, baselines, policy) -> Appraisal         # a bare log, unverified
    Appraisal(trusted, matched, closest, differences, secure_boot, by_baseline)
        .summary, .to_json()
    Difference(component, pcr, reason, expected, expected_label, found, found_label,
        event_index, position), .to_json()
    diff_baselines(a, b) -> list[Difference]
    AppraisalFailed(PolicyViolation): .appraisal
    classify(events) -> Iterator[(Event, ComponentKind)], secure_boot_state(events, bank)

How events become components, and which parts of that are heuristic, is in `components`; the
appraisal's checks, in order, are in `appraise`.
"""

from __future__ import annotations

from trustauthority.policy.appraise import (
    BANK_CHECK,
    BASELINES_CHECK,
    DEFAULT_PCRS,
    PCR_CHECK,
    Appraisal,
    AppraisalFailed,
    Difference,
    Policy,
    appraise,
    appraise_evidence,
    appraise_or_raise,
    diff_baselines,
)
from trustauthority.policy.baseline import (
    SCHEMA,
    Baseline,
    Component,
    ReferenceEvent,
    baseline_from_event_log,
    baseline_from_evidence,
)
from trustauthority.policy.components import (
    KIND_PCRS,
    ComponentKind,
    SecureBootObservation,
    classify,
    secure_boot_state,
)

__all__ = [
    "BANK_CHECK",
    "BASELINES_CHECK",
    "DEFAULT_PCRS",
    "KIND_PCRS",
    "PCR_CHECK",
    "SCHEMA",
    "Appraisal",
    "AppraisalFailed",
    "Baseline",
    "Component",
    "ComponentKind",
    "Difference",
    "Policy",
    "ReferenceEvent",
    "SecureBootObservation",
    "appraise",
    "appraise_evidence",
    "appraise_or_raise",
    "baseline_from_event_log",
    "baseline_from_evidence",
    "classify",
    "diff_baselines",
    "secure_boot_state",
]

"""Bind a firmware event log to a verified quote: the log is believed only where it replays to
the PCR values the TPM signed.

`verify_evidence` is the only way to obtain `VerifiedEvidence`. Steps:
1. every bank of the quote must be a bank the log records (else `EventLogMismatch`);
2. for every quoted PCR the log extends, replaying the log must give the quoted value; on a
   mismatch the error names the PCR, both values and, where it can be told, the first event that
   the TPM did not measure (a prefix of the PCR's events reproduces the quoted value, so the
   events after it are extra); otherwise it says the log and the TPM disagree from the start;
3. events for PCRs the quote does not cover are kept but never offered as verified.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trustauthority.errors import EventLogMismatch
from trustauthority.eventlog import Event, EventLog, EventType, replay_bank, replay_steps
from trustauthority.verify.quote import VerifiedQuote

_MINT = object()


class PcrReplayMismatch(EventLogMismatch):
    """Replaying the log gives a value for `pcr` other than the quoted one."""

    def __init__(self, bank: str, pcr: int, quoted: bytes, replayed: bytes,
                 first_unmeasured_event: Event | None, explanation: str) -> None:
        self.bank = bank
        self.pcr = pcr
        self.quoted = quoted
        self.replayed = replayed
        self.first_unmeasured_event = first_unmeasured_event
        self.explanation = explanation
        super().__init__(
            f"{bank} PCR {pcr}: the event log replays to {replayed.hex()[:16]}… but the TPM "
            f"quoted {quoted.hex()[:16]}…; {explanation}")


@dataclass(frozen=True)
class VerifiedEvidence:
    """A verified quote and the part of its event log that the quote vouches for."""

    quote: VerifiedQuote
    event_log: EventLog
    #: quoted PCRs (in every quoted bank) that the log's replay reproduced
    confirmed_pcrs: frozenset[int]
    #: quoted PCRs the log never extends (their quoted value is still signed)
    unlogged_pcrs: frozenset[int]
    _mint: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._mint is not _MINT:
            raise TypeError("VerifiedEvidence is created only by verify_evidence()")

    @property
    def verified_events(self) -> tuple[Event, ...]:
        """Measured events whose PCR the quote confirmed, in log order."""
        return tuple(event for event in self.event_log.events
                     if event.pcr in self.confirmed_pcrs
                     and event.event_type != EventType.EV_NO_ACTION)


def verify_evidence(quote: VerifiedQuote, log: EventLog) -> VerifiedEvidence:
    """Check that `log` replays to the PCR values of the verified `quote` (steps above)."""
    confirmed: set[int] | None = None
    unlogged: set[int] = set()
    for bank, quoted_values in quote.pcr_values.items():
        # 1. the log must record this bank
        if bank not in log.banks:
            raise EventLogMismatch(
                f"the quote covers the {bank} bank but the event log records only "
                f"{', '.join(log.banks) or 'no replayable bank'}")
        # 2. replay (the fast path); walk the log event by event only to explain a mismatch
        replayed = replay_bank(log, bank)
        bank_confirmed = set()
        for pcr, quoted in sorted(quoted_values.items()):
            value = replayed.get(pcr)
            if value is None:
                unlogged.add(pcr)
                continue
            if value != quoted:
                raise _diagnose(log, bank, pcr, quoted, value)
            bank_confirmed.add(pcr)
        confirmed = bank_confirmed if confirmed is None else confirmed & bank_confirmed
    return VerifiedEvidence(quote, log, frozenset(confirmed or ()), frozenset(unlogged), _MINT)


def _diagnose(log: EventLog, bank: str, pcr: int, quoted: bytes,
              replayed: bytes) -> PcrReplayMismatch:
    """Find the longest prefix of the PCR's events that reproduces the quoted value."""
    start = bytes(len(quoted))
    steps: list[tuple[Event, bytes]] = []
    for step in replay_steps(log, bank):
        if step.event.pcr != pcr:
            continue
        if step.extended:
            steps.append((step.event, step.pcr_value))
        elif not steps:
            start = step.pcr_value  # StartupLocality: PCR 0 starts at the locality
    if start == quoted:
        first = steps[0][0]
        return PcrReplayMismatch(bank, pcr, quoted, replayed, first,
                                 f"the TPM measured none of the log's events, starting with "
                                 f"event {first.index} ({first.type_name})")
    for position, (_event, value) in enumerate(steps):
        if value == quoted and position + 1 < len(steps):
            extra = steps[position + 1][0]
            return PcrReplayMismatch(bank, pcr, quoted, replayed, extra,
                                     f"the log matches up to event {steps[position][0].index}; "
                                     f"event {extra.index} ({extra.type_name}) and later ones "
                                     "were not measured by the TPM")
    return PcrReplayMismatch(bank, pcr, quoted, replayed, None,
                             f"no prefix of the log's {len(steps)} events for this PCR gives "
                             "the quoted value: an event was altered, removed or reordered, or "
                             "measured without being logged")

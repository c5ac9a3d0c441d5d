"""Replay a parsed log into the PCR values a TPM would hold: PCR := H(PCR || digest) per event.

Two rules from the PFP spec shape the start and the steps: EV_NO_ACTION events are never
extended (§10.4.5), and a StartupLocality event (§10.4.5.3) makes PCR 0 start at the locality
value (e.g. 00…03) instead of zeros.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from trustauthority.eventlog.constants import DIGEST_SIZES, HASHES, EventType
from trustauthority.eventlog.model import Event, EventLog

_NO_ACTION: Final = int(EventType.EV_NO_ACTION)


@dataclass(frozen=True)
class ReplayStep:
    """One event and the value of its PCR after it (unchanged when nothing was extended)."""

    event: Event
    pcr_value: bytes
    extended: bool


def _initial(log: EventLog, bank: str) -> dict[int, bytes]:
    if log.startup_locality is None:
        return {}
    return {0: log.startup_locality.to_bytes(DIGEST_SIZES[bank], "big")}


def _check_bank(log: EventLog, bank: str) -> None:
    if bank not in log.banks:
        raise ValueError(f"the log has no replayable {bank!r} bank (it has {list(log.banks)})")


def replay_bank(log: EventLog, bank: str) -> dict[int, bytes]:
    """PCR index -> value for one bank, for the PCRs the log touches, in index order."""
    _check_bank(log, bank)
    hash_ = HASHES[bank]
    zero = bytes(DIGEST_SIZES[bank])
    position = log.digest_names.index(bank)
    pcrs = _initial(log, bank)
    # The hot loop, over compact records: one lookup, one concatenation, one hash per event.
    # `log.algorithms` only lists banks every extended record carries, so no digest is empty.
    for _offset, pcr, event_type, digests, _data in log.records:
        if event_type != _NO_ACTION:
            pcrs[pcr] = hash_(pcrs.get(pcr, zero) + digests[position]).digest()
    return dict(sorted(pcrs.items()))


def replay(log: EventLog) -> dict[str, dict[int, bytes]]:
    """Bank name -> PCR index -> value, for every replayable bank of the log (see `BANKS`).

    Only PCRs that the log extends (and PCR 0 when a StartupLocality event sets it) appear.
    """
    return {bank: replay_bank(log, bank) for bank in log.banks}


def replay_steps(log: EventLog, bank: str) -> Iterator[ReplayStep]:
    """Every event with the value of its PCR after it, so a verifier can find the last event
    after which a replayed PCR still matches a quoted one."""
    _check_bank(log, bank)
    hash_ = HASHES[bank]
    zero = bytes(DIGEST_SIZES[bank])
    pcrs = _initial(log, bank)
    for event in log.events:
        pcr = event.pcr
        if event.event_type == _NO_ACTION:
            yield ReplayStep(event, pcrs.get(pcr, zero), extended=False)
            continue
        value = hash_(pcrs.get(pcr, zero) + event.digests[bank]).digest()
        pcrs[pcr] = value
        yield ReplayStep(event, value, extended=True)

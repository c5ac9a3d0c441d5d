"""Hash-chained audit entries: each entry's hash covers its fields and the previous entry's hash.

Editing an entry changes its hash; deleting, inserting or reordering breaks the next entry's
`previous_hash` or the sequence. `verify_chain` names the first broken link. Details must not
carry secrets: keys that name one are refused when an entry is built, so nothing secret can
reach the log by accident.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from trustauthority.errors import AuditChainBroken, UsageError

#: the previous_hash of the first entry
GENESIS_HASH = "0" * 64
#: detail keys that name secret material (by their last word: `token` is refused, `token_id` and
#: `token_lifetime_seconds` are not); their values must never be written to the log
_SECRET_KEY = re.compile(r"(secret|password|passphrase|private|private_key|pin|token|credential"
                         r"|key_material|plaintext|kek|dek)$", re.IGNORECASE)


@dataclass(frozen=True)
class AuditEntry:
    """One audit record, as stored and as exported (JSON lines)."""

    sequence: int
    time: str  # ISO 8601, UTC
    principal: str
    role: str
    action: str
    target: str
    outcome: str  # "success", "denied", "failed"
    request_id: str
    details: Mapping[str, Any] = field(hash=False)
    previous_hash: str
    entry_hash: str

    def body(self) -> dict[str, Any]:
        """The fields the hash covers (everything but the hash itself)."""
        return {
            "sequence": self.sequence, "time": self.time, "principal": self.principal,
            "role": self.role, "action": self.action, "target": self.target,
            "outcome": self.outcome, "request_id": self.request_id,
            "details": dict(self.details), "previous_hash": self.previous_hash,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "entry_hash": self.entry_hash}


def _canonical(body: Mapping[str, Any]) -> bytes:
    """One byte string per body: sorted keys, no whitespace, UTF-8 (RFC 8785 in spirit)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


_FIELDS = {"sequence": int, "time": str, "principal": str, "role": str, "action": str,
           "target": str, "outcome": str, "request_id": str, "details": dict,
           "previous_hash": str, "entry_hash": str}


def entry_from_json(unverified: object, line: int) -> AuditEntry:
    """An exported entry (one JSON object), checked for shape only; `verify_chain` judges it."""
    if not isinstance(unverified, dict) or set(unverified) != set(_FIELDS):
        raise UsageError(f"line {line}: not an audit entry (expected the fields "
                         f"{', '.join(sorted(_FIELDS))})")
    for name, kind in _FIELDS.items():
        value = unverified[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UsageError(f"line {line}: {name} must be a {kind.__name__}")
    return AuditEntry(**unverified)


def canonical_json(value: Mapping[str, Any]) -> str:
    """The stored form of an entry's details (the same bytes the hash covers)."""
    return _canonical(value).decode()


def _hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(body)).hexdigest()


def _check_details(details: Mapping[str, Any], path: str = "details") -> None:
    for key, value in details.items():
        if _SECRET_KEY.search(str(key)):
            raise UsageError(f"{path}.{key}: audit details must not carry secrets")
        if isinstance(value, Mapping):
            _check_details(value, f"{path}.{key}")


def append(previous: AuditEntry | None, *, time: datetime, principal: str, role: str,
           action: str, target: str, outcome: str, request_id: str,
           details: Mapping[str, Any] | None = None) -> AuditEntry:
    """The entry that follows `previous` (or starts the chain)."""
    if previous is None:
        return append_after(-1, GENESIS_HASH, time=time, principal=principal, role=role,
                            action=action, target=target, outcome=outcome,
                            request_id=request_id, details=details)
    return append_after(previous.sequence, previous.entry_hash, time=time, principal=principal,
                        role=role, action=action, target=target, outcome=outcome,
                        request_id=request_id, details=details)


def append_after(head_sequence: int, head_hash: str, *, time: datetime, principal: str,
                 role: str, action: str, target: str, outcome: str, request_id: str,
                 details: Mapping[str, Any] | None = None) -> AuditEntry:
    """The entry that follows the chain's head (sequence -1 and the genesis hash: empty)."""
    details = dict(details or {})
    _check_details(details)
    if time.tzinfo is None:
        raise UsageError("audit times must be timezone-aware (UTC)")
    body: dict[str, Any] = {
        "sequence": head_sequence + 1,
        "time": time.isoformat(), "principal": principal, "role": role, "action": action,
        "target": target, "outcome": outcome, "request_id": request_id, "details": details,
        "previous_hash": head_hash,
    }
    try:
        entry_hash = _hash(body)
    except (TypeError, ValueError) as error:
        raise UsageError(f"audit details must be JSON values: {error}") from None
    return AuditEntry(entry_hash=entry_hash, **body)


@dataclass(frozen=True)
class ChainSummary:
    entries: int
    first_sequence: int | None
    last_sequence: int | None
    head_hash: str


def verify_chain(entries: Iterable[AuditEntry], *, start_hash: str = GENESIS_HASH,
                 start_sequence: int = 0) -> ChainSummary:
    """Check every link; raise `AuditChainBroken` naming the first bad entry.

    `start_hash`/`start_sequence` let a verifier begin at a signed checkpoint instead of the
    genesis entry.
    """
    expected_previous = start_hash
    expected_sequence = start_sequence
    count = 0
    first: int | None = None
    for entry in entries:
        if entry.sequence != expected_sequence:
            what = ("missing entries" if entry.sequence > expected_sequence
                    else "a repeated or reordered entry")
            raise AuditChainBroken(
                f"entry {entry.sequence}: expected sequence {expected_sequence} ({what})",
                entry.sequence)
        if not hmac.compare_digest(entry.entry_hash, _hash(entry.body())):
            raise AuditChainBroken(f"entry {entry.sequence}: its contents were changed after "
                                   "it was written", entry.sequence)
        if not hmac.compare_digest(entry.previous_hash, expected_previous):
            raise AuditChainBroken(f"entry {entry.sequence}: does not follow entry "
                                   f"{entry.sequence - 1} (an entry before it was removed, "
                                   "replaced or inserted)", entry.sequence)
        if first is None:
            first = entry.sequence
        expected_previous = entry.entry_hash
        expected_sequence += 1
        count += 1
    return ChainSummary(count, first, None if first is None else expected_sequence - 1,
                        expected_previous)

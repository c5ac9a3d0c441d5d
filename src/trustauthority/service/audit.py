"""The audit log in the store: append in the caller's transaction, checkpoint, query, verify.

Appending locks the one-row `audit_head`, so concurrent writers (threads, or replicas on
PostgreSQL) append one after another and the chain never forks. Every `checkpoint_interval`
entries, and on request, the head is signed with the service's audit key: a verifier that trusts
that key detects a rewritten chain and a truncated tail, not only an edited entry.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from trustauthority.audit.chain import (
    GENESIS_HASH,
    AuditEntry,
    append_after,
    canonical_json,
    verify_chain,
)
from trustauthority.errors import AuditChainBroken, ConfigError
from trustauthority.service.keys import KeyPurpose, ServiceKeys
from trustauthority.store.db import Transaction
from trustauthority.store.models import AuditCheckpoint, AuditHead, AuditRecord, table_of

CHECKPOINT_DOMAIN = b"trustauthority audit checkpoint v1\n"


def checkpoint_message(sequence: int, entry_hash: str, time: str, kid: str) -> bytes:
    """What a checkpoint signature covers (domain-separated, canonical)."""
    return CHECKPOINT_DOMAIN + canonical_json(
        {"sequence": sequence, "entry_hash": entry_hash, "time": time, "kid": kid}).encode()


def to_entry(record: AuditRecord) -> AuditEntry:
    return AuditEntry(
        sequence=record.sequence, time=record.time, principal=record.principal,
        role=record.role, action=record.action, target=record.target, outcome=record.outcome,
        request_id=record.request_id, details=json.loads(record.details),
        previous_hash=record.previous_hash, entry_hash=record.entry_hash)


@dataclass(frozen=True)
class Checkpoint:
    sequence: int
    entry_hash: str
    time: str
    kid: str


@dataclass(frozen=True)
class AuditVerification:
    """What `verify` proved: the whole chain links, and every checkpoint is signed and on it."""

    entries: int
    head_sequence: int
    head_hash: str
    checkpoints: int
    last_checkpoint: int | None
    unsigned_tail: int  # entries after the last checkpoint (only the chain protects them)


@dataclass(frozen=True)
class AuditFilter:
    since: datetime | None = None
    action: str | None = None
    principal: str | None = None
    after_sequence: int | None = None
    limit: int = 100


_HEAD = table_of(AuditHead)
#: the head row, locked: appenders (threads, replicas) queue here, so the chain never forks
_LOCK_HEAD = (select(_HEAD.c.sequence, _HEAD.c.entry_hash).where(_HEAD.c.id == 1)
              .with_for_update())
_APPEND = insert(table_of(AuditRecord))
_MOVE_HEAD = (update(_HEAD).where(_HEAD.c.id == 1)
              .values(sequence=bindparam("new_sequence"), entry_hash=bindparam("new_hash")))


class AuditLog:
    def __init__(self, keys: ServiceKeys, clock: Callable[[], datetime],
                 checkpoint_interval: int = 100) -> None:
        self._keys = keys
        self._clock = clock
        self.checkpoint_interval = checkpoint_interval

    def record(self, session: Transaction, *, principal: str, role: str, action: str,
               target: str, outcome: str, request_id: str,
               details: Mapping[str, Any] | None = None) -> AuditEntry:
        """Append one entry in `session`'s transaction (it commits or rolls back with it)."""
        # prebuilt Core statements: every key release appends, so this is a hot path
        head = session.execute(_LOCK_HEAD).first()
        if head is None:
            raise ConfigError("the audit log is not initialised; run `trustauthority init`")
        entry = append_after(head.sequence, head.entry_hash, time=self._clock(),
                             principal=principal, role=role, action=action, target=target,
                             outcome=outcome, request_id=request_id, details=details)
        session.execute(_APPEND, {
            "sequence": entry.sequence, "time": entry.time, "principal": entry.principal,
            "role": entry.role, "action": entry.action, "target": entry.target,
            "outcome": entry.outcome, "request_id": entry.request_id,
            "details": canonical_json(entry.details), "previous_hash": entry.previous_hash,
            "entry_hash": entry.entry_hash})
        session.execute(_MOVE_HEAD, {"new_sequence": entry.sequence,
                                     "new_hash": entry.entry_hash})
        if self.checkpoint_interval and (entry.sequence + 1) % self.checkpoint_interval == 0:
            self._sign(session, entry.sequence, entry.entry_hash)
        return entry

    def _sign(self, session: Transaction, sequence: int, entry_hash: str) -> Checkpoint:
        kid, key = self._keys.signer(session, KeyPurpose.AUDIT)
        time = self._clock().isoformat()
        signature = key.sign(checkpoint_message(sequence, entry_hash, time, kid),
                             ec.ECDSA(hashes.SHA256()))
        session.execute(insert(AuditCheckpoint).values(
            sequence=sequence, entry_hash=entry_hash, time=time, kid=kid,
            signature=base64.urlsafe_b64encode(signature).decode()))
        return Checkpoint(sequence, entry_hash, time, kid)

    def checkpoint(self, session: Session) -> Checkpoint | None:
        """Sign the current head now (None when the log is empty or already signed there)."""
        head = session.get(AuditHead, 1, with_for_update=True, populate_existing=True)
        if head is None or head.sequence < 0:
            return None
        if session.get(AuditCheckpoint, head.sequence) is not None:
            return None
        return self._sign(session, head.sequence, head.entry_hash)

    def entries(self, session: Session, query: AuditFilter) -> list[AuditEntry]:
        statement = select(AuditRecord).order_by(AuditRecord.sequence)
        if query.since is not None:
            # stored times are UTC ISO strings, which order as text; compare like with like
            since = (query.since if query.since.tzinfo else query.since.replace(tzinfo=UTC))
            statement = statement.where(AuditRecord.time >= since.astimezone(UTC).isoformat())
        if query.action is not None:
            statement = statement.where(AuditRecord.action == query.action)
        if query.principal is not None:
            statement = statement.where(AuditRecord.principal == query.principal)
        if query.after_sequence is not None:
            statement = statement.where(AuditRecord.sequence > query.after_sequence)
        return [to_entry(row) for row in session.scalars(statement.limit(query.limit))]

    def export(self, session: Session) -> Iterator[AuditEntry]:
        """Every entry in order, streamed (a server-side cursor on PostgreSQL, closed even when
        the reader stops early)."""
        rows = session.scalars(select(AuditRecord).order_by(AuditRecord.sequence)
                               .execution_options(yield_per=500))
        try:
            for row in rows:
                yield to_entry(row)
        finally:
            rows.close()

    def verify(self, session: Session,
               trusted_keys: Mapping[str, ec.EllipticCurvePublicKey] | None = None,
               ) -> AuditVerification:
        """Check the chain, the head, and every checkpoint; AuditChainBroken names the first
        break.

        1. every entry links to the one before it and hashes to its stored hash;
        2. the head row points at the last entry (a removed tail shows here or in step 3);
        3. every checkpoint is signed by a trusted audit key and matches the entry it names.
        `trusted_keys` pins the keys (offline verification of a copy); by default the store's
        own audit keys are used.
        """
        keys = (dict(trusted_keys) if trusted_keys is not None
                else self._keys.public_keys(session, KeyPurpose.AUDIT))
        checkpoints = list(session.scalars(select(AuditCheckpoint)
                                           .order_by(AuditCheckpoint.sequence)))
        wanted = {checkpoint.sequence for checkpoint in checkpoints}
        seen_hashes: dict[int, str] = {}

        def stream() -> Generator[AuditEntry, None, None]:
            for entry in self.export(session):
                if entry.sequence in wanted:
                    seen_hashes[entry.sequence] = entry.entry_hash
                yield entry

        # 1. the chain itself (closing the stream frees the cursor when a link is broken)
        with closing(stream()) as entries:
            summary = verify_chain(entries)
        last = summary.last_sequence if summary.last_sequence is not None else -1
        # 2. the head
        head = session.get(AuditHead, 1)
        if head is None or head.sequence != last or head.entry_hash != summary.head_hash:
            recorded = "missing" if head is None else f"entry {head.sequence}"
            raise AuditChainBroken(
                f"the log ends at entry {last} but its head records {recorded}: entries at "
                "the end were removed or added outside the service", last + 1)
        # 3. the checkpoints
        for checkpoint in checkpoints:
            public = keys.get(checkpoint.kid)
            if public is None:
                raise AuditChainBroken(f"checkpoint at entry {checkpoint.sequence} is signed by "
                                       f"an unknown key {checkpoint.kid}", checkpoint.sequence)
            try:
                signature = base64.urlsafe_b64decode(checkpoint.signature.encode())
                public.verify(signature, checkpoint_message(
                    checkpoint.sequence, checkpoint.entry_hash, checkpoint.time, checkpoint.kid),
                    ec.ECDSA(hashes.SHA256()))
            except (InvalidSignature, ValueError):
                raise AuditChainBroken(f"checkpoint at entry {checkpoint.sequence}: its "
                                       "signature does not verify", checkpoint.sequence) from None
            stored = seen_hashes.get(checkpoint.sequence)
            if stored is None:
                raise AuditChainBroken(
                    f"checkpoint at entry {checkpoint.sequence}: the entry is gone (the log "
                    "was truncated after it was signed)", checkpoint.sequence)
            if stored != checkpoint.entry_hash:
                raise AuditChainBroken(
                    f"checkpoint at entry {checkpoint.sequence}: the chain up to it was "
                    "rewritten since it was signed", checkpoint.sequence)
        last_checkpoint = checkpoints[-1].sequence if checkpoints else None
        return AuditVerification(
            entries=summary.entries, head_sequence=last,
            head_hash=summary.head_hash if summary.entries else GENESIS_HASH,
            checkpoints=len(checkpoints), last_checkpoint=last_checkpoint,
            unsigned_tail=last - (last_checkpoint if last_checkpoint is not None else -1))

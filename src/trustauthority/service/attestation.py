"""Challenge–response attestation of enrolled hosts, and the attestation tokens it earns.

`challenge` stores a single-use nonce in the database (so a nonce is single-use across
replicas). `submit` then, for the evidence a host returns:

1. consumes the nonce (its own transaction: a nonce is spent even when the evidence fails) —
   unknown, foreign, used or expired nonces are refused (`ChallengeInvalid`) and audited,
   without touching the host's state;
2. verifies, with the evidence core and outside any database transaction: the quote (AK
   signature, TPM_GENERATED magic, type, nonce, qualified signer = the enrolled AK under the
   enrolled EK, PCR selection and digest, clock/reset counters against the last quote), that it
   covers the SHA-256 bank, that the event log replays to the quoted PCRs, and that the AK
   certified the host's TPM-resident binding key with the same nonce;
3. appraises the verified events against the cluster's active baselines with its policy;
4. records the verdict in the host's history, sets the host's trust state, audits failures and
   state changes, and answers with a token (ES256, bound to the binding key by ``cnf.jkt``) or a
   structured failure (the first check that failed; for an appraisal, the closest baseline and
   its differences: component, PCR, expected vs found, the event in the log).

A repeated success in an unchanged state is kept in the history but not in the audit log: the
audit log records changes and refusals, not every heartbeat.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import CursorResult

from trustauthority.errors import (
    AlgorithmNotAllowed,
    BackendUnavailable,
    ChallengeInvalid,
    Conflict,
    EvidenceError,
    NotFound,
)
from trustauthority.eventlog import parse_event_log
from trustauthority.policy import Appraisal, Baseline, Difference, Policy, appraise_evidence
from trustauthority.service.audit import AuditLog
from trustauthority.service.authz import Caller, Permission, authorize
from trustauthority.service.baselines import BaselineService
from trustauthority.service.clusters import policy_of
from trustauthority.service.keys import KeyPurpose, ServiceKeys
from trustauthority.service.tpmtrust import TpmTrustService
from trustauthority.store.db import Database, Transaction
from trustauthority.store.models import (
    AttestationNonce,
    AttestationRecord,
    Cluster,
    Host,
    table_of,
)
from trustauthority.token import (
    AttestationClaims,
    BaselineRef,
    SigningKey,
    TrustStatus,
    issue,
    jwk_thumbprint,
)
from trustauthority.tpm.attest import ClockInfo
from trustauthority.tpm.public import parse_tpm2b_public
from trustauthority.verify import QuoteOptions, verify_certify, verify_evidence, verify_quote

log = logging.getLogger("trustauthority.attestation")

NONCE_BYTES = 32
NONCE_LIFETIME = timedelta(minutes=2)

#: the PCRs every quote covers besides the cluster's compared ones: the boot chain's (0-9), so a
#: host's evidence can become a baseline (`baseline import --from-host`) whatever the policy
QUOTED_PCRS = frozenset(range(10))
BANK = "sha256"
NONCE_SWEEP_INTERVAL = timedelta(minutes=1)
#: how long attestation records (a host's history) are kept by default
DEFAULT_HISTORY = timedelta(days=90)
#: records deleted per sweep at most: a first sweep over a long history stays a short
#: transaction (on SQLite it holds the one write lock); the next sweeps take the rest
HISTORY_SWEEP_BATCH = 5000
#: how soon a sweep that found a full batch sweeps again: a backlog goes at up to 60,000
#: records a minute per process, each batch (~0.1 s) in a thread of its own
HISTORY_CATCH_UP_INTERVAL = timedelta(seconds=5)

# Prebuilt Core statements for the two calls every host makes every few minutes: an ORM query
# costs several times as much to run, for rows that are read once and never changed as objects.
_HOSTS = table_of(Host)
_CLUSTERS = table_of(Cluster).c
_NONCES = table_of(AttestationNonce)
#: the caller's host and what attesting needs of its cluster (none while the host is pending)
_HOST_AND_CLUSTER = (
    select(_HOSTS.c.id, _HOSTS.c.name, _HOSTS.c.state, _HOSTS.c.cluster_id, _HOSTS.c.ak_public,
           _HOSTS.c.ak_qualified_name, _HOSTS.c.last_clock, _HOSTS.c.last_reset_count,
           _HOSTS.c.last_restart_count, _CLUSTERS.name.label("cluster_name"), _CLUSTERS.policy,
           _CLUSTERS.token_lifetime_seconds)
    .select_from(_HOSTS.outerjoin(table_of(Cluster), _CLUSTERS.id == _HOSTS.c.cluster_id))
    .where(_HOSTS.c.principal_id == bindparam("principal_id")))


class _HostRow(Protocol):
    """A row of `_HOST_AND_CLUSTER` as `_host_of` returns it: a host in a cluster (pending
    hosts are refused there), so the cluster's columns are set."""

    id: str
    name: str
    state: str
    cluster_id: str
    ak_public: bytes
    ak_qualified_name: bytes
    last_clock: int | None
    last_reset_count: int | None
    last_restart_count: int | None
    cluster_name: str
    policy: str
    token_lifetime_seconds: int


_ADD_NONCE = insert(_NONCES)
_DROP_EXPIRED_NONCES = delete(_NONCES).where(_NONCES.c.expires_at < bindparam("now"))
#: single use on every replica: whoever deletes the row has spent the nonce
_SPEND_NONCE = (delete(_NONCES)
                .where(_NONCES.c.nonce == bindparam("nonce"),
                       _NONCES.c.host_id == bindparam("host_id"))
                .returning(_NONCES.c.expires_at))
_LOCK_HOST_STATE = (select(_HOSTS.c.state).where(_HOSTS.c.id == bindparam("host_id"))
                    .with_for_update())
_RECORDS = table_of(AttestationRecord)
_ADD_RECORD = insert(_RECORDS)
_DROP_OLD_RECORDS = delete(_RECORDS).where(_RECORDS.c.id.in_(
    select(_RECORDS.c.id).where(_RECORDS.c.at < bindparam("cutoff"))
    .limit(HISTORY_SWEEP_BATCH).scalar_subquery()))


@dataclass(frozen=True)
class Challenge:
    """A nonce, and what to quote: the SHA-256 bank (`BANK`), these PCRs."""

    nonce: bytes
    expires_at: datetime
    pcrs: tuple[int, ...]


@dataclass(frozen=True)
class Evidence:
    """What the agent sends, decoded from base64/hex but otherwise untrusted."""

    nonce: bytes
    quote_attest: bytes
    quote_signature: bytes
    pcrs: Mapping[str, Mapping[int, bytes]]
    event_log: bytes
    binding_key_public: bytes
    certify_attest: bytes
    certify_signature: bytes


@dataclass(frozen=True)
class Failure:
    type: str
    detail: str
    closest_baseline: str | None = None
    differences: tuple[Difference, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "detail": self.detail,
                "closest_baseline": self.closest_baseline,
                "differences": [difference.to_json() for difference in self.differences]}


@dataclass(frozen=True)
class AttestationResult:
    status: TrustStatus
    host: str
    cluster: str
    baseline: str | None = None
    token: str | None = None
    expires_at: datetime | None = None
    failure: Failure | None = None


@dataclass(frozen=True)
class _Context:
    """What the verification needs, read in one short read-only transaction."""

    host_id: str
    host_name: str
    cluster: str
    state: str
    ak_public: bytes
    ak_qualified_name: bytes
    previous_clock: ClockInfo | None
    policy: Policy
    baselines: list[Baseline]
    token_lifetime: timedelta
    allow_sha1: bool


@dataclass
class _Outcome:
    """What verification established, for the record (filled as far as it got)."""

    appraisal: Appraisal | None = None
    failure: Failure | None = None
    clock: ClockInfo | None = None
    rebooted: bool | None = None
    pcr_digest: str | None = None
    event_log: bytes | None = None
    binding_key_public: bytes | None = None
    binding_key_thumbprint: str | None = None


class AttestationService:
    def __init__(self, db: Database, audit: AuditLog, keys: ServiceKeys,
                 tpm_trust: TpmTrustService, baselines: BaselineService,
                 clock: Callable[[], datetime], issuer: str, *,
                 history: timedelta = DEFAULT_HISTORY) -> None:
        self._db = db
        self._audit = audit
        self._keys = keys
        self._tpm_trust = tpm_trust
        self._baselines = baselines
        self._clock = clock
        self.issuer = issuer
        self.history = history
        self._next_sweep = datetime.min.replace(tzinfo=UTC)

    def _host_of(self, session: Transaction, caller: Caller) -> _HostRow:
        """The caller's host row with its cluster's (`_HOST_AND_CLUSTER`)."""
        host = session.execute(_HOST_AND_CLUSTER, {"principal_id": caller.principal_id}).first()
        if host is None:
            raise NotFound("this credential belongs to no enrolled host")
        if host.cluster_id is None:
            raise Conflict(f"host {host.name} is pending: an infra-admin must approve it into "
                           "a cluster before it can attest")
        return cast(_HostRow, host)

    # -- 0. challenge ------------------------------------------------------------------------

    def challenge(self, caller: Caller) -> Challenge:
        authorize(caller, Permission.ATTEST)
        now = self._clock()
        nonce = secrets.token_bytes(NONCE_BYTES)
        with self._db.writing() as session:
            host = self._host_of(session, caller)
            session.execute(_ADD_NONCE, {"nonce": nonce.hex(), "host_id": host.id,
                                         "expires_at": now + NONCE_LIFETIME})
            pcrs = tuple(sorted(QUOTED_PCRS | policy_of(host.policy).pcrs))
        return Challenge(nonce, now + NONCE_LIFETIME, pcrs)

    def sweep_due(self) -> bool:
        """Whether `sweep` has work to do now: cheap, for a caller deciding whether to start it."""
        return self._clock() >= self._next_sweep

    def sweep(self) -> None:
        """Drop expired unanswered challenges, so the table stays small, and attestation
        records older than `history`: every minute or so per process (each replica sweeps for
        all), in its own short transaction. The API starts it after a challenge's response,
        in a thread, so that no request waits for it; with no request to fail, a database that
        cannot be reached is logged, and the next sweep tries again."""
        now = self._clock()
        if now < self._next_sweep:
            return
        # claimed before the work, so that challenges meanwhile (other threads) skip it
        self._next_sweep = now + NONCE_SWEEP_INTERVAL
        try:
            with self._db.writing() as session:
                session.execute(_DROP_EXPIRED_NONCES, {"now": now})
                dropped = cast(CursorResult[Any], session.execute(
                    _DROP_OLD_RECORDS, {"cutoff": now - self.history})).rowcount
        except BackendUnavailable as error:
            log.warning("attestation sweep skipped until the next: %s", error)
            return
        if dropped >= HISTORY_SWEEP_BATCH:
            # more is waiting (a fleet that attests faster than a batch a minute, or the first
            # sweep after an upgrade): the next batch goes soon
            self._next_sweep = now + HISTORY_CATCH_UP_INTERVAL

    # -- 1.-4. evidence ----------------------------------------------------------------------

    def submit(self, caller: Caller, request_id: str, evidence: Evidence) -> AttestationResult:
        authorize(caller, Permission.ATTEST)
        context = self._consume_nonce(caller, request_id, evidence.nonce)
        outcome = _verify(context, evidence)
        return self._record(context, outcome, request_id)

    def _consume_nonce(self, caller: Caller, request_id: str, nonce: bytes) -> _Context:
        """Spend the nonce (one DELETE: single use on every replica); a refusal is audited in
        the same transaction, so an expired nonce is spent too."""
        now = self._clock()
        with self._db.writing() as session:
            host = self._host_of(session, caller)
            expires_at = session.execute(
                _SPEND_NONCE, {"nonce": nonce.hex(), "host_id": host.id}).scalar()
            refused = None
            if expires_at is None:
                refused = ChallengeInvalid("the nonce was not issued to this host, or was "
                                           "already used: ask for a new challenge")
            elif expires_at <= now:
                refused = ChallengeInvalid(f"the nonce expired at {expires_at.isoformat()}: ask "
                                           "for a new challenge")
            if refused is None:
                return self._context(session, host)
            self._audit.record(session, principal=caller.name, role="host",
                               action="attestation.refused", target=caller.name,
                               outcome="denied", request_id=request_id,
                               details={"reason": str(refused), "type": refused.error_type})
        raise refused

    def _context(self, session: Transaction, host: _HostRow) -> _Context:
        previous = None
        if host.last_reset_count is not None and host.last_clock is not None:
            previous = ClockInfo(clock=host.last_clock, reset_count=host.last_reset_count,
                                 restart_count=host.last_restart_count or 0, safe=True)
        return _Context(
            host_id=host.id, host_name=host.name, cluster=host.cluster_name, state=host.state,
            ak_public=host.ak_public, ak_qualified_name=host.ak_qualified_name,
            previous_clock=previous, policy=policy_of(host.policy),
            baselines=self._baselines.active_for(session, host.cluster_id),
            token_lifetime=timedelta(seconds=host.token_lifetime_seconds),
            allow_sha1=self._tpm_trust.current_settings(session).allow_sha1)

    def _record(self, context: _Context, outcome: _Outcome,
                request_id: str) -> AttestationResult:
        now = self._clock()
        appraisal = outcome.appraisal
        matched = (appraisal.matched if outcome.failure is None and appraisal is not None
                   and appraisal.trusted else None)
        trusted = matched is not None
        secure_boot = appraisal.secure_boot if appraisal is not None else None
        status = TrustStatus.TRUSTED if trusted else TrustStatus.UNTRUSTED
        token = expires_at = token_id = None
        failure = outcome.failure
        reason = failure.detail if failure is not None else (
            appraisal.summary if appraisal is not None else "")
        with self._db.writing() as session:
            # the state as it is now, locked: what a state change is audited against
            previous_state = session.execute(_LOCK_HOST_STATE, {"host_id": context.host_id}
                                             ).scalar()
            if previous_state is None:  # removed while it was attesting
                raise NotFound("this host was removed")
            if matched is not None and outcome.binding_key_thumbprint is not None:
                kid, private_key = self._keys.signer(session, KeyPurpose.ATTESTATION)
                claims = AttestationClaims.create(
                    issuer=self.issuer, host_id=context.host_id, cluster=context.cluster,
                    status=status, baseline=BaselineRef(matched.name, matched.version),
                    pcr_digest=outcome.pcr_digest or "", secure_boot=secure_boot,
                    binding_key_thumbprint=outcome.binding_key_thumbprint, now=now,
                    lifetime=context.token_lifetime)
                token = issue(claims, SigningKey(kid, private_key))
                expires_at, token_id = claims.exp, claims.jti
            changes: dict[str, Any] = {
                "state": status.value, "state_reason": "" if trusted else reason[:1024],
                "last_attested_at": now}
            if outcome.clock is not None:
                changes.update(last_clock=outcome.clock.clock,
                               last_reset_count=outcome.clock.reset_count,
                               last_restart_count=outcome.clock.restart_count)
            if outcome.event_log is not None:
                changes["last_event_log"] = outcome.event_log
            if outcome.binding_key_public is not None:
                changes.update(binding_key_public=outcome.binding_key_public,
                               binding_key_thumbprint=outcome.binding_key_thumbprint)
            session.execute(update(_HOSTS).where(_HOSTS.c.id == context.host_id)
                            .values(changes))
            session.execute(_ADD_RECORD, {
                "host_id": context.host_id, "at": now, "status": status.value,
                "baseline": matched.label if matched is not None else None,
                "reason": reason[:1024],
                "report": json.dumps(failure.to_json()) if failure is not None else None,
                "rebooted": outcome.rebooted, "pcr_digest": outcome.pcr_digest,
                "token_id": token_id})
            if not trusted:
                self._audit.record(session, principal=context.host_id, role="host",
                                   action="attestation.failure", target=context.host_name,
                                   outcome="failure", request_id=request_id,
                                   details={"type": failure.type if failure else "-",
                                            "reason": reason[:512],
                                            "cluster": context.cluster})
            elif previous_state != status.value:
                self._audit.record(session, principal=context.host_id, role="host",
                                   action="attestation.trusted", target=context.host_name,
                                   outcome="success", request_id=request_id,
                                   details={"baseline": matched.label if matched else "-",
                                            "cluster": context.cluster,
                                            "previous_state": previous_state})
        return AttestationResult(status, context.host_id, context.cluster,
                                 matched.label if matched is not None else None, token,
                                 expires_at, failure)


def _verify(context: _Context, evidence: Evidence) -> _Outcome:
    """Steps 2-3, pure: every refusal becomes a `Failure` naming the first check that failed."""
    outcome = _Outcome()
    options = QuoteOptions(allow_sha1=context.allow_sha1)
    try:
        ak = parse_tpm2b_public(context.ak_public)
        quote = verify_quote(ak=ak, raw_attest=evidence.quote_attest,
                             raw_signature=evidence.quote_signature,
                             expected_nonce=evidence.nonce, unverified_pcr_values=evidence.pcrs,
                             previous_clock=context.previous_clock,
                             expected_qualified_signer=context.ak_qualified_name,
                             options=options)
        if BANK not in quote.pcr_values:
            raise AlgorithmNotAllowed(f"the quote must cover the {BANK} PCR bank; it covers "
                                      f"{', '.join(sorted(quote.pcr_values))}")
        outcome.clock, outcome.rebooted = quote.clock_info, quote.rebooted
        values = quote.pcr_values[BANK]
        outcome.pcr_digest = hashlib.sha256(b"".join(values[pcr] for pcr in sorted(values))
                                            ).hexdigest()
        verified = verify_evidence(quote, parse_event_log(evidence.event_log))
        outcome.event_log = evidence.event_log
        certified = verify_certify(ak=ak, certified_public=evidence.binding_key_public,
                                   raw_attest=evidence.certify_attest,
                                   raw_signature=evidence.certify_signature,
                                   expected_nonce=evidence.nonce,
                                   expected_qualified_signer=context.ak_qualified_name,
                                   options=options)
        outcome.binding_key_public = evidence.binding_key_public
        outcome.binding_key_thumbprint = jwk_thumbprint(certified.public.public_key)
    except EvidenceError as error:
        outcome.failure = Failure(error.error_type, str(error))
        return outcome
    if not context.baselines:
        outcome.failure = Failure("policy_violation", f"cluster {context.cluster} has no active "
                                  "baseline: a trust-admin must add one (cluster add-baseline)")
        return outcome
    appraisal = appraise_evidence(verified, context.baselines, context.policy)
    outcome.appraisal = appraisal
    if not appraisal.trusted:
        closest = appraisal.closest
        outcome.failure = Failure("policy_violation", appraisal.summary,
                                  closest.label if closest is not None else None,
                                  appraisal.differences)
    return outcome

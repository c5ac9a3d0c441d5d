"""Tampering with the audit log directly in the database is caught, and named, by `verify`.

The log is produced by the real use cases (principals, tokens, a refused login, a denial), with
a checkpoint every few entries so that several signed checkpoints and an unsigned tail exist.
Each case then edits the tables with plain SQL, as someone with write access to the database
(but not to the audit signing key) would, and checks that verification names the first broken
entry. Every case runs on SQLite and on PostgreSQL; the offline CLI runs on a copy of a SQLite
file.
"""

from __future__ import annotations

import base64
import gc
import json
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection, create_engine, text
from typer.testing import CliRunner

from tests.support.postgres import PostgresCluster
from trustauthority.audit.chain import (
    GENESIS_HASH,
    AuditEntry,
    append_after,
    canonical_json,
    verify_chain,
)
from trustauthority.cli.main import app
from trustauthority.errors import AuditChainBroken, AuthenticationFailed, PermissionDenied
from trustauthority.service.audit import AuditVerification, checkpoint_message
from trustauthority.service.authz import Caller
from trustauthority.service.keys import KeyPurpose, key_id
from trustauthority.service.platform import Platform
from trustauthority.service.setup import initialise
from trustauthority.store.db import Database, sqlite_url
from trustauthority.store.masterkey import load_master_key_file

#: a checkpoint is signed after every INTERVAL-th entry
INTERVAL = 6
#: the log the use cases below produce: entries 0..26
ENTRIES = 27
LAST = ENTRIES - 1
CHECKPOINTS = (5, 11, 17, 23)
#: entries after the last checkpoint, protected by the chain and the head only
UNSIGNED_TAIL = LAST - CHECKPOINTS[-1]

PublicKeys = dict[str, ec.EllipticCurvePublicKey]
runner = CliRunner()



@dataclass(frozen=True)
class AuditedPlatform:
    platform: Platform
    admin: Caller
    data_dir: Path
    url: str
    audit_kid: str
    audit_public: ec.EllipticCurvePublicKey

    @property
    def pinned(self) -> PublicKeys:
        """The audit key as a verifier holding a copy of it from init would pin it."""
        return {self.audit_kid: self.audit_public}


def _build(tmp_path: Path, database_url: str | None) -> AuditedPlatform:
    """An initialised store whose audit log holds ENTRIES entries from the real use cases."""
    data_dir = tmp_path / "data"
    result = initialise(data_dir, database_url=database_url)
    url = database_url or sqlite_url(data_dir / "trustauthority.db")
    platform = Platform(Database(url), load_master_key_file(data_dir / "master.key"),
                        audit_checkpoint_interval=INTERVAL)
    admin = platform.authenticate(token=result.admin_token, certificate_fingerprint=None,
                                  request_id="req-admin", source="test")
    # entry 0 is the first trust-admin, written by init; 8 rounds of 3 entries: 1..24
    for index in range(8):
        name = f"auditor-{index}"
        platform.principals.create(admin, f"req-{index}-create", name=name, kind="person",
                                   roles=["auditor"], description=f"auditor number {index}")
        issued = platform.principals.create_token(admin, f"req-{index}-token", name,
                                                  label=f"laptop {index}")
        if index == 7:
            auditor = platform.authenticate(token=issued.token, certificate_fingerprint=None,
                                            request_id="req-7-auth", source="test")
            with pytest.raises(PermissionDenied) as denied:
                platform.principals.create(auditor, "req-7-escalate", name="mallory",
                                           kind="person", roles=["trust-admin"])
            platform.record_denial(auditor, denied.value, action="principal.create",
                                   request_id="req-7-escalate")
        elif index % 2 == 0:
            platform.principals.revoke(admin, f"req-{index}-revoke", name)
        else:
            platform.principals.revoke_token(admin, f"req-{index}-untoken", name,
                                             issued.view.id)
    # 25: a refused login; 26: one more principal (after the last checkpoint)
    with pytest.raises(AuthenticationFailed):
        platform.authenticate(token="tat_0123456789abcdef_" + "A" * 43,
                              certificate_fingerprint=None, request_id="req-bad-token",
                              source="test")
    platform.principals.create(admin, "req-infra", name="infra-1", kind="person",
                               roles=["infra-admin"])
    with platform.db.session(read_only=True) as session:
        keys = platform.keys.public_keys(session, KeyPurpose.AUDIT)
    assert len(keys) == 1
    [(kid, public)] = keys.items()
    return AuditedPlatform(platform, admin, data_dir, url, kid, public)


@pytest.fixture
def audited(database_url: str | None, tmp_path: Path) -> Iterator[AuditedPlatform]:
    built = _build(tmp_path, database_url)
    yield built
    built.platform.db.dispose()
    gc.collect()  # a leaked cursor would warn here (an error), not in a later test


# -- reading and writing the tables behind the service's back ----------------------------------

_COLUMNS = ("sequence, time, principal, role, action, target, outcome, request_id, details, "
            "previous_hash, entry_hash")


def _entries(connection: Connection) -> list[AuditEntry]:
    rows = connection.execute(text(f"SELECT {_COLUMNS} FROM audit_log ORDER BY sequence"))  # noqa: S608
    return [AuditEntry(**{**row, "details": json.loads(row["details"])})
            for row in rows.mappings()]


def _entry_params(entry: AuditEntry) -> dict[str, Any]:
    return {**entry.to_json(), "details": canonical_json(entry.details)}


def _update(connection: Connection, entry: AuditEntry, *, where_sequence: int | None = None,
            ) -> None:
    """Overwrite the row at `where_sequence` (default: the entry's own) with `entry`."""
    params = _entry_params(entry)
    params["where_sequence"] = entry.sequence if where_sequence is None else where_sequence
    result = connection.execute(text(
        "UPDATE audit_log SET sequence = :sequence, time = :time, principal = :principal, "
        "role = :role, action = :action, target = :target, outcome = :outcome, "
        "request_id = :request_id, details = :details, previous_hash = :previous_hash, "
        "entry_hash = :entry_hash WHERE sequence = :where_sequence"), params)
    assert result.rowcount == 1


def _insert(connection: Connection, entry: AuditEntry) -> None:
    values = ", ".join(f":{column.strip()}" for column in _COLUMNS.split(","))
    connection.execute(text(f"INSERT INTO audit_log ({_COLUMNS}) VALUES ({values})"),  # noqa: S608
                       _entry_params(entry))


def _delete(connection: Connection, *sequences: int) -> None:
    for sequence in sequences:
        result = connection.execute(text("DELETE FROM audit_log WHERE sequence = :s"),
                                    {"s": sequence})
        assert result.rowcount == 1


def _set_head(connection: Connection, sequence: int, entry_hash: str) -> None:
    connection.execute(text("UPDATE audit_head SET sequence = :s, entry_hash = :h WHERE id = 1"),
                       {"s": sequence, "h": entry_hash})


def _shift(connection: Connection, first: int, by: int) -> None:
    """Move entries `first`.. by `by` sequences (through a free range: the key stays unique)."""
    connection.execute(text("UPDATE audit_log SET sequence = sequence + 100000 "
                            "WHERE sequence >= :first"), {"first": first})
    connection.execute(text("UPDATE audit_log SET sequence = sequence - 100000 + :by "
                            "WHERE sequence >= 100000"), {"by": by})


def _forge(head_sequence: int, head_hash: str, entry: AuditEntry, **changes: Any) -> AuditEntry:
    """`entry` with `changes`, given a correct hash as the entry after (head_sequence, hash)."""
    changed = replace(entry, **changes)
    return append_after(head_sequence, head_hash, time=datetime.fromisoformat(changed.time),
                        principal=changed.principal, role=changed.role, action=changed.action,
                        target=changed.target, outcome=changed.outcome,
                        request_id=changed.request_id, details=changed.details)


def _rechain(entries: list[AuditEntry], start: int) -> list[AuditEntry]:
    """Every hash from `start` on recomputed, so that the chain links again."""
    rebuilt = list(entries[:start])
    for entry in entries[start:]:
        previous = (rebuilt[-1].sequence, rebuilt[-1].entry_hash) if rebuilt else (
            -1, GENESIS_HASH)
        rebuilt.append(_forge(*previous, entry))
    return rebuilt


def _rewrite(connection: Connection, start: int, **changes: Any) -> list[AuditEntry]:
    """Change entry `start` and rewrite the chain after it consistently, head included."""
    entries = _entries(connection)
    entries[start] = replace(entries[start], **changes)
    rebuilt = _rechain(entries, start)
    for entry in rebuilt[start:]:
        _update(connection, entry)
    _set_head(connection, rebuilt[-1].sequence, rebuilt[-1].entry_hash)
    verify_chain(rebuilt)  # a consistent forgery: only the signed checkpoints can tell
    return rebuilt


def _resign(connection: Connection, key: ec.EllipticCurvePrivateKey, kid: str) -> None:
    """Every checkpoint re-signed by `key` as `kid`, over the entry hashes now stored."""
    hashes_now = {entry.sequence: entry.entry_hash for entry in _entries(connection)}
    rows = connection.execute(text("SELECT sequence, time FROM audit_checkpoints")).all()
    assert len(rows) == len(CHECKPOINTS)
    for sequence, time in rows:
        signature = key.sign(checkpoint_message(sequence, hashes_now[sequence], time, kid),
                             ec.ECDSA(hashes.SHA256()))
        connection.execute(text(
            "UPDATE audit_checkpoints SET entry_hash = :h, kid = :kid, signature = :sig "
            "WHERE sequence = :s"),
            {"h": hashes_now[sequence], "kid": kid, "s": sequence,
             "sig": base64.urlsafe_b64encode(signature).decode()})


def _replace_audit_key(connection: Connection, old_kid: str, *, keep_kid: bool,
                       ) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """The attacker's own key in `service_keys` in place of the service's audit key."""
    attacker = ec.generate_private_key(ec.SECP256R1())
    pem = attacker.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    kid = old_kid if keep_kid else key_id(attacker.public_key())
    result = connection.execute(text(
        "UPDATE service_keys SET kid = :kid, public_pem = :pem WHERE kid = :old"),
        {"kid": kid, "pem": pem.decode(), "old": old_kid})
    assert result.rowcount == 1
    return attacker, kid


def _tamper(audited: AuditedPlatform, change: Callable[[Connection], object]) -> None:
    with audited.platform.db.engine.begin() as connection:
        change(connection)


def _verify(audited: AuditedPlatform, trusted: PublicKeys | None = None) -> AuditVerification:
    with audited.platform.db.session(read_only=True) as session:
        return audited.platform.audit.verify(session, trusted)


def _broken(audited: AuditedPlatform, trusted: PublicKeys | None = None) -> AuditChainBroken:
    with pytest.raises(AuditChainBroken) as info:
        _verify(audited, trusted)
    return info.value


# -- the tampering cases ------------------------------------------------------------------------

def _edit_details(connection: Connection) -> None:
    entry = _entries(connection)[1]
    assert entry.action == "principal.create"
    assert entry.details["roles"] == ["auditor"]
    _update(connection, replace(entry, details={**entry.details, "roles": ["trust-admin"]}))


def _edit_target(connection: Connection) -> None:
    entry = _entries(connection)[14]
    _update(connection, replace(entry, target="someone-else"))


def _edit_outcome_in_unsigned_tail(connection: Connection) -> None:
    entry = _entries(connection)[25]
    assert entry.action == "auth.failure"
    assert entry.outcome == "denied"
    _update(connection, replace(entry, outcome="success"))


def _edit_and_rehash(connection: Connection) -> None:
    entries = _entries(connection)
    _update(connection, _forge(7, entries[7].entry_hash, entries[8], principal="nobody"))


def _delete_middle(connection: Connection) -> None:
    _delete(connection, 10)


def _delete_first(connection: Connection) -> None:
    _delete(connection, 0)


def _insert_forged(connection: Connection) -> None:
    entries = _entries(connection)
    _shift(connection, 8, 1)
    _insert(connection, _forge(7, entries[7].entry_hash, entries[7], target="forged",
                               request_id="req-forged"))
    _set_head(connection, LAST + 1, entries[-1].entry_hash)


def _insert_forged_and_rechain(connection: Connection) -> None:
    entries = _entries(connection)
    forged = _forge(7, entries[7].entry_hash, entries[7], target="forged")
    shifted = [replace(entry, sequence=entry.sequence + 1) for entry in entries[8:]]
    rebuilt = _rechain([*entries[:8], forged, *shifted], 9)
    _shift(connection, 8, 1)
    _insert(connection, forged)
    for entry in rebuilt[9:]:
        _update(connection, entry)
    _set_head(connection, rebuilt[-1].sequence, rebuilt[-1].entry_hash)
    verify_chain(rebuilt)


def _swap(connection: Connection) -> None:
    connection.execute(text("UPDATE audit_log SET sequence = -5 WHERE sequence = 12"))
    connection.execute(text("UPDATE audit_log SET sequence = 12 WHERE sequence = 13"))
    connection.execute(text("UPDATE audit_log SET sequence = 13 WHERE sequence = -5"))


def _truncate_past_a_checkpoint(connection: Connection) -> None:
    entries = _entries(connection)
    _delete(connection, *range(22, ENTRIES))
    _set_head(connection, 21, entries[21].entry_hash)


def _truncate_unsigned_tail_only(connection: Connection) -> None:
    _delete(connection, 25, 26)


def _append_without_head(connection: Connection) -> None:
    entries = _entries(connection)
    _insert(connection, _forge(LAST, entries[LAST].entry_hash, entries[LAST], target="extra"))


def _rewrite_all(connection: Connection) -> None:
    _rewrite(connection, 2, outcome="failed")


def _rewrite_after_a_checkpoint(connection: Connection) -> None:
    _rewrite(connection, 19, target="someone-else")


def _rewrite_all_and_checkpoint_hashes(connection: Connection) -> None:
    rebuilt = _rewrite(connection, 0, principal="nobody")
    for sequence in CHECKPOINTS:
        connection.execute(text("UPDATE audit_checkpoints SET entry_hash = :h "
                                "WHERE sequence = :s"),
                           {"h": rebuilt[sequence].entry_hash, "s": sequence})


def _checkpoint_signed_by_another_key(connection: Connection) -> None:
    entry_hash, time, kid = connection.execute(text(
        "SELECT entry_hash, time, kid FROM audit_checkpoints WHERE sequence = 11")).one()
    other = ec.generate_private_key(ec.SECP256R1())
    signature = other.sign(checkpoint_message(11, entry_hash, time, kid),
                           ec.ECDSA(hashes.SHA256()))
    connection.execute(text("UPDATE audit_checkpoints SET signature = :sig WHERE sequence = 11"),
                       {"sig": base64.urlsafe_b64encode(signature).decode()})


def _checkpoint_hash_changed(connection: Connection) -> None:
    entries = _entries(connection)
    connection.execute(text("UPDATE audit_checkpoints SET entry_hash = :h WHERE sequence = 17"),
                       {"h": entries[16].entry_hash})


def _checkpoint_moved(connection: Connection) -> None:
    connection.execute(text("UPDATE audit_checkpoints SET sequence = 22 WHERE sequence = 23"))


def _checkpoint_signature_garbage(connection: Connection) -> None:
    connection.execute(text("UPDATE audit_checkpoints SET signature = 'not-a-signature' "
                            "WHERE sequence = 5"))


def _checkpoint_unknown_kid(connection: Connection) -> None:
    connection.execute(text("UPDATE audit_checkpoints SET kid = :kid WHERE sequence = 17"),
                       {"kid": "0" * 32})


CASES = [
    # (a) an edited entry is named itself
    pytest.param(_edit_details, 1, "changed", id="edit-details"),
    pytest.param(_edit_target, 14, "changed", id="edit-target"),
    pytest.param(_edit_outcome_in_unsigned_tail, 25, "changed", id="edit-outcome-unsigned"),
    pytest.param(_edit_and_rehash, 9, "does not follow", id="edit-with-own-hash-recomputed"),
    # (b) a deleted entry: the next one is named
    pytest.param(_delete_middle, 11, "missing", id="delete-middle"),
    pytest.param(_delete_first, 1, "missing", id="delete-first"),
    # (c) an inserted entry
    pytest.param(_insert_forged, 9, "changed", id="insert-forged"),
    pytest.param(_insert_forged_and_rechain, 11, "rewritten", id="insert-forged-and-rechain"),
    # (d) two entries swapped
    pytest.param(_swap, 12, "changed", id="swap"),
    # (e) a removed tail
    pytest.param(_truncate_past_a_checkpoint, 23, "truncated", id="truncate-with-head-fixed"),
    pytest.param(_truncate_unsigned_tail_only, 25, "head", id="truncate-unsigned-tail"),
    pytest.param(_append_without_head, ENTRIES + 1, "head", id="append-without-head"),
    # (f) a consistently rewritten chain
    pytest.param(_rewrite_all, 5, "rewritten", id="rewrite-whole-chain"),
    pytest.param(_rewrite_after_a_checkpoint, 23, "rewritten", id="rewrite-after-checkpoint"),
    pytest.param(_rewrite_all_and_checkpoint_hashes, 5, "signature",
                 id="rewrite-chain-and-checkpoint-hashes"),
    # (g) forged checkpoints
    pytest.param(_checkpoint_signed_by_another_key, 11, "signature", id="checkpoint-other-key"),
    pytest.param(_checkpoint_hash_changed, 17, "signature", id="checkpoint-hash-changed"),
    pytest.param(_checkpoint_moved, 22, "signature", id="checkpoint-moved"),
    pytest.param(_checkpoint_signature_garbage, 5, "signature", id="checkpoint-garbage"),
    pytest.param(_checkpoint_unknown_kid, 17, "unknown key", id="checkpoint-unknown-kid"),
]


def test_an_untouched_log_verifies(audited: AuditedPlatform) -> None:
    result = _verify(audited)
    with audited.platform.db.session(read_only=True) as session:
        entries = list(audited.platform.audit.export(session))
    assert [entry.sequence for entry in entries] == list(range(ENTRIES))
    assert result.entries == ENTRIES
    assert result.head_sequence == LAST
    assert result.head_hash == entries[-1].entry_hash
    assert result.checkpoints == len(CHECKPOINTS)
    assert result.last_checkpoint == CHECKPOINTS[-1]
    assert result.unsigned_tail == UNSIGNED_TAIL
    assert _verify(audited, audited.pinned) == result
    # the log holds what the use cases did, in order
    actions = [entry.action for entry in entries]
    assert actions[:4] == ["principal.create", "principal.create", "token.create",
                           "principal.revoke"]
    assert actions[-2:] == ["auth.failure", "principal.create"]
    denial = entries[24]
    assert (denial.principal, denial.outcome, denial.action) == (
        "auditor-7", "denied", "principal.create")


def test_entries_appended_on_a_bare_connection_chain_and_checkpoint_alike(
        audited: AuditedPlatform) -> None:
    """The hot paths (attestation, key release) append through `Database.writing()`."""
    platform = audited.platform
    for index in range(INTERVAL):  # 27..32: crosses the checkpoint at 29
        with platform.db.writing() as connection:
            platform.audit.record(connection, principal="web-1", role="host",
                                  action="attestation.failure", target="web-1",
                                  outcome="failure", request_id=f"req-hot-{index}")
    result = _verify(audited, audited.pinned)
    assert result.entries == ENTRIES + INTERVAL
    assert result.checkpoints == len(CHECKPOINTS) + 1
    assert result.last_checkpoint == CHECKPOINTS[-1] + INTERVAL


@pytest.mark.parametrize(("change", "sequence", "word"), CASES)
def test_tampering_in_the_database_is_caught(audited: AuditedPlatform,
                                             change: Callable[[Connection], None],
                                             sequence: int, word: str) -> None:
    _verify(audited)  # intact before
    _tamper(audited, change)
    broken = _broken(audited)
    assert broken.sequence == sequence, str(broken)
    assert word in str(broken)
    # pinning the key from init changes nothing: the break is in the store, not the key table
    pinned = _broken(audited, audited.pinned)
    assert (pinned.sequence, str(pinned)) == (broken.sequence, str(broken))


@pytest.mark.parametrize("keep_kid", [True, False], ids=["same-kid", "new-kid"])
def test_a_replaced_audit_key_is_caught_by_the_pinned_key(audited: AuditedPlatform,
                                                          keep_kid: bool) -> None:
    def attack(connection: Connection) -> None:
        _rewrite(connection, 3, outcome="failed")
        attacker, kid = _replace_audit_key(connection, audited.audit_kid, keep_kid=keep_kid)
        _resign(connection, attacker, kid)

    _tamper(audited, attack)
    # trusting the keys the store itself holds, the forgery is complete: that is why a
    # verifier pins the key it got at init
    forged = _verify(audited)
    assert (forged.entries, forged.checkpoints) == (ENTRIES, len(CHECKPOINTS))
    broken = _broken(audited, audited.pinned)
    assert broken.sequence == CHECKPOINTS[0]
    assert ("signature does not verify" if keep_kid else "unknown key") in str(broken)


@pytest.mark.postgres
def test_a_broken_verification_closes_its_database_cursor(
        postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    built = _build(tmp_path, postgres_cluster.new_database())
    try:
        _tamper(built, _edit_target)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert _broken(built).sequence == 14
            gc.collect()
    finally:
        built.platform.db.dispose()
    leaked = [str(warning.message) for warning in caught
              if issubclass(warning.category, ResourceWarning)]
    assert not leaked


# -- export, and the offline CLI on a copy --------------------------------------------------------

def test_exported_entries_verify_on_their_own(audited: AuditedPlatform) -> None:
    with audited.platform.db.session(read_only=True) as session:
        exported = list(audited.platform.audit.export(session))
    streamed = list(audited.platform.audit_export(audited.admin))
    assert streamed == exported
    # as `ta audit export` writes them: JSON lines
    lines = [json.dumps(entry.to_json(), sort_keys=True) for entry in exported]
    parsed = [AuditEntry(**json.loads(line)) for line in lines]
    summary = verify_chain(parsed)
    assert (summary.entries, summary.first_sequence, summary.last_sequence) == (ENTRIES, 0, LAST)
    assert summary.head_hash == _verify(audited).head_hash
    # a verifier can start at the last signed checkpoint
    last = CHECKPOINTS[-1]
    tail = verify_chain(parsed[last + 1:], start_hash=parsed[last].entry_hash,
                        start_sequence=last + 1)
    assert (tail.entries, tail.head_hash) == (UNSIGNED_TAIL, summary.head_hash)
    # and an edited line of the export is caught like an edited row
    parsed[4] = replace(parsed[4], target="someone-else")
    with pytest.raises(AuditChainBroken, match="changed") as info:
        verify_chain(parsed)
    assert info.value.sequence == 4


def _copy_database(source: Path, target: Path) -> str:
    shutil.copyfile(source, target)
    for suffix in ("-wal", "-shm"):
        sidecar = source.with_name(source.name + suffix)
        if sidecar.exists():
            shutil.copyfile(sidecar, target.with_name(target.name + suffix))
    return sqlite_url(target)


def _tamper_copy(url: str, change: Callable[[Connection], object]) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            change(connection)
    finally:
        engine.dispose()


def _cli_verify(url: str, *extra: str) -> tuple[int, str, dict[str, Any]]:
    """Exit code and output of `ta audit verify --database URL`, and of its --json form."""
    text_result = runner.invoke(app, ["audit", "verify", "--database", url, *extra])
    json_result = runner.invoke(app, ["audit", "verify", "--database", url, "--json", *extra])
    assert json_result.exit_code == text_result.exit_code, json_result.output
    return text_result.exit_code, text_result.output, json.loads(json_result.stdout)


def test_offline_cli_verifies_a_copy_and_names_the_broken_entry(tmp_path: Path) -> None:
    built = _build(tmp_path, None)
    built.platform.db.dispose()  # every connection closed: the WAL is folded into the file
    original = built.data_dir / "trustauthority.db"
    pem = tmp_path / "audit-key.pem"
    pem.write_bytes(built.audit_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    intact = _copy_database(original, tmp_path / "intact.db")
    code, output, report = _cli_verify(intact, "--audit-key", str(pem))
    assert code == 0, output
    assert "intact" in output
    assert f"{ENTRIES} entries" in output
    assert report == {"ok": True, "entries": ENTRIES, "head_sequence": LAST,
                      "head_hash": report["head_hash"], "checkpoints": len(CHECKPOINTS),
                      "last_checkpoint": CHECKPOINTS[-1], "unsigned_tail": UNSIGNED_TAIL}

    edited = _copy_database(original, tmp_path / "edited.db")
    _tamper_copy(edited, _edit_target)
    code, output, report = _cli_verify(edited)
    assert code == 1
    assert "broken at entry 14" in output
    assert (report["ok"], report["broken_at"]) == (False, 14)
    assert "changed" in report["detail"]

    def attack(connection: Connection) -> None:
        _rewrite(connection, 3, outcome="failed")
        attacker, kid = _replace_audit_key(connection, built.audit_kid, keep_kid=True)
        _resign(connection, attacker, kid)

    rekeyed = _copy_database(original, tmp_path / "rekeyed.db")
    _tamper_copy(rekeyed, attack)
    code, output, _report = _cli_verify(rekeyed)
    assert code == 0, output  # the copy's own key table was replaced along with the log
    code, output, report = _cli_verify(rekeyed, "--audit-key", str(pem))
    assert code == 1
    assert f"broken at entry {CHECKPOINTS[0]}" in output
    assert (report["ok"], report["broken_at"]) == (False, CHECKPOINTS[0])
    assert "signature" in report["detail"]

    # the original itself was never touched by any of this
    again = _copy_database(original, tmp_path / "again.db")
    code, output, _report = _cli_verify(again)
    assert code == 0, output


def test_offline_verification_of_a_missing_copy_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-copy.db"
    result = runner.invoke(app, ["audit", "verify", "--database", f"sqlite:///{missing}"])
    assert result.exit_code == 2, result.output
    assert "does not exist" in result.output
    assert not missing.exists()  # nothing was created where the copy was expected

"""The audit hash chain detects every edit, deletion, insertion and reordering, naming where."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustauthority.audit import GENESIS_HASH, AuditEntry, append, verify_chain
from trustauthority.errors import AuditChainBroken, UsageError

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _chain(length: int) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    for index in range(length):
        entries.append(append(entries[-1] if entries else None, time=NOW, principal=f"p{index}",
                              role="trust-admin", action="baseline.create",
                              target=f"baseline/{index}", outcome="success",
                              request_id=f"req-{index}", details={"version": index}))
    return entries


def test_a_clean_chain_verifies() -> None:
    entries = _chain(5)
    summary = verify_chain(entries)
    assert summary.entries == 5
    assert summary.head_hash == entries[-1].entry_hash
    assert entries[0].previous_hash == GENESIS_HASH


def test_an_edited_entry_is_named() -> None:
    entries = _chain(5)
    entries[2] = dataclasses.replace(entries[2], outcome="denied")
    with pytest.raises(AuditChainBroken, match="changed") as info:
        verify_chain(entries)
    assert info.value.sequence == 2


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    entries = _chain(5)
    forged = append(entries[1], time=NOW, principal="mallory", role="trust-admin",
                    action="key.release", target="x", outcome="success", request_id="r")
    entries[2] = forged
    with pytest.raises(AuditChainBroken, match="does not follow") as info:
        verify_chain(entries)
    assert info.value.sequence == 3


@pytest.mark.parametrize(("mutate", "sequence", "message"), [
    (lambda e: e[:2] + e[3:], 3, "missing entries"),
    (lambda e: [e[0], e[2], e[1], *e[3:]], 2, "missing entries"),
    (lambda e: [*e[:3], e[2], *e[3:]], 2, "repeated or reordered"),
    (lambda e: e[1:], 1, "missing entries"),
])
def test_deletion_reordering_and_duplication(mutate: object, sequence: int, message: str) -> None:
    with pytest.raises(AuditChainBroken, match=message) as info:
        verify_chain(mutate(_chain(5)))  # type: ignore[operator]
    assert info.value.sequence == sequence


def test_verification_can_start_at_a_checkpoint() -> None:
    entries = _chain(6)
    summary = verify_chain(entries[3:], start_hash=entries[2].entry_hash, start_sequence=3)
    assert summary.first_sequence == 3
    assert summary.last_sequence == 5


@pytest.mark.parametrize("key", ["password", "client_secret", "private_key", "api_token",
                                 "dek", "plaintext"])
def test_secrets_are_refused_in_details(key: str) -> None:
    with pytest.raises(UsageError, match="must not carry secrets"):
        append(None, time=NOW, principal="p", role="r", action="a", target="t",
               outcome="success", request_id="r", details={"nested": {key: "x"}})


@pytest.mark.parametrize("key", ["token_id", "token_lifetime_seconds", "secret_hash",
                                 "revoked_credentials", "pins_checked"])
def test_names_about_secrets_that_are_not_secrets_are_allowed(key: str) -> None:
    entry = append(None, time=NOW, principal="p", role="r", action="token.revoke", target="t",
                   outcome="success", request_id="r", details={key: "abc"})
    assert entry.details[key] == "abc"


@settings(max_examples=100, deadline=None)
@given(length=st.integers(2, 8), data=st.data())
def test_any_single_field_change_is_detected(length: int, data: st.DataObject) -> None:
    entries = _chain(length)
    index = data.draw(st.integers(0, length - 1))
    field = data.draw(st.sampled_from(["principal", "role", "action", "target", "outcome",
                                       "request_id", "time"]))
    value = data.draw(st.text(min_size=1, max_size=8))
    if getattr(entries[index], field) == value:
        return
    changes: dict[str, object] = {field: value}
    entries[index] = dataclasses.replace(entries[index], **changes)  # type: ignore[arg-type]
    with pytest.raises(AuditChainBroken):
        verify_chain(entries)


def test_exported_entries_round_trip_and_verify() -> None:
    from trustauthority.audit.chain import entry_from_json

    entries = _chain(4)
    reread = [entry_from_json(json.loads(json.dumps(entry.to_json())), index)
              for index, entry in enumerate(entries, 1)]
    assert reread == entries
    assert verify_chain(reread).entries == 4


@pytest.mark.parametrize("damage", [
    lambda d: d.pop("entry_hash"),
    lambda d: d.update(sequence="3"),
    lambda d: d.update(sequence=True),
    lambda d: d.update(details=[]),
    lambda d: d.update(extra=1),
])
def test_a_malformed_export_line_is_a_usage_error(damage: Callable[[dict[str, Any]], object],
                                                   ) -> None:
    from trustauthority.audit.chain import entry_from_json

    document = _chain(1)[0].to_json()
    damage(document)
    with pytest.raises(UsageError, match="line 7"):
        entry_from_json(document, 7)
    with pytest.raises(UsageError):
        entry_from_json(["not", "an", "object"], 7)

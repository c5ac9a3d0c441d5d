"""A host's attestation history is kept for `attestation_history_days`, then swept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support.inprocess import InProcessService
from tests.support.sim_host import SimHost
from trustauthority.api.server import open_platform
from trustauthority.errors import BackendUnavailable
from trustauthority.service.attestation import HISTORY_CATCH_UP_INTERVAL, HISTORY_SWEEP_BATCH
from trustauthority.service.config import ServiceConfig, load_config, write_config
from trustauthority.store.models import AttestationRecord

REQUEST = "history"


def _enrolled(in_process: InProcessService) -> tuple[str, str]:
    """Host web-1, enrolled: its id and its credential."""
    in_process.platform.tpm_trust.set_settings(in_process.admin, REQUEST,
                                               require_ek_certificate=False,
                                               allow_ek_allowlist=True)
    host = SimHost.create("web-1")
    in_process.allow(host)
    _state, credential = in_process.enroll(host)
    return in_process.platform.hosts.get(in_process.infra, "web-1").id, credential


def test_records_older_than_the_retention_are_swept_and_newer_ones_kept(
        in_process: InProcessService) -> None:
    platform = in_process.platform
    host_id, _credential = _enrolled(in_process)
    now = datetime.now(UTC)
    ages = [timedelta(days=days) for days in (400, 91, 89, 1)]
    with platform.db.session() as session:
        session.add_all(AttestationRecord(host_id=host_id, at=now - age, status="trusted",
                                          reason=f"{age.days} days ago") for age in ages)
    assert platform.attestation.history == timedelta(days=90)  # the configured default

    assert platform.attestation.sweep_due()  # the first sweep comes at once
    platform.attestation.sweep()
    assert not platform.attestation.sweep_due()

    kept = platform.hosts.history(in_process.infra, "web-1", limit=100)
    assert [row.reason for row in kept] == ["1 days ago", "89 days ago"]


def test_the_retention_is_a_setting_with_sane_bounds() -> None:
    assert ServiceConfig(database_url="sqlite:///x.db").attestation_history_days == 90
    assert ServiceConfig(database_url="sqlite:///x.db",
                         attestation_history_days=7).attestation_history_days == 7
    for bad in (0, -1, 100_000):
        with pytest.raises(ValueError, match="attestation_history_days"):
            ServiceConfig(database_url="sqlite:///x.db", attestation_history_days=bad)


def test_a_backlog_larger_than_a_batch_is_swept_batch_by_batch_by_the_next_sweeps(
        in_process: InProcessService) -> None:
    platform = in_process.platform
    host_id, _credential = _enrolled(in_process)
    old = datetime.now(UTC) - timedelta(days=200)
    with platform.db.session() as session:
        session.add_all(AttestationRecord(host_id=host_id, at=old, status="trusted", reason="old")
                        for _ in range(HISTORY_SWEEP_BATCH + 3))

    def left() -> int:
        return len(platform.hosts.history(in_process.infra, "web-1", limit=1000))

    attestation = platform.attestation
    real_clock = attestation._clock
    start = real_clock()
    attestation._clock = lambda: start
    try:
        attestation.sweep()  # one batch: a short transaction
        assert left() == 3
        assert not attestation.sweep_due()  # not at once: each batch holds the write lock
        attestation.sweep()
        assert left() == 3
        attestation._clock = lambda: start + HISTORY_CATCH_UP_INTERVAL
        assert attestation.sweep_due()  # behind, so the sweep comes back soon, not in a minute
        attestation.sweep()
        assert left() == 0
    finally:
        attestation._clock = real_clock


def test_a_sweep_the_database_refuses_is_logged_and_tried_again_later(
        in_process: InProcessService, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    attestation = in_process.platform.attestation

    def locked() -> NoReturn:
        raise BackendUnavailable("database store.db: OperationalError")

    monkeypatch.setattr(attestation._db, "writing", locked)
    attestation.sweep()  # runs after a response: nothing to fail, so it logs
    assert "attestation sweep skipped" in caplog.text
    assert not attestation.sweep_due()  # the next try comes with the next interval


def test_the_configured_retention_is_what_the_service_keeps(tmp_path: Path) -> None:
    started = InProcessService.create(tmp_path, REQUEST)
    started.close()
    write_config(tmp_path, load_config(tmp_path).model_copy(
        update={"attestation_history_days": 7}))
    platform = open_platform(tmp_path, load_config(tmp_path))
    try:
        assert platform.attestation.history == timedelta(days=7)
    finally:
        platform.db.dispose()

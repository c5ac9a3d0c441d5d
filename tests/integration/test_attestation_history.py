"""A host's attestation history is kept for `attestation_history_days`, then swept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.inprocess import InProcessService
from tests.support.sim_host import SimHost
from trustauthority.service.config import ServiceConfig
from trustauthority.store.models import AttestationRecord

REQUEST = "history"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[InProcessService]:
    started = InProcessService.create(tmp_path, REQUEST)
    yield started
    started.close()


def test_records_older_than_the_retention_are_swept_and_newer_ones_kept(
        service: InProcessService) -> None:
    platform = service.platform
    platform.tpm_trust.set_settings(service.admin, REQUEST, require_ek_certificate=False,
                                    allow_ek_allowlist=True)
    host = SimHost.create("web-1")
    service.allow(host)
    _state, credential = service.enroll(host)
    host_id = platform.hosts.get(service.infra, "web-1").id
    now = datetime.now(UTC)
    ages = [timedelta(days=days) for days in (400, 91, 89, 1)]
    with platform.db.session() as session:
        session.add_all(AttestationRecord(host_id=host_id, at=now - age, status="trusted",
                                          reason=f"{age.days} days ago") for age in ages)
    assert platform.attestation.history == timedelta(days=90)  # the configured default

    platform.attestation.challenge(service.caller(credential))  # the first sweeps

    kept = platform.hosts.history(service.infra, "web-1", limit=100)
    assert [row.reason for row in kept] == ["1 days ago", "89 days ago"]


def test_the_retention_is_a_setting_with_sane_bounds() -> None:
    assert ServiceConfig(database_url="sqlite:///x.db").attestation_history_days == 90
    assert ServiceConfig(database_url="sqlite:///x.db",
                         attestation_history_days=7).attestation_history_days == 7
    for bad in (0, -1, 100_000):
        with pytest.raises(ValueError, match="attestation_history_days"):
            ServiceConfig(database_url="sqlite:///x.db", attestation_history_days=bad)

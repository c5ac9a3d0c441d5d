"""Shared pytest fixtures: software TPMs (swtpm) from one session-wide local CA; databases
(SQLite, and a session-wide PostgreSQL) and a served Trust Authority instance.

Tests using them are skipped, not failed, where swtpm or tpm2-pytss is missing.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.inprocess import InProcessService
from tests.support.postgres import PostgresCluster, postgres_available
from tests.support.service import RunningService
from tests.support.softhsm import SESSION_LABELS, SoftHsm, init_softhsm, softhsm_available
from trustauthority.agent.swtpm import SoftwareTpm, SoftwareTpmCa, swtpm_available

SwtpmFactory = Callable[[], SoftwareTpm]


def _skip_without_swtpm() -> None:
    if not swtpm_available():
        pytest.skip("swtpm tools (swtpm, swtpm_setup, swtpm_ioctl, swtpm_localca) not on PATH")
    if importlib.util.find_spec("tpm2_pytss") is None:
        pytest.skip("tpm2-pytss is not installed (pip install -e '.[agent]')")


@pytest.fixture(scope="session")
def swtpm_ca(tmp_path_factory: pytest.TempPathFactory) -> SoftwareTpmCa:
    """One local EK CA for the session: its root and intermediate are created once (~0.4 s)."""
    _skip_without_swtpm()
    return SoftwareTpmCa(tmp_path_factory.mktemp("swtpm-ca")).ensure()


@pytest.fixture
def swtpm_factory(
    swtpm_ca: SoftwareTpmCa, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SwtpmFactory]:
    """Call it to get another provisioned, started software TPM; all are stopped afterwards."""
    started: list[SoftwareTpm] = []

    def make() -> SoftwareTpm:
        tpm = SoftwareTpm(tmp_path_factory.mktemp("swtpm"), swtpm_ca)
        started.append(tpm)
        tpm.provision()
        tpm.start()
        return tpm

    yield make
    for tpm in started:
        tpm.stop()


@pytest.fixture
def swtpm(swtpm_factory: SwtpmFactory) -> SoftwareTpm:
    """A provisioned, started software TPM (RSA + ECC P-384 EKs, certified); stopped after."""
    return swtpm_factory()


# -- the service platform: databases and a served instance --------------------------------------

@pytest.fixture(scope="session")
def postgres_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    """One PostgreSQL server for the session (scripts/bootstrap installs Debian's)."""
    if not postgres_available():
        pytest.fail("PostgreSQL 15 server binaries are missing; run scripts/bootstrap")
    base = Path(tempfile.mkdtemp(prefix="ta-pg-"))
    cluster = PostgresCluster(base).start()
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """Each test that takes this runs twice: on SQLite (None: the default file) and PostgreSQL."""
    if request.param == "sqlite":
        return None
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.new_database()


@pytest.fixture
def service(database_url: str | None, tmp_path: Path) -> Iterator[RunningService]:
    """A served instance over real HTTPS, initialised with a first trust-admin."""
    running = RunningService(tmp_path / "service", database_url).start()
    yield running
    running.stop()
    running.platform.db.dispose()


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[InProcessService]:
    """The use cases in this process on SQLite, without HTTP (`tests.support.inprocess`)."""
    started = InProcessService.create(tmp_path, "in-process")
    yield started
    started.close()


@pytest.fixture
def sqlite_service(tmp_path: Path) -> Iterator[RunningService]:
    """The same on SQLite only, for tests where the database makes no difference."""
    running = RunningService(tmp_path / "service", None).start()
    yield running
    running.stop()
    running.platform.db.dispose()


@pytest.fixture(scope="session")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    """The session's SoftHSM2 (one per process: tokens must all exist before it loads)."""
    if not softhsm_available():
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2)")
    first, *others = SESSION_LABELS
    return init_softhsm(tmp_path_factory.mktemp("softhsm"), first, extra_labels=tuple(others))

"""Shared pytest fixtures: software TPMs (swtpm) provisioned from one session-wide local CA.

Tests using them are skipped, not failed, where swtpm or tpm2-pytss is missing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator

import pytest

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

"""What the TPM trust settings let in, for a TPM that presents no EK certificate.

`require_ek_certificate` refuses it whatever the allow-list says; with it off, the allow-list
(when on) admits listed EKs only, and with both off the join token alone vouches (trust on
first use). The two switches cannot both be on. Straight into the use cases (SQLite, in process),
hosts simulated with software keys; the swtpm end-to-end tests cover EK certificates.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.inprocess import InProcessService
from tests.support.sim_host import SimHost
from trustauthority.errors import CertificateError, UsageError
from trustauthority.service.audit import AuditFilter

REQUEST = "ek-policy"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    started = InProcessService.create(tmp_path_factory.mktemp("ek-policy"), REQUEST)
    yield started
    started.close()


def _settings(service: InProcessService, *, require: bool, allow_list: bool) -> None:
    # off first, so that no step passes through the refused both-on state
    tpm_trust = service.platform.tpm_trust
    tpm_trust.set_settings(service.admin, REQUEST, require_ek_certificate=False,
                           allow_ek_allowlist=False)
    tpm_trust.set_settings(service.admin, REQUEST, require_ek_certificate=require,
                           allow_ek_allowlist=allow_list)


def _enroll(service: InProcessService, host: SimHost) -> str:
    """Enrolls `host` without an EK certificate; returns its state."""
    return service.enroll(host)[0]


def _last_enroll_audit(service: InProcessService) -> dict[str, str]:
    with service.platform.db.session(read_only=True) as session:
        entries = service.platform.audit.entries(session, AuditFilter(action="host.enroll",
                                                                      limit=10_000))
    return dict(entries[-1].details)


def test_required_certificates_refuse_a_tpm_without_one_even_when_its_ek_is_listed(
        service: InProcessService) -> None:
    _settings(service, require=True, allow_list=False)
    host = SimHost.create("listed-but-required")
    service.allow(host)
    with pytest.raises(CertificateError, match="require one"):
        _enroll(service, host)
    assert _last_enroll_audit(service)["type"] == "certificate_rejected"


def test_the_allow_list_admits_listed_eks_only(service: InProcessService) -> None:
    _settings(service, require=False, allow_list=True)
    listed, unlisted = SimHost.create("listed"), SimHost.create("unlisted")
    service.allow(listed)
    assert _enroll(service, listed) == "enrolled"
    assert _last_enroll_audit(service)["ek_certificate"] == "none"
    with pytest.raises(CertificateError, match="not on the allow-list"):
        _enroll(service, unlisted)


def test_with_both_off_the_join_token_alone_vouches(service: InProcessService) -> None:
    _settings(service, require=False, allow_list=False)
    assert _enroll(service, SimHost.create("first-use")) == "enrolled"
    assert _last_enroll_audit(service)["ek_certificate"] == "none"


def test_required_certificates_and_the_allow_list_cannot_both_be_on(
        service: InProcessService) -> None:
    tpm_trust = service.platform.tpm_trust
    _settings(service, require=False, allow_list=True)
    with pytest.raises(UsageError, match="no-require-ek-certificate"):
        tpm_trust.set_settings(service.admin, REQUEST, require_ek_certificate=True)
    _settings(service, require=True, allow_list=False)
    with pytest.raises(UsageError, match="no-require-ek-certificate"):
        tpm_trust.set_settings(service.admin, REQUEST, allow_ek_allowlist=True)
    settings = tpm_trust.settings(service.admin)
    assert (settings.require_ek_certificate, settings.allow_ek_allowlist) == (True, False)

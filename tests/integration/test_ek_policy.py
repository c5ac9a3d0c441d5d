"""What the TPM trust settings let in, for a TPM that presents no EK certificate.

`require_ek_certificate` refuses it whatever the allow-list says; with it off, the allow-list
(when on) admits listed EKs only, and with both off the join token alone vouches (trust on
first use). The two switches cannot both be on. Straight into the use cases (SQLite, in process),
hosts simulated with software keys; the swtpm end-to-end tests cover EK certificates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.sim_host import SimHost
from trustauthority.api.server import open_platform
from trustauthority.errors import CertificateError, UsageError
from trustauthority.service.audit import AuditFilter
from trustauthority.service.authz import Caller
from trustauthority.service.config import load_config
from trustauthority.service.hosts import EnrollmentRequest
from trustauthority.service.platform import Platform
from trustauthority.service.setup import initialise

REQUEST = "ek-policy"


@dataclass
class World:
    platform: Platform
    admin: Caller
    infra: Caller

    def settings(self, *, require: bool, allow_list: bool) -> None:
        # off first, so that no step passes through the refused both-on state
        tpm_trust = self.platform.tpm_trust
        tpm_trust.set_settings(self.admin, REQUEST, require_ek_certificate=False,
                               allow_ek_allowlist=False)
        tpm_trust.set_settings(self.admin, REQUEST, require_ek_certificate=require,
                               allow_ek_allowlist=allow_list)

    def allow(self, host: SimHost) -> None:
        pem = host.ek.public_key.public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        self.platform.tpm_trust.add_ek(self.admin, REQUEST, pem)

    def enroll(self, host: SimHost) -> str:
        """Enrolls `host` without an EK certificate; returns its state."""
        token = self.platform.hosts.create_join_token(
            self.infra, REQUEST, cluster="prod", lifetime=timedelta(hours=1)).token
        request = EnrollmentRequest(
            ek_public=host.ek.tpm2b, ek_certificate=None, ek_intermediates=(),
            ak_public=host.ak.public.tpm2b, hostname=host.name, facts={}, join_token=token)
        challenge = self.platform.hosts.start_enrollment(REQUEST, "test", request)
        done = self.platform.hosts.activate(REQUEST, "test", challenge.enrollment_id,
                                            host.activate(challenge.credential_blob,
                                                          challenge.encrypted_secret))
        return done.host.state


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("ek-policy")
    admin_token = initialise(data_dir).admin_token
    platform = open_platform(data_dir, load_config(data_dir))
    admin = platform.authenticate(token=admin_token, certificate_fingerprint=None,
                                  request_id=REQUEST, source="test")
    platform.principals.create(admin, REQUEST, name="infra", kind="person",
                               roles=["infra-admin"])
    infra_token = platform.principals.create_token(admin, REQUEST, "infra").token
    infra = platform.authenticate(token=infra_token, certificate_fingerprint=None,
                                  request_id=REQUEST, source="test")
    platform.clusters.create(admin, REQUEST, name="prod")
    yield World(platform, admin, infra)
    platform.db.dispose()


def _last_enroll_audit(world: World) -> dict[str, str]:
    with world.platform.db.session(read_only=True) as session:
        entries = world.platform.audit.entries(session, AuditFilter(action="host.enroll",
                                                                    limit=10_000))
    return dict(entries[-1].details)


def test_required_certificates_refuse_a_tpm_without_one_even_when_its_ek_is_listed(
        world: World) -> None:
    world.settings(require=True, allow_list=False)
    host = SimHost.create("listed-but-required")
    world.allow(host)
    with pytest.raises(CertificateError, match="require one"):
        world.enroll(host)
    assert _last_enroll_audit(world)["type"] == "certificate_rejected"


def test_the_allow_list_admits_listed_eks_only(world: World) -> None:
    world.settings(require=False, allow_list=True)
    listed, unlisted = SimHost.create("listed"), SimHost.create("unlisted")
    world.allow(listed)
    assert world.enroll(listed) == "enrolled"
    assert _last_enroll_audit(world)["ek_certificate"] == "none"
    with pytest.raises(CertificateError, match="not on the allow-list"):
        world.enroll(unlisted)


def test_with_both_off_the_join_token_alone_vouches(world: World) -> None:
    world.settings(require=False, allow_list=False)
    assert world.enroll(SimHost.create("first-use")) == "enrolled"
    assert _last_enroll_audit(world)["ek_certificate"] == "none"


def test_required_certificates_and_the_allow_list_cannot_both_be_on(world: World) -> None:
    world.settings(require=False, allow_list=True)
    with pytest.raises(UsageError, match="no-require-ek-certificate"):
        world.platform.tpm_trust.set_settings(world.admin, REQUEST, require_ek_certificate=True)
    world.settings(require=True, allow_list=False)
    with pytest.raises(UsageError, match="no-require-ek-certificate"):
        world.platform.tpm_trust.set_settings(world.admin, REQUEST, allow_ek_allowlist=True)
    settings = world.platform.tpm_trust.settings(world.admin)
    assert (settings.require_ek_certificate, settings.allow_ek_allowlist) == (True, False)

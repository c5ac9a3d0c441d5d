"""A service's use cases in this process (SQLite, no HTTP), with the people tests need.

For tests that drive enrollment and attestation straight into the platform with simulated hosts
(`tests.support.sim_host`): a trust-admin, an infra-admin and a cluster "prod" to join.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.support.sim_host import SimHost
from trustauthority.api.server import open_platform
from trustauthority.service.authz import Caller
from trustauthority.service.config import load_config
from trustauthority.service.hosts import EnrollmentRequest
from trustauthority.service.platform import Platform
from trustauthority.service.setup import initialise

CLUSTER = "prod"


@dataclass
class InProcessService:
    platform: Platform
    admin: Caller  # the first trust-admin
    infra: Caller  # an infra-admin (join tokens)
    request_id: str

    @classmethod
    def create(cls, data_dir: Path, request_id: str) -> InProcessService:
        admin_token = initialise(data_dir).admin_token
        platform = open_platform(data_dir, load_config(data_dir))
        admin = _authenticate(platform, admin_token, request_id)
        platform.principals.create(admin, request_id, name="infra", kind="person",
                                   roles=["infra-admin"])
        infra_token = platform.principals.create_token(admin, request_id, "infra").token
        platform.clusters.create(admin, request_id, name=CLUSTER)
        return cls(platform, admin, _authenticate(platform, infra_token, request_id),
                   request_id)

    def close(self) -> None:
        self.platform.db.dispose()

    def caller(self, token: str) -> Caller:
        return _authenticate(self.platform, token, self.request_id)

    def join_token(self) -> str:
        return self.platform.hosts.create_join_token(
            self.infra, self.request_id, cluster=CLUSTER, lifetime=timedelta(hours=1)).token

    def enrollment_request(self, host: SimHost, **changes: object) -> EnrollmentRequest:
        """`host`'s request to join CLUSTER with a fresh join token and no EK certificate."""
        fields: dict[str, object] = {
            "ek_public": host.ek.tpm2b, "ek_certificate": None, "ek_intermediates": (),
            "ak_public": host.ak.public.tpm2b, "hostname": host.name, "facts": {},
            "join_token": self.join_token()}
        fields.update(changes)
        return EnrollmentRequest(**fields)  # type: ignore[arg-type]

    def allow(self, host: SimHost) -> None:
        """Puts `host`'s EK on the allow-list."""
        pem = host.ek.public_key.public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        self.platform.tpm_trust.add_ek(self.admin, self.request_id, pem)

    def enroll(self, host: SimHost) -> tuple[str, str]:
        """Enrolls `host` (no EK certificate) all the way; returns its state and credential."""
        hosts = self.platform.hosts
        challenge = hosts.start_enrollment(self.request_id, "test",
                                           self.enrollment_request(host))
        done = hosts.activate(self.request_id, "test", challenge.enrollment_id, host.activate(
            challenge.credential_blob, challenge.encrypted_secret))
        return done.host.state, done.credential


def _authenticate(platform: Platform, token: str, request_id: str) -> Caller:
    return platform.authenticate(token=token, certificate_fingerprint=None,
                                 request_id=request_id, source="test")

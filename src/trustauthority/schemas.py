"""The API's request and response bodies (pydantic), shared by the server and the client.

Requests forbid unknown fields and bound every size, so a malformed body is a clean 4xx.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trustauthority.policy import DEFAULT_PCRS


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorBody(Response):
    type: str
    detail: str
    request_id: str


class Health(Response):
    status: Literal["ok"]


class Readiness(Response):
    status: Literal["ready"]
    database: str
    schema_current: bool


RoleName = Literal["trust-admin", "infra-admin", "auditor", "host"]
PrincipalKind = Literal["person", "automation", "host"]
PrincipalName = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")


class PrincipalCreate(Request):
    name: str = PrincipalName
    kind: PrincipalKind = "person"
    roles: list[RoleName] = Field(min_length=1, max_length=4)
    description: str = Field(default="", max_length=512)
    #: separation of duties: several roles only with this explicit approval
    allow_multiple_roles: bool = False


class PrincipalOut(Response):
    id: str
    name: str
    kind: str
    roles: list[str]
    description: str
    multiple_roles_approved: bool
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


class WhoAmI(Response):
    principal: PrincipalOut
    credential: str


class TokenCreate(Request):
    label: str = Field(default="", max_length=128)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenOut(Response):
    id: str
    principal: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenIssued(Response):
    token: str = Field(description="the API token; shown this once, stored only as a hash")
    info: TokenOut


class CertificateCreate(Request):
    csr_pem: str = Field(min_length=1, max_length=16384)
    lifetime_days: int = Field(default=365, ge=1, le=365)


class CertificateOut(Response):
    principal: str
    fingerprint_sha256: str
    serial: str
    not_after: datetime
    certificate_pem: str
    ca_pem: str


class AuditEntryOut(Response):
    sequence: int
    time: str
    principal: str
    role: str
    action: str
    target: str
    outcome: str
    request_id: str
    details: dict[str, object]
    previous_hash: str
    entry_hash: str


class AuditVerificationOut(Response):
    ok: bool
    entries: int = 0
    head_sequence: int = -1
    head_hash: str = ""
    checkpoints: int = 0
    last_checkpoint: int | None = None
    unsigned_tail: int = 0
    broken_at: int | None = None
    detail: str = ""


class CheckpointOut(Response):
    created: bool
    sequence: int | None = None
    entry_hash: str | None = None
    kid: str | None = None


# -- TPM trust (trust-admin) ---------------------------------------------------------------

Fingerprint = Field(min_length=64, max_length=64, pattern=r"^[0-9a-fA-F]{64}$")


class TpmCaAdd(Request):
    # bounded so that even a fully escaped JSON body stays under the request size limit
    certificate_pem: str = Field(min_length=1, max_length=65536,
                                 description="one or more PEM CA certificates")
    description: str = Field(default="", max_length=512)


class TpmCaOut(Response):
    fingerprint_sha256: str
    subject: str
    is_root: bool
    not_after: datetime
    description: str
    added_at: datetime
    added_by: str


class EkAdd(Request):
    public_key_pem: str = Field(min_length=1, max_length=16384,
                                description="the EK public key (PEM SubjectPublicKeyInfo)")
    description: str = Field(default="", max_length=512)


class EkOut(Response):
    fingerprint_sha256: str
    algorithm: str
    description: str
    added_at: datetime
    added_by: str


class TpmSettingsOut(Response):
    require_ek_certificate: bool
    allow_ek_allowlist: bool
    allow_sha1: bool


class TpmSettingsUpdate(Request):
    require_ek_certificate: bool | None = None
    allow_ek_allowlist: bool | None = None
    allow_sha1: bool | None = None


# -- clusters --------------------------------------------------------------------------------

class ClusterPolicyModel(Request):
    require_secure_boot: bool = True
    pcrs: list[int] = Field(default=sorted(DEFAULT_PCRS), min_length=1,
                            max_length=24,
                            description="PCRs compared; 1, 5 and 6 vary between identical hosts")
    allow_unknown_events: bool = False
    strict_pcr_values: bool = False


class ClusterCreate(Request):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = Field(default="", max_length=512)
    policy: ClusterPolicyModel = ClusterPolicyModel()
    token_lifetime_seconds: int = Field(default=600, ge=30, le=86400)
    attestation_interval_seconds: int = Field(default=300, ge=10, le=86400)


class ClusterOut(Response):
    id: str
    name: str
    description: str
    policy: ClusterPolicyModel
    token_lifetime_seconds: int
    attestation_interval_seconds: int
    created_at: datetime
    created_by: str


# -- baselines -------------------------------------------------------------------------------

BaselineName = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class BaselineImport(Request):
    name: str = BaselineName
    #: the known-good host's firmware event log (binary_bios_measurements), base64
    event_log_base64: str = Field(min_length=4, max_length=700_000)
    bank: Literal["sha1", "sha256", "sha384", "sha512"] = "sha256"
    strict: bool = Field(default=False, description="also pin exact PCR values")


class BaselineOut(Response):
    name: str
    version: int
    source: str
    created_at: datetime
    created_by: str
    clusters: list[str]
    baseline: dict[str, object] = Field(description="the reference values (policy.Baseline)")


class DifferenceOut(Response):
    component: str
    pcr: int | None
    reason: str
    expected: str | None
    expected_label: str | None
    found: str | None
    found_label: str | None
    event_index: int | None
    position: int | None


class BaselineDiffOut(Response):
    a: str
    b: str
    differences: list[DifferenceOut]


class ClusterBaselineAdd(Request):
    baseline: str = BaselineName
    version: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                description="default: the latest version")

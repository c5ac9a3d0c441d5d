"""The API's request and response bodies (pydantic), shared by the server and the client.

Requests forbid unknown fields and bound every size, so a malformed body is a clean 4xx.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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


class AuditKeyOut(Response):
    kid: str
    algorithm: str
    public_pem: str = Field(description="the public key, PEM (SubjectPublicKeyInfo)")
    created_at: datetime
    retired_at: datetime | None
    active: bool


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


class BaselineFromHost(Request):
    name: str = BaselineName
    #: the known-good host (name or id); its last verified event log becomes the baseline
    host: str = Field(min_length=1, max_length=128)
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


# -- hosts, enrollment, attestation -------------------------------------------------------------

#: base64 (standard alphabet, padded) of a binary TPM structure
Base64 = r"^[A-Za-z0-9+/]*={0,2}$"
ObjectName = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
FactKey = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                           pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
FactValue = Annotated[str, StringConstraints(max_length=256)]
PcrBank = Literal["sha1", "sha256", "sha384", "sha512"]
PcrIndex = Annotated[str, StringConstraints(pattern=r"^([0-9]|1[0-9]|2[0-3])$")]
PcrValue = Annotated[str, StringConstraints(pattern=r"^(?:[0-9a-f]{2}){20,64}$")]
HostState = Literal["pending", "enrolled", "trusted", "untrusted", "stale"]


class JoinTokenCreate(Request):
    cluster: str = ObjectName
    lifetime_seconds: int = Field(default=3600, ge=60, le=30 * 86400)
    description: str = Field(default="", max_length=512)


class JoinTokenOut(Response):
    id: str
    cluster: str
    description: str
    created_at: datetime
    created_by: str
    expires_at: datetime
    used_at: datetime | None
    used_by_host: str | None
    revoked_at: datetime | None


class JoinTokenIssued(Response):
    join_token: JoinTokenOut
    #: shown once: the service keeps only a hash
    token: str


class EnrollmentStart(Request):
    """What a host's agent sends first: who its TPM is, its AK, and facts about itself."""

    ek_public: str = Field(min_length=4, max_length=2048, pattern=Base64,
                           description="the EK's TPM2B_PUBLIC, base64")
    ek_certificate: str | None = Field(default=None, min_length=4, max_length=8192,
                                       pattern=Base64,
                                       description="the EK certificate (DER), base64")
    ek_intermediates: list[Annotated[str, StringConstraints(min_length=4, max_length=8192,
                                                            pattern=Base64)]] = Field(
        default_factory=list, max_length=4,
        description="intermediate CA certificates (DER, base64) the host has for its EK")
    ak_public: str = Field(min_length=4, max_length=2048, pattern=Base64,
                           description="the AK's TPM2B_PUBLIC, base64")
    hostname: str = ObjectName
    facts: dict[FactKey, FactValue] = Field(default_factory=dict, max_length=32)
    join_token: str | None = Field(default=None, min_length=1, max_length=128)


class EnrollmentChallengeOut(Response):
    """TPM2_MakeCredential's output: only the TPM holding both EK and AK can open it."""

    enrollment_id: str
    credential_blob: str = Field(description="TPM2B_ID_OBJECT, base64")
    encrypted_secret: str = Field(description="TPM2B_ENCRYPTED_SECRET, base64")
    expires_at: datetime


class EnrollmentActivate(Request):
    secret: str = Field(min_length=4, max_length=128, pattern=Base64,
                        description="what TPM2_ActivateCredential returned, base64")


class HostOut(Response):
    id: str
    name: str
    state: HostState
    state_reason: str
    cluster: str | None
    facts: dict[str, str]
    ek_fingerprint: str
    enrolled_at: datetime
    approved_by: str | None
    last_attested_at: datetime | None
    binding_key_thumbprint: str | None


class EnrollmentDone(Response):
    host: HostOut
    #: the host's API credential, shown once (it authenticates challenge and evidence)
    credential: str


class HostApprove(Request):
    cluster: str = ObjectName


class FailureOut(Response):
    type: str = Field(description="the stable error type of the first check that failed")
    detail: str
    closest_baseline: str | None = None
    differences: list[DifferenceOut] = Field(default_factory=list)


class AttestationOut(Response):
    at: datetime
    status: Literal["trusted", "untrusted"]
    baseline: str | None
    reason: str
    rebooted: bool | None
    pcr_digest: str | None
    token_id: str | None
    failure: FailureOut | None = Field(
        default=None, description="when untrusted: the closest baseline and each difference")


class ChallengeOut(Response):
    nonce: str = Field(description="base64; the quote's and the certify's qualifyingData")
    expires_at: datetime
    bank: PcrBank
    pcrs: list[int] = Field(description="the PCRs to quote")


class QuoteIn(Request):
    attest: str = Field(min_length=4, max_length=4096, pattern=Base64,
                        description="TPMS_ATTEST as signed, base64")
    signature: str = Field(min_length=4, max_length=2048, pattern=Base64,
                           description="TPMT_SIGNATURE, base64")


class BindingKeyIn(Request):
    public: str = Field(min_length=4, max_length=2048, pattern=Base64,
                        description="the binding key's TPM2B_PUBLIC, base64")
    certify_attest: str = Field(min_length=4, max_length=4096, pattern=Base64)
    certify_signature: str = Field(min_length=4, max_length=2048, pattern=Base64)


class EvidenceIn(Request):
    nonce: str = Field(min_length=4, max_length=128, pattern=Base64)
    quote: QuoteIn
    pcrs: dict[PcrBank, dict[PcrIndex, PcrValue]] = Field(
        max_length=4, description="bank -> PCR -> hex value, as quoted")
    event_log: str = Field(min_length=4, max_length=700_000, pattern=Base64,
                           description="the firmware event log, base64")
    binding_key: BindingKeyIn


class AttestationResultOut(Response):
    status: Literal["trusted", "untrusted"]
    host: str
    cluster: str
    baseline: str | None = None
    token: str | None = Field(default=None, description="the attestation token when trusted")
    expires_at: datetime | None = None
    failure: FailureOut | None = None


class TokenKeyRotated(Response):
    #: the new signing key's id (the `kid` of tokens from now on)
    kid: str
    #: the retired key, kept in the JWKS until the tokens it signed have expired
    retired_kid: str | None


# -- key servers, trusted key providers, workload keys, key release ----------------------------

Pem = Field(min_length=1, max_length=65536, description="PEM text")
WorkloadId = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:/@-]+$")


class KmipServerCreate(Request):
    name: str = ObjectName
    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.-]+$",
                      description="an IPv4 address or a DNS name")
    port: int = Field(default=5696, ge=1, le=65535)
    ca_pem: str = Pem
    certificate_pem: str = Pem
    key_pem: str = Field(min_length=1, max_length=65536,
                         description="the client's private key (PEM); stored sealed")
    username: str | None = Field(default=None, min_length=1, max_length=256)
    password: str | None = Field(default=None, min_length=1, max_length=256)
    pinned_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                                      description="SHA-256 (hex) of the server's certificate")
    timeout_seconds: float = Field(default=5.0, ge=0.5, le=120)


class Pkcs11ServerCreate(Request):
    name: str = ObjectName
    module: str = Field(min_length=2, max_length=1024, pattern=r"^/[^\x00]*$")
    token_label: str = Field(min_length=1, max_length=32)
    pin: str = Field(min_length=1, max_length=256, description="the token's user PIN; sealed")


class KeyServerOut(Response):
    id: str
    name: str
    kind: Literal["kmip", "pkcs11"]
    address: str
    settings: dict[str, str | float | None]
    certificate_subject: str | None
    certificate_not_after: datetime | None
    ca_subject: str | None
    providers: list[str]
    created_at: datetime
    created_by: str


class KeyServerHealthOut(Response):
    name: str
    healthy: bool
    reachable: bool
    client_trusts_server: bool | None
    server_trusts_client: bool | None
    round_trip: bool
    latency_ms: float | None
    detail: str


class ProviderCreate(Request):
    name: str = ObjectName
    servers: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=8, description="key servers, in failover order")
    primary_key: str | None = Field(default=None, min_length=1, max_length=256)
    create_primary_key: bool = False
    description: str = Field(default="", max_length=512)


class ServerHealthOut(Response):
    name: str
    state: Literal["healthy", "unhealthy", "unknown"]
    detail: str
    checked_at: datetime | None


class PrimaryVersionOut(Response):
    version: int
    key_id: str
    state: Literal["active", "retired"]
    created_at: datetime
    keys: int


class ProviderOut(Response):
    id: str
    name: str
    kind: Literal["kmip", "pkcs11"]
    description: str
    health: Literal["healthy", "degraded", "unhealthy", "unknown"]
    servers: list[ServerHealthOut]
    versions: list[PrimaryVersionOut]
    current_version: int
    clusters: list[str]
    created_at: datetime
    created_by: str


class ProviderGrant(Request):
    provider: str = ObjectName


class WorkloadKeyCreate(Request):
    provider: str = ObjectName
    workload: str = WorkloadId
    cluster: str = ObjectName


class WorkloadKeyOut(Response):
    id: str
    workload: str
    cluster: str
    provider: str
    primary_version: int
    blob: str = Field(description="the wrapped key; stored beside the workload's data")
    created_at: datetime
    created_by: str
    rewrapped_at: datetime | None
    last_released_at: datetime | None
    state: Literal["active", "superseded"]


class KeyRotate(Request):
    workload: str = WorkloadId


class KeyRewrap(Request):
    provider: str = ObjectName
    workload: str | None = Field(default=None, min_length=1, max_length=256,
                                 pattern=r"^[A-Za-z0-9_.:/@-]+$")


class KeyReleaseIn(Request):
    blob: str = Field(min_length=1, max_length=4096)
    workload: str = WorkloadId
    token: str = Field(min_length=1, max_length=16384,
                       description="the host's attestation token; its cnf must be this host's "
                                   "binding key")


class KeyReleaseOut(Response):
    jwe: str = Field(description="the key, encrypted to the host's TPM binding key "
                                 "(RSA-OAEP-256 + A256GCM)")
    key_id: str
    workload: str
    provider: str
    primary_version: int
    current_blob: str | None = Field(
        default=None, description="the key's blob as stored now, when the one presented was "
        "wrapped under an older primary key version (a shallow rekey since): the same key. "
        "Store it in place of the old one before that version is retired "
        "(`ta agent workload rekey FILE NEW` does so for a file)")

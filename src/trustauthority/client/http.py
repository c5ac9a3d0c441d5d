"""A typed client for the Trust Authority API (httpx).

Responses come back as the same pydantic models the server sends; error responses come back as
the same exceptions the server raised (by their stable `type`), so a caller handles a refused
request the same way whether it ran in-process or across the network.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from trustauthority.errors import (
    BackendUnavailable,
    ConfigError,
    TrustAuthorityError,
    error_class_for,
)
from trustauthority.schemas import (
    AttestationOut,
    AttestationResultOut,
    AuditEntryOut,
    AuditKeyOut,
    AuditVerificationOut,
    BaselineDiffOut,
    BaselineFromHost,
    BaselineImport,
    BaselineOut,
    CertificateCreate,
    CertificateOut,
    ChallengeOut,
    CheckpointOut,
    ClusterBaselineAdd,
    ClusterCreate,
    ClusterOut,
    EkAdd,
    EkOut,
    EnrollmentActivate,
    EnrollmentChallengeOut,
    EnrollmentDone,
    EnrollmentStart,
    EvidenceIn,
    Health,
    HostApprove,
    HostOut,
    JoinTokenCreate,
    JoinTokenIssued,
    JoinTokenOut,
    KeyReleaseIn,
    KeyReleaseOut,
    KeyRewrap,
    KeyRotate,
    KeyServerHealthOut,
    KeyServerOut,
    KmipServerCreate,
    Pkcs11ServerCreate,
    PrimaryVersionOut,
    PrincipalCreate,
    PrincipalOut,
    ProviderCreate,
    ProviderGrant,
    ProviderOut,
    Readiness,
    TokenCreate,
    TokenIssued,
    TokenKeyRotated,
    TokenOut,
    TpmCaAdd,
    TpmCaOut,
    TpmSettingsOut,
    TpmSettingsUpdate,
    WhoAmI,
    WorkloadKeyCreate,
    WorkloadKeyOut,
)

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Credentials:
    token: str | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        error_type, detail = str(body["type"]), str(body["detail"])
        request_id = str(body.get("request_id", "-"))
    except (ValueError, KeyError, TypeError):
        error_type, detail, request_id = "http_error", response.text[:200], "-"
    cls = error_class_for(error_type)
    if cls is TrustAuthorityError:
        cls = BackendUnavailable if response.status_code >= 500 else TrustAuthorityError
    # built without the class's own __init__ (whose arguments differ per class): the server's
    # message is the message, and the stable type travels with it
    error = cls.__new__(cls)
    Exception.__init__(error, f"{detail} (HTTP {response.status_code}, request {request_id})")
    error.error_type = error_type
    raise error


class TrustAuthorityClient:
    def __init__(self, base_url: str, credentials: Credentials, *,
                 ca_file: Path | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        verify: ssl.SSLContext | bool = True
        try:
            context = ssl.create_default_context(
                cafile=str(ca_file) if ca_file is not None else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if credentials.client_certificate is not None:
                context.load_cert_chain(str(credentials.client_certificate),
                                        str(credentials.client_key)
                                        if credentials.client_key else None)
            verify = context
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"cannot load TLS files: {error}") from None
        headers = {"User-Agent": "trustauthority-client"}
        if credentials.token is not None:
            headers["Authorization"] = f"Bearer {credentials.token}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, verify=verify,
                                  timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TrustAuthorityClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, body: BaseModel | None = None,
              params: dict[str, Any] | None = None) -> httpx.Response:
        try:
            response = self._http.request(
                method, path, params={k: v for k, v in (params or {}).items() if v is not None},
                content=None if body is None else body.model_dump_json(),
                headers=None if body is None else {"Content-Type": "application/json"})
        except httpx.TransportError as error:
            raise BackendUnavailable(f"cannot reach {self.base_url}: {error}") from None
        _raise_for(response)
        return response

    def _call(self, model: type[Model], method: str, path: str, *,
              body: BaseModel | None = None, params: dict[str, Any] | None = None) -> Model:
        response = self._send(method, path, body=body, params=params)
        try:
            return model.model_validate_json(response.content)
        except ValidationError:
            raise BackendUnavailable(f"{self.base_url} answered {path} with an unexpected "
                                     "body") from None

    def _list(self, model: type[Model], path: str, params: dict[str, Any] | None = None, *,
              method: str = "GET", body: BaseModel | None = None) -> list[Model]:
        response = self._send(method, path, params=params, body=body)
        try:
            return TypeAdapter(list[model]).validate_json(response.content)  # type: ignore[valid-type]
        except ValidationError:
            raise BackendUnavailable(f"{self.base_url} answered {path} with an unexpected "
                                     "body") from None

    # -- system ---------------------------------------------------------------------------

    def health(self) -> Health:
        return self._call(Health, "GET", "/healthz")

    def ready(self) -> Readiness:
        return self._call(Readiness, "GET", "/readyz")

    def whoami(self) -> WhoAmI:
        return self._call(WhoAmI, "GET", "/v1/whoami")

    # -- principals ---------------------------------------------------------------------------

    def list_principals(self, *, include_revoked: bool = False) -> list[PrincipalOut]:
        return self._list(PrincipalOut, "/v1/principals",
                          {"include_revoked": include_revoked or None})

    def get_principal(self, name: str) -> PrincipalOut:
        return self._call(PrincipalOut, "GET", f"/v1/principals/{name}")

    def create_principal(self, request: PrincipalCreate) -> PrincipalOut:
        return self._call(PrincipalOut, "POST", "/v1/principals", body=request)

    def revoke_principal(self, name: str) -> PrincipalOut:
        return self._call(PrincipalOut, "POST", f"/v1/principals/{name}/revoke")

    def create_token(self, name: str, request: TokenCreate) -> TokenIssued:
        return self._call(TokenIssued, "POST", f"/v1/principals/{name}/tokens", body=request)

    def list_tokens(self, name: str) -> list[TokenOut]:
        return self._list(TokenOut, f"/v1/principals/{name}/tokens")

    def revoke_token(self, name: str, token_id: str) -> TokenOut:
        return self._call(TokenOut, "POST", f"/v1/principals/{name}/tokens/{token_id}/revoke")

    def issue_certificate(self, name: str, request: CertificateCreate) -> CertificateOut:
        return self._call(CertificateOut, "POST", f"/v1/principals/{name}/certificates",
                          body=request)

    # -- audit ----------------------------------------------------------------------------

    def audit_entries(self, *, since: datetime | None = None, action: str | None = None,
                      principal: str | None = None, after: int | None = None,
                      limit: int = 100) -> list[AuditEntryOut]:
        return self._list(AuditEntryOut, "/v1/audit", {
            "since": since.isoformat() if since else None, "action": action,
            "principal": principal, "after": after, "limit": limit})

    def audit_export(self) -> Iterator[dict[str, Any]]:
        """Every entry as the JSON object the server exported (streamed)."""
        try:
            with self._http.stream("GET", "/v1/audit/export") as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.TransportError as error:
            raise BackendUnavailable(f"cannot reach {self.base_url}: {error}") from None

    def audit_verify(self) -> AuditVerificationOut:
        return self._call(AuditVerificationOut, "GET", "/v1/audit/verification")

    def audit_keys(self) -> list[AuditKeyOut]:
        return self._list(AuditKeyOut, "/v1/audit/keys")

    def audit_checkpoint(self) -> CheckpointOut:
        return self._call(CheckpointOut, "POST", "/v1/audit/checkpoints")

    # -- TPM trust ------------------------------------------------------------------------

    def add_tpm_cas(self, request: TpmCaAdd) -> list[TpmCaOut]:
        return self._list(TpmCaOut, "/v1/tpm-cas", method="POST", body=request)

    def list_tpm_cas(self) -> list[TpmCaOut]:
        return self._list(TpmCaOut, "/v1/tpm-cas")

    def remove_tpm_ca(self, fingerprint: str) -> TpmCaOut:
        return self._call(TpmCaOut, "DELETE", f"/v1/tpm-cas/{fingerprint}")

    def add_ek(self, request: EkAdd) -> EkOut:
        return self._call(EkOut, "POST", "/v1/eks", body=request)

    def list_eks(self) -> list[EkOut]:
        return self._list(EkOut, "/v1/eks")

    def remove_ek(self, fingerprint: str) -> EkOut:
        return self._call(EkOut, "DELETE", f"/v1/eks/{fingerprint}")

    def tpm_settings(self) -> TpmSettingsOut:
        return self._call(TpmSettingsOut, "GET", "/v1/tpm-settings")

    def set_tpm_settings(self, request: TpmSettingsUpdate) -> TpmSettingsOut:
        return self._call(TpmSettingsOut, "PATCH", "/v1/tpm-settings", body=request)

    # -- clusters -------------------------------------------------------------------------

    def create_cluster(self, request: ClusterCreate) -> ClusterOut:
        return self._call(ClusterOut, "POST", "/v1/clusters", body=request)

    def list_clusters(self) -> list[ClusterOut]:
        return self._list(ClusterOut, "/v1/clusters")

    def get_cluster(self, name: str) -> ClusterOut:
        return self._call(ClusterOut, "GET", f"/v1/clusters/{name}")

    def delete_cluster(self, name: str) -> ClusterOut:
        return self._call(ClusterOut, "DELETE", f"/v1/clusters/{name}")

    # -- baselines ------------------------------------------------------------------------

    def import_baseline(self, request: BaselineImport) -> BaselineOut:
        return self._call(BaselineOut, "POST", "/v1/baselines", body=request)

    def import_baseline_from_host(self, request: BaselineFromHost) -> BaselineOut:
        return self._call(BaselineOut, "POST", "/v1/baselines/from-host", body=request)

    def list_baselines(self) -> list[BaselineOut]:
        return self._list(BaselineOut, "/v1/baselines")

    def get_baseline(self, name: str, version: int | None = None) -> BaselineOut:
        return self._call(BaselineOut, "GET", f"/v1/baselines/{name}",
                          params={"version": version})

    def diff_baselines(self, a: str, b: str) -> BaselineDiffOut:
        return self._call(BaselineDiffOut, "GET", "/v1/baselines/diff", params={"a": a, "b": b})

    def delete_baseline(self, name: str, version: int) -> BaselineOut:
        return self._call(BaselineOut, "DELETE", f"/v1/baselines/{name}/{version}")

    def add_cluster_baseline(self, cluster: str, request: ClusterBaselineAdd) -> BaselineOut:
        return self._call(BaselineOut, "POST", f"/v1/clusters/{cluster}/baselines", body=request)

    def remove_cluster_baseline(self, cluster: str, name: str, version: int) -> BaselineOut:
        return self._call(BaselineOut, "DELETE",
                          f"/v1/clusters/{cluster}/baselines/{name}/{version}")

    # -- hosts and join tokens ------------------------------------------------------------

    def create_join_token(self, request: JoinTokenCreate) -> JoinTokenIssued:
        return self._call(JoinTokenIssued, "POST", "/v1/join-tokens", body=request)

    def list_join_tokens(self) -> list[JoinTokenOut]:
        return self._list(JoinTokenOut, "/v1/join-tokens")

    def revoke_join_token(self, token_id: str) -> JoinTokenOut:
        return self._call(JoinTokenOut, "DELETE", f"/v1/join-tokens/{token_id}")

    def list_hosts(self) -> list[HostOut]:
        return self._list(HostOut, "/v1/hosts")

    def get_host(self, name: str) -> HostOut:
        return self._call(HostOut, "GET", f"/v1/hosts/{name}")

    def host_attestations(self, name: str, limit: int = 50) -> list[AttestationOut]:
        return self._list(AttestationOut, f"/v1/hosts/{name}/attestations",
                          params={"limit": limit})

    def approve_host(self, name: str, request: HostApprove) -> HostOut:
        return self._call(HostOut, "POST", f"/v1/hosts/{name}/approval", body=request)

    def delete_host(self, name: str) -> HostOut:
        return self._call(HostOut, "DELETE", f"/v1/hosts/{name}")

    # -- enrollment and attestation (the host agent) --------------------------------------

    def start_enrollment(self, request: EnrollmentStart) -> EnrollmentChallengeOut:
        return self._call(EnrollmentChallengeOut, "POST", "/v1/enrollments", body=request)

    def activate_enrollment(self, enrollment_id: str,
                            request: EnrollmentActivate) -> EnrollmentDone:
        return self._call(EnrollmentDone, "POST",
                          f"/v1/enrollments/{enrollment_id}/activation", body=request)

    def challenge(self) -> ChallengeOut:
        return self._call(ChallengeOut, "POST", "/v1/attestation/challenge")

    def submit_evidence(self, request: EvidenceIn) -> AttestationResultOut:
        return self._call(AttestationResultOut, "POST", "/v1/attestation/evidence",
                          body=request)

    # -- key servers, providers, workload keys -------------------------------------------

    def add_kmip_server(self, request: KmipServerCreate) -> KeyServerOut:
        return self._call(KeyServerOut, "POST", "/v1/key-servers/kmip", body=request)

    def add_pkcs11_server(self, request: Pkcs11ServerCreate) -> KeyServerOut:
        return self._call(KeyServerOut, "POST", "/v1/key-servers/pkcs11", body=request)

    def list_key_servers(self) -> list[KeyServerOut]:
        return self._list(KeyServerOut, "/v1/key-servers")

    def get_key_server(self, name: str) -> KeyServerOut:
        return self._call(KeyServerOut, "GET", f"/v1/key-servers/{name}")

    def remove_key_server(self, name: str) -> KeyServerOut:
        return self._call(KeyServerOut, "DELETE", f"/v1/key-servers/{name}")

    def test_key_server(self, name: str) -> KeyServerHealthOut:
        return self._call(KeyServerHealthOut, "POST", f"/v1/key-servers/{name}/test")

    def create_provider(self, request: ProviderCreate) -> ProviderOut:
        return self._call(ProviderOut, "POST", "/v1/providers", body=request)

    def list_providers(self) -> list[ProviderOut]:
        return self._list(ProviderOut, "/v1/providers")

    def get_provider(self, name: str, *, live: bool = True) -> ProviderOut:
        return self._call(ProviderOut, "GET", f"/v1/providers/{name}",
                          params={"live": str(live).lower()})

    def remove_provider(self, name: str) -> None:
        self._send("DELETE", f"/v1/providers/{name}")

    def rekey_provider(self, name: str) -> PrimaryVersionOut:
        return self._call(PrimaryVersionOut, "POST", f"/v1/providers/{name}/rekey")

    def retire_primary_version(self, name: str, version: int) -> None:
        self._send("DELETE", f"/v1/providers/{name}/versions/{version}")

    def grant_provider(self, cluster: str, provider: str) -> None:
        self._send("POST", f"/v1/clusters/{cluster}/providers",
                   body=ProviderGrant(provider=provider))

    def revoke_provider(self, cluster: str, provider: str) -> None:
        self._send("DELETE", f"/v1/clusters/{cluster}/providers/{provider}")

    def create_workload_key(self, request: WorkloadKeyCreate) -> WorkloadKeyOut:
        return self._call(WorkloadKeyOut, "POST", "/v1/keys", body=request)

    def list_workload_keys(self, *, provider: str | None = None,
                           cluster: str | None = None) -> list[WorkloadKeyOut]:
        return self._list(WorkloadKeyOut, "/v1/keys",
                          {"provider": provider, "cluster": cluster})

    def get_workload_key(self, workload: str) -> WorkloadKeyOut:
        return self._call(WorkloadKeyOut, "GET", f"/v1/keys/{workload}")

    def delete_workload_key(self, workload: str) -> None:
        self._send("DELETE", f"/v1/keys/{workload}")

    def rotate_workload_key(self, workload: str) -> WorkloadKeyOut:
        return self._call(WorkloadKeyOut, "POST", "/v1/keys/rotation",
                          body=KeyRotate(workload=workload))

    def rewrap_keys(self, request: KeyRewrap) -> list[WorkloadKeyOut]:
        return self._list(WorkloadKeyOut, "/v1/keys/rewrap", method="POST", body=request)

    def release_key(self, request: KeyReleaseIn) -> KeyReleaseOut:
        return self._call(KeyReleaseOut, "POST", "/v1/keys/release", body=request)

    def rotate_token_key(self) -> TokenKeyRotated:
        return self._call(TokenKeyRotated, "POST", "/v1/token-keys/rotation")

    def jwks(self) -> dict[str, Any]:
        response = self._send("GET", "/.well-known/jwks.json")
        try:
            document = response.json()
        except ValueError:
            raise BackendUnavailable(f"{self.base_url} answered the JWKS with an unexpected "
                                     "body") from None
        if not isinstance(document, dict):
            raise BackendUnavailable(f"{self.base_url} answered the JWKS with an unexpected "
                                     "body")
        return document

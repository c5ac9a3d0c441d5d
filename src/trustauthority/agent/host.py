"""The host agent: enroll a machine's TPM with the service, attest its boot, keep its token.

State lives in one owner-only directory (default ``/var/lib/trustauthority-agent``)::

    agent.json     server, CA file, TCTI, event log path; the host's id, name and cluster;
                   the AK and the binding key as TPM-wrapped blobs (TPM2B_PUBLIC/TPM2B_PRIVATE:
                   only this TPM, under this EK, can load them)
    credential     the host's API token (given once by the service at enrollment)
    token.jwt      the latest attestation token (while trusted)
    status.json    the last attestation's verdict

The agent never keeps TPM handles between calls: every operation loads the keys it needs and
flushes them (see `agent.tpm`), so it survives TPM resets and a crashed run leaves no handle.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import socket
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization

from trustauthority.client.http import Credentials, TrustAuthorityClient
from trustauthority.errors import (
    AuthenticationFailed,
    BackendUnavailable,
    ConfigError,
    TrustAuthorityError,
    UsageError,
)
from trustauthority.files import write_private
from trustauthority.schemas import (
    AttestationResultOut,
    ChallengeOut,
    EnrollmentActivate,
    EnrollmentStart,
    EvidenceIn,
)
from trustauthority.token import jwk_thumbprint
from trustauthority.tpm import parse_public

if TYPE_CHECKING:  # tpm2-pytss loads in ~0.3 s: only the commands that use the TPM pay for it
    from trustauthority.agent.tpm import AgentTpm, AkHandleInfo, AkKind, BindingKeyInfo, EkKind

log = logging.getLogger("trustauthority.agent")

DEFAULT_STATE_DIR = Path("/var/lib/trustauthority-agent")
DEFAULT_TCTI = "device:/dev/tpmrm0"
DEFAULT_EVENT_LOG = "/sys/kernel/security/tpm0/binary_bios_measurements"
#: the largest event log read (real ones are tens of KiB)
MAX_EVENT_LOG = 512 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ConfigError(f"agent state: {what} is not base64") from None


@dataclass(frozen=True)
class AgentState:
    server: str
    ca_file: str | None
    tcti: str
    event_log: str
    host_id: str
    host_name: str
    cluster: str | None
    ek_kind: EkKind
    ak_kind: AkKind
    ak_public: str
    ak_private: str
    ak_name: str
    binding_public: str
    binding_private: str
    binding_name: str

    @property
    def ak(self) -> AkHandleInfo:
        from trustauthority.agent.tpm import AkHandleInfo

        return AkHandleInfo(self.ak_kind, self.ek_kind, _unb64(self.ak_public, "AK"),
                            _unb64(self.ak_private, "AK"), _unb64(self.ak_name, "AK"))

    @property
    def binding_key(self) -> BindingKeyInfo:
        from trustauthority.agent.tpm import BindingKeyInfo

        return BindingKeyInfo(self.ek_kind, _unb64(self.binding_public, "binding key"),
                              _unb64(self.binding_private, "binding key"),
                              _unb64(self.binding_name, "binding key"))


@dataclass(frozen=True)
class AgentStatus:
    at: str
    status: str  # trusted | untrusted | error
    host: str
    cluster: str | None
    baseline: str | None
    token_expires_at: str | None
    detail: str


class StateDir:
    """The agent's files; every write is owner-only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _file(self, name: str) -> Path:
        return self.path / name

    def ensure(self) -> None:
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create the state directory {self.path}: "
                             f"{error.strerror or error}") from None

    def _read(self, name: str) -> str:
        try:
            return self._file(name).read_text()
        except FileNotFoundError:
            raise UsageError(f"{self.path} holds no enrolled host: run `trustauthority agent "
                             "enroll` first") from None
        except OSError as error:
            raise UsageError(f"cannot read {self._file(name)}: {error.strerror or error}"
                             ) from None

    def load(self) -> AgentState:
        try:
            return AgentState(**json.loads(self._read("agent.json")))
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{self._file('agent.json')} is damaged: {error}") from None

    def save(self, state: AgentState) -> None:
        self.ensure()
        write_private(self._file("agent.json"), json.dumps(asdict(state), indent=2) + "\n")

    def credential(self) -> str:
        return self._read("credential").strip()

    def save_credential(self, credential: str) -> None:
        self.ensure()
        write_private(self._file("credential"), credential + "\n")

    def save_token(self, token: str | None) -> None:
        path = self._file("token.jwt")
        if token is None:
            path.unlink(missing_ok=True)  # an untrusted host holds no token
        else:
            write_private(path, token + "\n")

    def token(self) -> str | None:
        try:
            return self._file("token.jwt").read_text().strip() or None
        except FileNotFoundError:
            return None

    def save_status(self, status: AgentStatus) -> None:
        write_private(self._file("status.json"), json.dumps(asdict(status), indent=2) + "\n")

    def status(self) -> AgentStatus | None:
        try:
            return AgentStatus(**json.loads(self._file("status.json").read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{self._file('status.json')} is damaged: {error}") from None


def read_event_log(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_EVENT_LOG + 1)
    except OSError as error:
        raise BackendUnavailable(f"cannot read the event log {path}: "
                                 f"{error.strerror or error}") from None
    if len(data) > MAX_EVENT_LOG:
        raise UsageError(f"the event log {path} is larger than {MAX_EVENT_LOG} bytes")
    return data


def host_facts() -> dict[str, str]:
    """What an operator wants to see next to a host's name in `host show`."""
    uname = os.uname()
    facts = {"kernel": uname.release[:256], "machine": uname.machine[:256]}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "PRETTY_NAME":
                facts["os"] = value.strip().strip('"')[:256]
    except OSError:
        pass  # a fact, not a requirement
    return facts


def enroll(state_dir: StateDir, *, server: str, join_token: str | None, tcti: str,
           event_log: str, ca_file: str | None = None, hostname: str | None = None,
           ek_kind: EkKind = "rsa", ak_kind: AkKind = "ecc",
           facts: dict[str, str] | None = None,
           ek_intermediates: tuple[bytes, ...] = ()) -> AgentState:
    """Create the AK and binding key, prove them to the service, save what it answers.

    `ek_intermediates` (DER) are CA certificates between the EK certificate and a root the
    service trusts, for TPM vendors that do not put them in the TPM."""
    from trustauthority.agent.tpm import AgentTpm

    name = hostname or socket.gethostname().split(".")[0]
    with AgentTpm(tcti) as tpm:
        ek_certificate = tpm.ek_certificate(ek_kind)
        ek_public = tpm.ek_public(ek_kind)
        ak = tpm.create_ak(ak_kind, ek_kind)
        binding = tpm.create_binding_key(ek_kind)
        with TrustAuthorityClient(server, Credentials(),
                                  ca_file=Path(ca_file) if ca_file else None) as client:
            challenge = client.start_enrollment(EnrollmentStart(
                ek_public=_b64(ek_public),
                ek_certificate=_b64(ek_certificate) if ek_certificate else None,
                ek_intermediates=[_b64(der) for der in ek_intermediates],
                ak_public=_b64(ak.public), hostname=name,
                facts=facts if facts is not None else host_facts(),
                join_token=join_token))
            secret = tpm.activate_credential(ak, _unb64(challenge.credential_blob, "blob"),
                                             _unb64(challenge.encrypted_secret, "secret"))
            done = client.activate_enrollment(challenge.enrollment_id,
                                              EnrollmentActivate(secret=_b64(secret)))
    state = AgentState(
        server=server, ca_file=ca_file, tcti=tcti, event_log=event_log, host_id=done.host.id,
        host_name=done.host.name, cluster=done.host.cluster, ek_kind=ek_kind, ak_kind=ak_kind,
        ak_public=_b64(ak.public), ak_private=_b64(ak.private), ak_name=_b64(ak.name),
        binding_public=_b64(binding.public), binding_private=_b64(binding.private),
        binding_name=_b64(binding.name))
    state_dir.save(state)
    state_dir.save_credential(done.credential)
    state_dir.save_token(None)
    log.info("enrolled as host %s (%s), state %s, cluster %s", done.host.name, done.host.id,
             done.host.state, done.host.cluster or "none: waiting for approval")
    return state


def open_client(state: AgentState, credential: str | None) -> TrustAuthorityClient:
    return TrustAuthorityClient(state.server, Credentials(token=credential),
                                ca_file=Path(state.ca_file) if state.ca_file else None)


def gather_evidence(tpm: AgentTpm, state: AgentState, challenge: ChallengeOut,
                    event_log: bytes) -> EvidenceIn:
    """Answer a challenge: a quote of the PCRs asked for and a certify of the binding key, both
    over the challenge's nonce, with the PCR values and the event log."""
    nonce = _unb64(challenge.nonce, "nonce")
    quote = tpm.quote(state.ak, nonce, challenge.pcrs, challenge.bank)
    certify_attest, certify_signature = tpm.certify(state.ak, state.binding_key, nonce)
    return EvidenceIn.model_validate({
        "nonce": challenge.nonce,
        "quote": {"attest": _b64(quote.attest), "signature": _b64(quote.signature)},
        "pcrs": {quote.bank: {str(pcr): value.hex() for pcr, value in quote.pcr_values.items()}},
        "event_log": _b64(event_log),
        "binding_key": {"public": state.binding_public, "certify_attest": _b64(certify_attest),
                        "certify_signature": _b64(certify_signature)}})


def attest(state_dir: StateDir, *, event_log: str | None = None) -> AttestationResultOut:
    """One challenge–response round; saves the token (or drops it) and the status."""
    from trustauthority.agent.tpm import AgentTpm

    state = state_dir.load()
    credential = state_dir.credential()
    log_bytes = read_event_log(event_log or state.event_log)
    with open_client(state, credential) as client:
        challenge = client.challenge()
        with AgentTpm(state.tcti) as tpm:
            evidence = gather_evidence(tpm, state, challenge, log_bytes)
        result = client.submit_evidence(evidence)
    state_dir.save_token(result.token)
    detail = result.failure.detail if result.failure is not None else (
        f"matches baseline {result.baseline}")
    state_dir.save_status(AgentStatus(
        at=datetime.now(UTC).isoformat(timespec="seconds"), status=result.status,
        host=state.host_name, cluster=result.cluster, baseline=result.baseline,
        token_expires_at=result.expires_at.isoformat() if result.expires_at else None,
        detail=detail))
    return result


def run(state_dir: StateDir, *, interval: float, jitter: float = 0.1,
        stop: threading.Event | None = None, event_log: str | None = None,
        max_rounds: int | None = None) -> None:
    """Attest every `interval` seconds (± `jitter`), back off while the service is unreachable,
    log every change of state. Returns when `stop` is set (or after `max_rounds`)."""
    stop = stop or threading.Event()
    previous: str | None = None
    backoff = 1.0
    rounds = 0
    while not stop.is_set():
        delay = interval * (1 + random.uniform(-jitter, jitter))  # noqa: S311 - spreading load
        try:
            result = attest(state_dir, event_log=event_log)
            backoff = 1.0
            if result.status != previous:
                if result.status == "trusted":
                    log.info("host is trusted (baseline %s)", result.baseline)
                else:
                    detail = result.failure.detail if result.failure else "-"
                    log.warning("host is untrusted: %s", detail)
            previous = result.status
        except (BackendUnavailable, AuthenticationFailed) as error:
            # unreachable service or TPM, or a revoked credential: keep trying, more slowly
            delay = min(backoff, interval)
            backoff = min(backoff * 2, interval)
            if previous != "error":
                log.warning("attestation failed: %s (retrying in %.0f s)", error, delay)
            previous = "error"
            # an unreachable service has not found the host untrusted: the token it holds
            # stays until it expires (the service checks the host's current state at every
            # key release anyway); a refused credential is a verdict, and drops it
            _record_error(state_dir, error,
                          keep_token=not isinstance(error, AuthenticationFailed))
        except TrustAuthorityError as error:
            if previous != "error":
                log.warning("attestation refused: %s", error)
            previous = "error"
            _record_error(state_dir, error)
        rounds += 1
        if max_rounds is not None and rounds >= max_rounds:
            return
        stop.wait(delay)


def _record_error(state_dir: StateDir, error: TrustAuthorityError, *,
                  keep_token: bool = False) -> None:
    """The status says what went wrong; the token is dropped unless `keep_token` and it is
    still unexpired (its expiry is the one the last verdict recorded)."""
    try:
        state = state_dir.load()
        last = state_dir.status()
    except TrustAuthorityError:
        return
    expires_at = last.token_expires_at if last is not None and keep_token else None
    if expires_at is None or not _in_future(expires_at) or state_dir.token() is None:
        expires_at = None
        state_dir.save_token(None)
    state_dir.save_status(AgentStatus(
        at=datetime.now(UTC).isoformat(timespec="seconds"), status="error",
        host=state.host_name, cluster=state.cluster, baseline=None, token_expires_at=expires_at,
        detail=str(error)[:512]))


def _in_future(moment: str) -> bool:
    """Whether an ISO time the agent recorded is still ahead; an unreadable one is not."""
    try:
        return datetime.fromisoformat(moment) > datetime.now(UTC)
    except (ValueError, TypeError):  # not ISO 8601, or without a time zone
        return False


def status(state_dir: StateDir) -> dict[str, Any]:
    """What the agent knows: who it is, its binding key (public: what its tokens are bound to,
    for relying parties' `token verify --binding-key`), and its last verdict (no secrets)."""
    state = state_dir.load()
    last = state_dir.status()
    jkt = pem = None
    try:
        binding = parse_public(_unb64(state.binding_public, "binding key")).public_key
        jkt = jwk_thumbprint(binding)
        pem = binding.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    except (TrustAuthorityError, ValueError):
        log.warning("the binding key in %s is damaged; enroll again", state_dir.path)
    return {"host": state.host_name, "host_id": state.host_id, "cluster": state.cluster,
            "server": state.server, "tcti": state.tcti, "event_log": state.event_log,
            "binding_key_jkt": jkt, "binding_key_pem": pem,
            "has_token": state_dir.token() is not None,
            "last": asdict(last) if last is not None else None}

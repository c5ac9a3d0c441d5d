"""Enrollment and attestation end to end: software TPMs (swtpm) booted with a simulated UEFI
boot, the host agent, and a real service over HTTPS.

A good host enrolls with a join token, attests, and gets a token that verifies against the JWKS
and is bound to its TPM-resident binding key. Every refusal the design names is checked for its
reason and its audit entry.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from tpm2_pytss import ESYS_TR
from typer.testing import CliRunner

from tests.conftest import SwtpmFactory
from tests.support.service import RunningService
from trustauthority.agent import host as agent
from trustauthority.agent import simboot
from trustauthority.agent.swtpm import SoftwareTpm, SoftwareTpmCa
from trustauthority.agent.tpm import AgentTpm
from trustauthority.cli.main import app
from trustauthority.cli.processes import free_port
from trustauthority.errors import (
    ActivationFailed,
    AuthenticationFailed,
    BackendUnavailable,
    CertificateError,
    ChallengeInvalid,
    Conflict,
    JoinTokenRefused,
    TokenExpired,
)
from trustauthority.eventlog import parse_event_log
from trustauthority.schemas import (
    AttestationResultOut,
    BaselineFromHost,
    BaselineImport,
    ClusterBaselineAdd,
    ClusterCreate,
    EnrollmentActivate,
    EnrollmentStart,
    EvidenceIn,
    HostApprove,
    JoinTokenCreate,
    TpmCaAdd,
)
from trustauthority.store.models import AttestationRecord, Host
from trustauthority.token import Jwks, verify
from trustauthority.tpm.public import parse_tpm2b_public

pytestmark = pytest.mark.swtpm


@dataclass
class Fleet:
    service: RunningService
    infra_token: str
    tmp: Path
    make_tpm: SwtpmFactory

    def join_token(self, cluster: str = "prod") -> str:
        with self.service.client(self.infra_token) as infra:
            return infra.create_join_token(JoinTokenCreate(cluster=cluster)).token

    def boot(self, image: simboot.BootImage = simboot.GOLDEN_IMAGE,
             banks: tuple[str, ...] = ("sha1", "sha256")) -> tuple[SoftwareTpm, Path]:
        """A new machine: a fresh TPM extended with `image`'s boot, and its event log."""
        tpm = self.make_tpm()
        with AgentTpm(tpm.tcti) as agent_tpm:
            _events, raw_log = simboot.measure(agent_tpm, image, banks)
        path = tpm.state_dir / "binary_bios_measurements"
        path.write_bytes(raw_log)
        return tpm, path

    def enroll(self, tpm: SoftwareTpm, log: Path, *, with_join_token: bool = True,
               join_token: str | None = None, name: str = "web") -> agent.StateDir:
        """Enroll `tpm` with the agent: a new join token, the one given, or none."""
        state_dir = agent.StateDir(tpm.state_dir / "agent")
        if with_join_token and join_token is None:
            join_token = self.join_token()
        agent.enroll(state_dir, server=self.service.url, join_token=join_token,
                     tcti=tpm.tcti, event_log=str(log), ca_file=str(self.service.ca_file),
                     hostname=name)
        return state_dir

    def audit(self, action: str) -> list[dict[str, object]]:
        with self.service.admin() as admin:
            return [entry.model_dump() for entry in admin.audit_entries(action=action,
                                                                         limit=1000)]


def _ca_bundle(ca: SoftwareTpmCa) -> str:
    return (ca.root_certificate_path.read_text() + ca.intermediate_certificate_path.read_text())


def _set_up(service: RunningService, swtpm_ca: SoftwareTpmCa, swtpm_factory: SwtpmFactory,
            tmp_path: Path) -> Fleet:
    """A trust-admin's setup: the swtpm CA trusted, cluster `prod` with the golden baseline."""
    _events, golden_log = simboot.boot_log(simboot.GOLDEN_IMAGE)
    with service.admin() as admin:
        admin.add_tpm_cas(TpmCaAdd(certificate_pem=_ca_bundle(swtpm_ca)))
        admin.create_cluster(ClusterCreate(name="prod", token_lifetime_seconds=120))
        admin.import_baseline(BaselineImport(
            name="golden", event_log_base64=base64.b64encode(golden_log).decode()))
        admin.add_cluster_baseline("prod", ClusterBaselineAdd(baseline="golden"))
    infra = service.principal_with_token("infra", "infra-admin")
    return Fleet(service, infra, tmp_path, swtpm_factory)


@pytest.fixture
def fleet(sqlite_service: RunningService, swtpm_ca: SoftwareTpmCa, swtpm_factory: SwtpmFactory,
          tmp_path: Path) -> Fleet:
    return _set_up(sqlite_service, swtpm_ca, swtpm_factory, tmp_path)


@pytest.fixture
def any_fleet(service: RunningService, swtpm_ca: SoftwareTpmCa, swtpm_factory: SwtpmFactory,
              tmp_path: Path) -> Fleet:
    """The same fleet on SQLite and on PostgreSQL (the store's SQL differs: RETURNING, locks)."""
    return _set_up(service, swtpm_ca, swtpm_factory, tmp_path)


def _evidence(fleet: Fleet, state_dir: agent.StateDir,
              log: bytes | None = None) -> tuple[EvidenceIn, str]:
    """A fresh challenge answered by the host's TPM (not yet sent), and the host's credential."""
    state = state_dir.load()
    credential = state_dir.credential()
    with agent.open_client(state, credential) as client:
        challenge = client.challenge()
    with AgentTpm(state.tcti) as tpm:
        raw_log = log if log is not None else Path(state.event_log).read_bytes()
        return agent.gather_evidence(tpm, state, challenge, raw_log), credential


def _submit(fleet: Fleet, credential: str, evidence: EvidenceIn) -> AttestationResultOut:
    with fleet.service.client(credential) as client:
        return client.submit_evidence(evidence)


def _untrusted(result: AttestationResultOut, error_type: str) -> str:
    assert result.status == "untrusted", result
    assert result.token is None
    assert result.failure is not None
    assert result.failure.type == error_type, result.failure
    return result.failure.detail


# -- the good path ----------------------------------------------------------------------------

def test_a_good_host_enrolls_attests_and_holds_a_token_bound_to_its_tpm(any_fleet: Fleet) -> None:
    fleet = any_fleet
    tpm, log = fleet.boot()
    state_dir = fleet.enroll(tpm, log)
    state = state_dir.load()
    assert state.cluster == "prod"

    result = agent.attest(state_dir)
    assert result.status == "trusted", result.failure
    assert result.baseline == "golden v1"
    assert result.token is not None
    assert state_dir.token() == result.token

    with fleet.service.admin() as admin:
        jwks = Jwks.parse(admin.jwks())
        host = admin.get_host(state.host_name)
        history = admin.host_attestations(state.host_name)
    binding_key = parse_tpm2b_public(base64.b64decode(state.binding_public)).public_key
    claims = verify(result.token, jwks, issuer=fleet.service.url, now=datetime.now(UTC),
                    binding_key=binding_key)
    assert claims.sub == state.host_id
    assert claims.cluster == "prod"
    assert claims.trusted
    assert claims.baseline is not None
    assert claims.baseline.name == "golden"
    assert claims.secure_boot is True
    assert claims.exp - claims.iat == timedelta(seconds=120)  # the cluster's token lifetime
    assert host.state == "trusted"
    assert host.binding_key_thumbprint == claims.cnf_jkt
    # what the agent shows relying parties is the key its tokens are bound to
    shown = agent.status(state_dir)
    assert shown["binding_key_jkt"] == claims.cnf_jkt
    assert load_pem_public_key(shown["binding_key_pem"].encode()) == binding_key
    assert host.facts["kernel"]  # the agent reports what an operator looks for
    assert [row.status for row in history] == ["trusted"]

    # the token is worthless after exp
    with pytest.raises(TokenExpired):
        verify(result.token, jwks, issuer=fleet.service.url,
               now=claims.exp + timedelta(minutes=5), binding_key=binding_key)

    enrolled = fleet.audit("host.enroll")
    assert enrolled[-1]["target"] == state.host_name
    assert enrolled[-1]["outcome"] == "success"
    assert fleet.audit("attestation.trusted")[-1]["target"] == state.host_name

    # same EK, same host: enrolling again keeps the identity and revokes the old credential
    old_credential = state_dir.credential()
    again = fleet.enroll(tpm, log, with_join_token=False)
    assert again.load().host_id == state.host_id
    with (pytest.raises(AuthenticationFailed),
          fleet.service.client(old_credential) as client):
        client.challenge()
    assert agent.attest(again).status == "trusted"


def test_a_revoked_host_does_not_enroll_itself_back_into_its_cluster(fleet: Fleet) -> None:
    tpm, log = fleet.boot()
    state_dir = fleet.enroll(tpm, log, name="gone")
    host_id = state_dir.load().host_id
    with fleet.service.admin() as admin:
        admin.revoke_principal(host_id)
    # the same TPM enrolls again without a join token: it is known, but waits for approval
    again = fleet.enroll(tpm, log, with_join_token=False, name="gone")
    with fleet.service.admin() as admin:
        host = admin.get_host("gone")
    assert host.state == "pending"
    assert host.cluster is None
    with pytest.raises(Conflict, match="pending"):
        agent.attest(again)


def test_a_cleared_tpm_recovers_by_enrolling_again(fleet: Fleet) -> None:
    tpm, log = fleet.boot()
    state_dir = fleet.enroll(tpm, log, name="cleared")
    assert agent.attest(state_dir).status == "trusted"
    # TPM2_Clear (platform hierarchy, as firmware does) resets clock and counters to zero
    tpm.reboot()
    with AgentTpm(tpm.tcti) as agent_tpm:
        agent_tpm._ectx.clear(ESYS_TR.PLATFORM)
    with AgentTpm(tpm.tcti) as agent_tpm:
        _events, raw_log = simboot.measure(agent_tpm)
    log.write_bytes(raw_log)
    # its keys are gone; enrolling again (a new AK) starts a new clock history
    again = fleet.enroll(tpm, log, name="cleared")
    assert agent.attest(again).status == "trusted"


def test_a_host_without_join_token_waits_for_approval(fleet: Fleet) -> None:
    tpm, log = fleet.boot()
    state_dir = fleet.enroll(tpm, log, with_join_token=False, name="db")
    with fleet.service.admin() as admin:
        assert admin.get_host("db").state == "pending"
    with pytest.raises(Conflict, match="pending"):
        agent.attest(state_dir)
    with fleet.service.client(fleet.infra_token) as infra:
        approved = infra.approve_host("db", HostApprove(cluster="prod"))
    assert approved.state == "enrolled"
    assert approved.cluster == "prod"
    assert agent.attest(state_dir).status == "trusted"


# -- enrollment refusals ------------------------------------------------------------------------

def test_a_join_token_is_single_use(fleet: Fleet) -> None:
    token = fleet.join_token()
    first, first_log = fleet.boot()
    fleet.enroll(first, first_log, join_token=token, name="one")
    second, second_log = fleet.boot()
    with pytest.raises(JoinTokenRefused, match="already used"):
        fleet.enroll(second, second_log, join_token=token, name="two")
    refused = [entry for entry in fleet.audit("host.enroll") if entry["outcome"] == "denied"]
    assert "already used" in str(refused[-1]["details"])


def test_an_ek_from_an_unknown_tpm_ca_is_refused(fleet: Fleet) -> None:
    with fleet.service.admin() as admin:
        for ca in admin.list_tpm_cas():
            admin.remove_tpm_ca(ca.fingerprint_sha256)
    tpm, log = fleet.boot()
    with pytest.raises(CertificateError, match="trusted"):
        fleet.enroll(tpm, log)
    refused = fleet.audit("host.enroll")[-1]
    assert refused["outcome"] == "denied"
    assert "certificate_rejected" in str(refused["details"])


def test_an_ak_from_another_tpm_cannot_activate_the_credential(fleet: Fleet) -> None:
    tpm_a, _ = fleet.boot()
    tpm_b, _ = fleet.boot()
    with AgentTpm(tpm_a.tcti) as a, AgentTpm(tpm_b.tcti) as b:
        ek_certificate = a.ek_certificate("rsa")
        assert ek_certificate is not None
        foreign_ak = b.create_ak("ecc", "rsa")
        with fleet.service.client() as anonymous:
            challenge = anonymous.start_enrollment(EnrollmentStart(
                ek_public=base64.b64encode(a.ek_public("rsa")).decode(),
                ek_certificate=base64.b64encode(ek_certificate).decode(),
                ak_public=base64.b64encode(foreign_ak.public).decode(), hostname="spoof",
                join_token=fleet.join_token()))
            blob = base64.b64decode(challenge.credential_blob)
            secret = base64.b64decode(challenge.encrypted_secret)
            # TPM B holds the AK but not the EK: its TPM cannot open the credential
            with pytest.raises(BackendUnavailable, match="ActivateCredential"):
                b.activate_credential(foreign_ak, blob, secret)
            # and a guess is refused, once and for all
            with pytest.raises(ActivationFailed):
                anonymous.activate_enrollment(challenge.enrollment_id, EnrollmentActivate(
                    secret=base64.b64encode(bytes(32)).decode()))
    assert fleet.audit("host.enroll")[-1]["outcome"] == "denied"
    with fleet.service.admin() as admin:
        assert [host.name for host in admin.list_hosts()] == []


# -- attestation refusals -----------------------------------------------------------------------

@pytest.fixture
def enrolled(fleet: Fleet) -> agent.StateDir:
    tpm, log = fleet.boot()
    return fleet.enroll(tpm, log)


def test_a_replayed_nonce_is_refused(any_fleet: Fleet) -> None:
    fleet = any_fleet
    tpm, log = fleet.boot()
    enrolled = fleet.enroll(tpm, log)
    evidence, credential = _evidence(fleet, enrolled)
    assert _submit(fleet, credential, evidence).status == "trusted"
    with pytest.raises(ChallengeInvalid, match="already used"):
        _submit(fleet, credential, evidence)
    assert fleet.audit("attestation.refused")[-1]["outcome"] == "denied"


def test_an_expired_nonce_is_refused(fleet: Fleet, enrolled: agent.StateDir) -> None:
    evidence, credential = _evidence(fleet, enrolled)
    attestation = fleet.service.platform.attestation
    real_clock = attestation._clock
    attestation._clock = lambda: real_clock() + timedelta(minutes=3)
    try:
        with pytest.raises(ChallengeInvalid, match="expired"):
            _submit(fleet, credential, evidence)
    finally:
        attestation._clock = real_clock
    with pytest.raises(ChallengeInvalid):  # spent, even though it failed
        _submit(fleet, credential, evidence)


def test_a_quote_by_another_hosts_ak_is_refused(fleet: Fleet, enrolled: agent.StateDir) -> None:
    other_tpm, other_log = fleet.boot()
    other = fleet.enroll(other_tpm, other_log, name="other")
    evidence, credential = _evidence(fleet, enrolled)
    # the other host answers this host's challenge with its own AK
    state = other.load()
    with AgentTpm(state.tcti) as tpm:
        challenge_nonce = base64.b64decode(evidence.nonce)
        quoted = sorted(int(pcr) for pcr in evidence.pcrs["sha256"])
        quote = tpm.quote(state.ak, challenge_nonce, quoted)
    forged = evidence.model_copy(update={"quote": evidence.quote.model_copy(update={
        "attest": base64.b64encode(quote.attest).decode(),
        "signature": base64.b64encode(quote.signature).decode()})})
    detail = _untrusted(_submit(fleet, credential, forged), "signature_invalid")
    assert "signature" in detail or "qualifiedSigner" in detail
    failures = fleet.audit("attestation.failure")
    assert failures[-1]["target"] == enrolled.load().host_name
    with fleet.service.admin() as admin:
        host = admin.get_host(enrolled.load().host_name)
    assert host.state == "untrusted"
    assert host.state_reason


def test_a_changed_kernel_in_log_and_pcrs_alike_fails_the_appraisal(fleet: Fleet) -> None:
    tpm, log = fleet.boot(simboot.MODIFIED_KERNEL_IMAGE)
    state_dir = fleet.enroll(tpm, log, name="rootkit")
    result = agent.attest(state_dir)
    detail = _untrusted(result, "policy_violation")
    assert result.failure is not None
    assert result.failure.closest_baseline == "golden v1"
    kernel = [d for d in result.failure.differences if d.component.startswith("kernel")
              or "kernel" in (d.found_label or "") or "vmlinuz" in (d.found_label or "")]
    assert kernel, (detail, result.failure.differences)
    assert kernel[0].expected != kernel[0].found
    assert kernel[0].event_index is not None
    assert state_dir.token() is None
    # the same report is kept: the API's history and `host report` give it to operators later
    with fleet.service.admin() as admin:
        [recorded] = admin.host_attestations("rootkit")
    assert recorded.status == "untrusted"
    assert recorded.failure == result.failure
    report = CliRunner().invoke(app, ["--server", fleet.service.url, "--ca",
                                      str(fleet.service.ca_file), "--token", fleet.infra_token,
                                      "host", "report", "rootkit"])
    assert report.exit_code == 0, report.output
    assert "closest baseline: golden v1" in report.output
    assert str(kernel[0].event_index) in report.output
    assert (kernel[0].found_label or kernel[0].found or "")[:20] in report.output


def test_secure_boot_off_fails_the_appraisal(fleet: Fleet) -> None:
    tpm, log = fleet.boot(simboot.BootImage(secure_boot=False))
    result = agent.attest(fleet.enroll(tpm, log, name="insecure"))
    detail = _untrusted(result, "policy_violation")
    assert "secure boot" in detail.lower()


def _records(log: bytes) -> tuple[bytes, list[bytes]]:
    """Split a crypto-agile log into its header event and its events (sha1+sha256 digests)."""
    parsed = parse_event_log(log)
    offsets = [event.offset for event in parsed.events] + [len(log)]
    chunks = [log[offsets[i]:offsets[i + 1]] for i in range(len(parsed.events))]
    return log[:offsets[0]], chunks


@pytest.mark.parametrize("damage", ["truncated", "reordered", "padded"])
def test_a_damaged_event_log_is_refused(fleet: Fleet, enrolled: agent.StateDir,
                                        damage: str) -> None:
    raw = Path(enrolled.load().event_log).read_bytes()
    header, events = _records(raw)
    damaged: Callable[[], bytes] = {
        "truncated": lambda: header + b"".join(events[:-2]),
        "reordered": lambda: header + b"".join([*events[:3], events[4], events[3], *events[5:]]),
        "padded": lambda: raw + events[-1],
    }[damage]
    evidence, credential = _evidence(fleet, enrolled, log=damaged())
    result = _submit(fleet, credential, evidence)
    assert result.status == "untrusted"
    assert result.failure is not None
    assert result.failure.type in ("event_log_mismatch", "malformed_event_log"), result.failure


def test_relabelled_pcr_values_are_refused(fleet: Fleet, enrolled: agent.StateDir) -> None:
    evidence, credential = _evidence(fleet, enrolled)
    values = dict(evidence.pcrs["sha256"])
    values["4"], values["7"] = values["7"], values["4"]
    relabelled = evidence.model_copy(update={"pcrs": {"sha256": values}})
    _untrusted(_submit(fleet, credential, relabelled), "pcr_digest_mismatch")


def test_sha1_only_evidence_is_refused(fleet: Fleet, enrolled: agent.StateDir) -> None:
    state = enrolled.load()
    with agent.open_client(state, enrolled.credential()) as client:
        challenge = client.challenge()
    sha1_challenge = challenge.model_copy(update={"bank": "sha1"})
    with AgentTpm(state.tcti) as tpm:
        evidence = agent.gather_evidence(tpm, state, sha1_challenge,
                                         Path(state.event_log).read_bytes())
    _untrusted(_submit(fleet, enrolled.credential(), evidence), "algorithm_not_allowed")


def test_a_binding_key_not_certified_by_the_ak_is_refused(fleet: Fleet,
                                                          enrolled: agent.StateDir) -> None:
    evidence, credential = _evidence(fleet, enrolled)
    state = enrolled.load()
    with AgentTpm(state.tcti) as tpm:
        other_key = tpm.create_binding_key("rsa")
    swapped = evidence.model_copy(update={"binding_key": evidence.binding_key.model_copy(
        update={"public": base64.b64encode(other_key.public).decode()})})
    _untrusted(_submit(fleet, credential, swapped), "key_attributes_rejected")


def test_the_cli_enrolls_attests_and_shows_the_fleet(fleet: Fleet) -> None:
    tpm, log = fleet.boot()
    runner = CliRunner()
    state_dir = str(tpm.state_dir / "cli-agent")
    enrolled = runner.invoke(app, ["agent", "enroll", "--server", fleet.service.url, "--ca",
                                   str(fleet.service.ca_file), "--join-token",
                                   fleet.join_token(), "--tcti", tpm.tcti, "--eventlog",
                                   str(log), "--hostname", "cli-host", "--state-dir",
                                   state_dir])
    assert enrolled.exit_code == 0, enrolled.output
    attested = runner.invoke(app, ["agent", "attest", "--state-dir", state_dir, "--json"])
    assert attested.exit_code == 0, attested.output
    assert '"trusted"' in attested.output
    assert "eyJ" not in attested.output  # no token printed
    status = runner.invoke(app, ["agent", "status", "--state-dir", state_dir])
    assert "trusted" in status.output
    assert "token held: yes" in status.output
    listed = runner.invoke(app, ["--server", fleet.service.url, "--ca",
                                 str(fleet.service.ca_file), "--token", fleet.infra_token,
                                 "host", "list"])
    assert listed.exit_code == 0
    assert "cli-host" in listed.output
    assert "trusted" in listed.output
    bad_log = tpm.state_dir / "other.bin"
    bad_log.write_bytes(simboot.boot_log(simboot.MODIFIED_KERNEL_IMAGE)[1])
    refused = runner.invoke(app, ["agent", "attest", "--state-dir", state_dir,
                                  "--eventlog", str(bad_log)])
    assert refused.exit_code == 1, refused.output
    assert "untrusted" in refused.output
    reported = runner.invoke(app, ["--server", fleet.service.url, "--ca",
                                   str(fleet.service.ca_file), "--token", fleet.infra_token,
                                   "host", "report", "cli-host", "--json"])
    assert reported.exit_code == 0, reported.output
    document = json.loads(reported.output)
    assert document["status"] == "untrusted"
    # the log does not replay to the quoted PCRs: refused before any baseline is compared
    assert document["failure"]["type"] == "event_log_mismatch", document
    assert document["failure"]["detail"] == document["reason"]


def test_a_baseline_is_imported_from_a_known_good_hosts_last_evidence(fleet: Fleet) -> None:
    tpm, log = fleet.boot()
    state_dir = fleet.enroll(tpm, log, name="known-good")
    with fleet.service.admin() as admin:
        with pytest.raises(Conflict, match="no verified evidence"):
            admin.import_baseline_from_host(BaselineFromHost(name="from-host",
                                                             host="known-good"))
        assert agent.attest(state_dir).status == "trusted"
        made = admin.import_baseline_from_host(BaselineFromHost(name="from-host",
                                                                host="known-good"))
        assert made.source.startswith("host:known-good:")
        assert admin.diff_baselines("golden", "from-host").differences == []


def test_rotating_the_signing_key_keeps_old_tokens_verifiable_until_they_expire(
        fleet: Fleet, enrolled: agent.StateDir) -> None:
    before = agent.attest(enrolled).token
    assert before is not None
    with fleet.service.admin() as admin:
        rotated = admin.rotate_token_key()
        after = agent.attest(enrolled).token
        assert after is not None
        jwks = Jwks.parse(admin.jwks())
    assert {key.kid for key in jwks.keys} == {rotated.kid, rotated.retired_kid}
    now = datetime.now(UTC)
    assert verify(before, jwks, issuer=fleet.service.url, now=now).sub == enrolled.load().host_id
    assert verify(after, jwks, issuer=fleet.service.url, now=now).jti != verify(
        before, jwks, issuer=fleet.service.url, now=now).jti
    assert fleet.audit("token-key.rotate")[-1]["target"] == rotated.kid
    # a day later no token of the old key is valid any more: the JWKS drops it
    platform = fleet.service.platform
    real_clock = platform.clock
    platform.clock = lambda: real_clock() + timedelta(days=1, minutes=11)
    try:
        with fleet.service.admin() as admin:
            assert [key.kid for key in Jwks.parse(admin.jwks()).keys] == [rotated.kid]
    finally:
        platform.clock = real_clock


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(days=3650))
                   .not_valid_after(now + timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                False, False), True)
                   .sign(key, hashes.SHA256()))
    return key, certificate


def test_an_expired_ek_certificate_is_refused(fleet: Fleet) -> None:
    ca_key, ca_certificate = _ca("Expired Vendor TPM CA")
    with fleet.service.admin() as admin:
        admin.add_tpm_cas(TpmCaAdd(certificate_pem=ca_certificate.public_bytes(
            serialization.Encoding.PEM).decode()))
    tpm, _log = fleet.boot()
    with AgentTpm(tpm.tcti) as agent_tpm:
        ek_public = agent_tpm.ek_public("rsa")
        ak = agent_tpm.create_ak("ecc", "rsa")
    now = datetime.now(UTC)
    expired = (x509.CertificateBuilder()
               .subject_name(x509.Name([]))
               .issuer_name(ca_certificate.subject)
               .public_key(parse_tpm2b_public(ek_public).public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=800))
               .not_valid_after(now - timedelta(days=30))
               .sign(ca_key, hashes.SHA256()))
    with fleet.service.client() as anonymous, pytest.raises(CertificateError, match="expired"):
        anonymous.start_enrollment(EnrollmentStart(
            ek_public=base64.b64encode(ek_public).decode(),
            ek_certificate=base64.b64encode(
                expired.public_bytes(serialization.Encoding.DER)).decode(),
            ak_public=base64.b64encode(ak.public).decode(), hostname="old-tpm",
            join_token=fleet.join_token()))
    refused = fleet.audit("host.enroll")[-1]
    assert refused["outcome"] == "denied"
    assert "expired" in str(refused["details"])


def test_a_host_that_stops_attesting_goes_stale(fleet: Fleet, enrolled: agent.StateDir) -> None:
    assert agent.attest(enrolled).status == "trusted"
    name = enrolled.load().host_name
    hosts = fleet.service.platform.hosts
    real_clock = hosts._clock
    # the cluster's interval is 300 s; stale after three missed rounds
    hosts._clock = lambda: real_clock() + timedelta(seconds=3 * 300 + 5)
    try:
        with fleet.service.admin() as admin:
            host = admin.get_host(name)
    finally:
        hosts._clock = real_clock
    assert host.state == "stale"
    assert "no attestation since" in host.state_reason


def test_a_challenge_starts_the_history_sweep_after_its_response(
        fleet: Fleet, enrolled: agent.StateDir) -> None:
    """The served route runs the sweep in a thread once the response is out: the challenge
    neither waits for it nor holds the write lock meanwhile."""
    platform = fleet.service.platform
    with platform.db.session() as session:
        host_id = session.scalars(select(Host.id).where(
            Host.name == enrolled.load().host_name)).one()
        session.add(AttestationRecord(host_id=host_id, status="trusted", reason="long ago",
                                      at=datetime.now(UTC) - timedelta(days=400)))

    def reasons() -> list[str]:
        with platform.db.session(read_only=True) as session:
            return list(session.scalars(select(AttestationRecord.reason).where(
                AttestationRecord.host_id == host_id)))

    assert platform.attestation.sweep_due()  # no challenge yet since the service started
    assert agent.attest(enrolled).status == "trusted"
    deadline = time.monotonic() + 10
    while "long ago" in reasons():
        assert time.monotonic() < deadline, "the challenge started no sweep"
        time.sleep(0.05)
    assert len(reasons()) == 1  # this attestation's record stays
    assert not platform.attestation.sweep_due()


def test_the_agent_loop_keeps_the_token_and_backs_off_when_the_service_is_away(
        fleet: Fleet, enrolled: agent.StateDir) -> None:
    agent.run(enrolled, interval=1, jitter=0, max_rounds=2)
    last = enrolled.status()
    assert last is not None
    assert last.status == "trusted"
    assert enrolled.token() is not None
    token, expires_at = enrolled.token(), last.token_expires_at
    assert expires_at is not None
    # the service moves away: the loop records the error, without raising, and keeps the
    # token it holds while that is unexpired
    state = enrolled.load()
    enrolled.save(dataclasses.replace(state, server=f"https://127.0.0.1:{free_port()}"))
    agent.run(enrolled, interval=1, jitter=0, max_rounds=2)
    last = enrolled.status()
    assert last is not None
    assert last.status == "error"
    assert "cannot reach" in last.detail
    assert (enrolled.token(), last.token_expires_at) == (token, expires_at)
    # once its expiry has passed, the next failed round drops it
    long_ago = datetime(2000, 1, 1, tzinfo=UTC).isoformat()
    enrolled.save_status(dataclasses.replace(last, token_expires_at=long_ago))
    agent.run(enrolled, interval=1, jitter=0, max_rounds=1)
    last = enrolled.status()
    assert last is not None
    assert (enrolled.token(), last.token_expires_at) == (None, None)


def test_intermediates_the_host_sends_complete_its_ek_chain(fleet: Fleet,
                                                             swtpm_ca: SoftwareTpmCa) -> None:
    with fleet.service.admin() as admin:  # trust the vendor's root only
        for ca in admin.list_tpm_cas():
            if not ca.is_root:
                admin.remove_tpm_ca(ca.fingerprint_sha256)
    tpm, log = fleet.boot()
    with pytest.raises(CertificateError):
        fleet.enroll(tpm, log)
    result = CliRunner().invoke(app, [
        "agent", "enroll", "--server", fleet.service.url, "--ca", str(fleet.service.ca_file),
        "--join-token", fleet.join_token(), "--tcti", tpm.tcti, "--eventlog", str(log),
        "--ek-intermediate", str(swtpm_ca.intermediate_certificate_path),
        "--state-dir", str(tpm.state_dir / "agent")])
    assert result.exit_code == 0, result.output
    assert agent.attest(agent.StateDir(tpm.state_dir / "agent")).status == "trusted"

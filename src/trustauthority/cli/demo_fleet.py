"""The whole story on real parts (`ta demo`): two roles, three TPM hosts, one workload key.

The service runs as `ta serve` over HTTPS on SQLite, the key server as `ta kms serve` (PyKMIP's
KMIP server over mutual TLS), each host is a software TPM (swtpm) with an EK certificate and a
simulated measured boot, driven by the same agent code as `ta agent`. The trust-admin (alice)
and the infra-admin (bob) are separate principals with their own tokens and act only through the
API. Every step checks its outcome: a wrong one stops the demo with an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from trustauthority.agent import host as agent
from trustauthority.agent import simboot
from trustauthority.agent.keys import fetch_key, unverified_expiry
from trustauthority.agent.swtpm import SoftwareTpm, SoftwareTpmCa
from trustauthority.agent.tpm import AgentTpm
from trustauthority.agent.workload import decrypt_file, encrypt_file
from trustauthority.cli.demo_steps import DemoFailure, expect_refusal, info, ok, step
from trustauthority.cli.host import host_table
from trustauthority.cli.output import PlainTable, console, styled
from trustauthority.cli.processes import (
    TRUSTAUTHORITY,
    BackgroundProcess,
    free_port,
    stop_recorded,
)
from trustauthority.cli.profile import Profile, save_profile
from trustauthority.client import Credentials, TrustAuthorityClient
from trustauthority.errors import (
    KeyReleaseRefused,
    PermissionDenied,
    TokenBindingMismatch,
    TrustAuthorityError,
)
from trustauthority.keyserver.embedded import KmsFiles, ready
from trustauthority.schemas import (
    AttestationResultOut,
    BaselineFromHost,
    ClusterBaselineAdd,
    ClusterCreate,
    JoinTokenCreate,
    KeyReleaseIn,
    KmipServerCreate,
    PrincipalCreate,
    ProviderCreate,
    TokenCreate,
    TpmCaAdd,
    WorkloadKeyCreate,
)
from trustauthority.service.setup import initialise

#: a file in the data dir that says the demo made it, so a re-run may wipe it
MARKER = ".trustauthority-demo"
PIDS_FILE = "processes.json"
SUMMARY_FILE = "summary.json"
CLUSTER = "prod"
PROVIDER = "primary-keys"
KEY_SERVER = "kms-1"
WORKLOAD = "vm-web-01/disk0"
IMAGE_BYTES = 4 * 1024 * 1024
#: the profiles `ta --profile …` uses afterwards to explore the demo's service
TRUST_PROFILE = "demo-trust"
INFRA_PROFILE = "demo-infra"
#: name -> what it boots; node-1 is the golden host the baseline comes from
FLEET = (("node-1", simboot.GOLDEN_IMAGE), ("node-2", simboot.GOLDEN_IMAGE),
         ("node-3", simboot.MODIFIED_KERNEL_IMAGE))


@dataclass
class DemoHost:
    name: str
    tpm: SoftwareTpm
    event_log: Path
    state_dir: agent.StateDir

    def boot(self, image: simboot.BootImage) -> None:
        """Measure `image`'s boot into the TPM and write the firmware event log beside it."""
        with AgentTpm(self.tpm.tcti) as tpm:
            _events, raw_log = simboot.measure(tpm, image)
        self.event_log.write_bytes(raw_log)


@dataclass
class Outcomes:
    """What each step found; saved as summary.json for scripts and the end-to-end test."""

    #: each host's state after the fleet's attestation round (step 5), and at the end
    hosts: dict[str, str] = field(default_factory=dict)
    final: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    releases: dict[str, str] = field(default_factory=dict)
    audit: dict[str, object] = field(default_factory=dict)

    def to_json(self, **extra: object) -> dict[str, object]:
        return {"hosts": self.hosts, "final": self.final, "reasons": self.reasons,
                "releases": self.releases, "audit": self.audit, **extra}


def prepare_data_dir(root: Path) -> None:
    """An empty directory, or one a previous demo left (wiped); never someone else's files."""
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise DemoFailure(f"{root} is not empty and was not made by the demo: "
                              "choose another --data-dir")
        stop_recorded(root / PIDS_FILE)  # a previous run left up with --keep-running
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    (root / MARKER).write_text("made by `trustauthority demo`; a new run replaces it\n")


class FleetDemo:
    """One run of the demo in `root`; `stop()` ends every process it started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tpm_ca = SoftwareTpmCa(root / "tpm-ca")
        self.kms_files = KmsFiles.at(root / "kms")
        self.kms_port = free_port()
        self.service: BackgroundProcess | None = None
        self.kms: BackgroundProcess | None = None
        self.hosts: dict[str, DemoHost] = {}
        self.outcomes = Outcomes()
        self.url = ""
        self.ca_file = Path()
        self.alice_token = ""
        self.bob_token = ""
        self.blob = ""

    # -- the parts -------------------------------------------------------------------------

    def _client(self, token: str) -> TrustAuthorityClient:
        return TrustAuthorityClient(self.url, Credentials(token=token), ca_file=self.ca_file)

    def alice(self) -> TrustAuthorityClient:
        """The security team's trust-admin."""
        return self._client(self.alice_token)

    def bob(self) -> TrustAuthorityClient:
        """The infrastructure team's infra-admin."""
        return self._client(self.bob_token)

    def _service_ready(self) -> bool:
        try:
            with self._client(self.alice_token) as client:
                client.health()
        except TrustAuthorityError:
            return False
        return True

    def _kms_ready(self) -> bool:
        return ready(self.kms_files, "127.0.0.1", self.kms_port)

    def start_service(self) -> None:
        port = free_port()
        result = initialise(self.root / "service", admin_name="alice", listen_port=port)
        self.url, self.ca_file, self.alice_token = result.url, result.ca_file, result.admin_token
        self.service = BackgroundProcess(
            "the service", [TRUSTAUTHORITY, "serve", "--data-dir", str(result.data_dir)],
            self.root / "service.log")
        self.service.start(self._service_ready)

    def start_kms(self) -> None:
        self.kms = BackgroundProcess(
            "the KMIP server", [TRUSTAUTHORITY, "kms", "serve", "--data-dir",
                                str(self.kms_files.data_dir), "--port", str(self.kms_port)],
            self.root / "kms.log")
        self.kms.start(self._kms_ready)

    def new_host(self, name: str) -> DemoHost:
        tpm = SoftwareTpm(self.root / "hosts" / name, self.tpm_ca)
        tpm.provision()
        tpm.start()
        host = DemoHost(name, tpm, tpm.state_dir / "binary_bios_measurements",
                        agent.StateDir(tpm.state_dir / "agent"))
        self.hosts[name] = host
        return host

    def pids(self) -> dict[str, int]:
        pids = {name: process.pid for name, process in (("service", self.service),
                                                         ("kms", self.kms))
                if process is not None and process.pid is not None}
        for name, host in self.hosts.items():
            if host.tpm.pid is not None:
                pids[f"swtpm {name}"] = host.tpm.pid
        return pids

    def stop(self) -> None:
        for host in self.hosts.values():
            host.tpm.stop()
        for process in (self.service, self.kms):
            if process is not None:
                process.stop()

    # -- the story -------------------------------------------------------------------------

    def run(self) -> None:
        self.roles()
        self.define_trust()
        self.enroll_hosts()
        self.baseline_from_golden_host()
        self.attest_all()
        self.workload_key()
        self.boot_changes()
        self.audit_trail()
        self.save_profiles()

    def roles(self) -> None:
        with step("1. Two teams, two roles"):
            with console.status("starting the service (`ta serve`, HTTPS, SQLite)"):
                self.start_service()
            ok(f"service up at {self.url} (its own TLS CA; SQLite store; audit log chained)")
            with self.alice() as alice:
                alice.create_principal(PrincipalCreate(
                    name="bob", roles=["infra-admin"], description="infrastructure team"))
                self.bob_token = alice.create_token("bob", TokenCreate(label="demo")).token
            ok("alice — trust-admin (security team): decides which TPMs and boot states "
               "are trusted, and which key providers a cluster may use")
            ok("bob — infra-admin (infrastructure team): enrolls hosts, creates workload keys")

    def define_trust(self) -> None:
        with step("2. The security team defines trust (alice)"):
            with self.alice() as alice:
                bundle = (self.tpm_ca.ensure().root_certificate_path.read_text()
                          + self.tpm_ca.intermediate_certificate_path.read_text())
                cas = alice.add_tpm_cas(TpmCaAdd(certificate_pem=bundle))
                ok(f"TPM manufacturer CA trusted ({len(cas)} certificates: root and "
                   "intermediate of the software TPMs' vendor)")
                with console.status("starting the KMIP key server (`ta kms serve`)"):
                    self.start_kms()
                files = self.kms_files
                alice.add_kmip_server(KmipServerCreate(
                    name=KEY_SERVER, host="127.0.0.1", port=self.kms_port,
                    ca_pem=files.ca_certificate.read_text(),
                    certificate_pem=files.client_certificate.read_text(),
                    key_pem=files.client_key.read_text()))
                health = alice.test_key_server(KEY_SERVER)
                if not health.healthy:
                    raise DemoFailure(f"key server {KEY_SERVER} is not healthy: {health.detail}")
                ok(f"key server {KEY_SERVER} registered (KMIP over mutual TLS): client trusts "
                   f"server, server trusts client, round trip {health.latency_ms or 0:.0f} ms")
                provider = alice.create_provider(ProviderCreate(
                    name=PROVIDER, servers=[KEY_SERVER], create_primary_key=True))
                ok(f"trusted key provider {PROVIDER}: its primary key (KMIP id "
                   f"{provider.versions[-1].key_id}) was created on {KEY_SERVER} and never "
                   "leaves it")
                alice.create_cluster(ClusterCreate(
                    name=CLUSTER, description="production hosts", token_lifetime_seconds=600))
                alice.grant_provider(CLUSTER, PROVIDER)
                ok(f"trusted cluster {CLUSTER} (Secure Boot required), granted {PROVIDER}")
                expect_refusal("alice tries to let a host join the cluster (infra's job)",
                               PermissionDenied,
                               lambda: alice.create_join_token(JoinTokenCreate(cluster=CLUSTER)))
            with self.bob() as bob:
                expect_refusal("bob tries to trust another TPM vendor (security's job)",
                               PermissionDenied,
                               lambda: bob.add_tpm_cas(TpmCaAdd(certificate_pem=bundle)))

    def enroll_hosts(self) -> None:
        with step("3. The infrastructure team enrolls three hosts (bob)"):
            with self.bob() as bob:
                tokens = [bob.create_join_token(JoinTokenCreate(cluster=CLUSTER)).token
                          for _ in FLEET]
            ok(f"{len(tokens)} single-use join tokens for cluster {CLUSTER}")
            for (name, image), join_token in zip(FLEET, tokens, strict=True):
                with console.status(f"{name}: software TPM with EK certificate, measured boot"):
                    host = self.new_host(name)
                    host.boot(image)
                    agent.enroll(host.state_dir, server=self.url, join_token=join_token,
                                 tcti=host.tpm.tcti, event_log=str(host.event_log),
                                 ca_file=str(self.ca_file), hostname=name,
                                 facts={"model": "swtpm", "boot": _label(image)})
                ok(f"{name}: EK certificate verified, AK proven by MakeCredential/"
                   f"ActivateCredential, binding key created — boots {_label(image)}")

    def baseline_from_golden_host(self) -> None:
        with step("4. A baseline from the golden host (alice)"):
            golden = self.hosts["node-1"]
            first = agent.attest(golden.state_dir)
            if first.status != "untrusted":
                raise DemoFailure("a cluster without baselines trusted a host")
            info(f"node-1 attested before any baseline: untrusted "
                 f"({first.failure.detail if first.failure else '-'})")
            with self.alice() as alice:
                baseline = alice.import_baseline_from_host(
                    BaselineFromHost(name="golden", host="node-1"))
                alice.add_cluster_baseline(CLUSTER, ClusterBaselineAdd(baseline="golden"))
            components = baseline.baseline.get("components", [])
            count = len(components) if isinstance(components, list) else 0
            ok(f"baseline golden v{baseline.version} imported from node-1's verified event log: "
               f"{count} measured components (firmware, Secure Boot keys, shim, GRUB, kernel, "
               "initrd, command line)")
            ok(f"cluster {CLUSTER} accepts baseline golden")

    def attest_all(self) -> None:
        with step("5. Every host attests (TPM quote + event log, fresh nonce)"):
            results: dict[str, AttestationResultOut] = {}
            for name, host in self.hosts.items():
                results[name] = agent.attest(host.state_dir)
                self.outcomes.hosts[name] = results[name].status
            with self.bob() as bob:
                console.print(host_table(bob.list_hosts()))
            expected = {"node-1": "trusted", "node-2": "trusted", "node-3": "untrusted"}
            if self.outcomes.hosts != expected:
                raise DemoFailure(f"hosts attested {self.outcomes.hosts}, not {expected}")
            failure = results["node-3"].failure
            if failure is None or not failure.differences:
                raise DemoFailure("node-3 is untrusted without a reason")
            self.outcomes.reasons["node-3"] = failure.detail
            ok("node-1 and node-2 are trusted and hold attestation tokens bound to their TPMs")
            console.print(f"  [red]✗[/] node-3 is untrusted: {failure.detail}", highlight=False)
            for difference in failure.differences[:3]:
                where = f"PCR {difference.pcr}" if difference.pcr is not None else "log"
                event = (f", event #{difference.event_index}"
                         if difference.event_index is not None else "")
                label = difference.found_label or difference.expected_label
                info(f"{where} {difference.component}{event}"
                     f"{f' ({label})' if label else ''}: expected "
                     f"{_short(difference.expected)}, found {_short(difference.found)}")

    def workload_key(self) -> None:
        with step("6. A workload key, released only to trusted hosts"):
            with self.bob() as bob:
                key = bob.create_workload_key(WorkloadKeyCreate(
                    provider=PROVIDER, workload=WORKLOAD, cluster=CLUSTER))
            self.blob = key.blob
            ok(f"bob created the key of {WORKLOAD}: wrapped on {KEY_SERVER} under the primary "
               f"key; the service stores only the blob ({len(key.blob)} chars, {key.id})")
            node1, node3 = self.hosts["node-1"], self.hosts["node-3"]
            image = node1.tpm.state_dir / "disk0.img"
            sealed = node1.tpm.state_dir / "disk0.img.ta"
            image.write_bytes(os.urandom(IMAGE_BYTES))
            digest = hashlib.sha256(image.read_bytes()).hexdigest()
            kek = fetch_key(node1.state_dir, key.blob, WORKLOAD)
            encrypt_file(image, sealed, workload=WORKLOAD, blob=key.blob, kek=kek)
            del kek
            image.unlink()
            ok(f"node-1 encrypted disk0.img ({IMAGE_BYTES // 2**20} MiB, AES-256-XTS); the "
               "plaintext is gone, the wrapped key sits in the file's header")
            opened = node1.tpm.state_dir / "disk0.opened"
            decrypt_file(sealed, opened, lambda header: fetch_key(
                node1.state_dir, header.blob, header.workload))
            if hashlib.sha256(opened.read_bytes()).hexdigest() != digest:
                raise DemoFailure("the unlocked image differs from the original")
            opened.unlink()
            self.outcomes.releases["node-1"] = "released"
            ok("later, node-1 unlocks it: attested key release, the key encrypted to its TPM's "
               "binding key and opened inside the TPM — the image is intact")
            error = expect_refusal("node-3 (untrusted) asks for the key", KeyReleaseRefused,
                                   lambda: fetch_key(node3.state_dir, key.blob, WORKLOAD))
            self.outcomes.releases["node-3"] = type(error).__name__
            stolen = node1.state_dir.token()
            if stolen is None:
                raise DemoFailure("node-1 holds no token")
            error = expect_refusal(
                "node-3 presents node-1's stolen token", TokenBindingMismatch,
                lambda: _release(node3, key.blob, stolen))
            self.outcomes.releases["node-3 with node-1's token"] = type(error).__name__

    def boot_changes(self) -> None:
        with step("7. node-2 reboots into a modified kernel"):
            node2 = self.hosts["node-2"]
            blob = self.blob
            fetch_key(node2.state_dir, blob, WORKLOAD)
            ok("before: node-2 is trusted and gets the key")
            token = node2.state_dir.token()
            if token is None:
                raise DemoFailure("node-2 holds no token")
            node2.tpm.reboot()
            node2.boot(simboot.MODIFIED_KERNEL_IMAGE)
            result = agent.attest(node2.state_dir)
            if result.status != "untrusted":
                raise DemoFailure("node-2 stayed trusted with a modified kernel")
            self.outcomes.final = {**self.outcomes.hosts, "node-2": result.status}
            ok(f"reboot detected; node-2 is untrusted now: "
               f"{result.failure.detail if result.failure else '-'}")
            seconds_left = _seconds_left(token)
            error = expect_refusal(
                f"node-2 presents its old token (still valid for {seconds_left} s)",
                KeyReleaseRefused, lambda: _release(node2, blob, token))
            self.outcomes.releases["node-2 after reboot"] = type(error).__name__

    def audit_trail(self) -> None:
        with step("8. The audit trail"):
            with self.alice() as alice:
                verification = alice.audit_verify()
                entries = alice.audit_entries(limit=1000)
            if not verification.ok:
                raise DemoFailure(f"audit verification failed: {verification.detail}")
            self.outcomes.audit = {"ok": verification.ok, "entries": verification.entries}
            table = PlainTable("#", "principal", "role", "action", "target", "outcome")
            for entry in entries:
                style = "" if entry.outcome == "success" else "red"
                table.add_row(str(entry.sequence), _short(entry.principal), entry.role,
                              entry.action,
                              entry.target[:40],
                              styled(entry.outcome, style))
            console.print(table)
            ok(f"`audit verify`: {verification.entries} entries, hash chain intact — every "
               "change, attestation, release and refusal by whom; never a key")

    def save_profiles(self) -> None:
        save_profile(TRUST_PROFILE, Profile(server=self.url, ca=str(self.ca_file),
                                            token=self.alice_token))
        save_profile(INFRA_PROFILE, Profile(server=self.url, ca=str(self.ca_file),
                                            token=self.bob_token))

    def write_summary(self, seconds: float) -> Path:
        path = self.root / SUMMARY_FILE
        path.write_text(json.dumps(self.outcomes.to_json(
            url=self.url, seconds=round(seconds, 1),
            finished_at=datetime.now(UTC).isoformat(timespec="seconds")), indent=2) + "\n")
        return path


def _release(host: DemoHost, blob: str, token: str) -> None:
    with agent.open_client(host.state_dir.load(), host.state_dir.credential()) as client:
        client.release_key(KeyReleaseIn(blob=blob, workload=WORKLOAD, token=token))


def _label(image: simboot.BootImage) -> str:
    return "the golden image" if image == simboot.GOLDEN_IMAGE else "a modified kernel"


def _short(value: str | None) -> str:
    if value is None:
        return "nothing"
    return value if len(value) <= 16 else value[:12] + "…"


def _seconds_left(token: str) -> int:
    expires = unverified_expiry(token)
    return 0 if expires is None else max(0, int((expires - datetime.now(UTC)).total_seconds()))

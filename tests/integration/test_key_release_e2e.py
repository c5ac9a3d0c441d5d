"""Attested key release end to end: software TPMs booted with a simulated UEFI boot, the host
agent, a real service over HTTPS, and real key servers — PyKMIP's KMIP server started by the
test, and SoftHSM2 through PKCS#11.

A trusted host unlocks its workload; a host with a tampered boot, a token replayed from another
host, a cluster without a grant, and a host that turns untrusted before its token expires are
refused, each with its reason and an audit entry; the key never appears in the audit log. The
KMIP server is stopped mid-run (failover, then 503, then recovery without a restart), and blobs
made before a rekey still open after it.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from typer.testing import CliRunner

from tests.conftest import SwtpmFactory
from tests.integration.test_attestation_e2e import Fleet, _set_up
from tests.support.kms import RunningKms, start_kms
from tests.support.postgres import PostgresCluster
from tests.support.service import RunningService
from tests.support.softhsm import E2E_LABEL, SoftHsm
from trustauthority.agent import host as agent
from trustauthority.agent import luks, simboot
from trustauthority.agent.keys import ReleasedKey, fetch_key, release_key
from trustauthority.agent.swtpm import SoftwareTpm, SoftwareTpmCa
from trustauthority.agent.tpm import AgentTpm
from trustauthority.agent.workload import decrypt_file, encrypt_file, rekey_file
from trustauthority.cli.main import app
from trustauthority.errors import (
    KeyReleaseRefused,
    KeyServerUnavailable,
    PermissionDenied,
    PolicyViolation,
    TokenBindingMismatch,
    WrappedKeyInvalid,
)
from trustauthority.schemas import (
    ClusterCreate,
    KeyReleaseIn,
    KeyRewrap,
    KmipServerCreate,
    Pkcs11ServerCreate,
    ProviderCreate,
    WorkloadKeyCreate,
)

pytestmark = [pytest.mark.swtpm, pytest.mark.slow]


@dataclass
class KeyedFleet:
    fleet: Fleet
    provider: str
    kms: list[RunningKms]

    @property
    def service(self) -> RunningService:
        return self.fleet.service

    def create_key(self, workload: str, cluster: str = "prod") -> str:
        with self.service.client(self.fleet.infra_token) as infra:
            return infra.create_workload_key(WorkloadKeyCreate(
                provider=self.provider, workload=workload, cluster=cluster)).blob

    def trusted_host(self, name: str) -> tuple[SoftwareTpm, agent.StateDir]:
        tpm, log = self.fleet.boot()
        state_dir = self.fleet.enroll(tpm, log, name=name)
        assert agent.attest(state_dir).status == "trusted"
        return tpm, state_dir


def _kmip_request(name: str, kms: RunningKms) -> KmipServerCreate:
    files = kms.files
    return KmipServerCreate(name=name, host=kms.host, port=kms.port,
                            ca_pem=files.ca_certificate.read_text(),
                            certificate_pem=files.client_certificate.read_text(),
                            key_pem=files.client_key.read_text(), timeout_seconds=2)


def _keyed(fleet: Fleet, backend: str, tmp_path: Path, hsm: SoftHsm | None) -> KeyedFleet:
    kms: list[RunningKms] = []
    with fleet.service.admin() as admin:
        if backend == "kmip":
            first = start_kms(tmp_path / "kms1")
            second = start_kms(tmp_path / "kms2", database_path=first.files.database)
            kms = [first, second]
            admin.add_kmip_server(_kmip_request("kms1", first))
            admin.add_kmip_server(_kmip_request("kms2", second))
            servers = ["kms1", "kms2"]
        else:
            assert hsm is not None
            admin.add_pkcs11_server(Pkcs11ServerCreate(
                name="hsm1", module=hsm.module, token_label=E2E_LABEL, pin=hsm.pin))
            servers = ["hsm1"]
        admin.create_provider(ProviderCreate(name="keys", servers=servers,
                                             create_primary_key=True))
        admin.grant_provider("prod", "keys")
    return KeyedFleet(fleet, "keys", kms)


@pytest.fixture(params=["kmip", "pkcs11"])
def keyed(request: pytest.FixtureRequest, sqlite_service: RunningService,
          swtpm_ca: SoftwareTpmCa, swtpm_factory: SwtpmFactory,
          tmp_path: Path) -> Iterator[KeyedFleet]:
    hsm = request.getfixturevalue("hsm") if request.param == "pkcs11" else None
    keyed = _keyed(_set_up(sqlite_service, swtpm_ca, swtpm_factory, tmp_path), request.param,
                   tmp_path, hsm)
    yield keyed
    for kms in keyed.kms:
        kms.stop()


@pytest.fixture
def kmip(sqlite_service: RunningService, swtpm_ca: SoftwareTpmCa,
         swtpm_factory: SwtpmFactory, tmp_path: Path) -> Iterator[KeyedFleet]:
    keyed = _keyed(_set_up(sqlite_service, swtpm_ca, swtpm_factory, tmp_path), "kmip",
                   tmp_path, None)
    yield keyed
    for kms in keyed.kms:
        kms.stop()


def _release(state_dir: agent.StateDir, blob: str, workload: str, token: str) -> None:
    with agent.open_client(state_dir.load(), state_dir.credential()) as client:
        client.release_key(KeyReleaseIn(blob=blob, workload=workload, token=token))


def _reboot(tpm: SoftwareTpm, state_dir: agent.StateDir, image: simboot.BootImage) -> None:
    """Power-cycle the machine and boot `image`: fresh PCRs, a new event log."""
    tpm.stop()
    tpm.start()
    with AgentTpm(tpm.tcti) as agent_tpm:
        agent_tpm.startup_clear()
        _events, raw_log = simboot.measure(agent_tpm, image)
    Path(state_dir.load().event_log).write_bytes(raw_log)


def _audit(fleet: Fleet, outcome: str) -> list[dict[str, object]]:
    return [entry for entry in fleet.audit("key.release") if entry["outcome"] == outcome]


def test_a_trusted_host_unlocks_its_workload_and_the_others_are_refused(
        keyed: KeyedFleet, tmp_path: Path) -> None:
    fleet = keyed.fleet
    blob = keyed.create_key("vm-1/disk0")
    tpm, state_dir = keyed.trusted_host("web-1")

    # the workload is encrypted and later unlocked with the key released to this TPM
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(range(256)) * 100 + b"tail")
    kek = fetch_key(state_dir, blob, "vm-1/disk0")
    encrypt_file(image, tmp_path / "disk.img.ta", workload="vm-1/disk0", blob=blob, kek=kek)
    opened = decrypt_file(tmp_path / "disk.img.ta", tmp_path / "opened",
                          lambda header: fetch_key(state_dir, header.blob, header.workload))
    assert opened.workload == "vm-1/disk0"
    assert (tmp_path / "opened").read_bytes() == image.read_bytes()
    released = _audit(fleet, "success")
    assert len(released) == 2
    assert released[-1]["target"] == "vm-1/disk0"

    # a host whose boot is tampered with gets no token, so no key
    bad_tpm, bad_log = fleet.boot(simboot.MODIFIED_KERNEL_IMAGE)
    bad = fleet.enroll(bad_tpm, bad_log, name="web-2")
    with pytest.raises(KeyReleaseRefused, match="not trusted"):
        fetch_key(bad, blob, "vm-1/disk0")

    # web-1's token replayed by another host is bound to web-1's TPM, not the thief's
    token = state_dir.token()
    assert token is not None
    with pytest.raises(TokenBindingMismatch):
        _release(bad, blob, "vm-1/disk0", token)
    # the blob of one workload does not open as another's
    with pytest.raises(KeyReleaseRefused, match="another workload"):
        _release(state_dir, blob, "vm-2", token)

    # no grant, no key; the grant back, the key again
    with keyed.service.admin() as admin:
        admin.revoke_provider("prod", keyed.provider)
    with pytest.raises(KeyReleaseRefused, match="no grant"):
        fetch_key(state_dir, blob, "vm-1/disk0")
    with keyed.service.admin() as admin:
        admin.grant_provider("prod", keyed.provider)
    assert fetch_key(state_dir, blob, "vm-1/disk0") == kek

    # the host reboots into a modified kernel: untrusted at once, its unexpired token useless
    _reboot(tpm, state_dir, simboot.MODIFIED_KERNEL_IMAGE)
    assert agent.attest(state_dir).status == "untrusted"
    with pytest.raises(KeyReleaseRefused, match="untrusted now"):
        _release(state_dir, blob, "vm-1/disk0", token)

    denied = _audit(fleet, "denied")
    reasons = [str(entry["details"]) for entry in denied]
    assert any("token_binding_mismatch" in reason for reason in reasons)
    assert any("no grant" in reason for reason in reasons)
    assert any("untrusted now" in reason for reason in reasons)
    # the key never reaches the audit log, in any encoding
    with keyed.service.admin() as admin:
        exported = "\n".join(entry.model_dump_json() for entry in admin.audit_entries(limit=1000))
    for encoding in (kek.hex(), base64.b64encode(kek).decode(),
                     base64.urlsafe_b64encode(kek).decode().rstrip("=")):
        assert encoding not in exported


def test_key_release_on_postgresql_where_it_runs_in_the_thread_pool(
        postgres_cluster: PostgresCluster, swtpm_ca: SoftwareTpmCa,
        swtpm_factory: SwtpmFactory, tmp_path: Path) -> None:
    """With PostgreSQL the server runs a release's checks, key-server call and record in one
    thread hand-off (`api.offload`), not on the event loop as on SQLite: the same outcomes."""
    running = RunningService(tmp_path / "service", postgres_cluster.new_database()).start()
    try:
        keyed = _keyed(_set_up(running, swtpm_ca, swtpm_factory, tmp_path), "kmip", tmp_path,
                       None)
        try:
            blob = keyed.create_key("vm-pg")
            _tpm, state_dir = keyed.trusted_host("pg-1")
            kek = fetch_key(state_dir, blob, "vm-pg")
            assert len(kek) == 32
            assert fetch_key(state_dir, blob, "vm-pg") == kek
            token = state_dir.token()
            assert token is not None
            with pytest.raises(KeyReleaseRefused, match="another workload"):
                _release(state_dir, blob, "vm-other", token)
            assert len(_audit(keyed.fleet, "success")) == 2
            assert len(_audit(keyed.fleet, "denied")) == 1
        finally:
            for kms in keyed.kms:
                kms.stop()
    finally:
        running.stop()
        running.platform.db.dispose()


def test_keys_are_made_only_on_a_granted_provider_by_an_infra_admin(keyed: KeyedFleet) -> None:
    with keyed.service.admin() as admin:
        admin.create_cluster(ClusterCreate(name="dev"))
        with pytest.raises(PermissionDenied):  # a trust-admin makes no workload keys
            admin.create_workload_key(WorkloadKeyCreate(provider=keyed.provider,
                                                        workload="vm-9", cluster="prod"))
    with pytest.raises(PolicyViolation, match="no grant"):
        keyed.create_key("vm-9", cluster="dev")
    blob = keyed.create_key("vm-9")
    with keyed.service.client(keyed.fleet.infra_token) as infra:
        listed = infra.list_workload_keys(provider=keyed.provider)
        shown = infra.get_workload_key("vm-9")
    assert [key.workload for key in listed] == ["vm-9"]
    assert shown.blob == blob
    assert "key" not in json.loads(shown.model_dump_json())


def test_rekey_keeps_old_blobs_open_until_rewrapped_and_retired(keyed: KeyedFleet,
                                                                 tmp_path: Path) -> None:
    old_blob = keyed.create_key("vm-3")
    _tpm, state_dir = keyed.trusted_host("web-3")
    kek = fetch_key(state_dir, old_blob, "vm-3")
    secret, image = tmp_path / "secret.ta", tmp_path / "disk.ta"
    (tmp_path / "plain").write_bytes(b"the data " * 1000)
    encrypt_file(tmp_path / "plain", secret, workload="vm-3", blob=old_blob, kek=kek,
                 cipher="aes-256-gcm")
    encrypt_file(tmp_path / "plain", image, workload="vm-3", blob=old_blob, kek=kek)
    with keyed.service.admin() as admin:
        assert admin.rekey_provider(keyed.provider).version == 2
    assert release_key(state_dir, old_blob, "vm-3") == ReleasedKey(kek)  # an old blob opens
    with keyed.service.client(keyed.fleet.infra_token) as infra:
        (rewrapped,) = infra.rewrap_keys(KeyRewrap(provider=keyed.provider))
    assert rewrapped.primary_version == 2
    assert rewrapped.blob != old_blob
    assert release_key(state_dir, rewrapped.blob, "vm-3") == ReleasedKey(kek)  # same key
    # the old blob still opens, and the answer names the blob the service holds now
    assert release_key(state_dir, old_blob, "vm-3") == ReleasedKey(kek, rewrapped.blob)
    released = [cast(dict[str, str], entry["details"]) for entry in _audit(keyed.fleet,
                                                                            "success")]
    assert released[-1]["stored_version"] == "2"

    # opening a file with the old blob says so; `workload rekey` without --blob rewrites it
    runner = CliRunner()
    state = ["--state-dir", str(state_dir.path)]
    opened = runner.invoke(app, ["agent", "workload", "decrypt", str(secret),
                                 str(tmp_path / "opened"), *state, "--json"])
    assert opened.exit_code == 0, opened.output
    assert "before version 1 is retired" in opened.output
    assert '"blob_outdated": true' in opened.output
    for path in (secret, image):
        moved = runner.invoke(app, ["agent", "workload", "rekey", str(path),
                                    f"{path}.v2", *state])
        assert moved.exit_code == 0, moved.output
    again = runner.invoke(app, ["agent", "workload", "rekey", f"{secret}.v2",
                                str(tmp_path / "v3"), *state])
    assert again.exit_code == 2, again.output
    assert "already holds its key's current blob" in again.output

    with keyed.service.admin() as admin:
        admin.retire_primary_version(keyed.provider, 1)
    with pytest.raises(WrappedKeyInvalid):
        fetch_key(state_dir, old_blob, "vm-3")
    for path in (secret, image):
        with pytest.raises(WrappedKeyInvalid, match="retired"):
            decrypt_file(path, tmp_path / "lost", lambda header: fetch_key(
                state_dir, header.blob, header.workload))
        header = decrypt_file(Path(f"{path}.v2"), tmp_path / "kept", lambda header: fetch_key(
            state_dir, header.blob, header.workload))
        assert header.blob == rewrapped.blob
        assert (tmp_path / "kept").read_bytes() == (tmp_path / "plain").read_bytes()


def test_deep_rekey_moves_the_data_to_a_new_key_and_the_old_one_is_shredded(
        keyed: KeyedFleet, tmp_path: Path) -> None:
    blob = keyed.create_key("vm-6")
    _tpm, state_dir = keyed.trusted_host("web-6")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"database password: correct horse battery staple")
    encrypt_file(secret, tmp_path / "secret.ta", workload="vm-6", blob=blob,
                 kek=fetch_key(state_dir, blob, "vm-6"), cipher="aes-256-gcm")
    with keyed.service.client(keyed.fleet.infra_token) as infra:
        old = infra.get_workload_key("vm-6")
        new = infra.rotate_workload_key("vm-6")
        states = {key.id: key.state for key in infra.list_workload_keys()}
    assert states == {old.id: "superseded", new.id: "active"}
    assert fetch_key(state_dir, new.blob, "vm-6") != fetch_key(state_dir, blob, "vm-6")

    rekey_file(tmp_path / "secret.ta", tmp_path / "secret.v2.ta", blob=new.blob,
               kek_for=lambda header: fetch_key(state_dir, header.blob, header.workload),
               new_kek=fetch_key(state_dir, new.blob, "vm-6"))
    with keyed.service.client(keyed.fleet.infra_token) as infra:
        infra.delete_workload_key(old.id)  # crypto-shredding: the old copy is gone for good
    with pytest.raises(WrappedKeyInvalid, match="no workload key"):
        decrypt_file(tmp_path / "secret.ta", tmp_path / "old",
                     lambda header: fetch_key(state_dir, header.blob, header.workload))
    decrypt_file(tmp_path / "secret.v2.ta", tmp_path / "opened",
                 lambda header: fetch_key(state_dir, header.blob, header.workload))
    assert (tmp_path / "opened").read_bytes() == secret.read_bytes()
    assert [entry["target"] for entry in keyed.fleet.audit("key.rotate")] == ["vm-6"]


def test_a_stopped_kmip_server_fails_over_then_503_then_recovers(kmip: KeyedFleet) -> None:
    blob = kmip.create_key("vm-4")
    _tpm, state_dir = kmip.trusted_host("web-4")
    kek = fetch_key(state_dir, blob, "vm-4")
    first, second = kmip.kms
    first.stop()
    assert fetch_key(state_dir, blob, "vm-4") == kek  # the second server answers
    second.stop()
    with pytest.raises(KeyServerUnavailable, match="HTTP 503"):
        fetch_key(state_dir, blob, "vm-4")
    failed = _audit(kmip.fleet, "failure")  # the attempt is on record, as refusals are
    assert [(entry["target"], cast(dict[str, str], entry["details"])["error"])
            for entry in failed] == [("vm-4", "key_server_unavailable")]
    with pytest.raises(KeyServerUnavailable):
        kmip.create_key("vm-5")
    with kmip.service.client(kmip.fleet.infra_token) as infra:
        assert [key.workload for key in infra.list_workload_keys()] == ["vm-4"]  # nothing half-made
    first.restart()
    assert fetch_key(state_dir, blob, "vm-4") == kek  # back without restarting the service
    with kmip.service.admin() as admin:
        provider = admin.get_provider(kmip.provider)
        health = {server.name: server.state for server in provider.servers}
    assert health == {"kms1": "healthy", "kms2": "unhealthy"}
    assert provider.health == "degraded"


def test_a_persisted_key_opens_the_same_boot_while_the_key_servers_are_down(
        kmip: KeyedFleet, tmp_path: Path) -> None:
    blob = kmip.create_key("vm-7")
    tpm, state_dir = kmip.trusted_host("web-7")
    (tmp_path / "plain").write_bytes(b"volume " * 2000)
    encrypt_file(tmp_path / "plain", tmp_path / "disk.ta", workload="vm-7", blob=blob,
                 kek=fetch_key(state_dir, blob, "vm-7"))
    runner = CliRunner()

    def unlock(*extra: str) -> tuple[int, str]:
        target = tmp_path / "opened"
        target.unlink(missing_ok=True)
        result = runner.invoke(app, ["agent", "workload", "unlock", str(tmp_path / "disk.ta"),
                                     str(target), "--state-dir", str(state_dir.path), "--json",
                                     *extra])
        if result.exit_code == 0:
            assert target.read_bytes() == (tmp_path / "plain").read_bytes()
        return result.exit_code, result.output

    sealed_dir = state_dir.path / "sealed"
    code, output = unlock("--persist-key")
    assert code == 0, output
    assert '"key_from": "release"' in output
    [sealed] = sealed_dir.iterdir()
    assert sealed.stat().st_mode & 0o077 == 0
    kek = fetch_key(state_dir, blob, "vm-7")
    assert kek.hex() not in sealed.read_text()  # wrapped by the TPM, not stored as is

    for server in kmip.kms:
        server.stop()
    assert unlock()[0] == 3  # without persistence: the 503, nothing opened
    code, output = unlock("--persist-key")
    assert code == 0, output
    assert '"key_from": "sealed copy"' in output
    _reboot(tpm, state_dir, simboot.GOLDEN_IMAGE)  # the same boot again: still opens
    assert unlock("--persist-key")[0] == 0

    # another boot: the sealed copy does not open (its PCRs differ), so the 503 stands
    _reboot(tpm, state_dir, simboot.MODIFIED_KERNEL_IMAGE)
    code, output = unlock("--persist-key")
    assert code == 3, output
    # once the service has seen the boot, it refuses the host, and the copy goes with it
    assert agent.attest(state_dir).status == "untrusted"
    code, output = unlock("--persist-key")
    assert code == 4, output  # refused (key_release_refused)
    assert not list(sealed_dir.iterdir())
    kmip.kms[0].restart()
    _reboot(tpm, state_dir, simboot.GOLDEN_IMAGE)
    assert unlock("--persist-key")[0] == 0  # trusted again: released, sealed again
    assert len(list(sealed_dir.iterdir())) == 1


@pytest.mark.skipif(not luks.cryptsetup_available(), reason="cryptsetup is not installed")
def test_a_luks2_volume_opens_only_on_a_trusted_host(kmip: KeyedFleet, tmp_path: Path) -> None:
    blob = kmip.create_key("vm-8/data")
    (tmp_path / "blob").write_text(blob)
    _tpm, state_dir = kmip.trusted_host("web-8")
    volume = tmp_path / "data.img"
    with volume.open("wb") as stream:
        stream.truncate(32 * 1024 * 1024)
    (tmp_path / "recovery").write_bytes(b"recovery")
    subprocess.run(["cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf",
                    "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file",
                    str(tmp_path / "recovery"), str(volume)], check=True, capture_output=True)
    runner = CliRunner()

    def agent_cli(state: agent.StateDir, *arguments: str,
                  stdin: bytes | None = None) -> tuple[int, str]:
        result = runner.invoke(app, ["agent", "workload", *arguments, "--state-dir",
                                     str(state.path), "--json"], input=stdin)
        return result.exit_code, result.output

    enroll = ("luks-enroll", str(volume), "--workload", "vm-8/data", "--blob",
              str(tmp_path / "blob"), "--key-file", "-")
    code, output = agent_cli(state_dir, *enroll, stdin=b"x" * (luks.MAX_SECRET + 1))
    assert code == 2, output
    assert "larger than 4096 bytes" in output
    code, output = agent_cli(state_dir, *enroll, stdin=b"recovery")
    assert code == 0, output
    enrolled = luks.read_enrolment(volume)
    assert enrolled is not None
    assert (enrolled.workload, enrolled.blob) == ("vm-8/data", blob)
    code, output = agent_cli(state_dir, "unlock", str(volume), "--test")
    assert code == 0, output
    assert json.loads(output)["keyslot"] == enrolled.keyslot

    # another host, booted into a modified kernel, reads the same token and gets no key
    bad_tpm, bad_log = kmip.fleet.boot(simboot.MODIFIED_KERNEL_IMAGE)
    bad = kmip.fleet.enroll(bad_tpm, bad_log, name="web-9")
    code, output = agent_cli(bad, "unlock", str(volume), "data", "--test")
    assert code == 4, output
    assert json.loads(output)["error"]["type"] == "key_release_refused"

    # enrolled again without the recovery key: the enrolled keyslot opens the volume for the
    # new one, and the old one goes
    code, output = agent_cli(state_dir, "luks-enroll", str(volume), "--replace")
    assert code == 0, output
    again = luks.read_enrolment(volume)
    assert again is not None
    assert again.keyslot != enrolled.keyslot
    assert json.loads(output)["kept_keyslots"] == []
    assert agent_cli(state_dir, "unlock", str(volume), "data", "--test")[0] == 0
    dump = subprocess.run(["cryptsetup", "luksDump", "--dump-json-metadata", str(volume)],
                          check=True, capture_output=True).stdout
    assert set(json.loads(dump)["keyslots"]) == {"0", str(again.keyslot)}
    # a LUKS-only option on our own file format is refused, not ignored
    assert agent_cli(state_dir, "unlock", str(tmp_path / "blob"), "x", "--test")[0] == 2


def test_key_server_health_tells_which_side_distrusts_which(kmip: KeyedFleet,
                                                           tmp_path: Path) -> None:
    with kmip.service.admin() as admin:
        assert admin.test_key_server("kms1").healthy
        stranger = start_kms(tmp_path / "stranger")  # another CA altogether
        try:
            request = _kmip_request("wrong-ca", kmip.kms[0]).model_copy(
                update={"ca_pem": stranger.files.ca_certificate.read_text()})
            admin.add_kmip_server(request)
            report = admin.test_key_server("wrong-ca")
            assert report.client_trusts_server is False
            assert not report.healthy
        finally:
            stranger.stop()
        shown = admin.get_key_server("kms1")
    assert shown.providers == ["keys"]
    assert "key_pem" not in shown.model_dump_json()

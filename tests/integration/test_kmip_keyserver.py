"""`KmipKeyServer` against a real PyKMIP server (`trustauthority kms serve`): primary keys,
wrapping that authenticates every byte and the caller's context, trust checked both ways and by
host name, fast failure and recovery when the server stops or hangs, threads, a replica."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kmip.core import enums
from kmip.pie.client import ProxyKmipClient

from tests.support.kms import (
    RunningKms,
    certificate_without_client_auth,
    foreign_pki,
    start_kms,
)
from trustauthority import pki
from trustauthority.cli.processes import TRUSTAUTHORITY
from trustauthority.errors import (
    ConfigError,
    KeyServerUnavailable,
    NotFound,
    WrappedKeyInvalid,
)
from trustauthority.keyserver.embedded import prepare_kms_dir
from trustauthority.keyserver.kmip import BLOB_BYTES, KmipKeyServer, _names_host

KEY = bytes(range(32))
AAD = b"workload=vm-42/disk0;cluster=prod"


@pytest.fixture(scope="module")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningKms]:
    running = start_kms(tmp_path_factory.mktemp("kms") / "data")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def key_server(kms: RunningKms) -> Iterator[KmipKeyServer]:
    server = KmipKeyServer(kms.endpoint())
    yield server
    server.close()


@pytest.fixture(scope="module")
def primary_key(key_server: KmipKeyServer) -> str:
    return key_server.create_primary_key("test-primary")


@pytest.fixture
def own_kms(tmp_path: Path) -> Iterator[RunningKms]:
    """A KMS this test alone may stop, restart or pause."""
    running = start_kms(tmp_path / "kms")
    yield running
    running.stop()


ServerFactory = Callable[..., KmipKeyServer]


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """make_server(running_kms, **endpoint_changes): a key server, closed after the test."""
    made: list[KmipKeyServer] = []

    def make(running: RunningKms, **changes: Any) -> KmipKeyServer:
        made.append(KmipKeyServer(running.endpoint(**changes)))
        return made[-1]

    yield make
    for server in made:
        server.close()


# -- primary keys -------------------------------------------------------------------------------


def test_a_new_primary_key_is_usable_aes_256(key_server: KmipKeyServer, primary_key: str) -> None:
    info = key_server.describe_key(primary_key)
    assert (info.key_id, info.algorithm, info.length_bits, info.usable) == (
        primary_key, "AES", 256, True)


def test_a_key_that_is_not_active_is_described_as_unusable(
        kms: RunningKms, key_server: KmipKeyServer) -> None:
    files = kms.files
    raw = ProxyKmipClient(hostname=kms.host, port=kms.port, cert=str(files.client_certificate),
                          key=str(files.client_key), ca=str(files.ca_certificate),
                          ssl_version="PROTOCOL_SSLv23", config_file="/dev/null")
    with raw:
        uid = raw.create(enums.CryptographicAlgorithm.AES, 256, name="never-activated",
                         cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT])
    info = key_server.describe_key(uid)
    assert not info.usable
    assert "PRE_ACTIVE" in info.detail
    with pytest.raises(KeyServerUnavailable, match="Encrypt refused"):
        key_server.wrap(uid, KEY, AAD)


def test_describing_an_unknown_key_is_not_found(key_server: KmipKeyServer) -> None:
    with pytest.raises(NotFound):
        key_server.describe_key("999999")


# -- wrapping -----------------------------------------------------------------------------------


def test_wrap_then_unwrap_returns_the_key(key_server: KmipKeyServer, primary_key: str) -> None:
    blob = key_server.wrap(primary_key, KEY, AAD)
    assert len(blob) == BLOB_BYTES == 73
    assert KEY not in blob
    assert key_server.unwrap(primary_key, blob, AAD) == KEY


def test_two_wraps_of_one_key_differ(key_server: KmipKeyServer, primary_key: str) -> None:
    first, second = (key_server.wrap(primary_key, KEY, AAD) for _ in range(2))
    assert first != second
    assert first[1:13] != second[1:13]  # a fresh r: a fresh blob key from the server


def test_a_changed_byte_anywhere_is_refused(key_server: KmipKeyServer, primary_key: str) -> None:
    blob = key_server.wrap(primary_key, KEY, AAD)
    for position in range(len(blob)):
        altered = bytearray(blob)
        altered[position] ^= 0x01
        with pytest.raises(WrappedKeyInvalid):
            key_server.unwrap(primary_key, bytes(altered), AAD)


def test_a_truncated_or_extended_blob_is_refused(key_server: KmipKeyServer,
                                                 primary_key: str) -> None:
    blob = key_server.wrap(primary_key, KEY, AAD)
    for wrong in (blob[:-1], blob[:40], b"", blob + b"\x00"):
        with pytest.raises(WrappedKeyInvalid):
            key_server.unwrap(primary_key, wrong, AAD)


def test_a_blob_moved_to_another_context_is_refused(key_server: KmipKeyServer,
                                                    primary_key: str) -> None:
    blob = key_server.wrap(primary_key, KEY, AAD)
    for other in (b"workload=vm-43/disk0;cluster=prod", b"", AAD + b"x"):
        with pytest.raises(WrappedKeyInvalid):
            key_server.unwrap(primary_key, blob, other)


def test_a_blob_does_not_open_under_another_primary_key(key_server: KmipKeyServer,
                                                        primary_key: str) -> None:
    other_key = key_server.create_primary_key("another-primary")
    blob = key_server.wrap(primary_key, KEY, AAD)
    with pytest.raises(WrappedKeyInvalid):
        key_server.unwrap(other_key, blob, AAD)


def test_wraps_from_eight_threads_all_unwrap(key_server: KmipKeyServer, primary_key: str) -> None:
    keys = [os.urandom(32) for _ in range(32)]

    def round_trip(key: bytes) -> tuple[bytes, bytes]:
        blob = key_server.wrap(primary_key, key, AAD)
        return blob, key_server.unwrap(primary_key, blob, AAD)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(round_trip, keys))
    assert [opened for _, opened in results] == keys
    assert len({blob for blob, _ in results}) == len(keys)


def test_no_copy_of_the_client_key_outlives_a_connect(
        kms: RunningKms, make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """PyKMIP reads the credentials from files: they exist, owner-only, only while it connects
    (a service stopped by a signal must leave no key behind in /tmp)."""
    seen: list[tuple[int, dict[str, int]]] = []
    real_mkdtemp = tempfile.mkdtemp

    def watched_mkdtemp(*args: Any, **kwargs: Any) -> str:
        directory = str(real_mkdtemp(*args, **kwargs))
        made.append(Path(directory))
        return directory

    made: list[Path] = []
    monkeypatch.setattr(tempfile, "mkdtemp", watched_mkdtemp)
    real_open = ProxyKmipClient.open

    def watched_open(client: Any) -> None:
        directory = made[-1]
        seen.append((stat.S_IMODE(directory.stat().st_mode),
                     {path.name: stat.S_IMODE(path.stat().st_mode)
                      for path in directory.iterdir()}))
        real_open(client)

    monkeypatch.setattr(ProxyKmipClient, "open", watched_open)
    server = make_server(kms)
    key_id = server.create_primary_key("credentials-test")
    server.unwrap(key_id, server.wrap(key_id, bytes(32), b"aad"), b"aad")
    assert seen
    assert seen[0] == (0o700, {"ca.pem": 0o600, "client.pem": 0o600, "client.key": 0o600})
    assert made
    assert not any(directory.exists() for directory in made)


# -- trust, both ways ---------------------------------------------------------------------------


def test_check_of_a_healthy_server(key_server: KmipKeyServer) -> None:
    report = key_server.check()
    assert report.healthy
    assert (report.reachable, report.client_trusts_server, report.server_trusts_client,
            report.round_trip) == (True, True, True, True)
    assert report.latency_ms is not None
    assert report.latency_ms > 0


def test_a_server_our_ca_did_not_sign_is_not_trusted(
        kms: RunningKms, primary_key: str, make_server: ServerFactory) -> None:
    other_ca, _, _ = foreign_pki()
    server = make_server(kms, ca_pem=other_ca)
    report = server.check()
    assert (report.reachable, report.client_trusts_server, report.healthy) == (True, False, False)
    with pytest.raises(KeyServerUnavailable, match="does not verify"):
        server.wrap(primary_key, KEY, AAD)


def test_a_client_certificate_from_another_ca_is_refused(
        kms: RunningKms, make_server: ServerFactory) -> None:
    _, cert_pem, key_pem = foreign_pki()
    report = make_server(kms, cert_pem=cert_pem, key_pem=key_pem).check()
    assert (report.reachable, report.server_trusts_client, report.healthy) == (True, False, False)


def test_a_client_certificate_without_client_auth_is_refused(
        kms: RunningKms, make_server: ServerFactory) -> None:
    cert_pem, key_pem = certificate_without_client_auth(kms.files)
    report = make_server(kms, cert_pem=cert_pem, key_pem=key_pem).check()
    assert (report.reachable, report.server_trusts_client, report.healthy) == (True, False, False)


def test_the_pin_must_match_the_server_certificate(
        kms: RunningKms, primary_key: str, make_server: ServerFactory) -> None:
    wrong = make_server(kms, pinned_sha256="00" * 32)
    report = wrong.check()
    assert (report.reachable, report.client_trusts_server, report.healthy) == (True, False, False)
    with pytest.raises(KeyServerUnavailable, match="pinned"):
        wrong.wrap(primary_key, KEY, AAD)
    right = make_server(kms, pinned_sha256=kms.server_certificate_sha256().upper())
    assert right.check().healthy


@pytest.mark.slow
def test_the_certificate_must_name_the_host_dialled(
        kms: RunningKms, tmp_path: Path, make_server: ServerFactory) -> None:
    # the module's KMS names 127.0.0.1 and localhost: dialling "localhost" is fine there
    assert make_server(kms, host="localhost").check().healthy
    # this one names only 127.0.0.1: same address, same CA, but the name dialled is not in it
    prepare_kms_dir(tmp_path / "ip-only", server_names=("127.0.0.1",))
    ip_only = start_kms(tmp_path / "ip-only")
    try:
        assert make_server(ip_only, host="127.0.0.1").check().healthy
        by_name = make_server(ip_only, host="localhost")
        report = by_name.check()
        assert (report.reachable, report.client_trusts_server) == (True, False)
        assert "does not name host localhost" in report.detail
        with pytest.raises(KeyServerUnavailable, match="does not name host localhost"):
            by_name.create_primary_key("never-made")
    finally:
        ip_only.stop()


@pytest.mark.parametrize(("names", "host", "named"), [
    (["*.kms.example"], "a.kms.example", True),
    (["*.kms.example"], "A.KMS.example.", True),
    (["*.kms.example"], "kms.example", False),
    (["*.kms.example"], "a.b.kms.example", False),
    (["kms.example", "127.0.0.1"], "127.0.0.1", True),
    (["kms.example", "127.0.0.1"], "127.0.0.2", False),
    (["127.0.0.1"], "localhost", False),
])
def test_host_name_matching(names: list[str], host: str, named: bool) -> None:
    ca_key, ca = pki.new_ca("names", datetime.now(UTC))
    _, certificate = pki.issue_server_certificate(ca_key, ca, names, datetime.now(UTC))
    assert _names_host(certificate, host) is named


def test_an_inconsistent_endpoint_is_a_config_error(kms: RunningKms) -> None:
    _, _, other_key = foreign_pki()
    for changes in ({"key_pem": other_key}, {"cert_pem": b"not pem"},
                    {"username": "ta", "password": None}, {"host": "a,b"}, {"host": "::1"},
                    {"timeout": 0}):
        with pytest.raises(ConfigError):
            KmipKeyServer(kms.endpoint(**changes))


# -- failures and recovery ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_stopped_server_fails_fast_and_a_restarted_one_works_again(
        own_kms: RunningKms, make_server: ServerFactory) -> None:
    server = make_server(own_kms, timeout=2.0)
    primary = server.create_primary_key("survives-restarts")
    blob = server.wrap(primary, KEY, AAD)
    own_kms.stop()
    started = time.monotonic()
    with pytest.raises(KeyServerUnavailable, match="connection refused"):
        server.unwrap(primary, blob, AAD)
    assert time.monotonic() - started < 2.0 + 2
    report = server.check()
    assert (report.reachable, report.healthy) == (False, False)
    own_kms.start()
    assert server.unwrap(primary, blob, AAD) == KEY  # the same object, no restart on our side
    assert server.check().healthy


@pytest.mark.slow
def test_a_hung_server_fails_within_the_timeout(
        kms: RunningKms, primary_key: str, make_server: ServerFactory) -> None:
    server = make_server(kms, timeout=1.0)
    blob = server.wrap(primary_key, KEY, AAD)  # leaves an open connection in the pool
    kms.pause()
    try:
        for attempt in range(2):  # on the pooled connection, then on a new one
            started = time.monotonic()
            with pytest.raises(KeyServerUnavailable, match="no answer within 1 s"):
                server.unwrap(primary_key, blob, AAD)
            assert time.monotonic() - started < 1.0 + 2, f"attempt {attempt}"
        assert not server.check().healthy
    finally:
        kms.resume()
    assert server.unwrap(primary_key, blob, AAD) == KEY


@pytest.mark.slow
def test_a_second_server_sharing_the_database_opens_what_the_first_wrapped(
        kms: RunningKms, key_server: KmipKeyServer, primary_key: str, tmp_path: Path) -> None:
    replica = start_kms(tmp_path / "replica", database_path=kms.files.database)
    try:
        # its own CA and client certificate: keys belong to the client identity (the CN)
        second = KmipKeyServer(replica.endpoint())
        blob = key_server.wrap(primary_key, KEY, AAD)
        assert second.unwrap(primary_key, blob, AAD) == KEY
        made_there = second.create_primary_key("made-on-the-replica")
        assert key_server.describe_key(made_there).usable
        assert key_server.unwrap(made_there, second.wrap(made_there, KEY, AAD), AAD) == KEY
        second.close()
    finally:
        replica.stop()


# -- the data directory -------------------------------------------------------------------------


def test_the_kms_directory_is_made_once_owner_only_and_reused(tmp_path: Path) -> None:
    first = prepare_kms_dir(tmp_path / "kms")
    made = {path: path.read_bytes() for path in first.data_dir.iterdir() if path.is_file()}
    assert {path.name for path in made} >= {"ca.pem", "ca.key", "server.pem", "server.key",
                                            "client.pem", "client.key", "server.conf"}
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in made)
    again = prepare_kms_dir(tmp_path / "kms")
    assert {path: path.read_bytes() for path in made} == made
    moved = prepare_kms_dir(tmp_path / "kms", host="10.1.2.3")
    assert moved.ca_certificate.read_bytes() == made[first.ca_certificate]
    assert moved.server_certificate.read_bytes() != made[first.server_certificate]
    assert "hostname=10.1.2.3" in moved.config.read_text()
    assert again.client_key.read_bytes() == made[first.client_key]


# -- the command --------------------------------------------------------------------------------


@pytest.mark.slow
def test_kms_serve_on_a_port_in_use_fails_in_one_line(kms: RunningKms, tmp_path: Path) -> None:
    result = subprocess.run([TRUSTAUTHORITY, "kms", "serve", "--data-dir", str(tmp_path / "k"),
                             "--port", str(kms.port)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: the KMS cannot listen (Address already in use); see {tmp_path / 'k'}"
        "/server.log"]


@pytest.mark.parametrize("command", [["kms"], ["kms", "serve"]])
def test_kms_help_has_an_example(command: list[str]) -> None:
    result = subprocess.run([TRUSTAUTHORITY, *command, "--help"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0
    assert "Example: `ta kms serve --data-dir" in result.stdout

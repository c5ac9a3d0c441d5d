"""`Pkcs11KeyServer` against SoftHSM2: primary keys that never leave the token, AES key wrap
bound to the caller's associated data, failures told apart (a bad blob is `WrappedKeyInvalid`,
a token we cannot use is `KeyServerUnavailable`, naming the token and never the PIN), and
threads sharing the token safely."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from pkcs11 import exceptions as p11e

from tests.support.softhsm import REFUSAL_LABEL, SoftHsm
from trustauthority.errors import KeyServerUnavailable, NotFound, WrappedKeyInvalid
from trustauthority.keyserver import Pkcs11Endpoint
from trustauthority.keyserver.pkcs11 import Pkcs11KeyServer, _blob_refused

WRONG_PIN = "wrong-pin-5526"
AAD = b"tak1.header-of-workload-a"

ServerFactory = Callable[..., Pkcs11KeyServer]


@pytest.fixture
def make_server(hsm: SoftHsm) -> Iterator[ServerFactory]:
    """Call it for a server (of the main token, or of the endpoint given); all are closed."""
    made: list[Pkcs11KeyServer] = []

    def make(endpoint: Pkcs11Endpoint | None = None) -> Pkcs11KeyServer:
        server = Pkcs11KeyServer(endpoint or hsm.endpoint)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
def server(make_server: ServerFactory) -> Pkcs11KeyServer:
    return make_server()


@pytest.fixture
def primary(server: Pkcs11KeyServer) -> str:
    return server.create_primary_key("primary-test")


def _flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1:]


# --- keys --------------------------------------------------------------------------------------


def test_a_new_primary_key_is_usable_and_has_a_hex_cka_id(server: Pkcs11KeyServer) -> None:
    first = server.create_primary_key("orders")
    second = server.create_primary_key("orders")  # a name need not be unique; the id is
    assert first != second
    assert len(first) == 32
    assert bytes.fromhex(first).hex() == first
    info = server.describe_key(first)
    assert (info.key_id, info.algorithm, info.length_bits, info.usable) == (first, "AES", 256,
                                                                            True)
    assert "orders" in info.detail


def test_the_primary_key_value_cannot_be_read(hsm: SoftHsm, primary: str) -> None:
    assert hsm.read_key_value(primary) == "refused:AttributeSensitive"
    # the same probe reads a key that allows it, so the refusal above is the key's doing
    value = os.urandom(32)
    assert hsm.read_key_value(hsm.import_aes_key(value, extractable=True)) == f"value:{value.hex()}"


def test_an_unknown_key_is_not_found(server: Pkcs11KeyServer, primary: str) -> None:
    for key_id in ("00" * 16, "not-hex", primary.upper(), ""):
        with pytest.raises(NotFound):
            server.describe_key(key_id)


def test_an_extractable_key_is_not_usable(hsm: SoftHsm, server: Pkcs11KeyServer) -> None:
    key_id = hsm.import_aes_key(os.urandom(32), name="exportable", extractable=True)
    info = server.describe_key(key_id)
    assert (info.algorithm, info.length_bits, info.usable) == ("AES", 256, False)
    assert "extractable" in info.detail
    assert "not sensitive" in info.detail


def test_an_imported_non_extractable_key_is_usable_and_says_it_was_imported(
        hsm: SoftHsm, server: Pkcs11KeyServer) -> None:
    info = server.describe_key(hsm.import_aes_key(os.urandom(32)))
    assert info.usable
    assert "imported" in info.detail


# --- wrap and unwrap --------------------------------------------------------------------------


def test_wrap_and_unwrap_round_trip(server: Pkcs11KeyServer, primary: str) -> None:
    key = os.urandom(32)
    blob = server.wrap(primary, key, AAD)
    assert blob[:1] == b"\x01"
    assert len(blob) == 1 + 72
    assert key not in blob
    assert server.wrap(primary, key, AAD) == blob  # AES-KW is deterministic
    assert server.unwrap(primary, blob, AAD) == key


def test_a_second_server_on_the_token_unwraps_what_the_first_wrapped(
        make_server: ServerFactory, primary: str) -> None:
    key = os.urandom(32)
    blob = make_server().wrap(primary, key, AAD)
    assert make_server().unwrap(primary, blob, AAD) == key


def test_wrap_is_rfc3394_and_interoperates_with_cryptography(
        hsm: SoftHsm, server: Pkcs11KeyServer) -> None:
    known = os.urandom(32)
    key_id = hsm.import_aes_key(known, name="known-value")
    key = os.urandom(32)
    blob = server.wrap(key_id, key, AAD)
    assert aes_key_unwrap(known, blob[1:]) == key + hashlib.sha256(AAD).digest()
    theirs = b"\x01" + aes_key_wrap(known, key + hashlib.sha256(b"other").digest())
    assert server.unwrap(key_id, theirs, b"other") == key


@pytest.mark.parametrize("index", [0, 1, 40, 72])
def test_a_flipped_byte_is_refused(server: Pkcs11KeyServer, primary: str, index: int) -> None:
    blob = server.wrap(primary, os.urandom(32), AAD)
    with pytest.raises(WrappedKeyInvalid):
        server.unwrap(primary, _flip(blob, index), AAD)


@pytest.mark.parametrize("reshape", [
    lambda blob: b"", lambda blob: blob[:1], lambda blob: blob[:-8], lambda blob: blob + bytes(8),
    lambda blob: b"\x02" + blob[1:],
], ids=["empty", "version-only", "short", "long", "unknown-version"])
def test_a_blob_of_another_length_or_version_is_refused(
        server: Pkcs11KeyServer, primary: str, reshape: Callable[[bytes], bytes]) -> None:
    blob = server.wrap(primary, os.urandom(32), AAD)
    with pytest.raises(WrappedKeyInvalid):
        server.unwrap(primary, reshape(blob), AAD)


def test_other_associated_data_is_refused(server: Pkcs11KeyServer, primary: str) -> None:
    blob = server.wrap(primary, os.urandom(32), AAD)
    for aad in (b"tak1.header-of-workload-b", b"", AAD + b"\x00"):
        with pytest.raises(WrappedKeyInvalid) as refused:
            server.unwrap(primary, blob, aad)
        assert "associated data" in str(refused.value)


def test_a_blob_of_another_primary_key_is_refused(server: Pkcs11KeyServer, primary: str) -> None:
    other = server.create_primary_key("other")
    blob = server.wrap(other, os.urandom(32), AAD)
    with pytest.raises(WrappedKeyInvalid):
        server.unwrap(primary, blob, AAD)


def test_a_key_the_token_does_not_have_makes_the_server_unavailable(
        server: Pkcs11KeyServer, primary: str) -> None:
    blob = server.wrap(primary, os.urandom(32), AAD)
    with pytest.raises(KeyServerUnavailable, match="no key id"):
        server.wrap("ab" * 16, os.urandom(32), AAD)
    with pytest.raises(KeyServerUnavailable, match="no key id"):
        server.unwrap("ab" * 16, blob, AAD)


@pytest.mark.parametrize(("error", "token_works", "refused"), [
    (p11e.WrappedKeyInvalid(), False, True),
    (p11e.WrappedKeyLenRange(), False, True),
    (p11e.EncryptedDataInvalid(), False, True),
    (p11e.GeneralError(), True, True),     # SoftHSM2's failed integrity check
    (p11e.GeneralError(), False, False),   # ... or a token that fails
    (p11e.DeviceError(), True, False),
    (p11e.SessionHandleInvalid(), True, False),
    (p11e.UserNotLoggedIn(), True, False),
])
def test_unwrap_errors_mean_a_bad_blob_only_when_the_token_says_so(
        error: p11e.PKCS11Error, token_works: bool, refused: bool) -> None:
    assert _blob_refused(error, lambda: token_works) is refused


# --- failures to reach or use the token --------------------------------------------------------


def _assert_quiet_about_the_pin(message: str, endpoint: Pkcs11Endpoint) -> None:
    assert endpoint.pin not in message
    assert endpoint.token_label in message
    assert endpoint.module in message
    assert "\n" not in message


def test_a_wrong_pin_is_refused_by_the_token(hsm: SoftHsm, make_server: ServerFactory) -> None:
    endpoint = hsm.endpoint_for(REFUSAL_LABEL, pin=WRONG_PIN)
    server = make_server(endpoint)
    report = server.check()
    assert (report.reachable, report.server_trusts_client, report.round_trip) == (True, False,
                                                                                  False)
    assert not report.healthy
    assert "PIN refused" in report.detail
    _assert_quiet_about_the_pin(report.detail, endpoint)
    with pytest.raises(KeyServerUnavailable) as refused:
        server.create_primary_key("never")
    _assert_quiet_about_the_pin(str(refused.value), endpoint)
    # the right PIN still works: the refusal locked nothing
    good = make_server(hsm.endpoint_for(REFUSAL_LABEL))
    assert good.check().healthy


def test_a_wrong_pin_is_refused_while_the_process_is_logged_in(
        hsm: SoftHsm, make_server: ServerFactory, server: Pkcs11KeyServer,
        primary: str) -> None:
    # the token itself would answer "already logged in" to any PIN now
    blob = server.wrap(primary, os.urandom(32), AAD)
    endpoint = hsm.endpoint_for(hsm.label, pin=WRONG_PIN)
    wrong = make_server(endpoint)
    assert wrong.check().server_trusts_client is False
    with pytest.raises(KeyServerUnavailable) as refused:
        wrong.unwrap(primary, blob, AAD)
    _assert_quiet_about_the_pin(str(refused.value), endpoint)
    assert len(server.unwrap(primary, blob, AAD)) == 32  # and the good server is undisturbed


def test_a_missing_module_makes_the_server_unavailable(make_server: ServerFactory) -> None:
    endpoint = Pkcs11Endpoint("/nonexistent/libnothere.so", "ta-test", "1234-secret")
    server = make_server(endpoint)
    with pytest.raises(KeyServerUnavailable) as unavailable:
        server.create_primary_key("never")
    _assert_quiet_about_the_pin(str(unavailable.value), endpoint)
    report = server.check()
    assert (report.reachable, report.round_trip, report.healthy) == (False, False, False)
    assert "/nonexistent/libnothere.so" in report.detail


def test_an_unknown_token_label_makes_the_server_unavailable(
        hsm: SoftHsm, make_server: ServerFactory) -> None:
    endpoint = hsm.endpoint_for("no-such-token")
    server = make_server(endpoint)
    with pytest.raises(KeyServerUnavailable) as unavailable:
        server.describe_key("00" * 16)
    _assert_quiet_about_the_pin(str(unavailable.value), endpoint)
    report = server.check()
    assert (report.reachable, report.healthy) == (False, False)
    assert "no token has this label" in report.detail


def test_check_reports_a_healthy_token(server: Pkcs11KeyServer) -> None:
    report = server.check()
    assert report.healthy
    assert (report.reachable, report.client_trusts_server, report.server_trusts_client,
            report.round_trip) == (True, None, True, True)
    assert report.latency_ms is not None
    assert 0 < report.latency_ms < 5000


# --- sharing and recovery -------------------------------------------------------------------


def test_eight_threads_wrap_and_unwrap_at_once(make_server: ServerFactory, primary: str) -> None:
    # two servers on one token: SoftHSM2 is called without locks of its own (python-pkcs11
    # initialises it so), and unserialised calls crash the process
    servers = [make_server(), make_server()]

    def work(worker: int) -> int:
        server = servers[worker % 2]
        for round_ in range(25):
            key = os.urandom(32)
            aad = f"worker-{worker}-{round_}".encode()
            assert server.unwrap(primary, server.wrap(primary, key, aad), aad) == key
        return worker

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sorted(pool.map(work, range(8))) == list(range(8))


def test_closing_one_server_leaves_another_on_the_token_logged_in(
        make_server: ServerFactory, primary: str) -> None:
    first, second = make_server(), make_server()
    blob = first.wrap(primary, os.urandom(32), AAD)
    second.check()
    shared = second._login  # the process's login to the token, one for both servers
    assert shared is not None
    assert first._login is shared
    first.close()
    assert len(second.unwrap(primary, blob, AAD)) == 32
    assert second._login is shared  # not lost and made again: it was never lost


# python-pkcs11 leaves a search that failed to start (C_FindObjectsInit on the dead session)
# marked active, and its __del__ then reports C_FindObjectsFinal's error as unraisable
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_session_closed_under_the_server_is_replaced(server: Pkcs11KeyServer,
                                                       primary: str) -> None:
    key = os.urandom(32)
    blob = server.wrap(primary, key, AAD)
    session = server._session  # the server's own session, closed behind its back
    assert session is not None
    session.close()
    assert server.unwrap(primary, blob, AAD) == key


def test_a_login_lost_under_the_server_is_made_again(server: Pkcs11KeyServer,
                                                     primary: str) -> None:
    # logged out behind its back, the session finds no private key and says no error: the key
    # must not be reported missing
    assert server._login is not None
    server._login.anchor.close()  # C_Logout: every session of the process is logged out
    assert server.describe_key(primary).usable
    key = os.urandom(32)
    assert server.unwrap(primary, server.wrap(primary, key, AAD), AAD) == key

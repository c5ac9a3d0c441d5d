"""The CLI's promise to its users: every command's help has an example, and every error a user
can provoke is one line that says what to do, exits non-zero, and is never a traceback.

Three kinds of failure are checked:

* our own errors (`output.fail`): exactly one line on stderr, ``error: ...``, nothing on
  stdout; with ``--json``, one JSON object on stdout and nothing on stderr;
* usage errors click finds while parsing (a missing required option, a value out of range,
  an unknown option): these keep click's own format, a usage line, a "Try '... -h' for help"
  line and the error in a box. They are accepted as they are: click (through Typer) owns them,
  they name the option at fault and point at ``-h``, and they are never a traceback; rewriting
  them would mean replacing Typer's error rendering for the whole app;
* errors the service answers (401, 403, 404, a proxy's HTML page, TLS trouble): a fake
  transport stands in for the server, so no service runs here.

Two cases also run as real processes of `ta`, for what CliRunner cannot show: the real
stderr of a real console. They run at the same time, as `ta` takes seconds to start.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main
import typer.testing
from typer.testing import CliRunner, Result

from trustauthority.agent.workload import encrypt_file
from trustauthority.cli import connect
from trustauthority.cli.main import app
from trustauthority.cli.profile import PROFILES_FILE, Profile, save_profile
from trustauthority.client import TrustAuthorityClient

runner = CliRunner()

#: the environment variables the CLI reads; none may leak in from the machine running the tests
_OUR_VARIABLES = ("TA_SERVER", "TA_CA", "TA_TOKEN", "TA_CLIENT_CERT", "TA_CLIENT_KEY",
                  "TA_PROFILE", "TA_DATA_DIR", "TA_KMS_DATA_DIR", "TA_AGENT_STATE_DIR",
                  "TA_AGENT_TCTI", "TA_JOIN_TOKEN", "TA_CONFIG_DIR")

#: words by which a message tells the user what to do (or what is expected instead)
_ACTIONS = ("run ", "give ", "check ", "use ", "pass ", "pipe ", "must ", "expected",
            "should be", "should match", "chmod ")


def _says_what_to_do(message: str) -> bool:
    return any(action in message for action in _ACTIONS)


def _no_traceback(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}")
    assert "Traceback" not in result.stdout + result.stderr


#: the app as click runs it, built once
COMMAND = typer.main.get_command(app)


@pytest.fixture(autouse=True)
def one_command_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typer's CliRunner builds the whole click tree (some 70 commands) for every invoke: 0.15 s
    each, most of the time of this file's ~150 runs. Built once, the file stays fast. (Should
    Typer rename this, the fixture fails loudly rather than the tests slowing down unseen.)"""
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: COMMAND)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No profile, server or credential of the machine running the tests; and what commands
    change in their own process put back after each test."""
    for variable in _OUR_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("TA_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    # the agent's commands set it (tpm2-tss's own log lines would follow our one-line error)
    monkeypatch.setenv("TSS2_LOG", "all+none")
    umask = os.umask(0o022)  # `kms serve` sets its process's umask to 077
    os.umask(umask)
    yield
    os.umask(umask)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """What a user gives by mistake, named for the {placeholders} of the cases below."""
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(random.Random(7).randbytes(3000))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json\n")
    (tmp_path / "dir").mkdir()
    with socket.socket() as probe:  # a port nothing listens on, for the KMS
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return {"port": str(port), "garbage": str(garbage), "badjson": str(bad_json),
            "dir": str(tmp_path / "dir"),
            "missing": str(tmp_path / "missing"), "out": str(tmp_path / "out"),
            # a name that is Rich markup: printed unescaped, it raised MarkupError
            "markup": str(tmp_path / "[/]"),
            "garbage_url": f"sqlite:///{garbage}", "missing_url": f"sqlite:///{tmp_path}/none.db"}


def _args(args: tuple[str, ...], files: Mapping[str, str]) -> list[str]:
    return [arg.format_map(files) for arg in args]


# -- every command has help with an example -----------------------------------------------------


def _leaves(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    subcommands = getattr(command, "commands", None)
    if isinstance(subcommands, dict) and subcommands:
        for name, subcommand in sorted(subcommands.items()):
            yield from _leaves(subcommand, (*path, name))
    else:
        yield path, command


COMMANDS = dict(_leaves(COMMAND))


def test_the_walk_finds_every_group_and_command() -> None:
    assert len(COMMANDS) > 60
    for path in (("quote", "verify"), ("host", "join-token", "create"), ("kms", "serve"),
                 ("agent", "workload", "rekey"), ("init",), ("version",)):
        assert path in COMMANDS


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    assert "Example" in (COMMANDS[path].help or ""), f"`ta {' '.join(path)}` has no example"
    result = runner.invoke(app, [*path, "--help"], prog_name="ta")
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout


# -- our own errors: one line, what to do, non-zero -----------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    code: int
    hint: str  # what the message must tell the user
    stdin: str | None = None


REFUSED = "https://127.0.0.1:1"  # nothing listens on port 1: the connection is refused

ERRORS = [
    # reaching the service
    Case("no server configured", ("host", "list"), 2, "run `ta login`"),
    Case("a profile never saved", ("--profile", "prod", "host", "list"), 2,
         "no profile 'prod' is saved"),
    Case("a server that refuses connections", ("--server", REFUSED, "host", "list"), 3,
         "check the URL (--server, TA_SERVER or profile 'default') and that the service is "
         "running"),
    Case("a server URL without a scheme", ("--server", "ta.example", "host", "list"), 2,
         "must start with https://"),
    Case("a CA file that does not exist", ("--server", REFUSED, "--ca", "{missing}", "whoami"),
         2, "check --ca, TA_CA or profile 'default'"),
    Case("a CA file that is no certificate", ("--server", REFUSED, "--ca", "{garbage}",
                                              "whoami"), 2, "must name PEM files"),
    Case("a client certificate that is no certificate",
         ("--server", REFUSED, "--client-cert", "{garbage}", "whoami"), 2,
         "must name PEM files"),
    Case("login without a credential", ("login", "--server", REFUSED), 2, "--token-stdin"),
    Case("login with nothing on stdin", ("login", "--server", REFUSED, "--token-stdin"), 2,
         "pipe it in", stdin=""),
    # files given to offline commands
    Case("an event log that does not exist", ("eventlog", "show", "{missing}"), 2,
         "check the path"),
    Case("an event log that is a directory", ("eventlog", "replay", "{dir}"), 2,
         "check the path"),
    Case("an event log of random bytes", ("eventlog", "show", "{garbage}"), 1,
         "give a TCG binary event log"),
    Case("a path that is Rich markup", ("eventlog", "show", "{markup}"), 2, "[/]"),
    Case("an AK of random bytes",
         ("quote", "verify", "--ak", "{garbage}", "--attest", "{garbage}", "--signature",
          "{garbage}", "--nonce", "00", "--pcrs", "{badjson}"), 2, "give the AK's public key"),
    Case("a nonce that is not hex",
         ("quote", "verify", "--ak", "{garbage}", "--attest", "{garbage}", "--signature",
          "{garbage}", "--nonce", "xyz", "--pcrs", "{badjson}"), 2, "--nonce must be hex"),
    Case("a quote without PCR values",
         ("quote", "verify", "--ak", "{garbage}", "--attest", "{garbage}", "--signature",
          "{garbage}", "--nonce", "00"), 2, "give the PCR values with --pcrs"),
    Case("a JWKS of random bytes", ("token", "verify", "x.y.z", "--jwks", "{garbage}",
                                    "--issuer", "https://ta"), 2, "give --jwks the service's"),
    Case("a JWKS that is not JSON", ("token", "verify", "x.y.z", "--jwks", "{badjson}",
                                     "--issuer", "https://ta"), 2, "give --jwks the service's"),
    Case("a JWKS file that does not exist", ("token", "verify", "x.y.z", "--jwks", "{missing}",
                                             "--issuer", "https://ta"), 2, "check the path"),
    Case("a JWKS URL that refuses", ("token", "verify", "x.y.z", "--jwks",
                                     f"{REFUSED}/.well-known/jwks.json", "--issuer", REFUSED),
         3, "check --jwks"),
    Case("a binding key of random bytes", ("token", "verify", "x.y.z", "--jwks", "{garbage}",
                                           "--issuer", "https://ta", "--binding-key",
                                           "{garbage}"), 2, "--binding-key is neither"),
    Case("a binding key that does not exist", ("token", "verify", "x.y.z", "--jwks", "{garbage}",
                                               "--issuer", "https://ta", "--binding-key",
                                               "{missing}"), 2, "check the path"),
    Case("no token on stdin", ("token", "verify", "-", "--jwks", "{badjson}", "--issuer",
                               "https://ta"), 2, "or - to read it from standard input",
         stdin=""),
    Case("an audit export of random bytes", ("audit", "verify", "--jsonl", "{garbage}"), 2,
         "give a file `ta audit export --jsonl` wrote"),
    Case("an audit export that is not JSON", ("audit", "verify", "--jsonl", "{badjson}"), 2,
         "line 1: not JSON; give a file `ta audit export --jsonl` wrote"),
    Case("an audit export that does not exist", ("audit", "verify", "--jsonl", "{missing}"), 2,
         "check the path"),
    Case("an audit database of random bytes", ("audit", "verify", "--database",
                                               "{garbage_url}"), 3,
         "check that --database is a copy of the service's database"),
    Case("an audit database that does not exist", ("audit", "verify", "--database",
                                                    "{missing_url}"), 2,
         "give a copy of the service's database"),
    Case("an audit database of another kind", ("audit", "verify", "--database",
                                               "mysql://db/ta"), 2, "use sqlite or postgresql"),
    Case("an audit key of random bytes", ("audit", "verify", "--database", "{garbage_url}",
                                          "--audit-key", "{garbage}"), 2,
         "give the service's audit public key"),
    Case("an export to a directory that does not exist",
         ("--server", REFUSED, "audit", "export", "--output", "{missing}/audit.jsonl"), 2,
         "check --output"),
    # the agent and its workloads
    Case("an agent state dir that does not exist", ("agent", "status", "--state-dir",
                                                    "{missing}"), 2,
         "run `trustauthority agent enroll` first"),
    Case("an agent state dir that is a file", ("agent", "status", "--state-dir", "{garbage}"),
         2, "--state-dir {garbage} is a file, not a directory; give a directory"),
    Case("attesting before enrolling", ("agent", "attest", "--state-dir", "{missing}"), 2,
         "agent enroll` first"),
    Case("an EK intermediate of random bytes",
         ("agent", "enroll", "--server", REFUSED, "--ek-intermediate", "{garbage}",
          "--state-dir", "{dir}"), 2, "give a CA certificate in PEM or DER"),
    Case("decrypting what is no workload", ("agent", "workload", "decrypt", "{garbage}",
                                            "{out}", "--state-dir", "{dir}"), 2,
         "must be a file `ta agent workload encrypt` wrote"),
    Case("unlocking what does not exist", ("agent", "workload", "unlock", "{missing}",
                                           "{out}", "--state-dir", "{dir}"), 2,
         "check the path"),
    Case("encrypting with a blob of random bytes",
         ("agent", "workload", "encrypt", "{garbage}", "{out}", "--workload", "vm-42", "--blob",
          "{garbage}", "--state-dir", "{dir}"), 1, "expected tak1."),  # a blob refused: 1
    Case("rekeying what is no workload", ("agent", "workload", "rekey", "{garbage}", "{out}",
                                          "--blob", "tak1.x.y", "--state-dir", "{dir}"), 2,
         "must be a file `ta agent workload encrypt` wrote"),
    Case("enrolling what is no LUKS2 volume",
         ("agent", "workload", "luks-enroll", "{garbage}", "--workload", "vm-42", "--blob",
          "tak1.x.y", "--key-file", "{garbage}", "--state-dir", "{dir}"), 2,
         "is not a LUKS2 volume"),
    Case("a LUKS-only option on a workload file", ("agent", "workload", "unlock", "{garbage}",
                                                   "{out}", "--test", "--state-dir", "{dir}"),
         2, "use --test with LUKS2 volumes only"),
    # the service's and the KMS's directories
    Case("init on a file", ("init", "--data-dir", "{garbage}"), 2, "give a directory"),
    Case("init with TLS files of random bytes",
         ("init", "--data-dir", "{dir}/service", "--tls-cert", "{garbage}", "--tls-key",
          "{garbage}"), 2, "check both files"),
    Case("init with only a TLS certificate",
         ("init", "--data-dir", "{dir}/service", "--tls-cert", "{garbage}"), 2,
         "give both --tls-cert and --tls-key"),
    Case("init with a master key that does not exist",
         ("init", "--data-dir", "{dir}/service", "--master-key", "{missing}"), 2,
         "leave it out to create one"),
    Case("init with a database of another kind",
         ("init", "--data-dir", "{dir}/service", "--database", "mysql://db/ta"), 2,
         "use sqlite or postgresql"),
    Case("serve what was never initialised", ("serve", "--data-dir", "{missing}"), 2,
         "run `trustauthority init --data-dir"),
    Case("serve a file", ("serve", "--data-dir", "{garbage}"), 2, "give a directory"),
    Case("a KMS data dir that is a file", ("kms", "serve", "--data-dir", "{garbage}"), 2,
         "--data-dir {garbage} is a file, not a directory; give a directory"),
    Case("a KMS database of random bytes",
         ("kms", "serve", "--data-dir", "{dir}/kms", "--database", "{garbage}", "--port",
          "{port}"), 2, "give --database a SQLite file"),
    Case("a KMS database in a directory that does not exist",
         ("kms", "serve", "--data-dir", "{dir}/kms", "--database", "{missing}/kms.db", "--port",
          "{port}"), 2, "in a directory that exists"),
    Case("a backup of a file", ("backup", "create", "{out}", "--data-dir", "{garbage}",
                                "--key-file", "{garbage}"), 2, "give a directory"),
    Case("a backup key that does not exist", ("backup", "create", "{out}", "--data-dir",
                                              "{dir}", "--key-file", "{missing}"), 2,
         "make a key with `ta backup new-key`"),
    Case("a certificate written into a file",
         ("--server", REFUSED, "principal", "cert", "create", "ci-bot", "--out", "{garbage}"),
         2, "give a directory"),
    # requests the service would refuse, refused here, naming the option typed
    Case("a join token's lifetime too short",
         ("host", "join-token", "create", "--cluster", "prod", "--lifetime", "5"), 2,
         "--lifetime: Input should be greater than or equal to 60"),
    Case("a cluster's token lifetime too short",
         ("cluster", "create", "prod", "--token-lifetime", "1"), 2, "--token-lifetime:"),
    Case("a role that does not exist", ("principal", "add", "alice", "--role", "root"), 2,
         "--role: Input should be 'trust-admin'"),
    Case("a principal name with a space", ("principal", "add", "a b", "--role", "auditor"), 2,
         "NAME: String should match pattern"),
    Case("a baseline from both an event log and a host",
         ("baseline", "import", "golden", "--eventlog", "{garbage}", "--from-host", "web-01"),
         2, "give exactly one of --eventlog FILE and --from-host HOST"),
    Case("a key server that is neither KMIP nor PKCS#11", ("key-server", "add", "kms1"), 2,
         "give either --kmip HOST:PORT or --pkcs11 MODULE"),
    Case("a KMIP address without a port", ("key-server", "add", "kms1", "--kmip", "kms"), 2,
         "--kmip must be HOST:PORT"),
    Case("a KMIP CA of random bytes",
         ("key-server", "add", "kms1", "--kmip", "kms:5696", "--ca", "{garbage}", "--cert",
          "{garbage}", "--key", "{garbage}"), 2, "is not PEM text; give the PEM file"),
    Case("a TPM CA file that does not exist", ("tpm-ca", "add", "{missing}"), 2,
         "check the path"),
]


@pytest.mark.parametrize("case", ERRORS, ids=lambda case: case.name)
def test_an_error_is_one_line_that_says_what_to_do(case: Case, files: dict[str, str]) -> None:
    result = runner.invoke(app, _args(case.args, files), input=case.stdin, prog_name="ta")
    _no_traceback(result)
    assert result.exit_code == case.code, result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert case.hint.format_map(files) in lines[0]
    assert _says_what_to_do(lines[0]), lines[0]


def test_a_damaged_profiles_file_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / PROFILES_FILE).write_bytes(random.Random(1).randbytes(200))
    result = runner.invoke(app, ["host", "list"], prog_name="ta")
    _no_traceback(result)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "fix it, or remove it and run `ta login` again" in result.stderr


def test_a_mistyped_profile_names_the_saved_ones() -> None:
    save_profile("prod", Profile(server="https://ta:8443"))
    result = runner.invoke(app, ["--profile", "prdo", "host", "list"], prog_name="ta")
    assert result.exit_code == 2
    assert "no profile 'prdo' is saved; saved: prod" in result.stderr
    assert "`ta --profile prdo login`" in result.stderr


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("service")
    result = runner.invoke(app, ["init", "--data-dir", str(data_dir), "--json"], prog_name="ta")
    assert result.exit_code == 0, result.output
    return data_dir


def test_init_twice_says_how_to_run_what_exists(initialised: Path) -> None:
    result = runner.invoke(app, ["init", "--data-dir", str(initialised)], prog_name="ta")
    _no_traceback(result)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert f"run it with `ta serve --data-dir {initialised}`" in lines[0]


def test_a_failed_decryption_leaves_the_users_file_alone(tmp_path: Path) -> None:
    """TARGET may be a file the user holds (arguments swapped, a name reused): a decryption
    that fails before writing to it must not delete it."""
    sealed, precious = tmp_path / "secret.ta", tmp_path / "precious.txt"
    (tmp_path / "plain").write_bytes(b"secret")
    encrypt_file(tmp_path / "plain", sealed, workload="vm-42", blob="tak1.x.y",
                 kek=bytes(32), cipher="aes-256-gcm")
    (tmp_path / "state").mkdir()
    # a blob that does not open is refused (1); a file that is no workload or none is usage (2)
    for source, code in ((sealed, 1), (tmp_path / "plain", 2), (tmp_path / "missing", 2)):
        precious.write_text("keep me")
        result = runner.invoke(app, ["agent", "workload", "decrypt", str(source), str(precious),
                                     "--state-dir", str(tmp_path / "state")], prog_name="ta")
        _no_traceback(result)
        assert result.exit_code == code, result.output
        assert precious.read_text() == "keep me"


# -- --json: the error as one JSON object on stdout -----------------------------------------------


JSON_ERRORS = [
    Case("no server configured", ("host", "list", "--json"), 2, "usage_error"),
    Case("a server that refuses connections",
         ("--server", REFUSED, "host", "list", "--json"), 3, "backend_unavailable"),
    Case("an event log of random bytes", ("eventlog", "show", "{garbage}", "--json"), 1,
         "malformed_event_log"),
    Case("an event log that does not exist", ("eventlog", "replay", "{missing}", "--json"), 2,
         "usage_error"),
    Case("an audit export of random bytes",
         ("audit", "verify", "--jsonl", "{garbage}", "--json"), 2, "usage_error"),
    Case("a JWKS that is not JSON", ("token", "verify", "x.y.z", "--jwks", "{badjson}",
                                     "--issuer", "https://ta", "--json"), 2, "usage_error"),
    Case("PCR values that are not JSON",
         ("quote", "verify", "--ak", "{garbage}", "--attest", "{garbage}", "--signature",
          "{garbage}", "--nonce", "00", "--pcrs", "{badjson}", "--json"), 2, "usage_error"),
    Case("a certificate file that does not exist", ("tpm-ca", "add", "{missing}", "--json"), 2,
         "usage_error"),
    Case("an agent state dir that is a file",
         ("agent", "status", "--state-dir", "{garbage}", "--json"), 2, "usage_error"),
    Case("decrypting what is no workload", ("agent", "workload", "decrypt", "{garbage}",
                                            "{out}", "--state-dir", "{dir}", "--json"), 2,
         "usage_error"),
    Case("init on a file", ("init", "--data-dir", "{garbage}", "--json"), 2, "usage_error"),
]


@pytest.mark.parametrize("case", JSON_ERRORS, ids=lambda case: case.name)
def test_a_json_error_is_one_object_on_stdout(case: Case, files: dict[str, str]) -> None:
    result = runner.invoke(app, _args(case.args, files), prog_name="ta")
    _no_traceback(result)
    assert result.exit_code == case.code, result.output
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert document["error"]["type"] == case.hint  # here: the error's stable type
    assert "\n" not in document["error"]["detail"]
    assert _says_what_to_do(document["error"]["detail"]), document["error"]["detail"]


# -- what click finds while parsing: its format, never a traceback --------------------------------


USAGE_ERRORS = [
    Case("a value below its minimum", ("agent", "run", "--interval", "0"), 2, "--interval"),
    Case("a limit below its minimum", ("host", "history", "web-01", "--limit", "0"), 2,
         "--limit"),
    Case("a port out of range", ("serve", "--data-dir", "{dir}", "--port", "70000"), 2,
         "--port"),
    Case("a value not among the choices", ("agent", "enroll", "--server", REFUSED, "--ek",
                                           "dsa"), 2, "--ek"),
    Case("a date that is no date", ("audit", "list", "--since", "yesterday"), 2, "--since"),
    Case("a number that is no number", ("baseline", "delete", "golden", "one"), 2, "version"),
    Case("a required option missing", ("quote", "verify", "--ak", "ak.pem"), 2, "--attest"),
    Case("a global option after the command", ("login", "--server", REFUSED, "--token", "x"),
         2, "--token"),
    Case("a command that does not exist", ("hosts", "list"), 2, "hosts"),
]


@pytest.mark.parametrize("case", USAGE_ERRORS, ids=lambda case: case.name)
def test_a_usage_error_names_the_option_and_points_at_help(case: Case,
                                                            files: dict[str, str]) -> None:
    result = runner.invoke(app, _args(case.args, files), prog_name="ta")
    _no_traceback(result)
    assert result.exit_code == case.code, result.output
    assert "for help" in result.output  # "Try 'ta ... -h' for help."
    assert case.hint in result.output


# -- what the service answers --------------------------------------------------------------------


def _fake_service(monkeypatch: pytest.MonkeyPatch,
                  answer: httpx.Response | httpx.TransportError) -> None:
    """The CLI's client, talking to a fake transport that gives `answer` to every request."""
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, httpx.TransportError):
            raise answer
        return answer

    def client(*args: Any, **kwargs: Any) -> TrustAuthorityClient:
        return TrustAuthorityClient(*args, transport=httpx.MockTransport(handler), **kwargs)

    monkeypatch.setattr(connect, "TrustAuthorityClient", client)


def _refusal(status: int, error_type: str, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"type": error_type, "detail": detail,
                                        "request_id": "0123abcd"})


SERVICE_ERRORS: list[tuple[str, httpx.Response | httpx.TransportError, int, str]] = [
    ("a credential it does not know",
     _refusal(401, "unauthenticated", "invalid, expired or revoked credential"), 4,
     "run `ta login` again"),
    ("a role that may not", _refusal(403, "forbidden", "bob (auditor) may not host:manage"), 4,
     "`ta whoami` shows yours"),
    ("a name it does not know", _refusal(404, "not_found", "no host named 'web-9'"), 2,
     "the `list` command shows what exists"),
    ("a URL with a path", _refusal(404, "not_found", "Not Found"), 2, "without a path"),
    ("a proxy's error page", httpx.Response(502, text="<html>\n<body>\n<h1>502 Bad Gateway</h1>"
                                                      "\n</body>\n</html>\n"), 3,
     "is a Trust Authority service's"),
    ("a body it does not expect", httpx.Response(200, json={"hello": "world"}), 3,
     "is a Trust Authority service's"),
    ("a detail that is Rich markup", _refusal(409, "conflict", "[/] [bold]exists"), 2,
     "[/] [bold]exists"),
    ("a certificate not signed by the CA given", httpx.ConnectError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate in "
        "certificate chain (_ssl.c:1006)"), 3, "give the service's CA certificate with --ca"),
    ("a certificate for another name", httpx.ConnectError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, "
        "certificate is not valid for 'ta.example'. (_ssl.c:1006)"), 3, "`ta init --hostname`"),
    ("no answer in time", httpx.ReadTimeout("timed out"), 3, "that the service is running"),
    # a refused key release is a denial (4), a blob that does not open a rejection (1)
    ("a key release refused", _refusal(403, "key_release_refused",
                                       "host web-9 is untrusted now"), 4, "untrusted now"),
    ("a blob that does not open", _refusal(422, "wrapped_key_invalid",
                                           "the blob does not authenticate"), 1,
     "does not authenticate"),
]


@pytest.mark.parametrize(("answer", "code", "hint"), [case[1:] for case in SERVICE_ERRORS],
                         ids=[case[0] for case in SERVICE_ERRORS])
def test_an_error_from_the_service_says_what_to_do(
        monkeypatch: pytest.MonkeyPatch, answer: httpx.Response | httpx.TransportError,
        code: int, hint: str) -> None:
    _fake_service(monkeypatch, answer)
    result = runner.invoke(app, ["--server", "https://ta.example:8443", "--token", "tat_x",
                                 "host", "show", "web-9"], prog_name="ta")
    _no_traceback(result)
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert hint in lines[0]


# -- as real processes ---------------------------------------------------------------------------


#: few: `ta` takes seconds to start (CliRunner covers the rest of the battery)
PROCESSES = [
    Case("no server configured", ("host", "list"), 2, "run `ta login`"),
    Case("a KMS data dir that is a file", ("kms", "serve", "--data-dir", "{garbage}"), 2,
         "give a directory"),
]


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every case of PROCESSES run by `ta` at once (each takes seconds just to start)."""
    executable = Path(sys.executable).parent / "ta"
    if not executable.exists():
        found = shutil.which("ta")
        if found is None:
            pytest.skip("the `ta` entry point is not installed")
        executable = Path(found)
    tmp = tmp_path_factory.mktemp("processes")
    garbage = tmp / "garbage.bin"
    garbage.write_bytes(random.Random(7).randbytes(3000))
    names = {"garbage": str(garbage)}
    env = {key: value for key, value in os.environ.items() if key not in _OUR_VARIABLES}
    env["TA_CONFIG_DIR"] = str(tmp / "config")
    running = {case.name: subprocess.Popen(
        [str(executable), *_args(case.args, names)], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
        for case in PROCESSES}
    done = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=120)
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return done


@pytest.mark.parametrize("case", PROCESSES, ids=lambda case: case.name)
def test_a_process_prints_one_line_on_stderr(
        case: Case, processes: dict[str, subprocess.CompletedProcess[str]]) -> None:
    finished = processes[case.name]
    assert "Traceback" not in finished.stdout + finished.stderr, finished.stderr
    assert finished.returncode == case.code, finished.stderr
    assert finished.stdout == ""
    assert finished.stderr.startswith("error: ")
    assert finished.stderr.count("\n") == 1, finished.stderr
    assert case.hint in finished.stderr

"""The operator's path through the CLI, as separate processes: `ta init`, `ta serve`, `ta login`,
principals and tokens, `--json`, exit codes, and a graceful shutdown on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from trustauthority.cli.processes import free_port

TA = str(Path(sys.executable).parent / "ta")


class Cli:
    def __init__(self, config_dir: Path) -> None:
        self.env = {**os.environ, "TA_CONFIG_DIR": str(config_dir), "COLUMNS": "200"}
        for name in ("TA_SERVER", "TA_TOKEN", "TA_CA", "TA_PROFILE", "TA_CLIENT_CERT",
                     "TA_CLIENT_KEY"):
            self.env.pop(name, None)

    def __call__(self, *args: str, stdin: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([TA, *args], input=stdin, capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=60, check=False)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Cli, dict[str, str], subprocess.Popen[str]]]:
    cli = Cli(tmp_path / "config")
    port = free_port()
    data_dir = tmp_path / "data"
    created = cli("init", "--data-dir", str(data_dir), "--port", str(port), "--json")
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    server = subprocess.Popen([TA, "serve", "--data-dir", str(data_dir)], env=cli.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=1)  # noqa: S501 - probe only
            break
        except httpx.TransportError:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            assert time.monotonic() < deadline, "ta serve did not start"
            time.sleep(0.1)
    yield cli, info, server
    if server.poll() is None:
        server.kill()
        server.wait()
    if server.stdout:
        server.stdout.close()


def test_init_serve_login_and_manage_principals(
        served: tuple[Cli, dict[str, str], subprocess.Popen[str]]) -> None:
    cli, info, server = served
    assert info["admin_token"].startswith("tat_")
    logged_in = cli("login", "--server", info["url"].replace("localhost", "127.0.0.1"),
                    "--ca", info["ca"], "--token-stdin", stdin=info["admin_token"] + "\n")
    assert logged_in.returncode == 0, logged_in.stderr
    assert "admin" in logged_in.stdout
    profiles = Path(cli.env["TA_CONFIG_DIR"]) / "profiles.toml"
    assert profiles.stat().st_mode & 0o077 == 0  # the profile holds a token: owner only

    me = cli("whoami", "--json")
    assert me.returncode == 0
    assert json.loads(me.stdout)["principal"]["roles"] == ["trust-admin"]

    assert cli("principal", "add", "ops", "--role", "infra-admin").returncode == 0
    token = json.loads(cli("principal", "token", "create", "ops", "--json").stdout)["token"]
    listed = cli("principal", "list", "--json")
    assert {p["name"] for p in json.loads(listed.stdout)} == {"admin", "ops"}

    # exit codes: 2 usage, 4 denied, 3 unreachable; one line on stderr, no traceback
    bad_role = cli("principal", "add", "x", "--role", "root")
    assert bad_role.returncode == 2
    assert "Traceback" not in bad_role.stderr
    dual = cli("principal", "add", "y", "--role", "auditor", "--role", "infra-admin")
    assert dual.returncode == 2
    assert "separation of duties" in dual.stderr
    denied = cli("principal", "list", env={"TA_TOKEN": token})
    assert denied.returncode == 4
    assert "may not principal:read" in denied.stderr
    refused = cli("whoami", env={"TA_TOKEN": "tat_0123456789abcdef_" + "x" * 43})
    assert refused.returncode == 4
    unreachable = cli("--server", f"https://127.0.0.1:{free_port()}", "whoami")
    assert unreachable.returncode == 3
    assert "cannot reach" in unreachable.stderr

    verified = cli("audit", "verify", "--json")
    assert verified.returncode == 0
    assert json.loads(verified.stdout)["ok"] is True
    exported = cli("audit", "export", "--jsonl")
    actions = [json.loads(line)["action"] for line in exported.stdout.splitlines()]
    assert actions[:3] == ["principal.create", "principal.create", "token.create"]
    assert "auth.failure" in actions
    assert "principal:read" in actions

    # the audit key, recorded once, pins the verification of a copy of the store
    pem = Path(cli.env["TA_CONFIG_DIR"]) / "audit-key.pem"
    written = cli("audit", "public-key", "--out", str(pem))
    assert written.returncode == 0, written.stderr
    printed = cli("audit", "public-key")
    assert printed.stdout == pem.read_text()
    assert printed.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    [described] = json.loads(cli("audit", "public-key", "--json").stdout)
    assert described["active"] is True
    assert described["public_pem"] == pem.read_text()
    assert cli("audit", "checkpoint").returncode == 0
    database = f"sqlite:///{Path(info['data_dir']) / 'trustauthority.db'}"
    pinned = cli("audit", "verify", "--database", database, "--audit-key", str(pem), "--json")
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert json.loads(pinned.stdout)["checkpoints"] >= 1
    auditors_only = cli("audit", "public-key", env={"TA_TOKEN": token})  # an infra-admin
    assert auditors_only.returncode == 4

    # graceful: uvicorn finishes, then exits by the signal it was sent (as a shell expects)
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=20) in (0, -signal.SIGTERM)
    output = server.stdout.read() if server.stdout else ""
    assert "Shutting down" in output
    assert "Finished server process" in output
    assert "Traceback" not in output


def test_init_refuses_an_initialised_directory(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "config")
    data_dir = str(tmp_path / "data")
    assert cli("init", "--data-dir", data_dir).returncode == 0
    again = cli("init", "--data-dir", data_dir)
    assert again.returncode == 2
    assert "already initialised" in again.stderr
    assert oct((tmp_path / "data" / "master.key").stat().st_mode & 0o777) == "0o600"


def test_serve_with_several_workers_spreads_requests_and_stops_them_all(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "config")
    port = free_port()
    data_dir = tmp_path / "data"
    created = cli("init", "--data-dir", str(data_dir), "--port", str(port), "--json")
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    server = subprocess.Popen([TA, "serve", "--data-dir", str(data_dir), "--workers", "2"],
                              env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline = time.monotonic() + 30
        headers = {"Authorization": f"Bearer {info['admin_token']}"}
        context = ssl.create_default_context(cafile=info["ca"])
        with httpx.Client(verify=context, timeout=5) as http:
            while True:
                try:
                    http.get(f"https://127.0.0.1:{port}/healthz")
                    break
                except httpx.TransportError:
                    assert server.poll() is None, server.stdout.read() if server.stdout else ""
                    assert time.monotonic() < deadline, "ta serve --workers 2 did not start"
                    time.sleep(0.1)
        for _ in range(12):  # new connections: the kernel hands them to either worker
            with httpx.Client(verify=context, timeout=5) as http:
                answer = http.get(f"https://127.0.0.1:{port}/v1/whoami", headers=headers)
                assert answer.status_code == 200, answer.text
        workers = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        assert len(workers) == 2
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    output = server.stdout.read() if server.stdout else ""
    if server.stdout:
        server.stdout.close()
    assert code == 0, output
    assert output.count("Finished server process") == 2
    assert "Traceback" not in output


def test_a_service_listening_on_every_address_names_a_dialable_issuer(tmp_path: Path) -> None:
    from trustauthority.service.config import load_config
    from trustauthority.service.setup import initialise

    initialise(tmp_path / "any", listen_host="0.0.0.0", listen_port=9443,  # noqa: S104
               hostnames=("ta.example.com", "10.0.0.5"))
    issuer = load_config(tmp_path / "any").token_issuer
    assert issuer == "https://ta.example.com:9443"
    initialise(tmp_path / "one", listen_host="10.0.0.5", listen_port=9443)
    issuer = load_config(tmp_path / "one").token_issuer
    assert issuer == "https://10.0.0.5:9443"
    initialise(tmp_path / "lb", listen_host="0.0.0.0", issuer="https://ta.example.com")  # noqa: S104
    issuer = load_config(tmp_path / "lb").token_issuer
    assert issuer == "https://ta.example.com"


def test_serve_on_a_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    port = free_port()
    ta = str(Path(sys.executable).parent / "ta")
    subprocess.run([ta, "init", "--data-dir", str(tmp_path / "d"), "--port", str(port)],
                   check=True, capture_output=True)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen(1)
        result = subprocess.run([ta, "serve", "--data-dir", str(tmp_path / "d")],
                                capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use; "
                      "choose another --port, or stop what listens there"]
    assert "Traceback" not in result.stderr

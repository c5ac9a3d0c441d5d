"""End-to-end attestations per second: simulated hosts against one real server on this machine.

What is measured
----------------
- **attestations/s**: N enrolled hosts, C at a time, each doing full attestations in a loop:
  `POST /v1/attestation/challenge`, then a quote of the PCRs asked for and a certify of its
  binding key over the nonce, then `POST /v1/attestation/evidence`, whose answer must be
  `trusted` with a token. p50/p99 are of that whole round (challenge + evidence + token) as the
  host sees it. Every non-trusted answer and every error is counted and printed.
- **reference 1, whoami/s**: the server's cheapest authenticated request (`GET /v1/whoami` with
  a host token), same hosts, same concurrency, same client: what the HTTP + TLS + auth stack
  costs on its own. An attestation is two requests, so att ÷ whoami ≈ 50 % would mean the
  attestation logic costs no more than a whoami.
- **reference 3, the empty app's requests/s**: a FastAPI app whose one `async` route answers a
  constant (no middleware, auth, thread hand-off or database), served exactly as `ta serve`
  serves the product (`trustauthority.api.server.uvicorn_config`: same certificate, TLS
  settings, protocol class), same hosts, concurrency and client. Its server CPU per request is
  what the HTTP + TLS stack costs by itself; its client CPU per request is what the load
  generators cost. From both, the report derives the budget the target leaves per attestation.
- **reference 2, pure verification/s**: in this process, one thread, no server, the checks an
  attestation runs on the same kind of evidence (`parse_tpm2b_public` of the AK, `verify_quote`,
  `parse_event_log`, `verify_evidence`, `verify_certify`). It is measured before and after the
  runs; the difference shows how much the machine's speed drifted (shared or virtual machines).
- CPU over the measured window, in cores: the server process, PostgreSQL's processes (exited
  backends included), the load generators, the rest of the machine ("other processes": anyone
  else's work). From it, attestations per server CPU-second: what one server core sustains.

How
---
The server is the product's own: `ta init` (SQLite in the data dir, or `--database` a fresh
database in a throw-away PostgreSQL 15 cluster, `tests.support.postgres`) then `ta serve` as a
separate process (uvicorn, HTTPS, one process, as shipped). A trust-admin turns on the EK
allow-list and creates cluster `bench` with the golden simulated boot as its baseline. An
infra-admin gives each host its own join token.

Hosts are simulated in separate load-generator processes (`--client-processes`, with C threads
in all), so the clients do not share the server's GIL. A host has an RSA-2048 EK (TCG default
template, on the allow-list), an ECC P-256 AK and an RSA-2048 binding key, all software keys
that sign spec-exact TPMS_ATTEST structures (`tests.support.fake_tpm`). It enrolls through the
real protocol (MakeCredential answered by a software ActivateCredential with the EK private
key), and its PCRs are the replay of the golden event log. Each load thread owns its hosts (one
attestation per host at a time, so TPM clocks only move forward) and keeps one HTTPS keep-alive
connection (httpx, verified against the service CA). A phase has a warm-up (`--warmup`), then
`--seconds` of measurement; an operation counts when it completes inside the window.

Defaults: 50 hosts, concurrency 4 in 2 load processes. On the 2-core machine this was tuned on,
the one server process is saturated (~1 core) from C=2 on. Throughput was the same within
noise for C = 2…32 (whoami/s was best at C=4), and latency only grows with C (p50 ~60 ms at
C=4 today; ~240 ms at C=16 when it was tuned). Above C≈5, PostgreSQL also pays for connection
churn: the server's SQLAlchemy pool keeps 5 connections and closes the overflow ones. The load
generators use ~0.15 core; one process or two made no difference beyond noise.

`--profile FILE` runs the same server under cProfile (every thread, per-thread CPU time, only
the measured window) and prints where an attestation's server CPU goes, by library and by step.
The profiler slows the server about 3×, so its rates are not the benchmark's.

It prints figures and ratios, the target (≥ 500 attestations/s on SQLite) and whether it was
met. It asserts nothing and is not a test. Run: `.venv/bin/python bench/attestation.py [--hosts N]
[--concurrency C] [--seconds S] [--database sqlite|postgresql|both]`, or
`.venv/bin/python bench/run.py --attestation`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import json
import logging
import marshal
import multiprocessing
import os
import pstats
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any, Literal, cast

# `tests.support` (the simulated TPM, the PostgreSQL cluster) is imported from the project root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from cryptography.hazmat.primitives import serialization
from rich.console import Console
from rich.table import Table
from tests.support.postgres import PostgresCluster, postgres_available
from tests.support.sim_host import BANK, ZERO, SimHost, golden
from tests.support.sim_host import b64 as _b64

from trustauthority.cli.processes import free_port
from trustauthority.client import Credentials, TrustAuthorityClient
from trustauthority.eventlog import parse_event_log
from trustauthority.policy import DEFAULT_PCRS
from trustauthority.schemas import (
    BaselineImport,
    ClusterBaselineAdd,
    ClusterCreate,
    EkAdd,
    EnrollmentActivate,
    EnrollmentStart,
    JoinTokenCreate,
    PrincipalCreate,
    TokenCreate,
    TpmSettingsUpdate,
)
from trustauthority.service.attestation import QUOTED_PCRS
from trustauthority.service.hosts import ak_qualified_name
from trustauthority.tpm import parse_tpm2b_public
from trustauthority.verify import verify_certify, verify_evidence, verify_quote

TA = Path(sys.executable).parent / "ta"
#: the product's target, with the server on SQLite on this machine
TARGET = 500.0
CLUSTER = "bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Kind = Literal["whoami", "attest", "empty"]
#: wide enough for the tables when the output is a file or a pipe
console = Console(width=None if sys.stdout.isatty() else 150)


def enroll(host: SimHost, url: str, ca_file: Path, admin_token: str, infra_token: str) -> None:
    """The EK on the allow-list (trust-admin), a join token (infra-admin), then the host's
    own enrollment: MakeCredential from the service, ActivateCredential in software."""
    ek_pem = host.ek.public_key.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    with TrustAuthorityClient(url, Credentials(admin_token), ca_file=ca_file) as admin:
        admin.add_ek(EkAdd(public_key_pem=ek_pem.decode(), description=host.name))
    with TrustAuthorityClient(url, Credentials(infra_token), ca_file=ca_file) as infra:
        join_token = infra.create_join_token(JoinTokenCreate(cluster=CLUSTER)).token
    with TrustAuthorityClient(url, Credentials(), ca_file=ca_file) as anonymous:
        challenge = anonymous.start_enrollment(EnrollmentStart(
            ek_public=_b64(host.ek.tpm2b), ak_public=_b64(host.ak.public.tpm2b),
            hostname=host.name, join_token=join_token))
        secret = host.activate(base64.b64decode(challenge.credential_blob),
                               base64.b64decode(challenge.encrypted_secret))
        done = anonymous.activate_enrollment(challenge.enrollment_id,
                                             EnrollmentActivate(secret=_b64(secret)))
    if done.host.cluster != CLUSTER:
        raise RuntimeError(f"{host.name} enrolled outside cluster {CLUSTER}: {done.host}")
    host.credential = done.credential


# -- the load generator (runs in its own processes) ---------------------------------------------

class RequestFailed(Exception):
    pass


@dataclass(frozen=True)
class WorkerConfig:
    url: str
    ca_file: str
    admin_token: str
    infra_token: str
    host_names: tuple[str, ...]
    threads: int
    #: the empty reference app (`serve_empty`), on a port of its own
    empty_url: str


@dataclass(frozen=True)
class Phase:
    kind: Kind
    start_at: float  # time.monotonic(), the same clock in every process on Linux
    measure_from: float
    measure_until: float


@dataclass
class PhaseResult:
    """Operations that completed inside the measured window."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    untrusted: Counter[str] = field(default_factory=Counter)

    def merge(self, other: PhaseResult) -> None:
        self.latencies += other.latencies
        self.errors.update(other.errors)
        self.untrusted.update(other.untrusted)


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        try:
            error_type = str(response.json().get("type", "?"))
        except ValueError:
            error_type = "?"
        raise RequestFailed(f"{what}: HTTP {response.status_code} {error_type}")


def whoami(client: httpx.Client, host: SimHost) -> str | None:
    _check(client.get("/v1/whoami", headers=host.headers), "whoami")
    return None


def attestation_result(client: httpx.Client, host: SimHost) -> dict[str, Any]:
    """One full attestation (challenge, evidence): the service's answer."""
    answer = client.post("/v1/attestation/challenge", headers=host.headers)
    _check(answer, "challenge")
    challenge = answer.json()
    body = json.dumps(host.evidence_document(base64.b64decode(challenge["nonce"]),
                                             challenge["pcrs"])).encode()
    answer = client.post("/v1/attestation/evidence", content=body,
                         headers={**host.headers, "Content-Type": "application/json"})
    _check(answer, "evidence")
    result: dict[str, Any] = answer.json()
    return result


def attest(client: httpx.Client, host: SimHost) -> str | None:
    """One full attestation; None when trusted with a token, else what came back instead."""
    result = attestation_result(client, host)
    if result["status"] == "trusted" and result.get("token"):
        return None
    failure = result.get("failure") or {}
    return (f"{result['status']}: {failure.get('type', '-')}: "
            f"{str(failure.get('detail', 'no token'))[:160]}")


OPERATIONS: dict[Kind, Callable[[httpx.Client, SimHost], str | None]] = {
    "whoami": whoami, "attest": attest, "empty": whoami}


def _run_thread(config: WorkerConfig, context: ssl.SSLContext, phase: Phase,
                hosts: list[SimHost], result: PhaseResult) -> None:
    operation = OPERATIONS[phase.kind]
    url = config.empty_url if phase.kind == "empty" else config.url
    with httpx.Client(base_url=url, verify=context, timeout=60) as client:
        time.sleep(max(0.0, phase.start_at - time.monotonic()))
        turn = 0
        while time.monotonic() < phase.measure_until:
            host = hosts[turn % len(hosts)]
            turn += 1
            started = time.monotonic()
            outcome: str | None = None
            failed: str | None = None
            try:
                outcome = operation(client, host)
            except (httpx.HTTPError, RequestFailed, KeyError, ValueError) as error:
                failed = str(error)[:160] or type(error).__name__
            done = time.monotonic()
            if phase.measure_from <= done <= phase.measure_until:
                if failed is not None:
                    result.errors[failed] += 1
                    continue
                result.latencies.append(done - started)
                if outcome is not None:
                    result.untrusted[outcome] += 1


def run_phase(config: WorkerConfig, hosts: list[SimHost], phase: Phase) -> PhaseResult:
    context = ssl.create_default_context(cafile=config.ca_file)
    results = [PhaseResult() for _ in range(config.threads)]
    threads = [threading.Thread(target=_run_thread, args=(config, context, phase,
                                                          hosts[index::config.threads],
                                                          results[index]))
               for index in range(config.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = PhaseResult()
    for result in results:
        total.merge(result)
    return total


def worker_main(connection: Connection, config: WorkerConfig) -> None:
    """A load-generator process: create and enroll its hosts, then run phases on request."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        hosts = [SimHost.create(name) for name in config.host_names]
        for host in hosts:
            enroll(host, config.url, Path(config.ca_file), config.admin_token,
                   config.infra_token)
        connection.send(("ready", len(hosts)))
        while (phase := connection.recv()) is not None:
            connection.send(("result", run_phase(config, hosts, phase)))
    except BaseException:
        connection.send(("error", traceback.format_exc()))
        raise


# -- measuring CPU --------------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 on (index 0 is field 3), or None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def process_cpu(pids: list[int], *, reaped_children: bool = False) -> dict[int, float]:
    """User + system CPU seconds of each process (all its threads), from /proc; with
    `reaped_children`, plus what its children used before they exited and were waited for."""
    result = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is None:
            continue
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        if reaped_children:
            ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
        result[pid] = ticks / CLOCK_TICKS
    return result


def child_pids(parent: int) -> list[int]:
    """The processes `parent` forked (`ta serve --workers N`: the workers)."""
    try:
        text = Path(f"/proc/{parent}/task/{parent}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in text.split()]


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS, sum(values[:8]) / CLOCK_TICKS


def postgres_cpu(cluster: PostgresCluster) -> dict[int, float]:
    """CPU seconds of the postmaster (with its exited children: backends of connections that
    were closed) and of each live child (a backend per open connection, and helpers)."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == postmaster:
                children.append(int(entry.name))
    return {**process_cpu(children), **process_cpu([postmaster], reaped_children=True)}


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds per process (server, database, load generators), and the machine's."""

    server: dict[int, float]
    database: dict[int, float]
    clients: dict[int, float]
    machine_busy: float
    machine_total: float


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds used over the measured window."""

    server: float
    database: float
    clients: float
    machine_busy: float
    machine_total: float

    @staticmethod
    def between(before: CpuSample, after: CpuSample) -> CpuUse:
        def used(first: dict[int, float], last: dict[int, float]) -> float:
            # a process started inside the window counts from zero
            return sum(seconds - first.get(pid, 0.0) for pid, seconds in last.items())

        return CpuUse(used(before.server, after.server), used(before.database, after.database),
                      used(before.clients, after.clients),
                      after.machine_busy - before.machine_busy,
                      after.machine_total - before.machine_total)


# -- the server and the fleet ---------------------------------------------------------------------

def _environment(work: Path) -> dict[str, str]:
    env = {**os.environ, "TA_CONFIG_DIR": str(work / "config"), "COLUMNS": "200"}
    for name in ("TA_SERVER", "TA_TOKEN", "TA_CA", "TA_PROFILE", "TA_CLIENT_CERT",
                 "TA_CLIENT_KEY", "TA_DATA_DIR"):
        env.pop(name, None)
    return env


class Server:
    """`ta init` then `ta serve` in a process of its own; stopped with SIGTERM."""

    def __init__(self, work: Path, database_url: str | None,
                 profile: Path | None = None, workers: int = 1) -> None:
        self.env = _environment(work)
        self.data_dir = work / "data"
        self.port = free_port()
        self.empty_port = free_port()
        self.empty_process: subprocess.Popen[bytes] | None = None
        command = [str(TA), "init", "--data-dir", str(self.data_dir), "--port", str(self.port),
                   "--json"]
        if database_url is not None:
            command += ["--database", database_url]
        created = subprocess.run(command, capture_output=True, text=True, env=self.env,
                                 timeout=120, check=False)
        if created.returncode != 0:
            raise RuntimeError(f"ta init failed: {created.stderr or created.stdout}")
        info = json.loads(created.stdout)
        self.admin_token = str(info["admin_token"])
        self.ca_file = Path(info["ca"])
        self.url = f"https://127.0.0.1:{self.port}"
        self.log_file = work / "serve.log"
        command = [str(TA), "serve", "--data-dir", str(self.data_dir), "--workers", str(workers)]
        if profile is not None:  # the same server, under cProfile (see `profiled_serve`)
            command = [sys.executable, __file__, "--serve-profiled", str(self.data_dir),
                       str(profile)]
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        self._wait_until_up(self.process, f"{self.url}/healthz", "ta serve")

    @property
    def empty_url(self) -> str:
        return f"https://127.0.0.1:{self.empty_port}"

    def start_empty(self) -> None:
        """The empty reference app (`serve_empty`) beside the server, on its own port."""
        command = [sys.executable, __file__, "--serve-empty", str(self.data_dir),
                   str(self.empty_port)]
        with self.log_file.open("ab") as log:
            self.empty_process = subprocess.Popen(command, env=self.env, stdout=log,
                                                  stderr=subprocess.STDOUT)
        self._wait_until_up(self.empty_process, f"{self.empty_url}/v1/whoami", "the empty app")

    def _wait_until_up(self, process: subprocess.Popen[bytes], url: str, what: str) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url, verify=context, timeout=2)
                return
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{what} did not start:\n{self.log_tail()}") from None
                time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def admin(self) -> TrustAuthorityClient:
        return TrustAuthorityClient(self.url, Credentials(self.admin_token), ca_file=self.ca_file)

    def stop(self) -> None:
        for process in (self.process, self.empty_process):
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def set_up_fleet(server: Server) -> str:
    """A trust-admin's setup; returns an infra-admin's token (for join tokens)."""
    raw_log, _b64_log, _values = golden()
    with server.admin() as admin:
        # simulated hosts have no EK certificate: their EKs go on the allow-list
        admin.set_tpm_settings(TpmSettingsUpdate(require_ek_certificate=False,
                                                 allow_ek_allowlist=True))
        admin.create_cluster(ClusterCreate(name=CLUSTER))
        admin.import_baseline(BaselineImport(name="golden", event_log_base64=_b64(raw_log)))
        admin.add_cluster_baseline(CLUSTER, ClusterBaselineAdd(baseline="golden"))
        admin.create_principal(PrincipalCreate.model_validate(
            {"name": "bench-infra", "roles": ["infra-admin"], "kind": "automation"}))
        return admin.create_token("bench-infra", TokenCreate(label="bench")).token


@dataclass
class Worker:
    process: multiprocessing.process.BaseProcess
    connection: Connection

    def receive(self, timeout: float) -> object:
        if not self.connection.poll(timeout):
            raise RuntimeError(f"load generator {self.process.pid} did not answer in "
                               f"{timeout:.0f} s")
        try:
            kind, payload = self.connection.recv()
        except EOFError:
            raise RuntimeError(f"load generator {self.process.pid} died") from None
        if kind == "error":
            raise RuntimeError(f"load generator {self.process.pid} failed:\n{payload}")
        return payload


@dataclass(frozen=True)
class PhaseOutcome:
    kind: Kind
    seconds: float
    result: PhaseResult
    cpu: CpuUse

    @property
    def rate(self) -> float:
        return len(self.result.latencies) / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.result.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    def cores(self, seconds: float) -> float:
        return seconds / self.seconds


@dataclass(frozen=True)
class DatabaseRun:
    database: str
    hosts: int
    concurrency: int
    client_processes: int
    attest: PhaseOutcome
    whoami: PhaseOutcome | None  # not measured with --profile
    empty: PhaseOutcome | None  # not measured with --profile


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def measure(kind: Kind, workers: list[Worker], args: argparse.Namespace,
            server: Server, database: PostgresCluster | None) -> PhaseOutcome:
    start = time.monotonic() + 0.3
    phase = Phase(kind, start, start + args.warmup, start + args.warmup + args.seconds)
    for worker in workers:
        worker.connection.send(phase)
    client_pids = [worker.process.pid for worker in workers if worker.process.pid is not None]
    serving = server.empty_process if kind == "empty" else server.process
    assert serving is not None

    def sample() -> CpuSample:
        busy, total = machine_cpu()
        return CpuSample(process_cpu([serving.pid, *child_pids(serving.pid)]),
                         postgres_cpu(database) if database is not None else {},
                         process_cpu(client_pids), busy, total)

    _sleep_until(phase.measure_from)
    if args.profile is not None:
        server.process.send_signal(signal.SIGUSR1)  # the profile starts here (profiled_serve)
    before = sample()
    _sleep_until(phase.measure_until)
    after = sample()
    result = PhaseResult()
    for worker in workers:
        payload = worker.receive(timeout=120)
        assert isinstance(payload, PhaseResult)
        result.merge(payload)
    return PhaseOutcome(kind, args.seconds, result, CpuUse.between(before, after))


def run_database(database: str, args: argparse.Namespace) -> DatabaseRun:
    concurrency = min(args.concurrency, args.hosts)
    processes = max(1, min(args.client_processes, concurrency))
    console.print(f"\n[bold]{database}[/]: starting the server, enrolling {args.hosts} hosts "
                  f"({processes} load processes, {concurrency} threads in all)…")
    cluster: PostgresCluster | None = None
    cluster_dir: Path | None = None
    with tempfile.TemporaryDirectory(prefix="ta-bench-") as work_dir:
        work = Path(work_dir)
        try:
            database_url = None
            if database == "postgresql":
                # its own directory: PostgreSQL runs as `postgres`, which must own the path
                cluster_dir = Path(tempfile.mkdtemp(prefix="ta-bench-pg-"))
                cluster = PostgresCluster(cluster_dir).start()
                database_url = cluster.new_database()
            server = Server(work, database_url, args.profile, args.workers)
            workers: list[Worker] = []
            try:
                infra_token = set_up_fleet(server)
                context = multiprocessing.get_context("spawn")
                names = [f"bench-{index:04d}" for index in range(args.hosts)]
                for index in range(processes):
                    threads = concurrency // processes + (index < concurrency % processes)
                    ours, theirs = context.Pipe()
                    config = WorkerConfig(server.url, str(server.ca_file), server.admin_token,
                                          infra_token, tuple(names[index::processes]), threads,
                                          server.empty_url)
                    process = context.Process(target=worker_main, args=(theirs, config),
                                              daemon=True)
                    process.start()
                    theirs.close()
                    workers.append(Worker(process, ours))
                started = time.monotonic()
                enrolled = sum(int(str(worker.receive(timeout=600))) for worker in workers)
                console.print(f"  {enrolled} hosts enrolled in "
                              f"{time.monotonic() - started:.1f} s; measuring "
                              f"{args.warmup:.0f} s warm-up + {args.seconds:.0f} s per phase")
                attested = measure("attest", workers, args, server, cluster)
                whoami_phase = empty_phase = None
                if args.profile is None:
                    whoami_phase = measure("whoami", workers, args, server, cluster)
                    server.start_empty()
                    empty_phase = measure("empty", workers, args, server, cluster)
            except BaseException:
                if server.process.poll() is not None:
                    console.print(f"[red]server log:[/]\n{server.log_tail()}")
                raise
            finally:
                for worker in workers:
                    with contextlib.suppress(OSError):
                        worker.connection.send(None)
                for worker in workers:
                    worker.process.join(timeout=10)
                    if worker.process.is_alive():
                        worker.process.terminate()
                server.stop()
        finally:
            if cluster is not None:
                cluster.stop()
            if cluster_dir is not None:
                shutil.rmtree(cluster_dir, ignore_errors=True)
    return DatabaseRun(database, args.hosts, concurrency, processes, attested, whoami_phase,
                       empty_phase)


# -- --profile: the server under cProfile --------------------------------------------------------

#: pstats' table: function -> (primitive calls, calls, self time, inclusive time, callers), where
#: callers maps a calling function to the same four numbers for that edge
Location = tuple[str, int, str]
Edge = tuple[int, int, float, float]
StatsTable = dict[Location, tuple[int, int, float, float, dict[Location, Edge]]]


def _since(now: StatsTable, before: StatsTable) -> StatsTable:
    """What a profiler recorded after the `before` snapshot."""
    result: StatsTable = {}
    for function, (cc, nc, tt, ct, callers) in now.items():
        if function not in before:
            result[function] = (cc, nc, tt, ct, callers)
            continue
        old = before[function]
        if nc == old[1]:
            continue
        edges: dict[Location, Edge] = {}
        for caller, edge in callers.items():
            was = old[4].get(caller)
            if was is None:
                edges[caller] = edge
            elif edge[0] != was[0]:
                edges[caller] = (edge[0] - was[0], edge[1] - was[1], edge[2] - was[2],
                                 edge[3] - was[3])
        result[function] = (cc - old[0], nc - old[1], tt - old[2], ct - old[3], edges)
    return result


def _add(total: StatsTable, more: StatsTable) -> None:
    for function, (cc, nc, tt, ct, callers) in more.items():
        if function not in total:
            total[function] = (cc, nc, tt, ct, dict(callers))
            continue
        old = total[function]
        edges = old[4]
        for caller, edge in callers.items():
            was = edges.get(caller, (0, 0, 0.0, 0.0))
            edges[caller] = (was[0] + edge[0], was[1] + edge[1], was[2] + edge[2],
                             was[3] + edge[3])
        total[function] = (old[0] + cc, old[1] + nc, old[2] + tt, old[3] + ct, edges)


def profiled_serve(data_dir: Path, out: Path) -> None:
    """What `ta serve` runs, with a cProfile in every thread: the event loop's (uvicorn, httptools,
    TLS, the ASGI app) and each threadpool worker's (the sync routes: auth, use cases, DB).
    The timer is the thread's own CPU time, so waiting for the GIL or for I/O is not counted
    (but the timer's own system call makes small functions look dearer than they are).
    SIGUSR1 marks the start of the measured window; the profile since then is written to `out`
    when the server stops (SIGTERM)."""
    from trustauthority.api.server import ServeOptions, build_server

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    profiles: list[cProfile.Profile] = []

    def start(_frame: FrameType, _event: str, _arg: Any) -> None:
        # runs once per new thread, and replaces itself with the thread's own profiler
        profile = cProfile.Profile(time.thread_time)
        profiles.append(profile)
        profile.enable()

    threading.setprofile(start)
    server, platform = build_server(ServeOptions(data_dir))
    # uvicorn handles SIGTERM, then raises it again for the handler it found: make that one
    # return, so the profile is written before the process ends
    signal.signal(signal.SIGTERM, lambda _signal, _frame: None)
    main_profile = cProfile.Profile(time.thread_time)
    marks: dict[int, StatsTable] = {}

    def table(profile: cProfile.Profile) -> StatsTable:
        profile.snapshot_stats()  # safe while other threads' profilers run: we hold the GIL
        return dict(cast(StatsTable, profile.stats))  # typeshed says int where times are float

    def mark(_signal: int, _frame: FrameType | None) -> None:
        for profile in [main_profile, *profiles]:
            marks[id(profile)] = table(profile)

    signal.signal(signal.SIGUSR1, mark)
    main_profile.enable()
    try:
        server.run()
    finally:
        main_profile.disable()
        platform.db.dispose()
        total: StatsTable = {}
        for profile in [main_profile, *profiles]:
            _add(total, _since(table(profile), marks.get(id(profile), {})))
        for function in [function for function in total  # the SIGUSR1 handler's own work
                         if function[0] in (__file__, cProfile.__file__)]:
            del total[function]
        with out.open("wb") as file:
            marshal.dump(total, file)  # the format pstats.Stats reads


def serve_empty(data_dir: Path, port: int) -> None:
    """The reference for what the HTTP stack costs on its own: a FastAPI app with one `async`
    route answering a constant (no middleware, no authentication, no thread hand-off, no
    database), served exactly as `ta serve` serves the product (`uvicorn_config`: the same
    certificate, TLS settings and protocol class). Its rate under the same clients is the most
    any FastAPI + uvicorn server can answer on this machine, one request per operation."""
    import uvicorn
    from fastapi import FastAPI

    from trustauthority.api.server import ServeOptions, uvicorn_config
    from trustauthority.service.config import load_config

    app = FastAPI()

    @app.get("/v1/whoami")
    async def answer() -> dict[str, str]:
        return {"name": "empty", "kind": "reference"}

    options = ServeOptions(data_dir, host="127.0.0.1", port=port)
    uvicorn.Server(uvicorn_config(app, options, load_config(data_dir))).run()


#: where self time is spent, by library: the first matching pattern of a function's file (or of
#: a built-in's name) wins; together the rows add up to the profiled CPU time
LIBRARIES = (
    ("TLS (ssl)", ("_ssl.", "ssl.py", "sslproto.py")),
    ("SQLite (sqlite3, C)", ("sqlite3.",)),
    ("psycopg + libpq", ("psycopg",)),
    ("SQLAlchemy", ("sqlalchemy",)),
    ("pydantic", ("pydantic",)),
    ("FastAPI + Starlette", ("fastapi", "starlette")),
    ("uvicorn + httptools + event loop", ("uvicorn", "httptools", "uvloop", "h11", "asyncio",
                                          "selectors", "select.epoll")),
    ("crypto (cryptography, hashlib, hmac)", ("cryptography", "_hashlib", "hashlib", "hmac",
                                              "joserfc", "_rust")),
    ("JSON", ("json",)),
    ("logging", ("logging",)),
    ("trustauthority", ("trustauthority",)),
)


Libraries = tuple[tuple[str, tuple[str, ...]], ...]
Steps = tuple[tuple[str, str, str], ...]


def _library(location: tuple[str, int, str], libraries: Libraries = LIBRARIES) -> str:
    filename, _line, function = location
    text = f"{filename}:{function}"
    for label, patterns in libraries:
        if any(pattern in text for pattern in patterns):
            return label
    return "other (stdlib, builtins)"


#: the use cases and layers, inclusive CPU time (sync functions: cumulative time is meaningful)
STEPS = (
    ("Platform.authenticate (token lookup)", "service/platform.py", "authenticate"),
    ("AttestationService.challenge", "service/attestation.py", "challenge"),
    ("AttestationService.submit", "service/attestation.py", "submit"),
    ("  _consume_nonce (nonce + context txn)", "service/attestation.py", "_consume_nonce"),
    ("    BaselineService.active_for", "service/baselines.py", "active_for"),
    ("  _verify (quote, log, certify, appraise)", "service/attestation.py", "_verify"),
    ("    appraise_evidence", "policy/appraise.py", "appraise_evidence"),
    ("    jwk_thumbprint", "token/", "jwk_thumbprint"),
    ("  _record (record + token txn)", "service/attestation.py", "_record"),
    ("    token issue (ES256 sign)", "token/jwt.py", "issue"),
    ("    AuditLog.record", "service/audit.py", "record"),
    ("Session.commit (all transactions)", "sqlalchemy/orm/session.py", "commit"),
    ("Session.execute/get (all queries)", "sqlalchemy/orm/session.py", "_execute_internal"),
    ("routes: serialize_response (pydantic out)", "fastapi/routing.py", "serialize_response"),
    ("logging (uvicorn access log)", "logging/__init__.py", "callHandlers"),
)


def print_profile(path: Path, *, counted: tuple[str, str], unit: str, steps: Steps,
                  libraries: Libraries = LIBRARIES, top: int = 25) -> None:
    """Where the profiled server's CPU went, per `unit` (one call of `counted`: a file suffix
    and a function name): self time by library, inclusive time by step, the top functions."""
    stats = pstats.Stats(str(path))
    raw: StatsTable = stats.stats  # type: ignore[attr-defined]
    count = sum(entry[1] for location, entry in raw.items()
                if location[0].endswith(counted[0]) and location[2] == counted[1])
    if not count:
        console.print(f"[red]the profile holds no {unit}[/]")
        return
    total = sum(entry[2] for entry in raw.values())
    by_library: dict[str, float] = {}
    for location, entry in raw.items():
        label = _library(location, libraries)
        callers = entry[4]
        edges = sum(edge[2] for edge in callers.values())
        if label.startswith("other") and location[0] == "~" and callers and edges > 0:
            # a built-in (str.join, isinstance…) counts for the library that called it
            for caller, edge in callers.items():
                owner = _library(caller, libraries)
                by_library[owner] = by_library.get(owner, 0.0) + entry[2] * edge[2] / edges
            continue
        by_library[label] = by_library.get(label, 0.0) + entry[2]
    console.print(f"\n[bold]Server profile[/] ({path}; cProfile with per-thread CPU time, which "
                  "inflates Python-heavy code more than C):\n"
                  f"  {count:,} {unit}s profiled (the measured window only), "
                  f"{total / count * 1000:.1f} ms of server CPU per {unit}")
    table = Table("self time, by library", f"ms / {unit}", "share")
    for label, self_time in sorted(by_library.items(), key=lambda item: -item[1]):
        table.add_row(label, f"{self_time / count * 1000:.2f}", f"{self_time / total:.0%}")
    console.print(table)
    by_step = Table("inclusive time, by step", f"calls / {unit}", f"ms / {unit}", "share")
    for label, suffix, function in steps:
        calls = 0
        seconds = 0.0
        for location, entry in raw.items():
            if suffix in location[0] and location[2] == function:
                calls += entry[1]
                seconds += entry[3]
        by_step.add_row(label, f"{calls / count:.1f}", f"{seconds / count * 1000:.2f}",
                        f"{seconds / total:.0%}")
    console.print(by_step)
    console.print(f"  top {top} functions by self time:")
    stats.sort_stats("tottime").print_stats(top)


def profile_report(path: Path) -> None:
    print_profile(path, counted=("service/attestation.py", "submit"), unit="attestation",
                  steps=STEPS)


# -- reference 2: the pure verification, in process ----------------------------------------------

def verification_rate(seconds: float) -> float:
    """Checks/s of what the service runs on one attestation's evidence, in this thread."""
    host = SimHost.create("reference")
    raw_log, _raw_b64, values = golden()
    nonce = os.urandom(32)
    quoted = {BANK: {pcr: values.get(pcr, ZERO) for pcr in sorted(QUOTED_PCRS | DEFAULT_PCRS)}}
    attest_bytes, signature = host.ak.quote(nonce, quoted)
    certify_attest, certify_signature = host.ak.certify(nonce, host.binding)
    ak_bytes = host.ak.public.tpm2b
    binding_bytes = host.binding.tpm2b
    qualified_name = ak_qualified_name(host.ek, host.ak.public)

    def check() -> None:
        ak = parse_tpm2b_public(ak_bytes)  # the service parses the stored AK per attestation
        quote = verify_quote(ak=ak, raw_attest=attest_bytes, raw_signature=signature,
                             expected_nonce=nonce, unverified_pcr_values=quoted,
                             expected_qualified_signer=qualified_name)
        verify_evidence(quote, parse_event_log(raw_log))
        verify_certify(ak=ak, certified_public=binding_bytes, raw_attest=certify_attest,
                       raw_signature=certify_signature, expected_nonce=nonce,
                       expected_qualified_signer=qualified_name)

    for _ in range(50):
        check()
    count = 0
    started = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        for _ in range(50):
            check()
        count += 50
        elapsed = time.perf_counter() - started
    return count / elapsed


# -- report --------------------------------------------------------------------------------------

def _errors(outcome: PhaseOutcome) -> None:
    for what, counter in (("not trusted", outcome.result.untrusted),
                          ("errors", outcome.result.errors)):
        if counter:
            console.print(f"  [red]{outcome.kind}: {sum(counter.values())} {what}[/]")
            for message, count in counter.most_common(5):
                console.print(f"    {count} × {message}", highlight=False)


def _phases(run: DatabaseRun) -> list[PhaseOutcome]:
    return [phase for phase in (run.attest, run.whoami, run.empty) if phase is not None]


def report(runs: list[DatabaseRun], verify_per_second: float) -> None:
    cores = os.cpu_count() or 1
    table = Table("database", "hosts / C", "attestations/s", "p50 ms", "p99 ms", "whoami/s",
                  "att ÷ whoami", "empty app req/s", "verify/s (mean)",
                  "att ÷ verify", "att per server CPU-s",
                  title="Full attestations (challenge + evidence + token) against one server")
    for run in runs:
        attested, whoami_phase = run.attest, run.whoami
        server_cpu = attested.cpu.server
        whoami_rate = whoami_phase.rate if whoami_phase is not None else float("nan")
        empty_rate = run.empty.rate if run.empty is not None else float("nan")
        table.add_row(
            run.database, f"{run.hosts} / {run.concurrency}", f"{attested.rate:,.0f}",
            f"{attested.percentile(0.50):.1f}", f"{attested.percentile(0.99):.1f}",
            f"{whoami_rate:,.0f}", f"{attested.rate / whoami_rate:.0%}",
            f"{empty_rate:,.0f}",
            f"{verify_per_second:,.0f}", f"{attested.rate / verify_per_second:.0%}",
            f"{len(attested.result.latencies) / server_cpu:,.0f}" if server_cpu else "—")
    console.print()
    console.print(table)

    cpu = Table("database", "phase", "server", "database", "load generators",
                "other processes", "machine busy",
                title=f"CPU over the measured window, in cores (this machine has {cores})")
    for run in runs:
        for outcome in _phases(run):
            sample = outcome.cpu
            busy = (sample.machine_busy / sample.machine_total * cores
                    if sample.machine_total else float("nan"))
            ours = outcome.cores(sample.server + sample.database + sample.clients)
            cpu.add_row(run.database, outcome.kind, f"{outcome.cores(sample.server):.2f}",
                        f"{outcome.cores(sample.database):.2f}" if run.database != "sqlite"
                        else "(in server)",
                        f"{outcome.cores(sample.clients):.2f} in {run.client_processes} proc.",
                        f"{max(0.0, busy - ours):.2f}", f"{busy:.2f}")
    console.print(cpu)
    console.print("  The load generators share these cores with the server. The server is one "
                  "Python process whose\n  request handling runs under one GIL: about one core "
                  "is its ceiling. \"other processes\" is\n  everyone else's work on this "
                  "machine during the window.", highlight=False)

    for run in runs:
        for outcome in _phases(run):
            _errors(outcome)
    if not any(run.attest.result.untrusted or run.attest.result.errors for run in runs):
        console.print("  every measured attestation came back trusted with a token")

    console.print(f"\n[bold]Target[/]: ≥ {TARGET:,.0f} attestations/s with the server on "
                  "SQLite on this machine")
    for run in runs:
        rate = run.attest.rate
        if run.database == "sqlite":
            verdict = ("[green]met[/]" if rate >= TARGET
                       else f"[red]not met[/] ({rate / TARGET:.0%} of the target)")
            console.print(f"  sqlite: {rate:,.0f}/s — {verdict}")
        else:
            console.print(f"  {run.database}: {rate:,.0f}/s (reported, no target)")
    sqlite = next((run for run in runs if run.database == "sqlite"), None)
    if sqlite is not None and sqlite.empty is not None:
        _budget(sqlite.attest, sqlite.empty, verify_per_second)


def _budget(attested: PhaseOutcome, empty: PhaseOutcome, verify_per_second: float) -> None:
    """What the target leaves per attestation, beside what the empty app and the pure
    verification cost: one server process uses about one core."""
    def per_operation(outcome: PhaseOutcome, cpu_seconds: float) -> float:
        count = len(outcome.result.latencies)
        return cpu_seconds / count * 1000 if count else float("nan")

    ours = per_operation(attested, attested.cpu.server)
    http = 2 * per_operation(empty, empty.cpu.server)
    verification = 1000 / verify_per_second
    clients = per_operation(empty, empty.cpu.clients)
    console.print(
        f"  server CPU per attestation: {ours:.2f} ms here; the target allows "
        f"{1000 / TARGET:.2f} ms (one core ÷ {TARGET:,.0f}/s), of which the HTTP stack alone takes "
        f"{http:.2f} ms (two requests to the empty reference app: {empty.rate:,.0f} req/s at "
        f"{empty.cores(empty.cpu.server):.2f} cores) and the pure verification {verification:.2f} "
        f"ms: {max(0.0, 1000 / TARGET - http - verification):.2f} ms would be left for "
        f"authentication, the database, the token and JSON", highlight=False)
    console.print(
        f"  the load generators spent {clients:.2f} ms of CPU per request against the empty app: "
        f"at {TARGET:,.0f} attestations/s they alone would need "
        f"{2 * clients * TARGET / 1000:.1f} of this machine's {os.cpu_count()} cores",
        highlight=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--hosts", type=int, default=50, help="simulated hosts (N)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="attestations in flight at once (C, capped at N)")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes (`ta serve --workers`)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up before each phase")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="load-generator processes the C threads are spread over")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="run the server under cProfile (every thread, CPU time), write the "
                             "pstats to FILE and print where an attestation's CPU goes; the "
                             "whoami phase is skipped and the rates are the profiled server's")
    parser.add_argument("--serve-profiled", nargs=2, metavar=("DATA_DIR", "FILE"),
                        help=argparse.SUPPRESS)  # the server process that --profile starts
    parser.add_argument("--serve-empty", nargs=2, metavar=("DATA_DIR", "PORT"),
                        help=argparse.SUPPRESS)  # the empty reference app (`serve_empty`)
    args = parser.parse_args()
    if args.serve_profiled is not None:
        profiled_serve(Path(args.serve_profiled[0]), Path(args.serve_profiled[1]))
        return
    if args.serve_empty is not None:
        serve_empty(Path(args.serve_empty[0]), int(args.serve_empty[1]))
        return
    if args.hosts < 1 or args.concurrency < 1 or args.seconds <= 0:
        parser.error("--hosts, --concurrency and --seconds must be positive")
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    if "postgresql" in databases and not postgres_available():
        raise SystemExit("PostgreSQL 15 server binaries are missing: run scripts/bootstrap")

    console.print(f"[bold]Trust Authority: end-to-end attestations/s[/] — Python "
                  f"{sys.version.split()[0]}, {os.cpu_count()} cores, {args.hosts} hosts, "
                  f"concurrency {args.concurrency}, {args.seconds:.0f} s per phase")
    verify_per_second = verification_rate(min(args.seconds, 3.0))
    console.print(f"pure verification (parse AK + verify_quote + parse_event_log + "
                  f"verify_evidence + verify_certify), one thread: {verify_per_second:,.0f}/s")
    if args.profile is not None:
        args.profile = args.profile.resolve()
        if len(databases) > 1:
            parser.error("--profile profiles one server: choose --database sqlite or postgresql")
    runs = [run_database(database, args) for database in databases]
    # measured again: on a shared or virtual machine the speed drifts, and this shows by how much
    again = verification_rate(min(args.seconds, 3.0))
    console.print(f"\npure verification again after the runs: {again:,.0f}/s "
                  f"({again / verify_per_second - 1:+.0%}: the machine's speed drift meanwhile)")
    report(runs, (verify_per_second + again) / 2)
    if args.profile is not None:
        profile_report(args.profile)


if __name__ == "__main__":
    main()

"""Attested key releases per second, beside the raw rate of the key server they go through.

What is measured, per backend (KMIP, then PKCS#11)
---------------------------------------------------
- **raw key-server rate**, in this process, with the same concurrency C as the releases (C
  threads), no Trust Authority server involved:
  (a) KMIP: PyKMIP `ProxyKmipClient.encrypt` round trips, one connection per thread — the raw
      PyKMIP round-trip rate. PKCS#11: python-pkcs11 C_UnwrapKey + read + destroy of a session
      object under a key found once (one session and one lock, SoftHSM2 is not thread-safe).
  (b) the product's adapter (`KmipKeyServer.unwrap`, `Pkcs11KeyServer.unwrap`) on a blob it
      wrapped. A KMIP unwrap is exactly one KMIP Encrypt plus a local AES-GCM; a PKCS#11 unwrap
      is one key search plus (a). This is what a release costs at the key server, and it is the
      reference of the target ratio; (a) is shown beside it.
- **releases/s**: N enrolled hosts (each attested once: its token is valid 600 s), each with its
  own workload key on the backend's provider; C threads, each owning its hosts and one HTTPS
  keep-alive connection (httpx, verified against the service CA), loop `POST /v1/keys/release`.
  A release counts when it completes inside the window; errors are counted by type; p50/p99
  are of the request as the host sees it. For every host, the first and the last release of the
  phase are decrypted with its binding key (RSA-OAEP-256 + A256GCM JWE): both must hold a 32-byte
  key for the right workload, and the same key — so the figures are real releases, not errors.
- **whoami/s**: `GET /v1/whoami` with a host token, same hosts, same concurrency, same client: the
  server's cheapest authenticated request, the floor of what HTTP + TLS + auth cost.
- CPU over each measured window, in CPU seconds: the server process, the KMS process (with its
  helper processes), this process (the load generator, or the raw client), and the machine.

How
---
The server is the product's own (`bench/attestation.py`'s `Server`): `ta init` (SQLite) then
`ta serve` as a separate process, one process as shipped (`--workers` for more). Each backend
gets a server of its own, so one backend's figures do not carry the other's state. (One server
with both works, but a server process that has loaded SoftHSM2 can fail its next new KMIP
connection once, with "TLS handshake failed (no such engine)" — apparently an OpenSSL error that
SoftHSM2's initialisation leaves in the loading thread's error queue.) The KMIP server is the
embedded PyKMIP server (`trustauthority kms serve`, `tests.support.kms`), a separate process on
loopback; the PKCS#11 token is SoftHSM2 (`tests.support.softhsm`), loaded into the server
process. A trust-admin registers the key server, creates a provider with a new primary key and
grants it to cluster `bench`; an infra-admin creates one workload key per host.

The load generator is C threads in this process (the server and the KMS are processes of their
own), so the clients share this process's GIL; the report shows this process's CPU next to the
server's, which tells whether the client side could be the limit.

On the 2-core machine this was written on, releases/s was ~80 (KMIP) against ~130 raw KMIP
Encrypts/s (the PyKMIP server, one core): the server process is the limit, at ~10 ms of CPU per
release (a whoami: ~5.5 ms), of which the key server call is ~1.4 ms (the PyKMIP client).

Phases: a warm-up (`--warmup`), then `--seconds` of measurement. It prints figures and ratios,
the target (releases/s ≥ 80 % of the adapter's raw unwrap rate, i.e. the service adds little on
top of the key server) and what limits the rate. It asserts nothing and is not a test. Run:
`.venv/bin/python bench/keyrelease.py [--backend kmip|pkcs11|both] [--hosts N]
[--concurrency C] [--seconds S]`, or `.venv/bin/python bench/run.py --key-release`.

`--profile FILE` (one backend) runs the server under cProfile (every thread, CPU time, the release
window only; whoami is skipped) and prints where a release's server CPU goes. The profiler slows
the server about 3×, so its rates are not the benchmark's.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import signal
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

# `tests.support` (simulated hosts, the KMS, SoftHSM2) and `attestation` (this directory)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import pkcs11
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from kmip.core import enums
from kmip.pie.client import ProxyKmipClient
from pkcs11.constants import Attribute, MechanismFlag, ObjectClass
from pkcs11.mechanisms import KeyType, Mechanism
from pkcs11.types import Key, UnwrapMixin, WrapMixin
from rich.table import Table
from tests.support.fake_tpm import FakeAk, binding_public_bytes
from tests.support.kms import RunningKms, start_kms
from tests.support.sim_host import SimHost, ek_public_bytes
from tests.support.softhsm import SoftHsm, init_softhsm, softhsm_available

import attestation
from attestation import (
    CLUSTER,
    Server,
    _check,
    child_pids,
    console,
    enroll,
    machine_cpu,
    process_cpu,
    set_up_fleet,
)
from trustauthority.client import Credentials, TrustAuthorityClient
from trustauthority.errors import WrappedKeyInvalid
from trustauthority.keyrelease.blob import b64url_decode
from trustauthority.keyrelease.jwe import decrypt_with_tpm
from trustauthority.keyserver.kmip import KmipKeyServer
from trustauthority.keyserver.pkcs11 import Pkcs11KeyServer
from trustauthority.schemas import (
    KmipServerCreate,
    Pkcs11ServerCreate,
    ProviderCreate,
    WorkloadKeyCreate,
)
from trustauthority.tpm import parse_tpmt_public

#: releases/s ≥ this share of the adapter's raw unwrap rate
TARGET = 0.80
BACKENDS = ("kmip", "pkcs11")
#: SoftHSM2 tokens: the server's, the adapter's in this process, python-pkcs11's in this process
SERVER_TOKEN, ADAPTER_TOKEN, RAW_TOKEN = "ta-bench", "ta-bench-adapter", "ta-bench-raw"
AAD = b"bench/raw"
#: what `KmipKeyServer` asks the server for (see trustauthority.keyserver.kmip)
AES_ECB = {"cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
           "block_cipher_mode": enums.BlockCipherMode.ECB,
           "padding_method": enums.PaddingMethod.PKCS5}
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
PROVIDERS = {"kmip": "bench-kmip", "pkcs11": "bench-pkcs11"}
LABELS = {"kmip": "KMIP (PyKMIP server)", "pkcs11": "PKCS#11 (SoftHSM2)"}
SHORT = {"kmip": "KMIP", "pkcs11": "PKCS#11"}


# -- hosts ----------------------------------------------------------------------------------------

@dataclass
class BenchHost:
    """A simulated host that keeps its binding key's private half (to open what it is
    released), its attestation token, and one release request body per backend."""

    sim: SimHost
    binding_private: rsa.RSAPrivateKey
    token: str = ""
    workloads: dict[str, str] = field(default_factory=dict)  # backend -> workload id
    blobs: dict[str, str] = field(default_factory=dict)  # backend -> wrapped key

    @classmethod
    def create(cls, name: str) -> BenchHost:
        """What `SimHost.create` makes, keeping the binding key."""
        ek_private = rsa.generate_private_key(65537, 2048)
        ek = parse_tpmt_public(ek_public_bytes(ek_private.public_key()))
        ak = FakeAk.ecc()
        ak.ek_name = ek.name
        binding_private = rsa.generate_private_key(65537, 2048)
        binding = parse_tpmt_public(binding_public_bytes(binding_private.public_key()))
        return cls(SimHost(name, ek_private, ek, ak, binding), binding_private)

    @property
    def name(self) -> str:
        return self.sim.name

    def release_body(self, backend: str) -> bytes:
        return json.dumps({"blob": self.blobs[backend], "workload": self.workloads[backend],
                           "token": self.token}).encode()

    def open_release(self, backend: str, jwe: str) -> bytes:
        """The key in a release answer, checked to be this host's workload's; raises if not."""
        payload = json.loads(decrypt_with_tpm(
            jwe, lambda encrypted_key: self.binding_private.decrypt(encrypted_key, OAEP)))
        key = b64url_decode(str(payload["key"]), "released key")
        if len(key) != 32 or payload.get("workload") != self.workloads[backend]:
            raise ValueError(f"{self.name}: the release holds no 32-byte key for "
                             f"{self.workloads[backend]}")
        return key


def attest_token(client: httpx.Client, host: SimHost) -> str:
    """One full attestation, returning the token."""
    result = attestation.attestation_result(client, host)
    if result["status"] != "trusted" or not result.get("token"):
        raise RuntimeError(f"{host.name} was not attested trusted: {result}")
    return str(result["token"])


# -- running a phase ------------------------------------------------------------------------------

@dataclass
class Tally:
    """Operations of one thread that completed inside the measured window."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


#: role -> the processes whose CPU counts for it (listed afresh at each sample)
Watched = dict[str, Callable[[], list[int]]]


@dataclass(frozen=True)
class Measured:
    what: str
    seconds: float
    latencies: list[float]
    errors: Counter[str]
    cpu: dict[str, float]  # role -> CPU seconds over the window
    machine_busy: float
    machine_total: float

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    def cores(self, role: str) -> float:
        return self.cpu.get(role, 0.0) / self.seconds

    def busy_cores(self) -> float:
        cores = os.cpu_count() or 1
        return self.machine_busy / self.machine_total * cores if self.machine_total else 0.0

    def other_cores(self) -> float:
        """The machine's busy cores that none of the watched processes used: anyone else's."""
        return max(0.0, self.busy_cores() - sum(self.cpu.values()) / self.seconds)

    def ms_per_op(self, role: str) -> float:
        return self.cpu.get(role, 0.0) / self.count * 1000 if self.count else float("nan")


def _loop(operation: Callable[[], None], tally: Tally, start: float, measure_from: float,
          measure_until: float) -> None:
    time.sleep(max(0.0, start - time.monotonic()))
    while time.monotonic() < measure_until:
        started = time.monotonic()
        failed: str | None = None
        try:
            operation()
        except Exception as error:  # noqa: BLE001 - every failure is counted by type
            failed = f"{type(error).__name__}: {str(error)[:160]}"
        done = time.monotonic()
        if measure_from <= done <= measure_until:
            if failed is not None:
                tally.errors[failed] += 1
            else:
                tally.latencies.append(done - started)


def _cpu_sample(watched: Watched) -> dict[str, dict[int, float]]:
    return {role: process_cpu(pids()) for role, pids in watched.items()}


def drive(what: str, operations: list[Callable[[], None]], args: argparse.Namespace,
          watched: Watched, at_window_start: Callable[[], None] | None = None) -> Measured:
    """Each operation looped by a thread of its own: a warm-up, then `args.seconds` counted."""
    start = time.monotonic() + 0.2
    measure_from = start + args.warmup
    measure_until = measure_from + args.seconds
    tallies = [Tally() for _ in operations]
    threads = [threading.Thread(target=_loop, args=(operation, tally, start, measure_from,
                                                    measure_until), daemon=True)
               for operation, tally in zip(operations, tallies, strict=True)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, measure_from - time.monotonic()))
    if at_window_start is not None:
        at_window_start()
    before, (busy_before, total_before) = _cpu_sample(watched), machine_cpu()
    time.sleep(max(0.0, measure_until - time.monotonic()))
    after, (busy_after, total_after) = _cpu_sample(watched), machine_cpu()
    for thread in threads:
        thread.join()
    cpu = {role: sum(seconds - before[role].get(pid, 0.0) for pid, seconds in after[role].items())
           for role in watched}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    for tally in tallies:
        latencies += tally.latencies
        errors.update(tally.errors)
    return Measured(what, args.seconds, latencies, errors, cpu, busy_after - busy_before,
                    total_after - total_before)


# -- the raw key-server rates ---------------------------------------------------------------------

def _encrypt_blocks() -> bytes:
    """r || 1 || r || 2 with a fresh r, as `KmipKeyServer` sends for every blob."""
    r = os.urandom(12)
    return r + (1).to_bytes(4, "big") + r + (2).to_bytes(4, "big")


def raw_kmip_client(kms: RunningKms) -> Any:
    """A PyKMIP client on its own connection, with Trust Authority's client certificate."""
    files = kms.files
    client = ProxyKmipClient(hostname=kms.host, port=kms.port,
                             cert=str(files.client_certificate), key=str(files.client_key),
                             ca=str(files.ca_certificate), ssl_version="PROTOCOL_SSLv23",
                             config_file="/dev/null")
    client.open()
    return client


def raw_kmip_encrypt(client: Any, key_id: str) -> Callable[[], None]:
    def encrypt() -> None:
        answer, _iv = client.encrypt(_encrypt_blocks(), uid=key_id,
                                     cryptographic_parameters=dict(AES_ECB))
        if not isinstance(answer, bytes) or len(answer) not in (32, 48):
            raise ValueError("Encrypt returned an answer of an unexpected size")

    return encrypt


def adapter_unwrap(adapter: KmipKeyServer | Pkcs11KeyServer, key_id: str,
                   blob: bytes) -> Callable[[], None]:
    def unwrap() -> None:
        if len(adapter.unwrap(key_id, blob, AAD)) != 32:
            raise ValueError("unwrap returned a key of the wrong size")

    return unwrap


@contextlib.contextmanager
def raw_pkcs11_unwrap(hsm: SoftHsm) -> Iterator[Callable[[], None]]:
    """python-pkcs11 on token RAW_TOKEN: C_UnwrapKey (AES key wrap) of a 64-byte payload into
    a session object, read its value, destroy it — the token's part of an adapter unwrap, with
    the key found once; one session, every call under one lock."""
    lib = pkcs11.lib(os.path.realpath(hsm.module))  # the adapter loads it by its real path
    token = lib.get_token(token_label=RAW_TOKEN)
    lock = threading.Lock()
    with token.open(rw=True, user_pin=hsm.pin) as session:
        key = session.generate_key(KeyType.AES, 256, store=False,
                                   capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
                                   template={Attribute.SENSITIVE: True,
                                             Attribute.EXTRACTABLE: False})
        assert isinstance(key, WrapMixin)
        assert isinstance(key, UnwrapMixin)
        carrier = session.create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
            Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: True, Attribute.VALUE: os.urandom(64)})
        wrapped = key.wrap_key(cast(Key, carrier), mechanism=Mechanism.AES_KEY_WRAP)
        carrier.destroy()

        def unwrap() -> None:
            with lock:
                target = key.unwrap_key(
                    ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, wrapped,
                    mechanism=Mechanism.AES_KEY_WRAP, capabilities=MechanismFlag(0),
                    template={Attribute.PRIVATE: True, Attribute.SENSITIVE: False,
                              Attribute.EXTRACTABLE: True})
                try:
                    if len(bytes(target[Attribute.VALUE])) != 64:
                        raise ValueError("unwrapped value of the wrong size")
                finally:
                    target.destroy()

        yield unwrap


# -- the fleet ------------------------------------------------------------------------------------

@dataclass
class Setup:
    server: Server
    kms: RunningKms | None
    hsm: SoftHsm | None
    hosts: list[BenchHost]
    infra_token: str
    context: ssl.SSLContext

    def watched(self) -> Watched:
        server_pid = self.server.process.pid
        watched: Watched = {"server": lambda: [server_pid, *child_pids(server_pid)],
                            "bench": lambda: [os.getpid()]}
        if self.kms is not None:
            kms_pid = self.kms.pid
            watched["kms"] = lambda: [kms_pid, *child_pids(kms_pid)]
        return watched

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, verify=self.context, timeout=60)


def register_backend(setup: Setup, backend: str) -> None:
    """Trust-admin: the key server, a provider with a new primary key on it, granted to the
    cluster; infra-admin: a workload key per host."""
    with setup.server.admin() as admin:
        if backend == "kmip":
            kms = setup.kms
            assert kms is not None
            admin.add_kmip_server(KmipServerCreate(
                name="kms", host=kms.host, port=kms.port,
                ca_pem=kms.files.ca_certificate.read_text(),
                certificate_pem=kms.files.client_certificate.read_text(),
                key_pem=kms.files.client_key.read_text()))
            servers = ["kms"]
        else:
            hsm = setup.hsm
            assert hsm is not None
            admin.add_pkcs11_server(Pkcs11ServerCreate(name="hsm", module=hsm.module,
                                                       token_label=SERVER_TOKEN, pin=hsm.pin))
            servers = ["hsm"]
        admin.create_provider(ProviderCreate(name=PROVIDERS[backend], servers=servers,
                                             create_primary_key=True))
        admin.grant_provider(CLUSTER, PROVIDERS[backend])
    with TrustAuthorityClient(setup.server.url, Credentials(setup.infra_token),
                              ca_file=setup.server.ca_file) as infra:
        for host in setup.hosts:
            workload = f"bench/{host.name}/{backend}"
            host.workloads[backend] = workload
            host.blobs[backend] = infra.create_workload_key(WorkloadKeyCreate(
                provider=PROVIDERS[backend], workload=workload, cluster=CLUSTER)).blob


def attest_all(setup: Setup) -> None:
    """A fresh token for every host (valid for the cluster's 600 s)."""
    with setup.client() as client:
        for host in setup.hosts:
            host.token = attest_token(client, host.sim)


# -- the phases of one backend --------------------------------------------------------------------

@dataclass(frozen=True)
class BackendRun:
    backend: str
    hosts: int
    concurrency: int
    workers: int  # server processes
    raw_client: Measured  # (a)
    raw_adapter: Measured  # (b): the reference of the ratio
    release: Measured
    whoami: Measured | None  # not measured with --profile
    checked: int  # releases decrypted and checked
    bad: list[str]  # what was wrong with them


def _groups(hosts: list[BenchHost], concurrency: int) -> list[list[BenchHost]]:
    return [hosts[index::concurrency] for index in range(concurrency)]


def measure_raw(setup: Setup, backend: str, concurrency: int,
                args: argparse.Namespace) -> tuple[Measured, Measured]:
    watched = setup.watched()
    if backend == "kmip":
        kms = setup.kms
        assert kms is not None
        adapter = KmipKeyServer(kms.endpoint())
        try:
            key_id = adapter.create_primary_key("bench-raw")
            blob = adapter.wrap(key_id, os.urandom(32), AAD)
            clients = [raw_kmip_client(kms) for _ in range(concurrency)]
            try:
                raw = drive("(a) raw Encrypt", [raw_kmip_encrypt(client, key_id)
                                                   for client in clients], args, watched)
            finally:
                for client in clients:
                    client.close()
            unwrap = adapter_unwrap(adapter, key_id, blob)
            ours = drive("(b) adapter", [unwrap] * concurrency, args, watched)
        finally:
            adapter.close()
        return raw, ours
    hsm = setup.hsm
    assert hsm is not None
    with raw_pkcs11_unwrap(hsm) as raw_unwrap:
        raw = drive("(a) raw unwrap", [raw_unwrap] * concurrency, args, watched)
    p11 = Pkcs11KeyServer(hsm.endpoint_for(ADAPTER_TOKEN))
    try:
        key_id = p11.create_primary_key("bench-raw")
        blob = p11.wrap(key_id, os.urandom(32), AAD)
        ours = drive("(b) adapter", [adapter_unwrap(p11, key_id, blob)] * concurrency,
                     args, watched)
    finally:
        p11.close()
    return raw, ours


def measure_http(setup: Setup, backend: str, concurrency: int, args: argparse.Namespace,
                 ) -> tuple[Measured, Measured | None, int, list[str]]:
    """The release phase (then the whoami phase), C threads each with its hosts and client."""
    attest_all(setup)
    groups = _groups(setup.hosts, concurrency)
    clients = [setup.client() for _ in groups]
    first: dict[str, str] = {}  # host -> the JWE of its first release in the phase
    last: dict[str, str] = {}

    def releaser(client: httpx.Client, hosts: list[BenchHost]) -> Callable[[], None]:
        turns = itertools.cycle([(host, host.release_body(backend),
                                  {**host.sim.headers, "Content-Type": "application/json"})
                                 for host in hosts])

        def release() -> None:
            host, body, headers = next(turns)
            answer = client.post("/v1/keys/release", content=body, headers=headers)
            _check(answer, "release")
            jwe = str(answer.json()["jwe"])
            first.setdefault(host.name, jwe)
            last[host.name] = jwe

        return release

    def whoami(client: httpx.Client, hosts: list[BenchHost]) -> Callable[[], None]:
        turns = itertools.cycle(hosts)

        def call() -> None:
            attestation.whoami(client, next(turns).sim)

        return call

    mark = None
    if args.profile is not None:  # the server's profile starts here (attestation.profiled_serve)
        process = setup.server.process

        def mark() -> None:
            process.send_signal(signal.SIGUSR1)

    try:
        release = drive("release", [releaser(client, hosts)
                                    for client, hosts in zip(clients, groups, strict=True)],
                        args, setup.watched(), mark)
        floor = None if args.profile is not None else drive(
            "whoami", [whoami(client, hosts) for client, hosts in zip(clients, groups,
                                                                     strict=True)],
            args, setup.watched())
    finally:
        for client in clients:
            client.close()
    checked = 0
    bad: list[str] = []
    for host in setup.hosts:
        if host.name not in first:
            bad.append(f"{host.name}: no release came back")
            continue
        try:
            keys = {host.open_release(backend, first[host.name]),
                    host.open_release(backend, last[host.name])}
            checked += 2
            if len(keys) != 1:
                bad.append(f"{host.name}: two releases of one workload key differ")
        except (WrappedKeyInvalid, ValueError, KeyError, TypeError) as error:
            bad.append(f"{host.name}: {type(error).__name__}: {error}")
    return release, floor, checked, bad


# -- report ---------------------------------------------------------------------------------------

def _errors(measured: Measured, backend: str) -> None:
    if measured.errors:
        console.print(f"  [red]{backend} {measured.what}: {sum(measured.errors.values())} "
                      "errors[/]")
        for message, count in measured.errors.most_common(5):
            console.print(f"    {count} × {message}", highlight=False)


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def limits(run: BackendRun) -> list[str]:
    """What the CPU figures say limits the release rate."""
    release, raw = run.release, run.raw_adapter
    cores = os.cpu_count() or 1
    server, server_ms = release.cores("server"), release.ms_per_op("server")
    # the key server's CPU per unwrap: the KMS process's, or (PKCS#11) the calling process's
    key_ms = raw.ms_per_op("kms" if run.backend == "kmip" else "bench")
    said = []
    if server_ms > 0 and key_ms > 0:
        limit = "the service" if server_ms > key_ms else "the key server"
        said.append(f"per CPU core, the service's cost ({server_ms:.2f} ms per release) bounds "
                    f"releases at ~{1000 / server_ms:,.0f}/s and the key server's "
                    f"({key_ms:.2f} ms per unwrap) at ~{1000 / key_ms:,.0f}/s: {limit} is "
                    "the limit")
    if raw.rate:
        said.append(f"the target needs ≥ {TARGET * raw.rate:,.0f} releases/s, i.e. at most "
                    f"{1000 / (TARGET * raw.rate):.1f} ms of server CPU per release for a "
                    "server process on one core")
    if server >= 0.85 * run.workers:
        said.append(f"the server is CPU-bound ({server:.2f} cores in {run.workers} "
                    "process(es), one GIL each)")
    else:
        said.append(f"the server used {server:.2f} cores")
    if run.backend == "kmip":
        said.append(f"the KMS used {release.cores('kms'):.2f} cores for releases "
                    f"({release.ms_per_op('kms'):.2f} ms per release) against "
                    f"{raw.cores('kms'):.2f} when driven directly")
    busy = release.busy_cores()
    if busy >= 0.9 * cores:
        said.append(f"the machine was saturated ({busy:.2f} of {cores} cores busy): server, "
                    "key server and load generator compete for the same cores")
    others = max(release.other_cores(), raw.other_cores())
    if others >= 0.2:
        said.append(f"other processes on this machine used up to {others:.2f} cores during "
                    "these windows: the figures are lower and noisier than on a quiet machine")
    bench = release.cores("bench")
    if bench >= 0.5 * max(server, 0.01):
        said.append(f"the load generator (this process) used {bench:.2f} cores — a large "
                    "share; a load generator elsewhere would free it")
    if run.whoami is not None and run.whoami.count:
        floor = run.whoami.ms_per_op("server")
        said.append(f"a whoami costs the server {floor:.2f} ms of CPU ({run.whoami.rate:,.0f}/s"
                    f"): a release adds {server_ms - floor:.2f} ms on top of that HTTP + TLS + "
                    f"auth floor, of which the key server call is ~{raw.ms_per_op('bench'):.2f} "
                    "ms (the adapter's unwrap, measured in this process)")
    return said


def report(runs: list[BackendRun]) -> None:
    cores = os.cpu_count() or 1
    table = Table("backend", "hosts / C", "raw (a)/s", "adapter (b)/s", "releases/s",
                  "÷ (b)", "÷ (a)", "p50 ms", "p99 ms", "whoami/s",
                  "server CPU ms/rel.", "KMS CPU ms/rel.",
                  title="Attested key releases against one server, beside the key server's "
                        "raw rate (same concurrency, same run)")
    for run in runs:
        release = run.release
        table.add_row(
            SHORT[run.backend], f"{run.hosts} / {run.concurrency}",
            f"{run.raw_client.rate:,.0f}", f"{run.raw_adapter.rate:,.0f}",
            f"{release.rate:,.0f}", f"{release.rate / run.raw_adapter.rate:.0%}"
            if run.raw_adapter.rate else "—",
            f"{release.rate / run.raw_client.rate:.0%}" if run.raw_client.rate else "—",
            f"{release.percentile(0.50):.1f}", f"{release.percentile(0.99):.1f}",
            f"{run.whoami.rate:,.0f}" if run.whoami is not None else "—",
            _ms(release.ms_per_op("server")),
            _ms(release.ms_per_op("kms")) if run.backend == "kmip" else "(in server)")
    console.print()
    console.print(table)
    console.print("  Both references run in this process, C threads, no Trust Authority server "
                  "in the path.\n"
                  "  (a) KMIP: raw PyKMIP Encrypt round trips (ProxyKmipClient, a connection per "
                  "thread);\n"
                  "      PKCS#11: raw python-pkcs11 C_UnwrapKey + read + destroy, key found "
                  "once.\n"
                  "  (b) the product's adapter unwrap — (a) plus what the adapter adds (pool, "
                  "checks, AES-GCM;\n"
                  "      PKCS#11: a key search per call): the reference of the target ratio.",
                  highlight=False)

    cpu = Table("backend", "phase", "ops/s", "server", "KMS", "this process",
                "other processes", "machine busy", "server ms/op", "KMS ms/op",
                "this process ms/op",
                title=f"CPU over each measured window, in cores (this machine has {cores})")
    for run in runs:
        phases = [run.raw_client, run.raw_adapter, run.release]
        phases += [run.whoami] if run.whoami is not None else []
        for measured in phases:
            kmip = run.backend == "kmip"
            cpu.add_row(run.backend, measured.what, f"{measured.rate:,.0f}",
                        f"{measured.cores('server'):.2f}",
                        f"{measured.cores('kms'):.2f}" if kmip else "—",
                        f"{measured.cores('bench'):.2f}", f"{measured.other_cores():.2f}",
                        f"{measured.busy_cores():.2f}",
                        _ms(measured.ms_per_op("server")),
                        _ms(measured.ms_per_op("kms")) if kmip else "—",
                        _ms(measured.ms_per_op("bench")))
    console.print(cpu)
    console.print("  The load generator is threads in this process (\"this process\"); the server "
                  "and the KMS are processes\n  of their own. The PKCS#11 token (SoftHSM2) runs "
                  "inside the process that calls it. \"other processes\" is\n  everyone else's "
                  "work on this machine during the window.", highlight=False)

    for run in runs:
        outcomes: list[Measured | None] = [run.raw_client, run.raw_adapter, run.release,
                                            run.whoami]
        for outcome in outcomes:
            if outcome is not None:
                _errors(outcome, run.backend)
        if run.bad:
            console.print(f"  [red]{run.backend}: releases that did not open:[/]")
            for line in run.bad[:10]:
                console.print(f"    {line}", highlight=False)
        else:
            console.print(f"  {run.backend}: the first and last release of every host "
                          f"({run.checked} in all) opened with the host's binding key, each "
                          "host's the same 32-byte key")

    console.print(f"\n[bold]Target[/]: releases/s ≥ {TARGET:.0%} of the key server's raw rate "
                  "(the adapter's unwrap, (b))")
    for run in runs:
        reference = run.raw_adapter.rate
        ratio = run.release.rate / reference if reference else 0.0
        verdict = "[green]met[/]" if ratio >= TARGET else "[red]not met[/]"
        console.print(f"  {LABELS[run.backend]}: {run.release.rate:,.0f} releases/s = "
                      f"{ratio:.0%} of {reference:,.0f} unwraps/s — {verdict}")
        for line in limits(run):
            console.print(f"    - {line}", highlight=False)


# -- --profile ------------------------------------------------------------------------------------

LIBRARIES = (
    ("PyKMIP (client)", ("site-packages/kmip/",)),
    ("python-pkcs11 + SoftHSM2", ("site-packages/pkcs11/", "pkcs11._pkcs11")),
    ("JWE (joserfc)", ("joserfc",)),
    *attestation.LIBRARIES,
)

STEPS = (
    ("Platform.authenticate (token lookup)", "service/platform.py", "authenticate"),
    ("WorkloadKeyService.release", "service/workloadkeys.py", "release"),
    ("  token verify (ES256)", "token/jwt.py", "verify"),
    ("  key server unwrap (KMIP)", "keyserver/kmip.py", "unwrap"),
    ("    KMIP Encrypt round trip (pool)", "keyserver/kmip.py", "_call"),
    ("  key server unwrap (PKCS#11)", "keyserver/pkcs11.py", "unwrap"),
    ("  encrypt_to_binding_key (JWE)", "keyrelease/jwe.py", "encrypt_to_binding_key"),
    ("  AuditLog.record", "service/audit.py", "record"),
    ("Session.commit (all transactions)", "sqlalchemy/orm/session.py", "commit"),
    ("Session.execute/get (all queries)", "sqlalchemy/orm/session.py", "_execute_internal"),
    ("routes: serialize_response (pydantic out)", "fastapi/routing.py", "serialize_response"),
    ("logging (uvicorn access log)", "logging/__init__.py", "callHandlers"),
)


def profile_report(path: Path) -> None:
    attestation.print_profile(path, counted=("service/workloadkeys.py", "release"),
                              unit="release", steps=STEPS, libraries=LIBRARIES, top=20)


# -- main -----------------------------------------------------------------------------------------

def run_backend(backend: str, work: Path, hosts: list[BenchHost], hsm: SoftHsm | None,
                args: argparse.Namespace) -> BackendRun:
    """One backend against a server of its own (and, for KMIP, a KMS of its own)."""
    concurrency = min(args.concurrency, args.hosts)
    console.print(f"\n[bold]{LABELS[backend]}[/]: starting the server"
                  + (" and the KMS" if backend == "kmip" else "") + f", enrolling {len(hosts)} "
                  "hosts…")
    work.mkdir()
    kms = start_kms(work / "kms") if backend == "kmip" else None
    server: Server | None = None
    try:
        server = Server(work, None, args.profile, args.workers)
        started = time.monotonic()
        infra_token = set_up_fleet(server)
        for host in hosts:
            enroll(host.sim, server.url, server.ca_file, server.admin_token, infra_token)
        setup = Setup(server, kms, hsm if backend == "pkcs11" else None, hosts, infra_token,
                      ssl.create_default_context(cafile=str(server.ca_file)))
        register_backend(setup, backend)
        console.print(f"  ready in {time.monotonic() - started:.1f} s; {args.warmup:g} s "
                      f"warm-up + {args.seconds:g} s per phase; the raw key server…")
        raw, ours = measure_raw(setup, backend, concurrency, args)
        console.print(f"  (a) {raw.rate:,.0f}/s, (b) {ours.rate:,.0f}/s; releases…")
        release, floor, checked, bad = measure_http(setup, backend, concurrency, args)
        console.print(f"  {release.rate:,.0f} releases/s"
                      + (f", {floor.rate:,.0f} whoami/s" if floor is not None else ""))
        return BackendRun(backend, args.hosts, concurrency, args.workers, raw, ours, release,
                          floor, checked, bad)
    except Exception:
        if server is not None:
            console.print(f"[red]server log (the end):[/]\n{server.log_tail()}",
                          highlight=False, markup=False)
        raise
    finally:
        if server is not None:
            server.stop()
        if kms is not None:
            kms.stop()


def run(args: argparse.Namespace, backends: list[str]) -> list[BackendRun]:
    with tempfile.TemporaryDirectory(prefix="ta-bench-keys-") as work_dir:
        work = Path(work_dir)
        # SoftHSM2's tokens exist before anything loads the module, and SOFTHSM2_CONF is in the
        # environment that `Server` copies for `ta serve`
        hsm = (init_softhsm(work / "hsm", SERVER_TOKEN, extra_labels=(ADAPTER_TOKEN, RAW_TOKEN))
               if "pkcs11" in backends else None)
        hosts = [BenchHost.create(f"bench-{index:04d}") for index in range(args.hosts)]
        return [run_backend(backend, work / backend, hosts, hsm, args) for backend in backends]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backend", choices=("kmip", "pkcs11", "both"), default="both")
    parser.add_argument("--hosts", type=int, default=8, help="simulated hosts (N)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="requests in flight at once (C threads, capped at N); also the "
                             "threads of the raw key-server phases")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes (`ta serve --workers`)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up before each phase")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="run the server under cProfile (one backend), write the pstats to "
                             "FILE and print where a release's CPU goes; whoami is skipped and "
                             "the rates are the profiled server's")
    args = parser.parse_args()
    if min(args.hosts, args.concurrency, args.workers) < 1 or args.seconds <= 0 \
            or args.warmup < 0:
        parser.error("--hosts, --concurrency, --workers and --seconds must be positive")
    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    if "pkcs11" in backends and not softhsm_available():
        raise SystemExit("SoftHSM2 is missing: run scripts/bootstrap")
    if args.profile is not None:
        if len(backends) > 1 or args.workers != 1:
            parser.error("--profile profiles one server process for one backend: choose "
                         "--backend kmip or pkcs11, and one worker")
        args.profile = args.profile.resolve()
    console.print(f"[bold]Trust Authority: attested key releases/s[/] — Python "
                  f"{sys.version.split()[0]}, {os.cpu_count()} cores, {args.hosts} hosts, "
                  f"concurrency {min(args.concurrency, args.hosts)}, backends "
                  f"{', '.join(backends)}")
    runs = run(args, backends)
    report(runs)
    if args.profile is not None:
        profile_report(args.profile)


if __name__ == "__main__":
    main()

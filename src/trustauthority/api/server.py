"""`trustauthority serve`: the API on uvicorn over HTTPS (TLS 1.2 or newer), mTLS optional.

A client may present a certificate issued by the service's CA (verified in the handshake) or a
bearer token. `--insecure-http` exists for local development only and says so loudly. SIGTERM
and SIGINT shut down gracefully: new connections stop, requests in flight finish.

One process serves on one core (Python's interpreter lock). `--workers N` binds the listening
socket once, applies migrations once, then forks N processes that each open their own platform
(database pool, keys) and accept on the shared socket; the kernel spreads the connections. The
parent forwards SIGTERM/SIGINT to every worker and waits for them. Nothing is shared between
workers but the database, exactly as between replicas.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import ssl
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from trustauthority.api.app import create_app
from trustauthority.api.offload import inline_is_cheaper
from trustauthority.api.tlsinfo import ClientCertProtocol
from trustauthority.errors import ConfigError
from trustauthority.service.config import ServiceConfig, load_config
from trustauthority.service.platform import Platform
from trustauthority.store.db import Database
from trustauthority.store.masterkey import load_master_key_file

log = logging.getLogger("trustauthority.serve")


@dataclass(frozen=True)
class ServeOptions:
    data_dir: Path
    host: str | None = None
    port: int | None = None
    insecure_http: bool = False
    workers: int = 1


def open_platform(data_dir: Path, config: ServiceConfig, issuer: str | None = None) -> Platform:
    master_key = load_master_key_file(config.path(data_dir, config.master_key_file))
    db = Database(config.database_for(data_dir))
    db.ping()
    db.upgrade()  # a new release's migrations apply on start, as after `init`
    platform = Platform(db, master_key,
                        audit_checkpoint_interval=config.audit_checkpoint_interval,
                        attestation_history=timedelta(days=config.attestation_history_days),
                        issuer=issuer or config.token_issuer)
    platform.ensure_keys()
    return platform


def _address(options: ServeOptions, config: ServiceConfig) -> tuple[str, int]:
    """Where to listen: the command line's host and port, else the config's."""
    return (options.host or config.listen_host,
            options.port if options.port is not None else config.listen_port)


def build_server(options: ServeOptions) -> tuple[uvicorn.Server, Platform]:
    config = load_config(options.data_dir)
    host, port = _address(options, config)
    scheme = "http" if options.insecure_http else "https"
    platform = open_platform(options.data_dir, config,
                             config.issuer or f"{scheme}://{host}:{port}")
    app = create_app(platform, max_request_bytes=config.max_request_bytes,
                     blocking_inline=inline_is_cheaper(platform.db.dialect, options.workers))
    return uvicorn.Server(uvicorn_config(app, options, config)), platform


def uvicorn_config(app: ASGIApp, options: ServeOptions, config: ServiceConfig) -> uvicorn.Config:
    """How `serve` runs an ASGI app: HTTPS (TLS 1.2+, client certificates optional), httptools
    with the client-certificate extension, no lifespan, no server header. Also what the
    benchmarks serve their empty reference app with, so the two differ only in the app."""
    host, port = _address(options, config)
    # uvicorn runs on uvloop (a dependency) by itself; the protocol is ours for client certs
    common = {"host": host, "port": port, "http": ClientCertProtocol, "lifespan": "off",
              "server_header": False, "timeout_graceful_shutdown": 10, "log_config": None,
              "proxy_headers": False}
    if options.insecure_http:
        uv_config = uvicorn.Config(app, **common)  # type: ignore[arg-type]
    else:
        certificate = config.path(options.data_dir, config.tls.certificate)
        key = config.path(options.data_dir, config.tls.private_key)
        client_ca = config.path(options.data_dir, config.tls.client_ca)
        for path in (certificate, key, client_ca):
            if not path.is_file():
                raise ConfigError(f"TLS file {path} is missing")
        uv_config = uvicorn.Config(
            app, ssl_certfile=str(certificate), ssl_keyfile=str(key),
            ssl_ca_certs=str(client_ca), ssl_cert_reqs=ssl.CERT_OPTIONAL,
            **common)  # type: ignore[arg-type]
    uv_config.load()
    if uv_config.ssl is not None:
        uv_config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    return uv_config


def serve(options: ServeOptions) -> None:
    if options.insecure_http:
        log.warning("INSECURE: serving plain HTTP; tokens cross the network in the clear. "
                    "For local development only.")
    if options.workers > 1:
        _serve_workers(options)
        return
    server, platform = build_server(options)
    try:
        # bound here so a port in use is one clear error, not uvicorn's log lines and exit 1
        sock = _listening_socket(server.config.host, server.config.port)
        server.run(sockets=[sock])
    finally:
        platform.db.dispose()


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}; choose "
                          "another --port, or stop what listens there") from None
    sock.set_inheritable(True)
    return sock


def _serve_workers(options: ServeOptions) -> None:
    config = load_config(options.data_dir)
    host, port = _address(options, config)
    # migrate and create missing keys once, before any worker opens the store
    open_platform(options.data_dir, config).db.dispose()
    sock = _listening_socket(host, port)
    children: list[int] = []
    for _ in range(options.workers):
        pid = os.fork()
        if pid == 0:  # a worker: its own platform and pool, accepting on the shared socket
            code = 0
            try:
                server, platform = build_server(options)
                try:
                    server.run(sockets=[sock])
                finally:
                    platform.db.dispose()
            except BaseException:
                log.exception("worker %d failed", os.getpid())
                code = 1
            os._exit(code)
        children.append(pid)
    sock.close()
    log.info("serving on %s:%d with %d workers", host, port, len(children))

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = False
    for child in children:
        _, status = os.waitpid(child, 0)
        failed = failed or os.waitstatus_to_exitcode(status) not in (0, -signal.SIGTERM)
    if failed:
        raise ConfigError("a worker stopped with an error; the service log says why")

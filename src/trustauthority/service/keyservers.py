"""Key servers (trust-admin): KMIP endpoints and PKCS#11 tokens, how to reach and trust them,
and their health as operators know it from vTA (client trusts server, server trusts client).

The client's private key, the KMIP password and the PKCS#11 PIN are sealed with the service
master key before they reach the store, and never leave the service again: views carry the
certificates and settings only. `KeyServerRegistry` turns rows into live adapters, one per
server per process, shared by every request (the adapters pool their own connections).
"""

from __future__ import annotations

import hashlib
import json
import stat
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from trustauthority.errors import (
    ConfigError,
    Conflict,
    NotFound,
    UsageError,
)
from trustauthority.keyserver import (
    HealthReport,
    KeyServer,
    KmipEndpoint,
    Pkcs11Endpoint,
    check_kmip_endpoint,
)
from trustauthority.service.audit import AuditLog
from trustauthority.service.authz import Caller, Permission, authorize
from trustauthority.service.names import check_name
from trustauthority.store.db import Database
from trustauthority.store.masterkey import MasterKey
from trustauthority.store.models import KeyProvider, KeyServerRecord, ProviderServer

KINDS = ("kmip", "pkcs11")
_SEAL_PURPOSE = "key-server-secrets"
DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class KeyServerView:
    id: str
    name: str
    kind: str
    address: str
    settings: dict[str, Any]
    certificate_subject: str | None
    certificate_not_after: datetime | None
    ca_subject: str | None
    created_at: datetime
    created_by: str
    providers: tuple[str, ...] = ()


@dataclass(frozen=True)
class HealthEntry:
    """The last thing a server did for us in this process (for `provider list`)."""

    healthy: bool
    detail: str
    at: datetime


#: where a PKCS#11 module may live: it is loaded into the service's own process, so a
#: trust-admin may name a vendor's library, never a file someone could have dropped anywhere
PKCS11_MODULE_DIRS = (Path("/usr/lib"), Path("/usr/lib64"), Path("/usr/local/lib"), Path("/opt"))


def _check_pkcs11_module(module: str) -> None:
    if not module.startswith("/") or "\x00" in module:
        raise UsageError("the PKCS#11 module must be an absolute path to a .so file")
    try:
        path = Path(module).resolve(strict=True)
        info = path.stat()
    except OSError:
        raise UsageError(f"no PKCS#11 module at {module[:256]} on the service's machine") \
            from None
    if not any(path.is_relative_to(directory) for directory in PKCS11_MODULE_DIRS):
        raise UsageError("the PKCS#11 module must be installed under "
                         + ", ".join(str(d) for d in PKCS11_MODULE_DIRS))
    if not stat.S_ISREG(info.st_mode) or info.st_uid != 0 \
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError("the PKCS#11 module must be a root-owned file no one else can write")


def _check_pkcs11(settings: Pkcs11Endpoint) -> None:
    _check_pkcs11_module(settings.module)
    if not settings.token_label or len(settings.token_label) > 32:
        raise UsageError("the token label must be 1 to 32 characters (PKCS#11's limit)")
    if not settings.pin:
        raise UsageError("the token needs a user PIN")


def _view(row: KeyServerRecord, providers: tuple[str, ...] = ()) -> KeyServerView:
    certificate = (x509.load_pem_x509_certificate(row.certificate_pem.encode())
                   if row.certificate_pem else None)
    ca = x509.load_pem_x509_certificate(row.ca_pem.encode()) if row.ca_pem else None
    return KeyServerView(
        id=row.id, name=row.name, kind=row.kind, address=row.address,
        settings=json.loads(row.settings),
        certificate_subject=certificate.subject.rfc4514_string() if certificate else None,
        certificate_not_after=certificate.not_valid_after_utc if certificate else None,
        ca_subject=ca.subject.rfc4514_string() if ca else None,
        created_at=row.created_at, created_by=row.created_by, providers=providers)


def find_key_server(session: Session, name: str) -> KeyServerRecord:
    row = session.scalars(select(KeyServerRecord).where(KeyServerRecord.name == name)).first()
    if row is None:
        raise NotFound(f"no key server named {name[:128]!r}")
    return row


def default_adapter(row: KeyServerRecord, secrets: dict[str, str | None]) -> KeyServer:
    """The live adapter for a stored key server (imported here: only a service that uses key
    servers loads PyKMIP or a PKCS#11 module)."""
    settings = json.loads(row.settings)
    if row.kind == "kmip":
        from trustauthority.keyserver.kmip import KmipKeyServer

        host, _, port = row.address.rpartition(":")
        return KmipKeyServer(KmipEndpoint(
            host=host, port=int(port), ca_pem=(row.ca_pem or "").encode(),
            cert_pem=(row.certificate_pem or "").encode(),
            key_pem=(secrets.get("key_pem") or "").encode(),
            username=settings.get("username"), password=secrets.get("password"),
            pinned_sha256=settings.get("pinned_sha256"),
            timeout=float(settings.get("timeout", DEFAULT_TIMEOUT))))
    from trustauthority.keyserver.pkcs11 import Pkcs11KeyServer

    return Pkcs11KeyServer(Pkcs11Endpoint(module=row.address,
                                          token_label=settings["token_label"],
                                          pin=secrets.get("pin") or ""))


AdapterFactory = Callable[[KeyServerRecord, dict[str, str | None]], KeyServer]


class KeyServerRegistry:
    """Live adapters by key-server id, built on first use; the last outcome of each."""

    def __init__(self, master_key: MasterKey, clock: Callable[[], datetime],
                 factory: AdapterFactory = default_adapter) -> None:
        self._master_key = master_key
        self._clock = clock
        self._factory = factory
        self._adapters: dict[str, KeyServer] = {}
        self._health: dict[str, HealthEntry] = {}
        self._lock = threading.Lock()

    def seal(self, secrets: dict[str, str | None], server_id: str) -> bytes:
        return self._master_key.seal(json.dumps(secrets).encode(),
                                     purpose=f"{_SEAL_PURPOSE}:{server_id}")

    def adapter(self, row: KeyServerRecord) -> KeyServer:
        with self._lock:
            adapter = self._adapters.get(row.id)
            if adapter is None:
                secrets = json.loads(self._master_key.open(
                    row.sealed_secrets, purpose=f"{_SEAL_PURPOSE}:{row.id}"))
                adapter = self._factory(row, secrets)
                self._adapters[row.id] = adapter
            return adapter

    def forget(self, server_id: str) -> None:
        with self._lock:
            adapter = self._adapters.pop(server_id, None)
            self._health.pop(server_id, None)
        if adapter is not None:
            adapter.close()

    def note(self, server_id: str, *, healthy: bool, detail: str) -> None:
        self._health[server_id] = HealthEntry(healthy, detail[:300], self._clock())

    def last_health(self, server_id: str) -> HealthEntry | None:
        return self._health.get(server_id)

    def close(self) -> None:
        with self._lock:
            adapters, self._adapters = list(self._adapters.values()), {}
        for adapter in adapters:
            adapter.close()


class KeyServerService:
    def __init__(self, db: Database, audit: AuditLog, registry: KeyServerRegistry,
                 clock: Callable[[], datetime]) -> None:
        self._db = db
        self._audit = audit
        self._registry = registry
        self._clock = clock

    def add_kmip(self, caller: Caller, request_id: str, name: str,
                 endpoint: KmipEndpoint) -> KeyServerView:
        try:
            # the adapter's own check, so nothing is stored that it would refuse when used
            check_kmip_endpoint(endpoint)
        except ConfigError as error:
            raise UsageError(str(error)) from None
        public = {"username": endpoint.username, "pinned_sha256": endpoint.pinned_sha256,
                  "timeout": endpoint.timeout}
        return self._add(caller, request_id, name, kind="kmip",
                         address=f"{endpoint.host}:{endpoint.port}", settings=public,
                         ca_pem=endpoint.ca_pem.decode(),
                         certificate_pem=endpoint.cert_pem.decode(),
                         secrets={"key_pem": endpoint.key_pem.decode(),
                                  "password": endpoint.password})

    def add_pkcs11(self, caller: Caller, request_id: str, name: str,
                   settings: Pkcs11Endpoint) -> KeyServerView:
        _check_pkcs11(settings)
        return self._add(caller, request_id, name, kind="pkcs11", address=settings.module,
                         settings={"token_label": settings.token_label}, ca_pem=None,
                         certificate_pem=None, secrets={"pin": settings.pin})

    def _add(self, caller: Caller, request_id: str, name: str, *, kind: str, address: str,
             settings: dict[str, Any], ca_pem: str | None, certificate_pem: str | None,
             secrets: dict[str, str | None]) -> KeyServerView:
        role = authorize(caller, Permission.KEY_PROVIDER_MANAGE)
        check_name("key server", name)
        server_id = str(uuid.uuid4())
        with self._db.session() as session:
            if session.scalars(select(KeyServerRecord.id)
                               .where(KeyServerRecord.name == name)).first():
                raise Conflict(f"a key server named {name!r} already exists")
            row = KeyServerRecord(
                id=server_id, name=name, kind=kind, address=address,
                settings=json.dumps(settings, sort_keys=True), ca_pem=ca_pem,
                certificate_pem=certificate_pem,
                sealed_secrets=self._registry.seal(secrets, server_id),
                created_at=self._clock(), created_by=caller.name)
            session.add(row)
            details: dict[str, Any] = {"kind": kind, "address": address, **settings}
            if certificate_pem:
                details["client_certificate_sha256"] = hashlib.sha256(
                    x509.load_pem_x509_certificate(certificate_pem.encode())
                    .public_bytes(serialization.Encoding.DER)).hexdigest()
            self._audit.record(session, principal=caller.name, role=role,
                               action="key-server.add", target=name, outcome="success",
                               request_id=request_id, details=details)
            return _view(row)

    def list_all(self, caller: Caller) -> list[KeyServerView]:
        authorize(caller, Permission.TRUST_READ)
        with self._db.session(read_only=True) as session:
            return [_view(row) for row in session.scalars(
                select(KeyServerRecord).order_by(KeyServerRecord.name))]

    def get(self, caller: Caller, name: str) -> KeyServerView:
        authorize(caller, Permission.TRUST_READ)
        with self._db.session(read_only=True) as session:
            row = find_key_server(session, name)
            return _view(row, self._providers_of(session, row.id))

    @staticmethod
    def _providers_of(session: Session, server_id: str) -> tuple[str, ...]:
        return tuple(session.scalars(
            select(KeyProvider.name).join(ProviderServer,
                                          ProviderServer.provider_id == KeyProvider.id)
            .where(ProviderServer.key_server_id == server_id).order_by(KeyProvider.name)))

    def remove(self, caller: Caller, request_id: str, name: str) -> KeyServerView:
        role = authorize(caller, Permission.KEY_PROVIDER_MANAGE)
        with self._db.session() as session:
            row = find_key_server(session, name)
            providers = self._providers_of(session, row.id)
            if providers:
                raise Conflict(f"key server {name} serves the providers {', '.join(providers)}:"
                               " remove it from them first")
            view = _view(row)
            session.delete(row)
            self._audit.record(session, principal=caller.name, role=role,
                               action="key-server.remove", target=name, outcome="success",
                               request_id=request_id)
        self._registry.forget(view.id)
        return view

    def test(self, caller: Caller, request_id: str, name: str) -> HealthReport:
        """Connect, check trust both ways, make a round trip; the outcome is audited."""
        role = authorize(caller, Permission.TRUST_READ)
        with self._db.session(read_only=True) as session:
            row = find_key_server(session, name)
            adapter = self._registry.adapter(row)
        report = adapter.check()
        self._registry.note(row.id, healthy=report.healthy, detail=report.detail)
        with self._db.session() as session:
            self._audit.record(session, principal=caller.name, role=role,
                               action="key-server.test", target=name,
                               outcome="success" if report.healthy else "failure",
                               request_id=request_id,
                               details={"reachable": report.reachable,
                                        "client_trusts_server": report.client_trusts_server,
                                        "server_trusts_client": report.server_trusts_client,
                                        "detail": report.detail[:300]})
        return report


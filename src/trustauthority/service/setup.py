"""`trustauthority init`: a data directory with everything a service needs to start.

Creates (or takes) the master key, migrates the store, makes the audit signing key and the TLS
CA (both sealed in the store), writes the server's certificate and key, the config file, and the
first trust-admin with its token, which is returned once and never stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trustauthority import pki
from trustauthority.errors import ConfigError, Conflict
from trustauthority.files import write_private
from trustauthority.service.config import CONFIG_NAME, ServiceConfig, TlsConfig, write_config
from trustauthority.service.keys import KeyPurpose
from trustauthority.service.platform import Platform, utc_now
from trustauthority.store.db import Database, sqlite_url
from trustauthority.store.masterkey import create_master_key_file, load_master_key_file

#: listen addresses that are no one's address
_WILDCARDS = ("0.0.0.0", "::", "")  # noqa: S104 - compared, not bound


@dataclass(frozen=True)
class InitResult:
    data_dir: Path
    config_file: Path
    database: str
    admin_name: str
    admin_token: str
    ca_file: Path
    url: str


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def initialise(data_dir: Path, *, database_url: str | None = None,
               admin_name: str = "admin", hostnames: tuple[str, ...] = ("localhost", "127.0.0.1"),
               listen_host: str = "127.0.0.1", listen_port: int = 8443,
               master_key_file: Path | None = None,
               tls_certificate: Path | None = None, tls_key: Path | None = None,
               issuer: str | None = None) -> InitResult:
    data_dir = data_dir.resolve()
    if (data_dir / CONFIG_NAME).exists():
        raise Conflict(f"{data_dir} is already initialised ({CONFIG_NAME} exists)")
    if (tls_certificate is None) != (tls_key is None):
        raise ConfigError("give both --tls-cert and --tls-key, or neither")
    if master_key_file is not None and not master_key_file.exists():
        # a mistyped path must not quietly become a new key (the service would then not
        # open the secrets stored under the key that was meant)
        raise ConfigError(f"no master key at {master_key_file}: give --master-key an existing "
                          "key file, or leave it out to create one in --data-dir")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (data_dir / "tls").mkdir(exist_ok=True, mode=0o700)
    url = database_url or sqlite_url(data_dir / "trustauthority.db")

    key_path = master_key_file or data_dir / "master.key"
    master_key = (load_master_key_file(key_path) if key_path.exists()
                  else create_master_key_file(key_path))
    db = Database(url)
    try:
        db.upgrade()
        platform = Platform(db, master_key)
        now = utc_now()
        ca_key, ca = pki.new_ca(f"Trust Authority CA {uuid.uuid4().hex[:8]}", now)
        with db.session() as session:
            if platform.keys.public_keys(session, KeyPurpose.AUDIT):
                raise Conflict(f"the database {db.display_url} is already initialised")
            platform.keys.create(session, KeyPurpose.AUDIT)
            platform.keys.create(session, KeyPurpose.ATTESTATION)
            platform.keys.store(session, KeyPurpose.TLS_CA, ca_key, ca)
        ca_file = data_dir / "tls" / "ca.pem"
        ca_file.write_bytes(_pem(ca))
        tls = TlsConfig()
        if tls_certificate is not None and tls_key is not None:
            tls = TlsConfig(certificate=str(tls_certificate.resolve()),
                            private_key=str(tls_key.resolve()), client_ca="tls/ca.pem")
        else:
            server_key, server = pki.issue_server_certificate(ca_key, ca, hostnames, now)
            (data_dir / "tls" / "server.pem").write_bytes(_pem(server) + _pem(ca))
            write_private(data_dir / "tls" / "server-key.pem", server_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
        issued = platform.principals.bootstrap_admin(admin_name, request_id="init")
    finally:
        db.dispose()
    if issuer is None and listen_host in _WILDCARDS:
        # tokens must name an address relying parties dial, never "0.0.0.0"
        issuer = f"https://{hostnames[0]}:{listen_port}"
    config = ServiceConfig(
        database_url=database_url or "sqlite:///trustauthority.db",
        master_key_file=str(key_path) if master_key_file else "master.key",
        listen_host=listen_host, listen_port=listen_port, tls=tls, issuer=issuer)
    config_file = write_config(data_dir, config)
    shown_host = hostnames[0]
    return InitResult(data_dir=data_dir, config_file=config_file,
                      database=Database.hide_password(url), admin_name=admin_name,
                      admin_token=issued.token, ca_file=ca_file,
                      url=f"https://{shown_host}:{listen_port}")

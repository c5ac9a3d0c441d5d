"""The service's configuration file (`DATA_DIR/config.toml`), validated with pydantic.

Relative paths are relative to the data directory, so a data directory can be moved or restored
as a whole. Environment variables override the file for the two things that differ between
replicas of one deployment: `TA_DATABASE_URL` and `TA_MASTER_KEY_FILE`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trustauthority.errors import ConfigError
from trustauthority.files import write_private

CONFIG_NAME = "config.toml"


class TlsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    certificate: str = "tls/server.pem"
    private_key: str = "tls/server-key.pem"
    #: CA whose client certificates are accepted for mTLS (the service's own CA)
    client_ca: str = "tls/ca.pem"


class ServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database_url: str
    master_key_file: str = "master.key"
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8443, ge=1, le=65535)
    tls: TlsConfig = TlsConfig()
    audit_checkpoint_interval: int = Field(default=100, ge=1, le=1_000_000)
    max_request_bytes: int = Field(default=1_048_576, ge=1024, le=256 * 1024 * 1024)
    #: attestation records (`host history`) older than this many days are deleted
    attestation_history_days: int = Field(default=90, ge=1, le=36500)
    #: the `iss` of attestation tokens: the URL relying parties know the service by
    #: (default: https://<listen_host>:<listen_port>); set it behind a load balancer
    issuer: str | None = Field(default=None, min_length=1, max_length=256)

    @property
    def token_issuer(self) -> str:
        return self.issuer or f"https://{self.listen_host}:{self.listen_port}"

    def database_for(self, data_dir: Path) -> str:
        """The database URL, a relative SQLite path taken relative to the data directory."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix):
            file = self.database_url[len(prefix):]
            if file and not file.startswith("/"):
                return prefix + str((data_dir / file).resolve())
        return self.database_url

    def path(self, data_dir: Path, value: str) -> Path:
        candidate = Path(value)
        return candidate if candidate.is_absolute() else data_dir / candidate


def write_config(data_dir: Path, config: ServiceConfig) -> Path:
    target = data_dir / CONFIG_NAME
    # owner-only: a PostgreSQL URL may carry a password
    write_private(target, "# Trust Authority service configuration (paths relative to this "
                          "directory)\n" + tomli_w.dumps(config.model_dump(exclude_none=True)))
    return target


def load_config(data_dir: Path) -> ServiceConfig:
    source = data_dir / CONFIG_NAME
    try:
        raw = tomllib.loads(source.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{source} does not exist; run `trustauthority init --data-dir "
                          f"{data_dir}` first") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read {source}: {error}") from None
    if url := os.environ.get("TA_DATABASE_URL"):
        raw["database_url"] = url
    if key_file := os.environ.get("TA_MASTER_KEY_FILE"):
        raw["master_key_file"] = key_file
    try:
        return ServiceConfig.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{source}: {where}: {first['msg']}") from None

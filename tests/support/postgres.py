"""A throw-away PostgreSQL cluster for the tests (Debian's server, started as `postgres`).

PostgreSQL refuses to run as root, so as root the cluster is started with `runuser -u postgres`
in a directory that user owns; as another user it runs as that user. Each test gets a fresh
database in the one session-wide cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import psycopg

from trustauthority.cli.processes import free_port

BIN = Path("/usr/lib/postgresql/15/bin")


def postgres_available() -> bool:
    return (BIN / "initdb").exists() and (BIN / "pg_ctl").exists()


class PostgresCluster:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0

    def _run(self, *argv: str) -> None:
        command = [*(("runuser", "-u", "postgres", "--") if self.as_root else ()), *argv]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresCluster:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync")
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.directory / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.directory} -c listen_addresses='' -c fsync=off",
                  "start")
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.admin_dsn(), connect_timeout=2):
                    return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def admin_dsn(self) -> str:
        return f"host={self.directory} port={self.port} user=postgres dbname=postgres"

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        name = f"ta_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')  # name is ours, not input
        return (f"postgresql+psycopg://postgres@/{name}"
                f"?host={self.directory}&port={self.port}")

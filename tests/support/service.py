"""A real Trust Authority service for the tests: `init` a data dir, serve HTTPS in a thread.

The server is the one `ta serve` runs (same app, same uvicorn TLS configuration, same protocol
class for client certificates), on a free loopback port.
"""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from trustauthority.api.server import ServeOptions, build_server
from trustauthority.cli.processes import free_port
from trustauthority.client import Credentials, TrustAuthorityClient
from trustauthority.schemas import PrincipalCreate, TokenCreate
from trustauthority.service.platform import Platform
from trustauthority.service.setup import initialise


class RunningService:
    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        port = free_port()
        result = initialise(data_dir, database_url=database_url, listen_port=port)
        self._serve(data_dir, port, result.admin_token, result.ca_file)

    @classmethod
    def existing(cls, data_dir: Path, *, port: int, admin_token: str) -> RunningService:
        """Serve a data dir made otherwise (a restored backup) on `port`; start() it."""
        service = cls.__new__(cls)
        service._serve(data_dir, port, admin_token, data_dir / "tls" / "ca.pem")
        return service

    def _serve(self, data_dir: Path, port: int, admin_token: str, ca_file: Path) -> None:
        self.data_dir = data_dir
        self.port = port
        self.admin_token = admin_token
        self.ca_file = ca_file
        self.url = f"https://127.0.0.1:{self.port}"
        self.server: uvicorn.Server
        self.platform: Platform
        self.server, self.platform = build_server(ServeOptions(data_dir, port=port))
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> RunningService:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test service did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)

    def client(self, token: str | None = None, *, cert: Path | None = None,
               key: Path | None = None) -> TrustAuthorityClient:
        return TrustAuthorityClient(self.url, Credentials(token=token, client_certificate=cert,
                                                          client_key=key),
                                    ca_file=self.ca_file)

    def admin(self) -> TrustAuthorityClient:
        return self.client(self.admin_token)

    def http(self, token: str | None = None) -> httpx.Client:
        """A raw HTTPS client, for requests the typed client would never send."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers,
                            verify=ssl.create_default_context(cafile=str(self.ca_file)))

    def principal_with_token(self, name: str, *roles: str, kind: str | None = None) -> str:
        """Create a principal with `roles` (approved if several) and return a token for it."""
        with self.admin() as admin:
            admin.create_principal(PrincipalCreate.model_validate({
                "name": name, "roles": list(roles),
                "kind": kind or ("host" if "host" in roles else "person"),
                "allow_multiple_roles": len(roles) > 1}))
            return admin.create_token(name, TokenCreate(label="test")).token

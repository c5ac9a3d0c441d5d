"""Client certificates for the app: uvicorn's HTTP protocols, plus the ASGI TLS extension.

uvicorn (0.54) verifies a client certificate in the handshake but does not hand it to the
application. These protocol classes add `scope["extensions"]["tls"]["client_cert_chain"]` (the
leaf, PEM) as the ASGI TLS extension specifies, so the API can map the certificate to a
principal. Only what the TLS layer verified against the service's CA ever gets here.

The httptools parser (C) is used when it is installed, as uvicorn itself prefers it; h11 (pure
Python, several times slower per request) otherwise.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol


class _WithTls:
    def __init__(self, app: ASGIApp, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("extensions", {})["tls"] = self.tls
        await self.app(scope, receive, send)


def _with_client_certificate(app: ASGIApp, transport: asyncio.Transport) -> ASGIApp:
    """`app`, told the connection's verified client certificate (if TLS carries one)."""
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject):
        return app
    der = ssl_object.getpeercert(binary_form=True)
    chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
    return _WithTls(app, {
        "client_cert_chain": chain, "client_cert_name": None, "client_cert_error": None,
        "tls_version": None, "cipher_suite": None, "server_cert": None,
    })


class ClientCertH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = _with_client_certificate(self.app, transport)


def client_cert_protocol() -> type[asyncio.Protocol]:
    """The fastest HTTP protocol class available, with the client certificate passed on."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is not installed
        return ClientCertH11Protocol

    class ClientCertHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.app = _with_client_certificate(self.app, transport)

    return ClientCertHttpToolsProtocol

"""Client certificates for the app: uvicorn's httptools protocol, plus the ASGI TLS extension.

uvicorn (0.54) verifies a client certificate in the handshake but does not hand it to the
application. This protocol class adds `scope["extensions"]["tls"]["client_cert_chain"]` (the
leaf, PEM) as the ASGI TLS extension specifies, so the API can map the certificate to a
principal. Only what the TLS layer verified against the service's CA ever gets here.

It builds on uvicorn's httptools protocol (a C parser, a dependency of the project): h11, its
pure-Python alternative, costs several times more per request.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _WithTls:
    def __init__(self, app: ASGIApp, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("extensions", {})["tls"] = self.tls
        await self.app(scope, receive, send)


class ClientCertProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject):
            return
        der = ssl_object.getpeercert(binary_form=True)
        chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
        self.app = _WithTls(self.app, {
            "client_cert_chain": chain, "client_cert_name": None, "client_cert_error": None,
            "tls_version": None, "cipher_suite": None, "server_cert": None,
        })

"""ASGI middleware: a request id on every request and response (errors included), a request
size limit, and the last-resort 500 that never shows a traceback.

Both are plain ASGI (not Starlette's BaseHTTPMiddleware), so streaming bodies are counted as
they arrive and an oversized body is refused without being read into memory.
"""

from __future__ import annotations

import json
import logging
import re
import uuid

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("trustauthority.api")

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class _TooLarge(Exception):
    pass


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        offered = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = offered if _CLIENT_REQUEST_ID.match(offered) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        async def refuse() -> None:
            body = json.dumps({"type": "request_too_large",
                               "detail": f"the body exceeds {self.max_body_bytes} bytes",
                               "request_id": request_id}).encode()
            await send_with_id({"type": "http.response.start", "status": 413,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})

        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body_bytes
            except ValueError:
                too_big = True
            if too_big:
                await refuse()
                return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # FastAPI re-raises an HTTPException met while reading a body (anything
                    # else becomes a generic 400); the error mapping turns it into our 413
                    raise HTTPException(413, f"the body exceeds {self.max_body_bytes} bytes")
            return message

        try:
            await self.app(scope, counting_receive, send_with_id)
        except HTTPException as error:
            if error.status_code != 413 or started:
                raise
            await refuse()
        except Exception:
            log.exception("request %s failed unexpectedly", request_id)
            if not started:
                body = json.dumps({"type": "internal_error",
                                   "detail": "internal error; the service log has the details "
                                             "under this request id",
                                   "request_id": request_id}).encode()
                await send_with_id({"type": "http.response.start", "status": 500,
                                    "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})

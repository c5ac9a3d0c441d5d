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

from trustauthority.api.errors import INTERNAL_ERROR, error_body

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

        async def answer(status: int, error_type: str, detail: str) -> None:
            body = json.dumps(error_body(error_type, detail, request_id)).encode()
            await send_with_id({"type": "http.response.start", "status": status,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})

        too_large = f"the body exceeds {self.max_body_bytes} bytes"
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body_bytes
            except ValueError:
                too_big = True
            if too_big:
                await answer(413, "request_too_large", too_large)
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
                    raise HTTPException(413, too_large)
            return message

        try:
            await self.app(scope, counting_receive, send_with_id)
        except Exception:
            log.exception("request %s failed unexpectedly", request_id)
            if not started:
                await answer(500, "internal_error", INTERNAL_ERROR)

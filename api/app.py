"""The FastAPI application."""

from __future__ import annotations

import json
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from caljournal import __version__
from caljournal.api.appointments import router as appointments_router
from caljournal.api.audit import router as audit_router
from caljournal.api.deps import ContainerDep
from caljournal.api.errors import install_error_handlers
from caljournal.api.links import router as links_router
from caljournal.api.ops import router as ops_router
from caljournal.api.schemas import HealthOut
from caljournal.bootstrap import Container


class BodyLimitAndRequestId:
    """Refuse bodies over the limit (413) and echo the request's correlation id.

    Written as plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs
    more per request than the rest of a typical call.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(send, f"request body over {self.limit} bytes")
            return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                # A body without Content-Length (chunked) grew past the limit:
                # answer now and tell the app the client is gone, so that
                # whatever the app makes of the cut body is never sent.
                refused = True
                await self._refuse(send, f"request body over {self.limit} bytes")
                return {"type": "http.disconnect"}
            return message

        async def tagging_send(message: Message) -> None:
            if refused:
                return
            if message["type"] == "http.response.start":
                correlation_id = scope.get("state", {}).get("correlation_id")
                if correlation_id:
                    headers = list(message.get("headers", []))
                    headers.append((b"x-request-id", correlation_id.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, limited_receive, tagging_send)

    @staticmethod
    async def _refuse(send: Send, message: str) -> None:
        body = json.dumps({"error": "too_large", "message": message, "field": None}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(container: Container) -> FastAPI:
    """Return the HTTP API bound to ``container``."""
    app = FastAPI(
        title="caljournal",
        version=__version__,
        description="Appointments kept in an append-only journal and synced to CalDAV calendars.",
    )
    app.state.container = container
    install_error_handlers(app)

    app.add_middleware(BodyLimitAndRequestId, limit=container.settings.max_request_bytes)

    @app.get("/healthz", tags=["health"], response_model=HealthOut)
    def healthz(container: ContainerDep) -> dict[str, object]:
        """Report that the API runs and the journal answers."""
        position = container.journal.recorder.max_notification_id()
        return {"status": "ok", "journal": container.backend, "position": position or 0}

    app.include_router(appointments_router)
    app.include_router(links_router)
    app.include_router(ops_router)
    app.include_router(audit_router)
    document_auth(app)
    return app


def document_auth(app: FastAPI) -> None:
    """Describe the bearer token and X-Request-ID of every call but /healthz in OpenAPI.

    ``api.deps.get_caller`` reads both headers itself, so FastAPI does not
    know them; this adds them to the generated schema, and the 413 answer of
    the body limit and the 400 of a body that is not JSON to every call that
    takes a body.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "an account or operator token (cj_…)",
        }
        for path, operations in schema["paths"].items():
            if path == "/healthz":
                continue
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]
                operation.setdefault("parameters", []).append(REQUEST_ID_PARAMETER)
                if "requestBody" in operation:  # refused by BodyLimitAndRequestId
                    operation["responses"].setdefault("413", TOO_LARGE_RESPONSE)
                    operation["responses"].setdefault("400", MALFORMED_RESPONSE)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


REQUEST_ID_PARAMETER = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "correlation id to record with the change (letters, digits, ._:-)",
    "schema": {"type": "string", "maxLength": 128},
}


MALFORMED_RESPONSE = {
    "description": "the request body is not JSON (or not UTF-8)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
}

TOO_LARGE_RESPONSE = {
    "description": "the request body is over CALJOURNAL_MAX_REQUEST_BYTES",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
}


def server_config(
    app: FastAPI, host: str, port: int, *, access_log: bool = True, log_level: str = "info"
) -> uvicorn.Config:
    """Return how uvicorn serves ``app``: httptools and uvloop where installed.

    uvicorn's own defaults pick them too (``auto``); naming them makes a missing
    install visible at start-up instead of silently costing a third of the
    request rate (pure-Python h11 parsing and the stock asyncio loop).
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="httptools",
        loop="uvloop",
        access_log=access_log,
        log_level=log_level,
    )

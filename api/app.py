"""The FastAPI application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from caljournal import __version__
from caljournal.api.appointments import router as appointments_router
from caljournal.api.deps import ContainerDep
from caljournal.api.errors import install_error_handlers
from caljournal.bootstrap import Container


def create_app(container: Container) -> FastAPI:
    """Return the HTTP API bound to ``container``."""
    app = FastAPI(
        title="caljournal",
        version=__version__,
        description="Appointments kept in an append-only journal and synced to CalDAV calendars.",
    )
    app.state.container = container
    install_error_handlers(app)
    limit = container.settings.max_request_bytes

    @app.middleware("http")
    async def guard_and_tag(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return JSONResponse(
                {"error": "too_large", "message": f"request body over {limit} bytes", "field": None},
                status_code=413,
            )
        response = await call_next(request)
        correlation_id = getattr(request.state, "correlation_id", None)
        if correlation_id:
            response.headers["X-Request-ID"] = correlation_id
        return response

    @app.get("/healthz", tags=["health"])
    def healthz(container: ContainerDep) -> dict[str, object]:
        """Report that the API runs and the journal answers."""
        position = container.journal.recorder.max_notification_id()
        return {"status": "ok", "journal": container.backend, "position": position or 0}

    app.include_router(appointments_router)
    return app

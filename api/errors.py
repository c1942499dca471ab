"""One place that maps errors to HTTP status codes and bodies."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from caljournal.adapters.secrets import SecretKeyError
from caljournal.domain.errors import (
    AppointmentCancelledError,
    DomainError,
    TokenRevokedError,
)
from caljournal.errors import (
    ApplicationError,
    AuthenticationError,
    ConflictError,
    IdempotencyKeyReusedError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    TooManyRequestsError,
)
from caljournal.links import LinkFailedError

log = logging.getLogger("caljournal.api")

_STATUS: list[tuple[type[Exception], int, str]] = [
    (AuthenticationError, 401, "unauthenticated"),
    (PermissionDeniedError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (PreconditionFailedError, 412, "precondition_failed"),
    (IdempotencyKeyReusedError, 422, "idempotency_key_reused"),
    (LinkFailedError, 422, "link_failed"),
    (SecretKeyError, 503, "secret_keys_unusable"),
    (ConflictError, 409, "conflict"),
    (TooManyRequestsError, 429, "too_many_requests"),
    (AppointmentCancelledError, 409, "appointment_cancelled"),
    (TokenRevokedError, 409, "token_revoked"),
    (DomainError, 422, "invalid"),
    (ApplicationError, 400, "bad_request"),
]


def _body(code: str, message: str, field: str | None) -> dict[str, str | None]:
    return {"error": code, "message": message, "field": field}


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn errors into JSON answers."""

    async def known(request: Request, exc: Exception) -> JSONResponse:
        for cls, status, code in _STATUS:
            if isinstance(exc, cls):
                message = getattr(exc, "message", str(exc))
                field = getattr(exc, "field", None)
                headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                return JSONResponse(
                    _body(code, message, field), status_code=status, headers=headers
                )
        raise exc  # pragma: no cover - only registered for the classes above

    for cls in (DomainError, ApplicationError, SecretKeyError):
        app.add_exception_handler(cls, known)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "header", "path")]
        field = ".".join(loc) or None
        message = f"{field}: {first['msg']}" if field else str(first["msg"])
        details = [
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": e["msg"]}
            for e in errors
        ]
        body = {**_body("invalid", message, field), "details": details}
        return JSONResponse(body, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid_request)

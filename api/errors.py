"""One place that maps errors to HTTP status codes and bodies."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from caljournal.adapters.secrets import SecretKeyError
from caljournal.api.deps import get_caller
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
    InvalidInputError,
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
    (InvalidInputError, 422, "invalid"),
    (LinkFailedError, 422, "link_failed"),
    (SecretKeyError, 503, "secret_keys_unusable"),
    (ConflictError, 409, "conflict"),
    (TooManyRequestsError, 429, "too_many_requests"),
    (AppointmentCancelledError, 409, "appointment_cancelled"),
    (TokenRevokedError, 409, "token_revoked"),
    (DomainError, 422, "invalid"),
    (ApplicationError, 400, "bad_request"),
]


# Paths that answer without a token; every other one checks it before the body.
PUBLIC_PATHS = frozenset({"/healthz", "/docs", "/redoc", "/openapi.json"})
_HTTP_CODES = {400: "malformed", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def _body(code: str, message: str, field: str | None) -> dict[str, str | None]:
    return {"error": code, "message": message, "field": field}


async def _unauthenticated(request: Request) -> JSONResponse | None:
    """Return the 401 answer when the request's token is missing or not valid, else None.

    Called before a body or query error is answered: a request with a bad token
    learns nothing about its input.
    """
    if request.url.path in PUBLIC_PATHS:
        return None
    try:
        caller = await get_caller(request)
        await caller.run(caller.principal)
    except AuthenticationError as exc:
        return JSONResponse(
            _body("unauthenticated", exc.message, None),
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None


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
        refused = await _unauthenticated(request)
        if refused is not None:
            return refused
        errors = exc.errors()
        first: dict[str, Any] = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":  # malformed syntax, not a bad value
            where = first.get("ctx", {}).get("error", "")
            message = f"the body is not valid JSON{f' ({where})' if where else ''}"
            return JSONResponse(_body("malformed", message, None), status_code=400)
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

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400:  # a body that cannot be read: the token comes first
            refused = await _unauthenticated(request)
            if refused is not None:
                return refused
        code = _HTTP_CODES.get(
            exc.status_code, "bad_request" if exc.status_code == 400 else "error"
        )
        message = exc.detail if isinstance(exc.detail, str) else "the request was refused"
        return JSONResponse(
            _body(code, message, None), status_code=exc.status_code, headers=exc.headers
        )

    app.add_exception_handler(HTTPException, http_error)

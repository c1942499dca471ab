"""Errors of the application layer (the domain's own live in ``domain.errors``)."""

from __future__ import annotations


class ApplicationError(Exception):
    """Base class; ``message`` is one sentence meant for the user."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInputError(ApplicationError):
    """A request's value is unusable; ``field`` names it."""


class NotFoundError(ApplicationError):
    """No such thing, or not visible to the caller."""


class PreconditionFailedError(ApplicationError):
    """The caller's expected version is not the current one."""


class ConflictError(ApplicationError):
    """The request conflicts with the current state (e.g. a name taken)."""


class IdempotencyKeyReusedError(ApplicationError):
    """An Idempotency-Key was sent again with a different request."""


class AuthenticationError(ApplicationError):
    """The bearer token is missing, unknown or revoked."""


class PermissionDeniedError(ApplicationError):
    """The token may not do this."""


class TooManyRequestsError(ApplicationError):
    """The caller has too many operations of this kind running; retry later."""

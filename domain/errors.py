"""Errors the domain raises when a command would break an invariant."""

from __future__ import annotations


class DomainError(Exception):
    """Base class: a command was refused; nothing was recorded.

    ``field`` names the input that caused the refusal, when there is one, so the
    API can point at it.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidAppointmentError(DomainError):
    """The appointment's data breaks an invariant (period, zone, title…)."""


class AppointmentCancelledError(DomainError):
    """The appointment is cancelled and can no longer be changed."""


class AppointmentErasedError(DomainError):
    """The appointment's personal data was erased and cannot be set again."""


class InvalidCauseError(DomainError):
    """The origin, actor or correlation id of a change is missing or unknown."""


class InvalidAccountError(DomainError):
    """An account or token name is unusable."""


class TokenRevokedError(DomainError):
    """The token was revoked already."""

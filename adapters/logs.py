"""Log lines that say which account, appointment and request they are about.

A sync action (a push of one appointment, a poll of one calendar, a backfill
write) runs inside :func:`sync_context`, which sets the account, the
appointment and the correlation id in context variables; every log line
written meanwhile carries them, including the HTTP transport's line for each
CalDAV request. The API sets the request's correlation id the same way, and
records it in the ``Cause`` of every event it writes; the worker reads it back
from the appointment's latest event, so one id leads from the API request to
the CalDAV PUT.

:func:`configure_logging` writes one JSON object per line when stderr is not a
terminal (or when asked), and a readable line otherwise. Callers log ids and
counts only: never titles, names, e-mail addresses or credentials.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any, Literal

LogFormat = Literal["auto", "json", "human"]
CONTEXT_FIELDS = ("account", "appointment", "correlation_id")


class LazyId:
    """An id looked up only when a line that shows it is written, then kept.

    Finding an appointment's correlation id costs a journal read (about 0.1 ms on
    SQLite, 1.6 ms on PostgreSQL measured here); most pushes write no line at
    the default level, so most never pay for it.
    """

    def __init__(self, load: Callable[[], str | None]) -> None:
        self._load = load
        self._value: str | None = None
        self._loaded = False

    def resolve(self) -> str | None:
        """Return the id (looked up on first use); a failed look-up is named in its place."""
        if not self._loaded:
            try:
                self._value = self._load()
            except Exception as exc:  # a log line must not fail the sync action it describes
                self._value = f"unavailable ({type(exc).__name__})"
            self._loaded = True
        return self._value


ContextId = str | LazyId | None

_account: ContextVar[str | None] = ContextVar("caljournal_account", default=None)
_appointment: ContextVar[str | None] = ContextVar("caljournal_appointment", default=None)
_correlation: ContextVar[ContextId] = ContextVar("caljournal_correlation_id", default=None)
_VARS: dict[str, ContextVar[ContextId]] = {
    "account": _account,  # type: ignore[dict-item]
    "appointment": _appointment,  # type: ignore[dict-item]
    "correlation_id": _correlation,
}

# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


@contextlib.contextmanager
def sync_context(
    *,
    account: str | None = None,
    appointment: str | None = None,
    correlation_id: str | LazyId | None = None,
) -> Iterator[None]:
    """Tag the log lines written inside with these ids (None keeps the outer value)."""
    tokens: list[Callable[[], None]] = []
    if account is not None:
        tokens.append(functools.partial(_account.reset, _account.set(account)))
    if appointment is not None:
        tokens.append(functools.partial(_appointment.reset, _appointment.set(appointment)))
    if correlation_id is not None:
        tokens.append(functools.partial(_correlation.reset, _correlation.set(correlation_id)))
    try:
        yield
    finally:
        for reset in reversed(tokens):
            reset()


def bind_correlation_id(correlation_id: str) -> None:
    """Set the correlation id for the rest of the current context (an API request's task)."""
    _correlation.set(correlation_id)


def current_context() -> dict[str, ContextId]:
    """Return the account, appointment and correlation id set now (ids may be lazy)."""
    return {name: var.get() for name, var in _VARS.items()}


class ContextFilter(logging.Filter):
    """Copy the context's ids onto each record (values given through ``extra`` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _VARS.items():
            if getattr(record, name, None) is None:
                value = var.get()
                setattr(record, name, value.resolve() if isinstance(value, LazyId) else value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the ids, then any extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            entry[name] = getattr(record, name, None)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """``<epoch seconds> LEVEL logger message`` and the ids that are set, for terminals."""

    def __init__(self) -> None:
        super().__init__("%(created).6f %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [f"{n}={getattr(record, n)}" for n in CONTEXT_FIELDS if getattr(record, n, None)]
        if not ids:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} [{' '.join(ids)}]{newline}{rest}"


def configure_logging(
    level: int = logging.WARNING, fmt: LogFormat = "auto", stream: IO[str] | None = None
) -> logging.Handler:
    """Send the process's log lines to ``stream`` (stderr) in ``fmt``; return the handler.

    ``auto`` writes JSON when the stream is not a terminal. Handlers installed
    before (by an earlier call) are replaced.
    """
    target = stream if stream is not None else sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not _is_terminal(target))
    handler = logging.StreamHandler(target)
    handler.setFormatter(JsonFormatter() if as_json else HumanFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


__all__ = [
    "ContextFilter",
    "HumanFormatter",
    "JsonFormatter",
    "LazyId",
    "LogFormat",
    "bind_correlation_id",
    "configure_logging",
    "current_context",
    "sync_context",
]

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
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any, Literal

LogFormat = Literal["auto", "json", "human"]
CONTEXT_FIELDS = ("account", "appointment", "correlation_id")

_account: ContextVar[str | None] = ContextVar("caljournal_account", default=None)
_appointment: ContextVar[str | None] = ContextVar("caljournal_appointment", default=None)
_correlation: ContextVar[str | None] = ContextVar("caljournal_correlation_id", default=None)
_VARS = {"account": _account, "appointment": _appointment, "correlation_id": _correlation}

# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


@contextlib.contextmanager
def sync_context(
    *,
    account: str | None = None,
    appointment: str | None = None,
    correlation_id: str | None = None,
) -> Iterator[None]:
    """Tag the log lines written inside with these ids (None keeps the outer value)."""
    given = {"account": account, "appointment": appointment, "correlation_id": correlation_id}
    tokens = [(_VARS[k], _VARS[k].set(v)) for k, v in given.items() if v is not None]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def bind_correlation_id(correlation_id: str) -> None:
    """Set the correlation id for the rest of the current context (an API request's task)."""
    _correlation.set(correlation_id)


def current_context() -> dict[str, str | None]:
    """Return the account, appointment and correlation id set now."""
    return {name: var.get() for name, var in _VARS.items()}


class ContextFilter(logging.Filter):
    """Copy the context's ids onto each record (values given through ``extra`` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _VARS.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
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
    "LogFormat",
    "bind_correlation_id",
    "configure_logging",
    "current_context",
    "sync_context",
]

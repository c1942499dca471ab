"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from caljournal.domain.values import (
    MAX_CUSTOMER_NAME,
    MAX_DESCRIPTION,
    MAX_EMAIL,
    MAX_LOCATION,
    MAX_TITLE,
)

_STRICT = ConfigDict(extra="forbid", str_strip_whitespace=False)

BOOK_EXAMPLE = {
    "title": "Haircut with Anna",
    "start": "2026-03-30T10:00:00+02:00",
    "end": "2026-03-30T10:45:00+02:00",
    "timezone": "Europe/Berlin",
    "location": "Salon Mitte, Torstraße 1, Berlin",
    "description": "Wash, cut and dry",
    "customer_name": "Jonas Weber",
    "customer_email": "jonas@example.org",
}


class BookIn(BaseModel):
    """A new appointment. Times must carry a UTC offset; ``timezone`` is an IANA name."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [BOOK_EXAMPLE]})

    title: str = Field(min_length=1, max_length=MAX_TITLE)
    start: AwareDatetime
    end: AwareDatetime
    timezone: str = Field(min_length=1, max_length=64, examples=["Europe/Berlin"])
    location: str | None = Field(default=None, max_length=MAX_LOCATION)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    customer_name: str | None = Field(default=None, max_length=MAX_CUSTOMER_NAME)
    customer_email: str | None = Field(default=None, max_length=MAX_EMAIL)


class MoveIn(BaseModel):
    """A new period for an appointment."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"start": "2026-03-31T14:00:00+02:00", "end": "2026-03-31T14:45:00+02:00"}]
        },
    )

    start: AwareDatetime
    end: AwareDatetime


class DetailsIn(BaseModel):
    """Fields to change; omitted fields stay, ``null`` clears an optional field."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"title": "Haircut and colour", "location": None}]},
    )

    title: str | None = Field(default=None, min_length=1, max_length=MAX_TITLE)
    location: str | None = Field(default=None, max_length=MAX_LOCATION)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    customer_name: str | None = Field(default=None, max_length=MAX_CUSTOMER_NAME)
    customer_email: str | None = Field(default=None, max_length=MAX_EMAIL)


class CancelIn(BaseModel):
    """Why an appointment is cancelled (optional)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "ill"}]})

    reason: str | None = Field(default=None, max_length=MAX_LOCATION)


class AppointmentOut(BaseModel):
    """An appointment as the journal knows it."""

    id: str
    account_id: str
    version: int
    status: str
    title: str
    start: datetime
    end: datetime
    timezone: str
    location: str | None
    description: str | None
    customer_name: str | None
    customer_email: str | None
    cancel_reason: str | None
    sequence: int = Field(description="counts changes a calendar shows (iCalendar SEQUENCE)")
    push_failure: str | None = Field(description="why the last push to the calendar failed")
    created_on: datetime
    modified_on: datetime


class AppointmentList(BaseModel):
    """Appointments overlapping a window, earliest first."""

    items: list[AppointmentOut]
    count: int


class Change(BaseModel):
    """One field's value before and after a change."""

    old: Any
    new: Any


class HistoryEntry(BaseModel):
    """One recorded change of an appointment."""

    position: int | None = Field(description="the event's position in the journal")
    version: int
    timestamp: datetime
    type: str
    origin: str
    actor: str
    correlation_id: str
    changes: dict[str, Change]


class History(BaseModel):
    """Every recorded change of an appointment, oldest first."""

    appointment_id: str
    entries: list[HistoryEntry]


class ErrorOut(BaseModel):
    """An error: one sentence, and the offending field when there is one."""

    error: str
    message: str
    field: str | None = None

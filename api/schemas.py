"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

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


# Response models forbid fields they do not name, so the published schema says
# "additionalProperties: false" and a field the API answers with but does not
# document fails the suite's OpenAPI check (tests/support/openapi.py).
_OUT = ConfigDict(extra="forbid")

# Times in answers are written as the journal keeps them, with a numeric UTC
# offset ("+00:00" for UTC, the zone's own for an appointment's start and end),
# the same way in every answer.
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda value: value.isoformat(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class OverrideOut(BaseModel):
    """One occurrence of a recurring appointment that differs from its rule."""

    model_config = _OUT

    recurrence_id: str = Field(description="the RECURRENCE-ID line as the calendar wrote it")
    start: Timestamp
    end: Timestamp
    title: str | None
    location: str | None
    description: str | None
    status: str | None = Field(description="e.g. CANCELLED for an occurrence taken out")


class RecurrenceOut(BaseModel):
    """A recurrence as the calendar wrote it: whole iCalendar lines, kept verbatim."""

    model_config = _OUT

    rrule: list[str] = Field(examples=[["RRULE:FREQ=WEEKLY;COUNT=5"]])
    rdate: list[str]
    exdate: list[str]
    overrides: list[OverrideOut]


class AppointmentOut(BaseModel):
    """An appointment as the journal knows it (the same in a list and alone)."""

    model_config = _OUT

    id: str
    account_id: str
    version: int
    status: str
    title: str
    start: Timestamp = Field(description="in the appointment's zone; of this occurrence in a list")
    end: Timestamp
    timezone: str
    location: str | None
    description: str | None
    customer_name: str | None
    customer_email: str | None
    cancel_reason: str | None
    cancel_origin: str | None = Field(description="who cancelled: api, caldav, backfill, operator")
    sequence: int = Field(description="counts changes a calendar shows (iCalendar SEQUENCE)")
    push_failure: str | None = Field(description="why the last push to the calendar failed")
    calendar_uid: str | None = Field(
        description="the iCalendar UID of an appointment imported from the calendar"
    )
    all_day: bool = Field(description="whole days: start and end are midnights in the zone")
    floating: bool = Field(description="wall-clock times without a zone (timezone is UTC)")
    recurrence: RecurrenceOut | None = Field(description="the rule of a recurring appointment")
    occurrence: str | None = Field(
        description="in a list, the RECURRENCE-ID (ISO time) of this occurrence of a "
        "recurring appointment; otherwise null"
    )
    created_on: Timestamp
    modified_on: Timestamp


class AppointmentList(BaseModel):
    """Appointments overlapping a window, earliest first."""

    model_config = _OUT

    items: list[AppointmentOut]
    count: int


class Change(BaseModel):
    """One field's value before and after a change."""

    model_config = _OUT

    old: Any
    new: Any


class HistoryEntry(BaseModel):
    """One recorded change of an appointment."""

    model_config = _OUT

    position: int | None = Field(description="the event's position in the journal")
    version: int
    timestamp: Timestamp
    type: str
    origin: str
    actor: str
    correlation_id: str
    changes: dict[str, Change]


class History(BaseModel):
    """Every recorded change of an appointment, oldest first."""

    model_config = _OUT

    appointment_id: str
    entries: list[HistoryEntry]


class HealthOut(BaseModel):
    """The API runs and the journal answers."""

    model_config = _OUT

    status: Literal["ok"]
    journal: Literal["sqlite", "postgresql"]
    position: int = Field(description="the journal's latest notification id (0 when empty)")


class ErrorDetail(BaseModel):
    """One problem of an invalid request."""

    model_config = _OUT

    field: str
    message: str


class ErrorOut(BaseModel):
    """An error: one sentence, and the offending field when there is one."""

    model_config = _OUT

    error: str
    message: str
    field: str | None = None
    details: list[ErrorDetail] | None = Field(
        default=None, description="every problem of an invalid request (422 only)"
    )

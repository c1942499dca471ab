"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    field_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from caljournal.domain.values import (
    MAX_CUSTOMER_NAME,
    MAX_DESCRIPTION,
    MAX_EMAIL,
    MAX_LOCATION,
    MAX_TITLE,
    canonical_text,
    door_text,
)

# RFC 3339 §5.6 date-time (``T`` or a space, as the RFC's note allows) and
# full-date. Matched here rather than by pydantic's datetime, which also takes
# Unix timestamps, times without seconds and offsets with seconds.
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_TIME_HELP = "an RFC 3339 date-time with a UTC offset, e.g. 2026-03-30T10:00:00+02:00"


def parse_moment(value: Any) -> datetime:
    """Return the aware datetime an RFC 3339 date-time string names (to the microsecond).

    For query bounds. Numbers (Unix timestamps) and times without an offset are refused.

    :raises PydanticCustomError: naming what is wrong.
    """
    return _parse(value, whole_seconds=False)


def parse_instant(value: Any) -> datetime:
    """Return the aware datetime an RFC 3339 date-time string names, in whole seconds.

    As :func:`parse_moment`; fractions of a second other than zero are refused
    too, since iCalendar keeps whole seconds.

    :raises PydanticCustomError: naming what is wrong.
    """
    return _parse(value, whole_seconds=True)


def _parse(value: Any, *, whole_seconds: bool) -> datetime:
    found = _DATE_TIME.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise PydanticCustomError("rfc3339", f"must be {_TIME_HELP}")
    year, month, day, hour, minute, second = (int(found[i]) for i in range(1, 7))
    fraction = found[7] or ""
    if whole_seconds and fraction.strip("0"):
        raise PydanticCustomError("whole_seconds", "must be in whole seconds")
    micro = int((fraction + "000000")[:6])
    offset = timedelta(0)
    if not found[8]:
        if int(found[10]) > 23 or int(found[11]) > 59:
            raise PydanticCustomError("rfc3339", "has an offset beyond ±23:59")
        offset = timedelta(hours=int(found[10]), minutes=int(found[11]))
        offset = -offset if found[9] == "-" else offset
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone(offset))
    except ValueError as exc:
        raise PydanticCustomError("rfc3339", f"is no valid date-time: {exc}") from None


def parse_when(value: Any) -> datetime | date:
    """Return a date for an RFC 3339 full-date (all-day), else as :func:`parse_instant`.

    :raises PydanticCustomError: naming what is wrong.
    """
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            raise PydanticCustomError("rfc3339", f"is no valid date: {exc}") from None
    return parse_instant(value)


Moment = Annotated[
    datetime,
    PlainValidator(parse_moment),
    WithJsonSchema({"type": "string", "format": "date-time", "description": _TIME_HELP}),
]
When = Annotated[
    datetime | date,
    PlainValidator(parse_when),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "format": "date"},
            ],
            "description": f"{_TIME_HELP}; two dates (end exclusive) book a whole day",
        }
    ),
]
# Text is taken in its canonical form: LF line breaks, no trailing blanks per
# line, an empty optional text is none (see ``domain.values``).
Title = Annotated[str, AfterValidator(canonical_text)]
Text = Annotated[str | None, AfterValidator(door_text)]

_STRICT = ConfigDict(extra="forbid", str_strip_whitespace=False)

BOOK_EXAMPLE: JsonDict = {
    "title": "Haircut with Anna",
    "start": "2026-03-30T10:00:00+02:00",
    "end": "2026-03-30T10:45:00+02:00",
    "timezone": "Europe/Berlin",
    "location": "Salon Mitte, Torstraße 1, Berlin",
    "description": "Wash, cut and dry",
    "customer_name": "Jonas Weber",
    "customer_email": "jonas@example.org",
}


ALL_DAY_EXAMPLE: JsonDict = {
    "title": "Team offsite",
    "start": "2026-04-13",
    "end": "2026-04-15",
    "timezone": "Europe/Berlin",
}


class BookIn(BaseModel):
    """A new appointment. Times carry a UTC offset; ``timezone`` is an IANA region zone.

    Two dates instead of date-times book an all-day appointment (``end`` exclusive).
    """

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [BOOK_EXAMPLE, ALL_DAY_EXAMPLE]}
    )

    title: Title = Field(min_length=1, max_length=MAX_TITLE)
    start: When
    end: When
    timezone: str = Field(min_length=1, max_length=64, examples=["Europe/Berlin"])
    location: Text = Field(default=None, max_length=MAX_LOCATION)
    description: Text = Field(default=None, max_length=MAX_DESCRIPTION)
    customer_name: Text = Field(default=None, max_length=MAX_CUSTOMER_NAME)
    customer_email: Text = Field(default=None, max_length=MAX_EMAIL)


class MoveIn(BaseModel):
    """A new period for an appointment."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"start": "2026-03-31T14:00:00+02:00", "end": "2026-03-31T14:45:00+02:00"}]
        },
    )

    start: When
    end: When


class DetailsIn(BaseModel):
    """Fields to change; omitted fields stay, ``null`` clears an optional field."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"title": "Haircut and colour", "location": None}]},
    )

    title: Title | None = Field(default=None, min_length=1, max_length=MAX_TITLE)
    location: Text = Field(default=None, max_length=MAX_LOCATION)
    description: Text = Field(default=None, max_length=MAX_DESCRIPTION)
    customer_name: Text = Field(default=None, max_length=MAX_CUSTOMER_NAME)
    customer_email: Text = Field(default=None, max_length=MAX_EMAIL)

    @field_validator("title", mode="before")
    @classmethod
    def _title_stays(cls, value: Any) -> Any:
        """Refuse ``"title": null``: the title can be changed, not cleared."""
        if value is None:
            raise PydanticCustomError("title_required", "cannot be cleared")
        return value


class CancelIn(BaseModel):
    """Why an appointment is cancelled (optional)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "ill"}]})

    reason: Text = Field(default=None, max_length=MAX_LOCATION)


class EraseIn(BaseModel):
    """Why an appointment's personal data is erased (recorded with the erasure)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "customer's request"}]}
    )

    reason: str = Field(min_length=1, max_length=MAX_LOCATION)


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
    erased_on: Timestamp | None = Field(
        default=None,
        description="when the personal data (title, location, description, customer) was "
        'erased; the title then reads "[erased]", and the others "[erased]" or null',
    )


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

"""Value checks and value objects of appointments (pure: no I/O, no clock)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from caljournal.domain.errors import InvalidAppointmentError

MAX_TITLE = 200
MAX_LOCATION = 500
MAX_DESCRIPTION = 10_000
MAX_CUSTOMER_NAME = 200
MAX_EMAIL = 320
MAX_DURATION = timedelta(days=366)
DETAIL_LIMITS = {
    "title": MAX_TITLE,
    "location": MAX_LOCATION,
    "description": MAX_DESCRIPTION,
    "customer_name": MAX_CUSTOMER_NAME,
    "customer_email": MAX_EMAIL,
}
DETAIL_FIELDS = tuple(DETAIL_LIMITS)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def zone_for(name: str) -> ZoneInfo:
    """Return the IANA zone called ``name``.

    :raises InvalidAppointmentError: when no such IANA zone exists.
    """
    if not isinstance(name, str) or name not in _known_zones():
        raise InvalidAppointmentError(
            f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin'",
            field="timezone",
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # pragma: no cover - listed but unloadable
        raise InvalidAppointmentError(f"unknown time zone {name!r}", field="timezone") from None


def check_period(start: datetime, end: datetime) -> None:
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, datetime):
            raise InvalidAppointmentError(f"{name} must be a datetime", field=name)
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidAppointmentError(
                f"{name} must carry a UTC offset, e.g. 2026-03-30T10:00:00+02:00", field=name
            )
    if end <= start:
        raise InvalidAppointmentError("end must be after start", field="end")
    if end - start > MAX_DURATION:
        raise InvalidAppointmentError("an appointment may last at most 366 days", field="end")


def check_text(name: str, value: str | None, limit: int, *, required: bool = False) -> None:
    if value is None:
        if required:
            raise InvalidAppointmentError(f"{name} is required", field=name)
        return
    if not isinstance(value, str):
        raise InvalidAppointmentError(f"{name} must be text", field=name)
    if required and not value.strip():
        raise InvalidAppointmentError(f"{name} must not be empty", field=name)
    if len(value) > limit:
        raise InvalidAppointmentError(f"{name} is longer than {limit} characters", field=name)
    if "\x00" in value:
        raise InvalidAppointmentError(f"{name} contains a NUL character", field=name)


def check_details(details: dict[str, str | None]) -> None:
    """Check the descriptive fields of an appointment.

    :raises InvalidAppointmentError: naming the first field that is unusable.
    """
    unknown = set(details) - set(DETAIL_FIELDS)
    if unknown:
        raise InvalidAppointmentError(
            f"unknown field {sorted(unknown)[0]!r}", field=sorted(unknown)[0]
        )
    for name, value in details.items():
        check_text(name, value, DETAIL_LIMITS[name], required=name == "title")
    email = details.get("customer_email")
    if email and not _EMAIL.match(email):
        raise InvalidAppointmentError(
            "customer_email is not an e-mail address", field="customer_email"
        )


@dataclass(frozen=True)
class RemoteFields:
    """An appointment's fields as a calendar object states them."""

    title: str
    start: datetime
    end: datetime
    timezone: str
    location: str | None = None
    description: str | None = None
    customer_name: str | None = None
    customer_email: str | None = None
    calendar_uid: str | None = None
    all_day: bool = False
    floating: bool = False
    recurrence: dict[str, Any] | None = None
    cancelled: bool = False

    def check(self) -> None:
        """Refuse what the journal cannot hold.

        :raises InvalidAppointmentError: naming the field.
        """
        zone_for(self.timezone)
        if self.start != self.end:  # calendars may hold zero-length events
            check_period(self.start, self.end)
        for name, limit in DETAIL_LIMITS.items():
            check_text(name, getattr(self, name), limit)

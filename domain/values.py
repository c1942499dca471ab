"""Value checks and value objects of appointments (pure: no I/O, no clock).

The rules each field follows, at the API's door and in the journal:

- Times are RFC 3339 date-times with a UTC offset, in whole seconds (iCalendar
  keeps no finer unit; a zero fraction such as JavaScript's ``.000`` is fine).
  Bookings and moves lie between 1900-01-01 and 2200-01-01 UTC; imported
  events anywhere in years 2–9998, so that no zone arithmetic overflows. An
  all-day appointment is given as two dates (end exclusive).
- Zones are IANA region zones (``Area/Location`` such as ``Europe/Berlin``) or
  ``UTC``: no ``localtime``, ``Factory``, POSIX-style (``EST5EDT``), country
  (``US/Eastern``) or ``Etc/`` names. Calendar objects may use any zone tzdata
  knows except machine-dependent names.
- Texts: every line break (CRLF, CR, NEL, LS, PS) becomes LF, trailing spaces
  and tabs of each line and any U+FEFF are dropped; an empty optional text is
  no text. Other
  control characters (C0 but TAB and LF, DEL, C1), surrogates and U+FFFE/U+FFFF
  are refused: calendar servers speak XML, which cannot carry them.
- The customer's e-mail is one address as ``email-validator`` accepts it (no
  display name, no whitespace; deliverability is not checked).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
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
# Single-line fields: a line break there is refused at the door.
ONE_LINE = frozenset({"title", "customer_name", "customer_email"})

BOOKABLE_FROM = datetime(1900, 1, 1, tzinfo=UTC)
BOOKABLE_UNTIL = datetime(2200, 1, 1, tzinfo=UTC)
# A day inside the years datetime can hold, so that moving a time into any zone
# (offsets up to a day) never overflows.
JOURNAL_FROM = datetime(2, 1, 1, tzinfo=UTC)
JOURNAL_UNTIL = datetime(9998, 12, 31, tzinfo=UTC)
# The bounds as naive UTC wall times, for check_time, with the first and last
# year whose every wall time, at any offset (under a day either way), lies more
# than a day inside them.


def _bounds(low: datetime, high: datetime) -> tuple[datetime, datetime, int, int]:
    low, high = low.replace(tzinfo=None), high.replace(tzinfo=None)
    return low, high, (low + timedelta(days=1)).year + 1, (high - timedelta(days=1)).year - 1


_BOOKABLE = _bounds(BOOKABLE_FROM, BOOKABLE_UNTIL)
_JOURNAL = _bounds(JOURNAL_FROM, JOURNAL_UNTIL)

REGION_AREAS = (
    "Africa",
    "America",
    "Antarctica",
    "Arctic",
    "Asia",
    "Atlantic",
    "Australia",
    "Europe",
    "Indian",
    "Pacific",
)
_REGION = re.compile(rf"(?:{'|'.join(REGION_AREAS)})/[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*")
# tzdata files that are no zone of their own, or mean whatever the machine says.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_LINE_BREAK = re.compile(r"\r\n|[\r\x85\u2028\u2029]")
_TRAILING = re.compile(r"[ \t]+(?=\n|\Z)")
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


@lru_cache(maxsize=1)
def known_zones() -> frozenset[str]:
    """Return the IANA zone names tzdata knows, without machine-dependent names."""
    return frozenset(available_timezones()) - _NOT_ZONES


def is_region_zone(name: str) -> bool:
    """Tell whether ``name`` is a zone the API books in: ``UTC`` or an IANA region zone."""
    return name == "UTC" or (name in known_zones() and _REGION.fullmatch(name) is not None)


def zone_for(name: str, *, bookable: bool = False) -> ZoneInfo:
    """Return the IANA zone called ``name``.

    With ``bookable``, only ``UTC`` and region zones (``Area/Location``) are taken.

    :raises InvalidAppointmentError: when no such zone exists (or it is not bookable).
    """
    if not isinstance(name, str) or name not in known_zones():
        raise InvalidAppointmentError(
            f"unknown time zone {name!r}; use an IANA name such as 'Europe/Berlin'",
            field="timezone",
        )
    if bookable and not is_region_zone(name):
        raise InvalidAppointmentError(
            f"time zone {name!r} is a legacy or fixed-offset name; use UTC or an IANA "
            "region zone such as 'America/New_York'",
            field="timezone",
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # pragma: no cover - listed but unloadable
        raise InvalidAppointmentError(f"unknown time zone {name!r}", field="timezone") from None


def rfc3339(value: datetime) -> str:
    """Return aware ``value`` as an RFC 3339 date-time, in its own offset where it can be.

    RFC 3339 offsets have no seconds; zones whose offset had seconds (local mean
    time, e.g. Europe/Amsterdam until 1937, Africa/Monrovia until 1972) are
    written in UTC instead, which names the same instant.
    """
    offset = value.utcoffset()
    if offset is not None and offset.seconds % 60:
        return value.astimezone(UTC).isoformat()
    return value.isoformat()


def midnight(day: date, zone: ZoneInfo) -> datetime:
    """Return the start of ``day`` in ``zone`` (how all-day appointments are kept)."""
    return datetime.combine(day, time(0), tzinfo=zone)


def period_in(
    zone: ZoneInfo, start: date | datetime, end: date | datetime
) -> tuple[datetime, datetime, bool]:
    """Return ``(start, end, all_day)``: two dates become the midnights that bound them.

    :raises InvalidAppointmentError: when one is a date and the other a time, or one is neither.
    """
    start_day, end_day = (isinstance(v, date) and not isinstance(v, datetime) for v in (start, end))
    if start_day != end_day:
        raise InvalidAppointmentError(
            "start and end must both be dates (all-day) or both date-times",
            field="end" if start_day else "start",
        )
    if start_day:
        return midnight(start, zone), midnight(end, zone), True
    if not isinstance(start, datetime):
        raise InvalidAppointmentError("start must be a datetime", field="start")
    if not isinstance(end, datetime):
        raise InvalidAppointmentError("end must be a datetime", field="end")
    return start, end, False


def _utc_wall(value: datetime) -> datetime:
    """Return the naive UTC wall time of aware ``value``, clipped to the journal's years."""
    wall, offset = value.replace(tzinfo=None), value.utcoffset() or timedelta(0)
    low, high = JOURNAL_FROM.replace(tzinfo=None), JOURNAL_UNTIL.replace(tzinfo=None)
    # Compared before subtracting: the subtraction itself overflows near year 1 or 9999.
    if wall < low + offset:
        return low
    if wall > high + offset:
        return high
    return wall - offset


def clamp(value: datetime) -> datetime:
    """Return aware ``value`` in UTC, moved into the journal's years when outside them.

    For query bounds: a window from year 1 means "from the beginning".
    """
    return _utc_wall(value).replace(tzinfo=UTC)


def check_time(name: str, value: Any, *, bookable: bool = False) -> None:
    """Check one time of an appointment (see the module's rules).

    :raises InvalidAppointmentError: naming the field.
    """
    low, high, first, last = _BOOKABLE if bookable else _JOURNAL
    if not isinstance(value, datetime):
        raise InvalidAppointmentError(f"{name} must be a datetime", field=name)
    offset = value.utcoffset()
    if value.tzinfo is None or offset is None:
        raise InvalidAppointmentError(
            f"{name} must carry a UTC offset, e.g. 2026-03-30T10:00:00+02:00", field=name
        )
    # A time in a year of the safe range lies inside the bounds whatever its
    # offset: the common case needs no arithmetic. Others are compared as wall
    # times: turning a time near year 1 or 9999 into UTC overflows.
    if not first <= value.year <= last:
        wall = value.replace(tzinfo=None)
        if not low + offset <= wall <= high + offset:
            raise InvalidAppointmentError(
                f"{name} must lie between {low.date()} and {high.date()} (UTC)", field=name
            )
    if bookable and value.microsecond:
        raise InvalidAppointmentError(
            f"{name} must be in whole seconds (calendars keep no finer unit)", field=name
        )


def check_period(start: datetime, end: datetime, *, bookable: bool = False) -> None:
    """Check an appointment's period; ``bookable`` applies the door's rules.

    :raises InvalidAppointmentError: naming ``start`` or ``end``.
    """
    check_time("start", start, bookable=bookable)
    check_time("end", end, bookable=bookable)
    if end <= start:
        raise InvalidAppointmentError("end must be after start", field="end")
    if end - start > MAX_DURATION:
        raise InvalidAppointmentError("an appointment may last at most 366 days", field="end")


def canonical_text(value: str) -> str:
    """Return ``value`` in the journal's text form: LF line breaks, no trailing blanks per line.

    U+FEFF (a byte-order mark, or the deprecated zero-width no-break space) is
    dropped: iCalendar readers drop it at the start of a value.
    """
    return _TRAILING.sub("", _LINE_BREAK.sub("\n", value.replace("\ufeff", "")))


def remote_text(value: str | None) -> str | None:
    """Return text read from a calendar in canonical form, dropping what the journal refuses.

    An empty text is no text, as at the door.
    """
    if value is None:
        return None
    return canonical_text(_FORBIDDEN.sub("", value)) or None


def door_text(value: str | None) -> str | None:
    """Return text a caller sent in canonical form (an empty optional text is None)."""
    return None if value is None else canonical_text(value) or None


def text_problem(value: str, *, one_line: bool = False) -> str | None:
    """Return why canonical text ``value`` cannot be kept, or None when it can."""
    if one_line and "\n" in value:
        return "must be one line"
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        return f"contains the control character U+{ord(bad.group()):04X}"
    return None


def check_text(
    name: str, value: str | None, limit: int, *, required: bool = False, door: bool = False
) -> None:
    """Check one text field; ``door`` adds the rules for text a caller sends.

    :raises InvalidAppointmentError: naming the field.
    """
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
    if not door:  # text read from a calendar is made canonical on the way in
        return
    if canonical_text(value) != value:
        raise InvalidAppointmentError(
            f"{name} must use LF line breaks without trailing spaces", field=name
        )
    problem = text_problem(value, one_line=name in ONE_LINE)
    if problem is not None:
        raise InvalidAppointmentError(f"{name} {problem}", field=name)


def email_problem(value: str) -> str | None:
    """Return why ``value`` is not one e-mail address, or None when it is."""
    # Imported here: its tables cost 20 ms, which a command that reads never needs.
    from email_validator import EmailNotValidError, validate_email

    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


def check_details(details: dict[str, str | None], *, door: bool = True) -> None:
    """Check the descriptive fields of an appointment.

    :raises InvalidAppointmentError: naming the first field that is unusable.
    """
    unknown = set(details) - set(DETAIL_FIELDS)
    if unknown:
        raise InvalidAppointmentError(
            f"unknown field {sorted(unknown)[0]!r}", field=sorted(unknown)[0]
        )
    for name, value in details.items():
        check_text(name, value, DETAIL_LIMITS[name], required=name == "title", door=door)
    email = details.get("customer_email")
    if door and email and (problem := email_problem(email)) is not None:
        raise InvalidAppointmentError(
            f"customer_email is not an e-mail address: {problem}", field="customer_email"
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
    # Set by a check that passed, never by a constructor or ``replace``: the
    # fields it checks cannot change afterwards (frozen, immutable values), so
    # an import checks an object once, when it is parsed, not again in the domain.
    _checked: bool = field(default=False, init=False, repr=False, compare=False)

    def check(self) -> None:
        """Refuse what the journal cannot hold (checked once: later calls pass at once).

        :raises InvalidAppointmentError: naming the field.
        """
        if self._checked:
            return
        zone_for(self.timezone)
        check_time("start", self.start)
        check_time("end", self.end)
        if self.start != self.end:  # calendars may hold zero-length events
            check_period(self.start, self.end)
        for name, limit in DETAIL_LIMITS.items():
            check_text(name, getattr(self, name), limit)
        object.__setattr__(self, "_checked", True)

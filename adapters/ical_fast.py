"""A fast reader for the common shape of remote calendar objects, with icalendar as fallback.

Why hand-written: icalendar parses every property through its generic machinery
(content-line objects, ``Parameters``, case-insensitive dicts, one value object per
property), which costs about 0.5 ms per calendar object and dominated a first
import of a large calendar. This reader splits the content lines itself and
reads only what caljournal maps (:func:`caljournal.adapters.ical_parse.events_of`)
and hashes (:func:`caljournal.adapters.ical_hash.calendar_hash`); the mapping itself
is the reference code, fed with the values read here.

It is strict on purpose. It answers the events and the content hash exactly as
the icalendar path would, or None ("not sure"), and the caller then takes the
icalendar path. None comes for anything it does not reproduce exactly: lines
that do not follow RFC 5545 to the letter, lower-case names, unknown properties
or components, value types other than the default (``VALUE=DATE``/``DATE-TIME``
on dates aside), values not written in the form icalendar writes them back, TZIDs
that are not IANA or Windows names or that mean UTC, and every object the
reference path rejects, so that errors keep their messages. VTIMEZONE and VALARM
blocks, which neither path maps, are only checked for what would make icalendar
refuse the object; a block seen before (the same VTIMEZONE in every object of a
calendar) is not checked again.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

import icalendar
from icalendar import Component
from icalendar.prop import vDDDTypes, vRecur, vText
from icalendar.timezone import tzp
from icalendar.timezone.tzid import is_utc

from caljournal.adapters.ical_hash import VOLATILE, canonical_line, digest_of
from caljournal.adapters.ical_parse import (
    _NEWLINE,
    _RAW,
    _UNFOLD,
    OWN_X,
    ICalendarError,
    RemoteEvent,
    _event,
    _text,
    _zones,
    iana_name,
    unescape_text,
)

_FOLD_OVER_BLANK = re.compile(r"\n\r?\n[ \t]")  # icalendar unfolds it, caljournal's raw lines not
# NAME, then ;KEY=VALUE parameters (one quoted value, or unquoted ones split by commas,
# which the hash joins again), ":" and the value.
# No backslash, "^" or "%" in parameters: icalendar decodes those in ways not copied here.
_PARAM_VALUE = r'(?:"[^"\x00-\x1f\x7f^%\\]+"|[^";:\x00-\x1f\x7f^%\\]+)'
_LINE = re.compile(rf"([A-Z0-9-]+)((?:;[A-Z0-9-]+={_PARAM_VALUE})*):(.*)", re.DOTALL)
_PARAM = re.compile(rf";([A-Z0-9-]+)=({_PARAM_VALUE})")
_ESCAPED = re.compile(r"\\([\\,;:nN])")  # icalendar's unescaping of TEXT values
_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_DATE_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(Z?)")
_DIGITS = re.compile(r"[0-9]{1,9}")  # icalendar refuses integers past 32 bits
_DURATION = re.compile(r"[+-]?P(?:\d+W|(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+S)?)?)")
_UTC_LIKE = re.compile(r"utc|uct|gmt|universal|zulu|greenwich")

_TEXT = frozenset(
    {"UID", "SUMMARY", "LOCATION", "DESCRIPTION", "STATUS", "TRANSP", "CLASS", "COMMENT"}
)
_TIMES = frozenset({"DTSTART", "DTEND", "RECURRENCE-ID"})
_DATE_LISTS = frozenset({"RDATE", "EXDATE"})
_SKIPPED_VALUES = frozenset({"DTSTAMP", "CREATED", "LAST-MODIFIED"})  # neither mapped nor hashed
_OTHER = frozenset({"URL", "ATTACH", "PRIORITY", "ORGANIZER", "ATTENDEE"})
_REPEATABLE = frozenset({"RDATE", "EXDATE", "ATTENDEE", "COMMENT"})
_NESTED = {"VTIMEZONE": ("STANDARD", "DAYLIGHT"), "VALARM": ()}
_DATETIME_NAMES = frozenset({"DTSTART", "DTEND", "RECURRENCE-ID", "DUE", "RDATE", "EXDATE"})
_TYPES = icalendar.Calendar.types_factory
_checked_blocks: dict[tuple[str, ...], bool] = {}
_MAX_CHECKED_BLOCKS = 256


class _Text(vText):
    """A TEXT value already unescaped, built without vText's parameters object."""

    __slots__ = ()

    def __new__(cls, value: str) -> _Text:
        return str.__new__(cls, value)


class _Value:
    """A date, date-time or duration value as :func:`ical_parse._time` reads one."""

    __slots__ = ("dt", "params")

    def __init__(self, dt: date | datetime | timedelta, params: dict[str, str]) -> None:
        self.dt = dt
        self.params = params


class _Component(dict[str, Any]):
    """The properties of one component, shaped as the reference mapping reads them."""

    errors: tuple[tuple[str | None, str], ...] = ()


def read(data: bytes | str) -> tuple[tuple[RemoteEvent, ...], str] | None:
    """Return the events and the content hash of a calendar object, or None when unsure.

    The events equal :func:`caljournal.adapters.ical_parse.events_of`, the hash
    :func:`caljournal.adapters.ical_hash.calendar_hash`, both of icalendar's parse of
    ``data``. None means: take the icalendar path (which also reports errors).
    """
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        return None
    if not isinstance(text, str):
        return None
    if _FOLD_OVER_BLANK.search(text):
        return None
    lines = _NEWLINE.split(_UNFOLD.sub("", text))
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) < 2 or lines[0] != "BEGIN:VCALENDAR" or lines[-1] != "END:VCALENDAR":
        return None
    calendar = _Component()
    found: list[tuple[_Component, dict[str, list[str]], list[str]]] = []
    event: _Component | None = None
    raw: dict[str, list[str]] = {}
    hashed: list[str] = []
    block: list[str] | None = None  # the lines of a VTIMEZONE or VALARM being skipped
    depth = 0
    for line in lines[1:-1]:
        if block is not None:
            block.append(line)
            if line.startswith("BEGIN:"):
                depth += 1
            elif line.startswith("END:"):
                depth -= 1
                if depth == 0:
                    if not _skipped_block_ok(tuple(block)):
                        return None
                    block = None
            continue
        match = _LINE.fullmatch(line)
        if match is None or "\r" in line:
            return None
        name, params_text, value = match.groups()
        if name == "BEGIN":
            if value == "VEVENT" and event is None:
                event, raw, hashed = _Component(), {key: [] for key in _RAW}, []
            elif (value == "VTIMEZONE" and event is None) or (
                value == "VALARM" and event is not None
            ):
                block, depth = [line], 1
            else:
                return None
        elif name == "END":
            if value != "VEVENT" or event is None:
                return None
            found.append((event, raw, hashed))
            event = None
        elif event is None:
            if not _calendar_property(calendar, name, params_text, value):
                return None
        elif not _event_property(event, raw, hashed, line, name, params_text, value):
            return None
    if event is not None or block is not None or not found:
        return None
    return _events(calendar, found)


def _events(
    calendar: _Component, found: list[tuple[_Component, dict[str, list[str]], list[str]]]
) -> tuple[tuple[RemoteEvent, ...], str] | None:
    """Map the events read with the reference code; None where it would raise."""
    # The reference functions read icalendar components; _Component has what they use.
    uids = {_text(cast(Component, event), "UID") or "" for event, _, _ in found}
    if "" in uids or len(uids) > 1:
        return None
    hint_value = _text(cast(Component, calendar), "X-WR-TIMEZONE")
    hint = iana_name(hint_value) if hint_value else None
    try:
        events = tuple(_event(cast(Component, event), raw, {}, hint) for event, raw, _ in found)
    except (ICalendarError, OverflowError):
        return None
    return events, digest_of(hashed for _, _, hashed in found)


def _params(text: str) -> dict[str, str] | None:
    """Return the parameters of a line (upper-case names), or None when unsure."""
    found: dict[str, str] = {}
    for key, value in _PARAM.findall(text):
        if key in found:
            return None
        if value[0] == '"':
            value = value[1:-1]
        elif value != value.strip(" ") or ("," in value and key in ("TZID", "VALUE")):
            return None
        found[key] = value
    return found


def _event_property(
    event: _Component,
    raw: dict[str, list[str]],
    hashed: list[str],
    line: str,
    name: str,
    params_text: str,
    value: str,
) -> bool:
    """Read one VEVENT property into ``event``/``raw``/``hashed``; False when unsure."""
    params = _params(params_text) if params_text else {}
    if name in _SKIPPED_VALUES:  # icalendar must read it, nothing else counts
        return params is not None and not params and _time(value, params) is not None
    if params is None or ("VALUE" in params and name not in _TIMES | _DATE_LISTS):
        return False
    if name in event and name not in _REPEATABLE and not name.startswith("X-"):
        return False
    stored: Any
    if name in _TEXT:
        stored = _Text(_ESCAPED.sub(_unescape, value))
        serialised = str(stored)
    elif name.startswith("X-"):
        stored = value
        if name not in OWN_X:
            _store(event, name, stored)
            return True
        serialised = unescape_text(value)
    elif name in _TIMES:
        read_time = _time(value, params)
        if read_time is None:
            return False
        stored = _Value(read_time, {"TZID": params["TZID"]} if "TZID" in params else {})
        serialised = value
    elif name in _DATE_LISTS:
        if not _dates(value, params):
            return False
        stored = serialised = value
    elif name == "SEQUENCE":
        if params or not _DIGITS.fullmatch(value):
            return False
        event[name] = int(value)
        return True
    elif name == "DURATION":
        duration = _duration(value)
        if duration is None:
            return False
        stored = _Value(duration[0], {})
        serialised = duration[1]
    elif name == "RRULE" or name in _OTHER:
        written = _round_trip(name, value)
        if written is None:
            return False
        stored = serialised = written
    else:
        return False
    if name in _RAW:
        raw[name].append(line)
    _store(event, name, stored)
    canonical = canonical_line(name, serialised, params.items())
    if canonical is not None and name not in VOLATILE:
        hashed.append(canonical)
    return True


def _store(component: _Component, name: str, value: Any) -> None:
    """Add a value as icalendar does: a second one turns the entry into a list."""
    if name not in component:
        component[name] = value
    elif isinstance(component[name], list):
        component[name].append(value)
    else:
        component[name] = [component[name], value]


def _unescape(match: re.Match[str]) -> str:
    return "\n" if match[1] in "nN" else match[1]


@lru_cache(maxsize=512)
def _known_zone(tzid: str) -> bool:
    """Whether a TZID names an IANA or Windows zone that is not UTC by its name."""
    zone = iana_name(tzid)
    return (
        zone is not None
        and _UTC_LIKE.search(tzid.lower()) is None
        and _UTC_LIKE.search(zone.lower()) is None
    )


def _zone_ok(tzid: str) -> bool:
    """Whether both paths read a TZID the same way: a known zone icalendar does not call UTC.

    icalendar writes a time back with "Z" when the zone it found for the TZID is
    UTC or equal to it (Atlantic/Reykjavik, say); not cached, as icalendar's own
    cache of zones grows with the objects it reads.
    """
    if not _known_zone(tzid):
        return False
    found = tzp.timezone(tzid)
    return found is None or not is_utc(found)


def _time(value: str, params: dict[str, str]) -> date | datetime | None:
    """Return a DATE or DATE-TIME value written in icalendar's own form, else None.

    Like icalendar's, the value of a TZID time is the naive wall time (the
    mapping attaches the zone), a UTC time is aware and a floating one naive.
    """
    kind = params.get("VALUE")
    tzid = params.get("TZID")
    try:
        if kind != "DATE-TIME" and tzid is None and (found := _DATE.fullmatch(value)):
            return date(int(found[1]), int(found[2]), int(found[3]))
        if kind == "DATE" or not (found := _DATE_TIME.fullmatch(value)):
            return None
        if tzid is not None and (found[7] or not _zone_ok(tzid)):
            return None
        return datetime(
            *(int(found[1]), int(found[2]), int(found[3])),
            *(int(found[4]), int(found[5]), int(found[6])),
            tzinfo=UTC if found[7] else None,
        )
    except ValueError:
        return None


def _dates(value: str, params: dict[str, str]) -> bool:
    """Whether an RDATE/EXDATE value is a list of dates or date-times icalendar writes back."""
    kind = params.get("VALUE")
    if kind not in (None, "DATE", "DATE-TIME"):
        return False
    return all(_time(item, params) is not None for item in value.split(","))


def _duration(value: str) -> tuple[timedelta, str] | None:
    """Return a DURATION and how icalendar writes it back, or None when unsure."""
    if not _DURATION.fullmatch(value) or value.endswith(("P", "T")):
        return None
    try:
        parsed = vDDDTypes.from_ical(value)
        if not isinstance(parsed, timedelta):
            return None
        return parsed, vDDDTypes(parsed).to_ical().decode("utf-8")
    except Exception:  # noqa: BLE001 - whatever icalendar refuses, its own path reports
        return None


def _round_trip(name: str, value: str) -> str | None:
    """Return the value as icalendar writes it back after reading it, or None when unsure."""
    if "\\" in value:
        return None
    factory = vRecur if name == "RRULE" else _factory(name, None)
    try:
        serialised = factory(factory.from_ical(value)).to_ical()
    except Exception:  # noqa: BLE001 - whatever icalendar refuses, its own path reports
        return None
    # calendar_hash decodes what to_ical returns: anything but bytes is not for this path
    return serialised.decode("utf-8") if isinstance(serialised, bytes) else None


@lru_cache(maxsize=256)
def _factory(name: str, kind: str | None) -> Any:
    """Return icalendar's value type for a property (its lookup is slow; it never changes)."""
    return _TYPES.for_property(name, kind)


def _calendar_property(calendar: _Component, name: str, params_text: str, value: str) -> bool:
    """Read a VCALENDAR property; False when unsure or when icalendar would refuse it."""
    if not _accepted(name, params_text, value):
        return False
    text = value if name.startswith("X-") else _Text(_ESCAPED.sub(_unescape, value))
    _store(calendar, name, text)
    return True


def _accepted(name: str, params_text: str, value: str) -> bool:
    """Whether icalendar reads a property of a component that raises on errors."""
    params = _params(params_text) if params_text else {}
    if params is None or name in ("CATEGORIES", "FREEBUSY") or (name == "RDATE" and not value):
        return False
    if name.startswith("X-"):
        return "VALUE" not in params
    factory = _factory(name, params.get("VALUE"))
    if factory is vText:
        return True
    if "\\" in value:
        return False
    tzid = params.get("TZID") if name in _DATETIME_NAMES else None
    try:
        factory.from_ical(value, tzid) if tzid else factory.from_ical(value)
    except Exception:  # noqa: BLE001 - icalendar would refuse the whole object
        return False
    return True


def _skipped_block_ok(block: tuple[str, ...]) -> bool:
    """Whether icalendar reads a VTIMEZONE or VALARM block (which neither path maps)."""
    known = _checked_blocks.get(block)
    if known is None:
        known = _check_block(block)
        if len(_checked_blocks) >= _MAX_CHECKED_BLOCKS:
            _checked_blocks.clear()
        _checked_blocks[block] = known
    return known


def _check_block(block: tuple[str, ...]) -> bool:
    stack: list[str] = []
    for line in block:
        match = _LINE.fullmatch(line)
        if match is None or "\r" in line:
            return False
        name, params_text, value = match.groups()
        if name == "BEGIN":
            if stack and value not in _NESTED.get(stack[-1], ()) or len(stack) > 1:
                return False
            stack.append(value)
        elif name == "END":
            if not stack or stack.pop() != value:
                return False
        elif not _accepted(name, params_text, value):
            return False
        elif name == "TZID" and stack == ["VTIMEZONE"] and _zones().get(value.lower()) != value:
            return False  # icalendar caches a VTIMEZONE under a TZID no zone database knows
    return not stack

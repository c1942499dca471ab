"""The content hash of a calendar object: what its VEVENTs say, however written.

Servers fold, reorder, re-stamp and re-serialise what they store; the hash
ignores all of that (see :func:`content_hash`), so a copy that merely changed
its form is not taken for an edit. It is stored with every copy record and
compared across polls: the canonical form must never change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import icalendar
from icalendar.prop import vText

from caljournal.adapters.ical_parse import OWN_X, decode, parse_calendar, unescape_text

# Content hashing: what servers add or rewrite without changing the appointment.
VOLATILE = frozenset({"DTSTAMP", "LAST-MODIFIED", "CREATED", "SEQUENCE", "PRODID"})
_DEFAULTS = frozenset({("TRANSP", "OPAQUE"), ("CLASS", "PUBLIC")})
_ENUM_PROPS = frozenset({"STATUS", "TRANSP", "CLASS"})
# How json.dumps(..., ensure_ascii=False) writes a string. The canonical forms
# are that JSON, written out of these quoted strings: a JSON encoder built per
# property cost more than the rest of reading it.
_quote = json.encoder.encode_basestring
_ENUM_PARAMS = frozenset(
    {"CUTYPE", "ENCODING", "FBTYPE", "PARTSTAT", "RANGE", "RELATED", "RELTYPE", "ROLE", "RSVP"}
)


def _canonical(name: str, value: Any) -> str | None:
    """Return one property as a canonical string, or None when it carries no content."""
    if name.startswith("X-") and name not in OWN_X:
        return None
    if isinstance(value, vText):
        text = str(value)
    elif name in OWN_X:
        text = unescape_text(str(value))
    else:
        written = value.to_ical() if hasattr(value, "to_ical") else str(value)
        # Most property types write bytes; a few (GEO) write str.
        text = written.decode("utf-8") if isinstance(written, bytes) else str(written)
    return canonical_line(name, text, getattr(value, "params", {}).items())


def canonical_line(name: str, text: str, params: Iterable[tuple[str, Any]]) -> str | None:
    """Return a property (upper-case ``name``, serialised ``text``) as a canonical string.

    ``params`` are its (name, value) pairs, a value a string or a list of strings.
    None when the property carries no content (an RFC default spelled out).
    """
    if name in _ENUM_PROPS:
        text = text.strip().upper()
    if (name, text) in _DEFAULTS:
        return None
    pairs = []
    for key, param in sorted(params):
        if key.upper() == "VALUE":
            continue
        param = ",".join(param) if isinstance(param, list) else str(param)
        if key.upper() in _ENUM_PARAMS:
            param = param.upper()
        elif key.upper() == "LANGUAGE":
            param = param.lower()
        pairs.append(f"[{_quote(key.upper())}, {_quote(param)}]")
    return f"[{_quote(name)}, [{', '.join(pairs)}], {_quote(text)}]"


def content_hash(data: bytes | str) -> str:
    """Return a sha256 hex digest of the appointment content of a calendar object.

    Only VEVENT properties count. Ignored: folding, property and parameter order,
    parameter-name case, DTSTAMP, LAST-MODIFIED, CREATED, SEQUENCE, PRODID, foreign
    ``X-`` properties, VTIMEZONE and VALARM components, and TRANSP:OPAQUE /
    CLASS:PUBLIC (RFC defaults that some servers spell out).

    :raises ICalendarError: when the data is not one parseable VCALENDAR.
    """
    return calendar_hash(parse_calendar(decode(data)))


def calendar_hash(calendar: icalendar.Calendar) -> str:
    """Return :func:`content_hash` of a VCALENDAR already parsed."""
    events = []
    for event in calendar.walk("VEVENT"):
        lines = []
        for name, values in event.items():
            for value in values if isinstance(values, list) else [values]:
                if name.upper() not in VOLATILE:
                    line = _canonical(name.upper(), value)
                    if line is not None:
                        lines.append(line)
        events.append(lines)
    return digest_of(events)


def digest_of(events: Iterable[list[str]]) -> str:
    """Return the content hash of VEVENTs given as their :func:`canonical_line` strings."""
    quoted = (", ".join(map(_quote, lines)) for lines in sorted(sorted(e) for e in events))
    canonical = "[" + ", ".join(f"[{lines}]" for lines in quoted) + "]"
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

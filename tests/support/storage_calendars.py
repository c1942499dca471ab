"""The calendars the storage contract runs against, each with what it may do differently.

Each maker returns a fresh, empty calendar collection: a ``MemoryStorage``, or
a ``CalDAVStorage`` on a new collection of a running Radicale or Xandikos
server. Where the implementations legitimately differ, :class:`Calendar` says
so as data and the contract asserts each side; nothing is skipped.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from caljournal.adapters.caldav_client import ServerAccess
from caljournal.adapters.caldav_storage import CalDAVStorage
from caljournal.adapters.memory_storage import MemoryStorage
from caljournal.adapters.providers import get_profile
from caljournal.adapters.secrets import Credentials
from caljournal.adapters.storage import CalendarStorage
from tests.support.radicale import RadicaleProcess
from tests.support.xandikos import XandikosProcess

# Generous: a busy 2-core machine makes a server slow, not wrong.
TIMEOUT = 60.0


@dataclass(frozen=True)
class Calendar:
    """A fresh calendar behind the port, and how this implementation may differ.

    ``keeps_bytes``: the bytes written are the bytes stored. Radicale
    (vobject) and Xandikos (icalendar) store their own serialisation of what
    they were sent (property order, folding); both keep that form byte for
    byte once it is written back.

    ``line_end``: what a CRLF line end of the stored object reads back as.
    Over CalDAV it is LF: calendar-multiget carries the object inside XML,
    whose parsers turn CRLF into LF (XML 1.0, 2.11), and the caldav library
    reads a GET the same way, so ``fetch`` and ``load`` agree.

    ``reports_short_lived_deletions``: a delta names as deleted an object
    created and deleted after the token. Xandikos leaves such an object out
    altogether (only a full listing shows it is gone); Radicale and the
    in-memory calendar name it.

    ``many``: enough objects for more than one multiget batch (100), kept
    small on the servers, where every PUT costs tens of milliseconds.

    Every implementation has a state tag (CTag): Radicale and Xandikos
    answer ``getctag``, the in-memory calendar gives its change counter.
    """

    kind: str
    storage: CalendarStorage
    keeps_bytes: bool
    line_end: bytes
    reports_short_lived_deletions: bool
    many: int

    def href(self, name: str) -> str:
        """Return the href of an object called ``name`` in this calendar."""
        return f"{self.storage.calendar_url}{name}.ics"


def memory_calendar() -> Calendar:
    """Return a fresh in-memory calendar."""
    return Calendar(
        "memory",
        MemoryStorage(f"https://calendar.example/calendars/{uuid.uuid4().hex[:12]}/"),
        keeps_bytes=True,
        line_end=b"\r\n",
        reports_short_lived_deletions=True,
        many=150,
    )


def radicale_calendar(server: RadicaleProcess) -> Calendar:
    """Return a fresh collection of user alice on ``server``."""
    url = str(server.make_calendar(name="Contract", cal_id=uuid.uuid4().hex[:12]).url)
    access = ServerAccess(
        url,
        Credentials("alice", "secret"),
        allow_private=True,
        timeout=TIMEOUT,
        caldav_hints=get_profile("radicale").caldav_hints,
    )
    return Calendar(
        "radicale",
        CalDAVStorage(access, url, get_profile("radicale")),
        keeps_bytes=False,
        line_end=b"\n",
        reports_short_lived_deletions=True,
        many=120,
    )


def xandikos_calendar(server: XandikosProcess) -> Calendar:
    """Return a fresh collection of the one user of ``server``."""
    url = str(server.make_calendar("Contract").url)
    access = ServerAccess(
        url,
        auth="none",
        allow_private=True,
        timeout=TIMEOUT,
        caldav_hints=get_profile("xandikos").caldav_hints,
    )
    return Calendar(
        "xandikos",
        CalDAVStorage(access, url, get_profile("xandikos")),
        keeps_bytes=False,
        line_end=b"\n",
        reports_short_lived_deletions=False,
        many=120,
    )

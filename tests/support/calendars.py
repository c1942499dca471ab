"""Read a calendar back with the caldav library and compare it with the journal."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import caldav
import icalendar

from caljournal.bootstrap import Container
from tests.support.patience import MIN_WAIT


def wait_until(check: Callable[[], Any], timeout: float = MIN_WAIT, interval: float = 0.05) -> Any:
    """Return ``check()``'s first truthy result; fail with the last one after ``timeout``.

    ``timeout`` is raised to ``MIN_WAIT``: it says how long the condition should
    take on an idle machine, and a busy one must not fail the test.
    """
    timeout = max(timeout, MIN_WAIT)
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s; last result: {last!r}")


def remote_events(calendar: caldav.Calendar) -> dict[str, list[icalendar.Event]]:
    """Return the calendar's VEVENTs grouped by UID (a UID twice is a duplicate)."""
    found: dict[str, list[icalendar.Event]] = defaultdict(list)
    for obj in calendar.get_events():
        for component in icalendar.Calendar.from_ical(obj.data).walk("VEVENT"):
            found[str(component["UID"])].append(component)
    return dict(found)


def journal_appointments(container: Container, account_id: UUID) -> list[dict[str, Any]]:
    """Return every appointment of an account (cancelled ones too)."""
    return container.appointments.list_window(
        account_id,
        datetime.fromisoformat("1970-01-01T00:00:00+00:00"),
        datetime.fromisoformat("2100-01-01T00:00:00+00:00"),
        include_cancelled=True,
        limit=100_000,
    )


def differences(
    container: Container, account_id: UUID, calendar: caldav.Calendar, check_sequence: bool = True
) -> list[str]:
    """Return how the calendar differs from the journal (empty when equal).

    Every booked appointment must be on the calendar exactly once with its
    latest title, start, end and sequence; cancelled ones must be absent.
    """
    remote = remote_events(calendar)
    problems = []
    expected_uids = set()
    for state in journal_appointments(container, account_id):
        uid = state.get("calendar_uid") or f"{state['id']}@caljournal"
        copies = remote.get(uid, [])
        if state["status"] == "cancelled":
            if copies:
                problems.append(f"{uid}: cancelled but still on the calendar")
            continue
        expected_uids.add(uid)
        if len(copies) != 1:
            problems.append(f"{uid}: {len(copies)} copies")
            continue
        event = copies[0]
        start = event.decoded("DTSTART")
        end = event.decoded("DTEND")
        if str(event["SUMMARY"]) != state["title"]:
            problems.append(f"{uid}: title {event['SUMMARY']!r} != {state['title']!r}")
        if start != datetime.fromisoformat(state["start"]) or end != datetime.fromisoformat(
            state["end"]
        ):
            problems.append(f"{uid}: period {start}–{end} != {state['start']}–{state['end']}")
        if check_sequence and int(event.get("SEQUENCE", 0)) != state["sequence"]:
            problems.append(f"{uid}: SEQUENCE {event.get('SEQUENCE')} != {state['sequence']}")
    for uid in set(remote) - expected_uids:
        if uid.endswith("@caljournal") or check_sequence is False:
            problems.append(f"{uid}: on the calendar but not a booked appointment")
    return problems

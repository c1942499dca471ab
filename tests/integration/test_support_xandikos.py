"""The Xandikos test server starts, stores calendars and answers as a CalDAV server."""

from __future__ import annotations

from tests.support.xandikos import XandikosProcess


def test_xandikos_makes_a_calendar_that_stores_and_lists_an_event(
    xandikos: XandikosProcess,
) -> None:
    calendar = xandikos.make_calendar("Support check")
    calendar.save_event(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//EN\r\nBEGIN:VEVENT\r\n"
        "UID:support-check-1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260102T100000Z\r\n"
        "DTEND:20260102T110000Z\r\nSUMMARY:Support check\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )

    uids = [event.icalendar_component["UID"] for event in calendar.events()]

    assert uids == ["support-check-1"]
    assert xandikos.running

"""Unit tests of the inbound decision function (pure: no server, no database)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caljournal.adapters.ical import content_hash, from_ical
from caljournal.adapters.syncstate import CopyRecord, PendingPush
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause, Origin
from caljournal.projections.inbound import decide, remote_fields
from caljournal.projections.inbound_decide import IMPORT_NAMESPACE, imported_id, parse_object
from caljournal.projections.push import plan, render

CAUSE = Cause(Origin.API, "token:acme/default", "req")
CALENDAR = Cause(Origin.CALDAV, "sync:account", "poll")
URL = "https://dav.example.org/calendars/alice/work/"
FOREIGN = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:f@x\r\n"
    b"DTSTAMP:20260101T000000Z\r\nDTSTART:20260410T100000Z\r\nDTEND:20260410T110000Z\r\n"
    b"SUMMARY:Dentist\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)
BERLIN = ZoneInfo("Europe/Berlin")


def appointment() -> Appointment:
    start = datetime(2026, 4, 10, 10, tzinfo=BERLIN)
    return Appointment.book(
        appointment_id=uuid4(),
        account_id=uuid4(),
        title="Haircut",
        start=start,
        end=start + timedelta(hours=1),
        timezone="Europe/Berlin",
        cause=CAUSE,
    )


def copy_of(state: dict[str, Any], data: bytes, sequence: int) -> CopyRecord:
    return CopyRecord(
        appointment_id=state["id"],
        account_id=state["account_id"],
        calendar_url=URL,
        href="h",
        etag='"1"',
        pushed_sequence=sequence,
        content_hash=content_hash(data),
        present=True,
    )


def test_an_older_copy_of_ours_without_a_record_is_adopted_not_applied() -> None:
    a = appointment()
    old = render(a.state())[0]  # what a worker wrote before it crashed unrecorded
    a.move(start=a.start + timedelta(days=1), end=a.end + timedelta(days=1), cause=CAUSE)
    decision = decide("h", '"9"', old, None, a.state(), lambda uid: uid)
    assert decision.kind == "adopt" and decision.sequence == 0


def test_our_write_read_back_is_an_echo() -> None:
    a = appointment()
    data = render(a.state())[0]
    decision = decide("h", '"2"', data, copy_of(a.state(), data, 0), a.state(), lambda uid: uid)
    assert decision.kind == "echo"


def test_a_remote_edit_with_a_newer_unpushed_local_change_is_a_conflict() -> None:
    a = appointment()
    pushed = render(a.state())[0]
    copy = copy_of(a.state(), pushed, 0)
    a.change_details(changes={"title": "Local"}, cause=CAUSE)
    edited = pushed.replace(b"SUMMARY:Haircut", b"SUMMARY:Remote")
    assert decide("h", '"3"', edited, copy, a.state(), lambda uid: uid).kind == "conflict"
    assert decide("h", None, None, copy, a.state(), lambda uid: uid).kind == "conflict"


def test_a_remote_edit_without_local_changes_is_applied_and_a_deletion_cancels() -> None:
    a = appointment()
    pushed = render(a.state())[0]
    copy = copy_of(a.state(), pushed, 0)
    edited = pushed.replace(b"SUMMARY:Haircut", b"SUMMARY:Remote")
    decision = decide("h", '"3"', edited, copy, a.state(), lambda uid: uid)
    assert decision.kind == "apply" and decision.fields and decision.fields.title == "Remote"
    assert decide("h", None, None, copy, a.state(), lambda uid: uid).kind == "cancel"


def test_our_unrecorded_write_over_a_record_in_doubt_is_adopted_not_applied() -> None:
    a = appointment()
    in_doubt = replace(copy_of(a.state(), render(a.state())[0], 0), content_hash=None)
    a.change_details(changes={"title": "Haircut and colour"}, cause=CAUSE)
    ours = render(a.state())[0]  # written; the process died before recording it

    decision = decide("h", '"3"', ours, in_doubt, a.state(), lambda uid: uid)
    assert decision.kind == "adopt" and decision.sequence == a.sequence

    a.change_details(changes={"title": "Haircut"}, cause=CAUSE)  # taken back
    decision = decide("h", '"3"', ours, in_doubt, a.state(), lambda uid: uid)
    assert decision.kind == "adopt" and decision.sequence == a.sequence - 1
    assert plan(pending_push(a.state(), decision), URL).kind == "update"


def test_an_edit_over_a_record_in_doubt_is_decided_as_an_edit() -> None:
    a = appointment()
    pushed = render(a.state())[0]
    in_doubt = replace(copy_of(a.state(), pushed, 0), content_hash=None)
    same_sequence = pushed.replace(b"SUMMARY:Haircut", b"SUMMARY:Remote")
    newer = with_sequence(same_sequence, 1)
    for edited in (same_sequence, newer):
        decision = decide("h", '"3"', edited, in_doubt, a.state(), lambda uid: uid)
        assert decision.kind == "apply", edited
    a.change_details(changes={"title": "Local"}, cause=CAUSE)
    newer = with_sequence(same_sequence, 2)
    assert decide("h", '"3"', newer, in_doubt, a.state(), lambda uid: uid).kind == "conflict"


def test_foreign_objects_are_imported_under_a_stable_id_and_garbage_is_quarantined() -> None:
    decision = decide("h", '"1"', FOREIGN, None, None, lambda uid: f"id-for-{uid}")
    assert decision.kind == "import" and decision.appointment_id == "id-for-f@x"
    assert decide("h", '"1"', b"not ical", None, None, str).kind == "quarantine"
    assert decide("h", '"1"', b"x" * 5_000_001, None, None, str).reason == "object larger than 5 MB"


# -- an object deleted in the calendar and restored there (undo, trash bin) -------------


def absent(state: dict[str, Any], sequence: int) -> CopyRecord:
    """Return the record of a calendar copy whose deletion was recorded."""
    return CopyRecord(
        appointment_id=state["id"],
        account_id=state["account_id"],
        calendar_url=URL,
        href="h",
        etag=None,
        pushed_sequence=sequence,
        content_hash=None,
        present=False,
    )


def with_sequence(data: bytes, sequence: int) -> bytes:
    """Return ``data`` as another client stores it again: with a raised SEQUENCE."""
    return data.replace(b"SEQUENCE:0", f"SEQUENCE:{sequence}".encode())


def pending_push(state: dict[str, Any], decision: Any) -> PendingPush:
    """Return the pending push the record written for ``decision`` gives."""
    record = CopyRecord(
        appointment_id=state["id"],
        account_id=state["account_id"],
        calendar_url=URL,
        href=decision.href,
        etag=decision.etag,
        pushed_sequence=decision.sequence,
        content_hash=decision.digest,
        present=True,
    )
    return PendingPush(state, record)


def imported() -> Appointment:
    return Appointment.import_from_calendar(
        appointment_id=uuid4(),
        account_id=uuid4(),
        remote=remote_fields(from_ical(FOREIGN)),
        cause=CALENDAR,
    )


def test_a_restored_foreign_event_whose_deletion_cancelled_it_is_reinstated() -> None:
    a = imported()
    a.cancel(cause=CALENDAR, reason="deleted or cancelled in the calendar")
    decision = decide("h", '"7"', FOREIGN, absent(a.state(), 1), a.state(), str)
    assert decision.kind == "reinstate" and decision.appointment_id == str(a.id)
    assert decision.fields and decision.fields.title == "Dentist"


def test_a_restored_foreign_event_cancelled_in_the_booking_system_is_deleted_again() -> None:
    a = imported()
    a.cancel(cause=CAUSE, reason="customer cancelled")  # and the push deleted it
    decision = decide("h", '"7"', FOREIGN, absent(a.state(), 1), a.state(), str)
    assert decision.kind == "conflict" and decision.sequence == 0
    assert plan(pending_push(a.state(), decision), URL).kind == "delete"


def test_a_restored_copy_of_ours_with_a_raised_sequence_is_not_adopted_when_cancelled() -> None:
    a = appointment()
    pushed = render(a.state())[0]
    a.cancel(cause=CAUSE, reason="customer cancelled")  # and the push deleted it
    restored = with_sequence(pushed, a.sequence)  # as high as the journal's: looks current
    decision = decide("h", '"7"', restored, absent(a.state(), 1), a.state(), str)
    assert decision.kind == "conflict" and decision.sequence == 0
    assert plan(pending_push(a.state(), decision), URL).kind == "delete"


def test_a_restored_copy_of_ours_the_customer_deleted_is_reinstated() -> None:
    a = appointment()
    pushed = render(a.state())[0]
    a.cancel(cause=CALENDAR, reason="deleted or cancelled in the calendar")
    restored = with_sequence(pushed, 5)
    decision = decide("h", '"7"', restored, absent(a.state(), 1), a.state(), str)
    assert decision.kind == "reinstate"


def test_a_restore_never_marks_a_local_change_waiting_for_its_push_as_pushed() -> None:
    a = appointment()
    pushed = render(a.state())[0]
    a.change_details(changes={"title": "Local"}, cause=CAUSE)  # not pushed yet
    # The deletion was recorded as a conflict (the push re-creates the copy)...
    record = absent(a.state(), 0)
    # ...but another client restored the old copy, SEQUENCE as high as the journal's.
    restored = with_sequence(pushed, a.sequence)
    decision = decide("h", '"7"', restored, record, a.state(), str)
    assert decision.kind == "conflict" and decision.sequence == 0
    action = plan(pending_push(a.state(), decision), URL)
    assert action.kind == "update" and action.etag == '"7"'


def test_an_event_no_longer_cancelled_in_the_calendar_is_reinstated() -> None:
    a = appointment()
    confirmed = render(a.state())[0]
    cancelled = confirmed.replace(b"STATUS:CONFIRMED", b"STATUS:CANCELLED")
    a.cancel(cause=CALENDAR, reason="deleted or cancelled in the calendar")
    copy = copy_of(a.state(), cancelled, 1)
    assert decide("h", '"8"', confirmed, copy, a.state(), str).kind == "reinstate"


@pytest.mark.parametrize(
    "times",
    [
        "DTSTART;TZID=Asia/Tokyo:00010101T000000\r\nDTEND;TZID=Asia/Tokyo:00010101T010000",
        "DTSTART;TZID=America/New_York:99991231T220000\r\nDTEND;TZID=America/New_York:99991231T230000",
        "DTSTART:00010101T000000Z\r\nDTEND:00010101T010000Z",
        "DTSTART;VALUE=DATE:99991231\r\nDTEND;VALUE=DATE:99991231",
    ],
)
def test_times_at_the_ends_of_the_calendar_are_quarantined_not_a_crash(times: str) -> None:
    data = FOREIGN.replace(b"DTSTART:20260410T100000Z\r\nDTEND:20260410T110000Z", times.encode())
    decision = decide("h", '"1"', data, None, None, lambda uid: uid)
    assert decision.kind == "quarantine"
    assert "year 1 or 9999" in (decision.reason or "") or "between" in (decision.reason or "")


def test_remote_text_is_read_in_the_canonical_form_of_the_api() -> None:
    a = appointment()
    a.change_details(changes={"description": "one\ntwo", "location": "Room 1"}, cause=CAUSE)
    ours = render(a.state())[0]
    # Another client kept trailing blanks that the API drops, and a byte-order mark.
    theirs = ours.replace(b"DESCRIPTION:one\\ntwo", b"DESCRIPTION:one  \\ntwo\t")
    theirs = theirs.replace(b"LOCATION:Room 1", "LOCATION:\ufeffRoom 1 ".encode())
    assert theirs != ours
    theirs = theirs.replace(b"END:VEVENT", b"CATEGORIES:Work\r\nEND:VEVENT")
    copy = copy_of(a.state(), ours, a.sequence)
    decision = decide("h", '"2"', theirs, copy, a.state(), lambda uid: uid)
    assert decision.kind == "apply"
    assert decision.fields is not None
    assert a.apply_calendar_change(remote=decision.fields, cause=CALENDAR) == []


def _object(*lines: str) -> bytes:
    body = "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//test//EN",
            "BEGIN:VEVENT",
            "UID:odd-1",
            "DTSTAMP:20260101T000000Z",
            *lines,
            "END:VEVENT",
            "END:VCALENDAR",
            "",
        ]
    )
    return body.encode()


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (
            ["DTSTART:20260301T100000Z", "DTEND:20260301T110000Z", "SEQUENCE:1", "SEQUENCE:2"],
            "more than one SEQUENCE",
        ),
        (
            ["DTSTART:20260301T100000Z", "DTSTART:20260302T100000Z", "DTEND:20260303T110000Z"],
            "more than one DTSTART",
        ),
        (
            ["DTSTART:20260301T100000Z", "DTEND:20260301T110000Z", "DTEND:20260301T120000Z"],
            "more than one DTEND",
        ),
        (
            ["DTSTART:20260301T100000Z", "DURATION:PT1H", "DURATION:PT2H"],
            "more than one DURATION",
        ),
    ],
)
def test_a_property_given_twice_is_a_reason_not_a_crash(lines: list[str], reason: str) -> None:
    parsed = parse_object(_object(*lines))
    assert parsed.fields is None
    assert parsed.reason is not None and reason in parsed.reason


def test_an_event_with_a_geo_position_is_read_and_hashed() -> None:
    parsed = parse_object(
        _object("DTSTART:20260301T100000Z", "DTEND:20260301T110000Z", "GEO:37.386013;-122.082932")
    )
    assert parsed.reason is None and parsed.fields is not None
    moved = parse_object(
        _object("DTSTART:20260301T100000Z", "DTEND:20260301T110000Z", "GEO:48.1;11.5")
    )
    assert parsed.digest is not None and moved.digest is not None
    assert parsed.digest != moved.digest  # the position is content


@given(st.text(max_size=40), st.text(max_size=60), st.text(max_size=80))
def test_an_imported_id_is_the_uuid5_of_account_calendar_and_uid(
    account_id: str, calendar_url: str, uid: str
) -> None:
    name = f"{account_id}|{calendar_url.rstrip('/')}|{uid}"
    try:
        expected = str(uuid.uuid5(IMPORT_NAMESPACE, name))
    except UnicodeEncodeError:  # a lone surrogate: no id either way
        with pytest.raises(UnicodeEncodeError):
            imported_id(account_id, calendar_url, uid)
        return
    assert imported_id(account_id, calendar_url, uid) == expected
    assert uuid.UUID(expected).version == 5

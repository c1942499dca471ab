"""Unit tests of the inbound decision function (pure: no server, no database)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

from caljournal.adapters.ical import content_hash
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause, Origin
from caljournal.projections.inbound import decide
from caljournal.projections.push import render

CAUSE = Cause(Origin.API, "token:acme/default", "req")
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


def copy_of(state: dict[str, Any], data: bytes, sequence: int) -> dict[str, Any]:
    return {
        "appointment_id": state["id"],
        "href": "h",
        "etag": '"1"',
        "pushed_sequence": sequence,
        "content_hash": content_hash(data),
        "present": 1,
    }


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


def test_foreign_objects_are_imported_under_a_stable_id_and_garbage_is_quarantined() -> None:
    foreign = (
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:f@x\r\n"
        b"DTSTAMP:20260101T000000Z\r\nDTSTART:20260410T100000Z\r\nDTEND:20260410T110000Z\r\n"
        b"SUMMARY:Dentist\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    decision = decide("h", '"1"', foreign, None, None, lambda uid: f"id-for-{uid}")
    assert decision.kind == "import" and decision.appointment_id == "id-for-f@x"
    assert decide("h", '"1"', b"not ical", None, None, str).kind == "quarantine"
    assert decide("h", '"1"', b"x" * 5_000_001, None, None, str).reason == "object larger than 5 MB"

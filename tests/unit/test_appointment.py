"""Unit tests of the Appointment aggregate (no I/O)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4
from zoneinfo import ZoneInfo, available_timezones

import pytest
from eventsourcing.application import Application
from hypothesis import given
from hypothesis import strategies as st

from caljournal.domain import values
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause, Origin
from caljournal.domain.errors import (
    AppointmentCancelledError,
    InvalidAppointmentError,
    InvalidCauseError,
)
from caljournal.domain.values import RemoteFields, is_region_zone

CAUSE = Cause(Origin.API, "token:acme/default", "req-1")
CALENDAR = Cause(Origin.CALDAV, "sync:account", "poll-1")
BERLIN = ZoneInfo("Europe/Berlin")
ZONES = sorted(z for z in available_timezones() if is_region_zone(z))


def book(**overrides: object) -> Appointment:
    fields: dict[str, object] = {
        "appointment_id": uuid4(),
        "account_id": uuid4(),
        "title": "Haircut",
        "start": datetime(2026, 3, 27, 10, tzinfo=BERLIN),
        "end": datetime(2026, 3, 27, 11, tzinfo=BERLIN),
        "timezone": "Europe/Berlin",
        "cause": CAUSE,
    }
    fields.update(overrides)
    return Appointment.book(**fields)  # type: ignore[arg-type]


def replayed(appointment: Appointment) -> Appointment:
    """Return the aggregate as the journal gives it back (through the transcoder)."""
    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.save(appointment)
    result = app.repository.get(appointment.id)
    assert isinstance(result, Appointment)
    return result


def test_booking_records_one_event_with_origin_actor_and_correlation() -> None:
    appointment = book()
    (event,) = appointment.collect_events()
    assert type(event).__name__ == "Booked"
    assert (event.origin, event.actor, event.correlation_id) == (
        "api",
        "token:acme/default",
        "req-1",
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"end": datetime(2026, 3, 27, 9, tzinfo=BERLIN)}, "end"),
        ({"end": datetime(2026, 3, 27, 10, tzinfo=BERLIN)}, "end"),
        ({"start": datetime(2026, 3, 27, 10)}, "start"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"title": "  "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"description": "x" * 10_001}, "description"),
        ({"customer_email": "not-an-address"}, "customer_email"),
        ({"end": datetime(2027, 3, 29, 11, tzinfo=BERLIN)}, "end"),
    ],
)
def test_booking_refuses_broken_input_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(InvalidAppointmentError) as info:
        book(**overrides)
    assert info.value.field == field


def test_cause_refuses_unknown_origin_and_empty_actor() -> None:
    with pytest.raises(InvalidCauseError):
        Cause("email", "x", "y")  # type: ignore[arg-type]
    with pytest.raises(InvalidCauseError):
        Cause(Origin.API, " ", "y")


def test_cancelled_appointment_cannot_be_moved_or_changed() -> None:
    appointment = book()
    assert appointment.cancel(cause=CAUSE, reason="ill")
    with pytest.raises(AppointmentCancelledError):
        appointment.move(
            start=datetime(2026, 4, 1, 10, tzinfo=BERLIN),
            end=datetime(2026, 4, 1, 11, tzinfo=BERLIN),
            cause=CAUSE,
        )
    with pytest.raises(AppointmentCancelledError):
        appointment.change_details(changes={"title": "x"}, cause=CAUSE)
    assert appointment.cancel(cause=CAUSE) is False
    assert appointment.version == 2


def test_a_calendar_restore_reinstates_a_cancellation_the_calendar_caused() -> None:
    appointment = book(location="Salon")
    appointment.cancel(cause=CALENDAR, reason="deleted or cancelled in the calendar")
    restored = RemoteFields(
        title="Haircut",
        start=datetime(2026, 3, 27, 10, tzinfo=BERLIN),
        end=datetime(2026, 3, 27, 12, tzinfo=BERLIN),
        timezone="Europe/Berlin",
        location="Salon",
        description="restored from the trash",
    )
    assert appointment.reinstate_from_calendar(remote=restored, cause=CALENDAR)
    event = appointment.pending_events[-1]
    assert type(event).__name__ == "ReinstatedFromCalendar"
    assert (event.origin, event.actor, event.correlation_id) == ("caldav", "sync:account", "poll-1")
    assert event.changes == {"description": "restored from the trash"}
    stored = replayed(appointment)
    assert stored.status == "booked" and stored.cancel_reason is None
    assert stored.end == restored.end and stored.end.tzinfo.key == "Europe/Berlin"  # type: ignore[union-attr]
    assert stored.description == "restored from the trash"
    assert stored.sequence == 2
    assert appointment.reinstate_from_calendar(remote=restored, cause=CALENDAR) is False


def test_a_calendar_restore_cannot_take_back_a_cancellation_made_in_the_booking_system() -> None:
    appointment = book()
    appointment.cancel(cause=CAUSE, reason="customer cancelled")
    restored = RemoteFields(
        title="Haircut", start=appointment.start, end=appointment.end, timezone="Europe/Berlin"
    )
    with pytest.raises(AppointmentCancelledError):
        appointment.reinstate_from_calendar(remote=restored, cause=CALENDAR)
    assert appointment.state()["cancel_origin"] == "api"
    assert appointment.version == 2


def test_remote_fields_are_checked_once_and_a_changed_copy_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checks: list[str] = []
    real_zone_for = values.zone_for
    monkeypatch.setattr(values, "zone_for", lambda name: checks.append(name) or real_zone_for(name))
    remote = RemoteFields(
        title="Haircut",
        start=datetime(2026, 3, 27, 10, tzinfo=BERLIN),
        end=datetime(2026, 3, 27, 11, tzinfo=BERLIN),
        timezone="Europe/Berlin",
    )
    remote.check()
    Appointment.import_from_calendar(
        appointment_id=uuid4(), account_id=uuid4(), remote=remote, cause=CALENDAR
    )
    assert checks == ["Europe/Berlin"]
    broken = replace(remote, end=remote.start - timedelta(hours=1))
    with pytest.raises(InvalidAppointmentError, match="end must be after start"):
        Appointment.import_from_calendar(
            appointment_id=uuid4(), account_id=uuid4(), remote=broken, cause=CALENDAR
        )
    assert checks == ["Europe/Berlin", "Europe/Berlin"]


def test_commands_that_change_nothing_record_nothing() -> None:
    appointment = book()
    assert not appointment.move(start=appointment.start, end=appointment.end, cause=CAUSE)
    assert not appointment.change_details(changes={"title": "Haircut"}, cause=CAUSE)
    assert appointment.version == 1


def test_change_details_records_only_changed_fields_and_refuses_unknown() -> None:
    appointment = book(location="Salon")
    appointment.change_details(changes={"title": "Colour", "location": "Salon"}, cause=CAUSE)
    event = appointment.collect_events()[-1]
    assert event.changes == {"title": "Colour"}
    with pytest.raises(InvalidAppointmentError) as info:
        appointment.change_details(changes={"colour": "red"}, cause=CAUSE)
    assert info.value.field == "colour"


def test_zone_survives_the_journal_round_trip() -> None:
    appointment = replayed(book())
    assert isinstance(appointment.start.tzinfo, ZoneInfo)
    assert appointment.start.tzinfo.key == "Europe/Berlin"
    assert appointment.timezone == "Europe/Berlin"


def test_ten_o_clock_stays_ten_o_clock_across_the_spring_dst_change() -> None:
    # Booked on Friday 27 March 2026 (CET, +01:00); DST starts on Sunday 29 March.
    appointment = book()
    appointment.move(
        start=appointment.start + timedelta(days=7),
        end=appointment.end + timedelta(days=7),
        cause=CAUSE,
    )
    stored = replayed(appointment)
    assert (stored.start.hour, stored.start.minute) == (10, 0)
    assert stored.start.utcoffset() == timedelta(hours=2)
    # Arithmetic after the replay follows the zone too (not a frozen offset).
    back = stored.start - timedelta(days=7)
    assert (back.hour, back.utcoffset()) == (10, timedelta(hours=1))


@given(
    zone=st.sampled_from(ZONES),
    day=st.dates(min_value=datetime(2000, 1, 1).date(), max_value=datetime(2037, 12, 31).date()),
    hour=st.integers(min_value=6, max_value=20),
    weeks=st.integers(min_value=1, max_value=60),
)
def test_local_wall_time_survives_replay_and_weekly_moves_in_any_zone(
    zone: str, day: datetime, hour: int, weeks: int
) -> None:
    tz = ZoneInfo(zone)
    start = datetime(day.year, day.month, day.day, hour, tzinfo=tz)
    # Skip wall times that do not exist or repeat (DST gaps and folds).
    round_trip = start.astimezone(UTC).astimezone(tz)
    if round_trip.replace(tzinfo=None) != start.replace(tzinfo=None):
        return
    appointment = book(start=start, end=start + timedelta(minutes=45), timezone=zone)
    target = appointment.start + timedelta(weeks=weeks)
    target_utc = target.astimezone(UTC).astimezone(tz)
    if target_utc.replace(tzinfo=None) != target.replace(tzinfo=None):
        return
    # The client sends the new time as UTC; the journal must give back local time.
    appointment.move(
        start=target.astimezone(UTC),
        end=(target + timedelta(minutes=45)).astimezone(UTC),
        cause=CAUSE,
    )
    stored = replayed(appointment)
    assert stored.start.tzinfo is not None and stored.start.tzinfo.key == zone  # type: ignore[attr-defined]
    assert (stored.start.hour, stored.start.minute) == (hour, 0)
    assert stored.start == target
    assert stored.end - stored.start == timedelta(minutes=45)


@given(
    zone=st.sampled_from(ZONES),
    instant=st.datetimes(
        min_value=datetime(1990, 1, 1),
        max_value=datetime(2040, 1, 1),
        timezones=st.just(UTC),
    ).map(lambda value: value.replace(microsecond=0)),
)
def test_the_instant_is_kept_whatever_offset_the_client_used(zone: str, instant: datetime) -> None:
    appointment = replayed(book(start=instant, end=instant + timedelta(hours=1), timezone=zone))
    assert appointment.start == instant
    assert appointment.start.tzinfo.key == zone  # type: ignore[union-attr]

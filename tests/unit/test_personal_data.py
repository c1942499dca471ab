"""The mapper that encrypts appointments' personal fields with a key per appointment."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from eventsourcing.persistence import DatetimeAsISO, UUIDAsHex

from caljournal.adapters.personal_data import (
    PersonalDataMapper,
    open_fields,
    restore_personal,
    seal_fields,
    split_personal,
)
from caljournal.adapters.personal_keys import PersonalKeys
from caljournal.adapters.transcoder import JournalTranscoder
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause, Origin
from caljournal.domain.values import RemoteFields

BERLIN = ZoneInfo("Europe/Berlin")
CAUSE = Cause(Origin.API, "frontdesk", "req-1")


class HeldKeys(PersonalKeys):
    """Keys in a dict instead of a table."""

    def __init__(self) -> None:
        self.keys: dict[UUID, bytes] = {}

    def for_write(self, appointment_id: UUID) -> bytes | None:
        return self.keys.get(appointment_id)

    def for_read(self, appointment_id: UUID, memo: dict[UUID, Any] | None) -> bytes | None:
        return self.keys.get(appointment_id)


def mapper(keys: PersonalKeys | None) -> PersonalDataMapper:
    transcoder = JournalTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    built = PersonalDataMapper(transcoder=transcoder)
    built.keys = keys
    return built


def booked() -> Appointment:
    return Appointment.book(
        appointment_id=uuid.uuid4(),
        account_id=uuid.uuid4(),
        title="Root canal for Ms Okonkwo-Pratt",
        start=datetime(2026, 4, 1, 9, tzinfo=BERLIN),
        end=datetime(2026, 4, 1, 10, tzinfo=BERLIN),
        timezone="Europe/Berlin",
        location="Praxis am Zwinger",
        description=None,
        customer_name="Adaeze Okonkwo-Pratt",
        customer_email="adaeze@example.org",
        cause=CAUSE,
    )


def test_personal_fields_are_stored_encrypted_and_read_back() -> None:
    keys = HeldKeys()
    appointment = booked()
    keys.keys[appointment.id] = b"k" * 32
    the_mapper = mapper(keys)
    event = appointment.collect_events()[0]

    stored = the_mapper.to_stored_event(event)
    read = the_mapper.to_domain_event(stored)

    for text in ("Okonkwo", "Zwinger", "adaeze@"):
        assert text.encode() not in stored.state
    assert vars(read) == vars(event)


def test_without_the_key_the_fields_read_as_erased_and_the_rest_stays() -> None:
    keys = HeldKeys()
    appointment = booked()
    keys.keys[appointment.id] = b"k" * 32
    the_mapper = mapper(keys)
    stored = the_mapper.to_stored_event(appointment.collect_events()[0])
    del keys.keys[appointment.id]

    read: Any = the_mapper.to_domain_event(stored)

    assert (read.title, read.location, read.customer_name) == ("[erased]",) * 3
    assert read.customer_email is None
    assert read.description is None  # nothing was held, nothing to erase
    rebuilt = read.mutate(None)
    assert rebuilt.start == datetime(2026, 4, 1, 9, tzinfo=BERLIN)
    assert rebuilt.status == "booked"


def test_without_a_key_to_write_with_nothing_personal_is_stored() -> None:
    event = booked().collect_events()[0]

    stored = mapper(HeldKeys()).to_stored_event(event)

    assert b"Okonkwo" not in stored.state
    assert b"[erased]" in stored.state


def test_nested_changes_and_instance_texts_are_taken_and_put_back() -> None:
    state: dict[str, Any] = {
        "changes": {"title": "Dr Who", "recurrence": None},
        "recurrence": {
            "rrule": ["RRULE:FREQ=DAILY"],
            "overrides": [{"recurrence_id": "RECURRENCE-ID:20260101", "title": "Ann"}],
        },
        "local": {"customer_email": "a@example.org", "start": "x"},
        "timezone": "UTC",
    }
    original = {k: (dict(v) if isinstance(v, dict) else v) for k, v in state.items()}
    copy = dict(state)

    taken = split_personal(copy)

    assert set(taken) == {"changes/title", "recurrence/overrides/0/title", "local/customer_email"}
    assert "title" not in copy["recurrence"]["overrides"][0]
    assert state == original  # the event's own dicts are untouched
    restore_personal(copy, taken)
    assert copy == original


def test_an_erased_appointment_ignores_the_calendars_texts_but_takes_its_times() -> None:
    appointment = booked()
    appointment.erase(reason="asked", cause=CAUSE)
    remote = RemoteFields(
        title="Root canal again",
        start=datetime(2026, 4, 2, 9, tzinfo=BERLIN),
        end=datetime(2026, 4, 2, 10, tzinfo=BERLIN),
        timezone="Europe/Berlin",
        customer_name="Adaeze",
    )

    recorded = appointment.apply_calendar_change(remote=remote, cause=CAUSE)

    assert recorded == ["Moved"]
    assert appointment.title == "[erased]"
    assert appointment.start == datetime(2026, 4, 2, 9, tzinfo=BERLIN)


def test_sealed_fields_open_only_for_their_own_appointment() -> None:
    key, mine, other = b"k" * 32, uuid.uuid4(), uuid.uuid4()
    sealed = seal_fields(key, mine, b'{"title": "x"}')

    assert open_fields(key, mine, sealed) == b'{"title": "x"}'
    with pytest.raises(ValueError, match="does not open"):
        open_fields(key, other, sealed)


def _series(override_title: str, location: str) -> RemoteFields:
    """Return the fields of a weekly series whose second instance was changed."""
    from caljournal.projections.inbound_decide import parse_object

    text = "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//test//EN",
            "BEGIN:VEVENT",
            "UID:series-1",
            "DTSTAMP:20260101T000000Z",
            "DTSTART;TZID=Europe/Berlin:20260403T100000",
            "DTEND;TZID=Europe/Berlin:20260403T110000",
            "RRULE:FREQ=WEEKLY;COUNT=5",
            "SUMMARY:Physio",
            "END:VEVENT",
            "BEGIN:VEVENT",
            "UID:series-1",
            "DTSTAMP:20260101T000000Z",
            "RECURRENCE-ID;TZID=Europe/Berlin:20260410T100000",
            "DTSTART;TZID=Europe/Berlin:20260410T120000",
            "DTEND;TZID=Europe/Berlin:20260410T130000",
            f"SUMMARY:{override_title}",
            f"LOCATION:{location}",
            "END:VEVENT",
            "END:VCALENDAR",
            "",
        ]
    )
    parsed = parse_object(text.encode())
    assert parsed.fields is not None, parsed.reason
    return parsed.fields


def test_an_erased_series_keeps_its_changed_instances_texts_erased() -> None:
    series = Appointment.import_from_calendar(
        appointment_id=uuid.uuid4(),
        account_id=uuid.uuid4(),
        remote=_series("Physio with Dr Okafor", "Room 3"),
        cause=CAUSE,
    )
    series.erase(reason="asked", cause=CAUSE)
    [override] = series.recurrence["overrides"]
    assert (override["title"], override["location"]) == ("[erased]", "[erased]")

    # The calendar still holds (or newly writes) texts for the changed instance.
    changed = _series("Physio with Dr Okafor, moved", "Room 4")
    recorded = series.apply_calendar_change(remote=changed, cause=CAUSE)

    [override] = series.recurrence["overrides"]
    assert (override["title"], override["location"]) == ("[erased]", "[erased]")
    assert "Okafor" not in str(series.state())
    # The erased texts equal what is held already: nothing is recorded for them.
    assert "RecurrenceChanged" not in recorded
    assert series.apply_calendar_change(remote=changed, cause=CAUSE) == []

"""What the journal writes for an event is pinned byte for byte.

The audit chain hashes the stored bytes and existing journals must read the
same, so the way the mapper builds a stored event, the order of the personal
values it seals, the chain rows and the positions handed to the query tables
may get faster but never different. The digests below were taken from the
stored events of the samples as the journal wrote them before its write path
was tuned; the nonce of the sealed fields is fixed so the bytes repeat.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import StoredEvent
from hypothesis import given
from hypothesis import strategies as st

from caljournal.adapters import personal_data
from caljournal.adapters.audit_chain import (
    GENESIS,
    canonical_ids,
    entry_hash,
    new_entries,
)
from caljournal.adapters.personal_data import (
    PersonalDataMapper,
    has_personal,
    split_personal,
)
from caljournal.adapters.readmodel import APPOINTMENTS, Row, with_positions
from caljournal.adapters.recorders import latest_positions, positions_by_id
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause, Origin
from caljournal.domain.errors import InvalidAppointmentError
from caljournal.domain.values import BOOKABLE_FROM, BOOKABLE_UNTIL, JOURNAL_FROM, JOURNAL_UNTIL
from caljournal.domain.values import check_time as check_time_now
from tests.unit.test_personal_data import HeldKeys, _series, mapper

CAUSE = Cause(Origin.CALDAV, "poller", "poll-1")
APPOINTMENT = UUID("6f1c0d0e-2b9a-4c53-9d51-0a7f3c2e4b11")
ACCOUNT = UUID("0b5e7a52-93c1-4d7e-8f0a-5c6d7e8f9a0b")
AT = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
KEY = bytes(range(32))
BERLIN = timezone(timedelta(hours=2))

#: sha256 of each sample's stored state, as the journal wrote it before.
GOLDEN = {
    "imported, sealed": "a48e567f6c4db11424f65d8ac303481d3ece045e443cf190b2e2787542bf4491",
    "imported, no key": "072be6bf898304ef491e38694d4de2de901f10316b576df192d29e7ff21ec264",
    "series, sealed": "617ec77d94d78fb961c6299d1180ea64bac860efa4f44b95d6f5a70d23fe1fbd",
    "details changed, sealed": "0f64ff0f0bd5dccfcca59e0b7d39845b99a8294279a82fc7fd36476102d0e52c",
    "moved, nothing personal": "678862c1e392a74b5855cb424c84785d23e20b542972ab51b2b6de88d4446cbb",
}


def _fixed(events: Sequence[Any]) -> list[Any]:
    """Give events a fixed timestamp (the library stamps them with the clock)."""
    for number, event in enumerate(events):
        vars(event)["timestamp"] = AT + timedelta(seconds=number)
    return list(events)


def _samples() -> Iterator[tuple[str, DomainEventProtocol[UUID], bool]]:
    """Yield (name, event, whether its appointment has a key)."""
    imported = Appointment.import_from_calendar(
        appointment_id=APPOINTMENT,
        account_id=ACCOUNT,
        remote=personal_data_fields(),
        cause=CAUSE,
    )
    created, *_ = _fixed(imported.collect_events())
    yield "imported, sealed", created, True
    yield "imported, no key", created, False
    series = Appointment.import_from_calendar(
        appointment_id=APPOINTMENT,
        account_id=ACCOUNT,
        remote=_series("Physio with Dr Okafor", "Room 3"),
        cause=CAUSE,
    )
    yield "series, sealed", _fixed(series.collect_events())[0], True
    changed = personal_data_fields(title="Crown fitting", customer_name="Ngozi Eze-Bauer")
    imported.apply_calendar_change(remote=changed, cause=CAUSE)
    (details,) = _fixed(imported.collect_events())
    yield "details changed, sealed", details, True
    moved = personal_data_fields(
        title="Crown fitting",
        customer_name="Ngozi Eze-Bauer",
        start=datetime(2026, 6, 2, 9, tzinfo=BERLIN),
        end=datetime(2026, 6, 2, 10, tzinfo=BERLIN),
    )
    imported.apply_calendar_change(remote=moved, cause=CAUSE)
    (move,) = _fixed(imported.collect_events())
    yield "moved, nothing personal", move, True


def personal_data_fields(**changes: Any) -> Any:
    """Return the fields of an imported appointment that carries every personal field."""
    from caljournal.domain.values import RemoteFields

    fields: dict[str, Any] = {
        "title": "Root canal for Ms Okonkwo-Pratt",
        "start": datetime(2026, 6, 1, 9, tzinfo=BERLIN),
        "end": datetime(2026, 6, 1, 10, tzinfo=BERLIN),
        "timezone": "Europe/Berlin",
        "location": "Praxis am Zwinger – Raum 2",
        "description": "Bring the X-ray\nand the referral",
        "customer_name": "Adaeze Okonkwo-Pratt",
        "customer_email": "adaeze@example.org",
        "calendar_uid": "uid-1@example.org",
    }
    return RemoteFields(**(fields | changes))


@pytest.fixture
def fixed_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the sealed fields' nonce repeat, so their bytes can be compared."""
    monkeypatch.setattr(personal_data.os, "urandom", lambda n: b"\x07" * n)


def _stored(name: str, event: DomainEventProtocol[UUID], keyed: bool) -> StoredEvent:
    keys = HeldKeys()
    if keyed:
        keys.keys[APPOINTMENT] = KEY
    return mapper(keys).to_stored_event(event)


@pytest.mark.usefixtures("fixed_nonce")
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_stored_state_bytes_are_those_written_before(name: str) -> None:
    event, keyed = next((e, k) for n, e, k in _samples() if n == name)

    stored = _stored(name, event, keyed)

    assert hashlib.sha256(stored.state).hexdigest() == GOLDEN[name]
    assert stored.originator_id == APPOINTMENT
    assert stored.topic.startswith("caljournal:Appointment.")


@pytest.mark.usefixtures("fixed_nonce")
def test_an_event_without_personal_values_is_stored_as_the_library_stores_it() -> None:
    event = next(e for n, e, _ in _samples() if n == "moved, nothing personal")
    assert not has_personal(vars(event))

    ours = _stored("moved", event, True)
    library = super(PersonalDataMapper, mapper(None)).to_stored_event(event)

    assert ours == library


def test_personal_values_are_found_wherever_split_personal_takes_them() -> None:
    for _, event, _ in _samples():
        state = dict(vars(event))
        assert has_personal(state) == bool(split_personal(dict(state)))
    assert not has_personal({"timezone": "UTC", "changes": {"start": "x"}})
    assert has_personal({"local": {"recurrence": {"overrides": [{"title": "t"}]}}})


def _stored_events(count: int, originators: list[UUID]) -> list[StoredEvent]:
    return [
        StoredEvent(originators[n % len(originators)], n + 1, "caljournal:X", bytes([n % 256]) * n)
        for n in range(count)
    ]


def test_chain_rows_do_not_depend_on_ids_given_or_derived() -> None:
    ids = [UUID(int=n + 1) for n in range(3)]
    events = _stored_events(7, ids)
    textual = [
        StoredEvent(s.originator_id.hex, s.originator_version, s.topic, s.state)  # type: ignore[union-attr]
        for s in events
    ]
    keys = {ids[0]: "acme", ids[1]: "globex"}
    positions = list(range(10, 17))

    given_ids = new_entries({"acme": (4, "a" * 64)}, events, positions, keys, canonical_ids(events))
    derived = new_entries({"acme": (4, "a" * 64)}, textual, positions, keys)

    assert given_ids == derived
    assert [r[1] for r in given_ids if r[0] == "acme"] == [5, 6, 7]
    first = next(r for r in given_ids if r[0] == "globex")
    assert first[6] == entry_hash(GENESIS, ids[1], 2, "caljournal:X", events[1].state)


def test_positions_go_to_each_appointments_row_from_its_last_event() -> None:
    ids = [UUID(int=n + 1) for n in range(2)]
    events = _stored_events(5, ids)
    rows = [Row(APPOINTMENTS, {"id": str(i), "version": 1}) for i in ids] + [
        Row("other", {"id": str(ids[0])}, versioned=False)
    ]

    positions = positions_by_id(canonical_ids(events), [20, 21, 22, 23, 24])
    placed = with_positions(rows, positions)

    assert positions == latest_positions(events, [20, 21, 22, 23, 24])
    assert positions == {str(ids[0]): 24, str(ids[1]): 23}
    assert [r.values.get("position") for r in placed] == [24, 23, None]
    assert [(r.table, r.key, r.versioned, r.delete) for r in placed] == [
        (r.table, r.key, r.versioned, r.delete) for r in rows
    ]
    assert "position" not in rows[0].values  # the caller's rows are left as they were


def _check_time_before(name: str, value: datetime, *, bookable: bool = False) -> None:
    """The bounds check as it was written before its fast path (wall-time comparison)."""
    low, high = (BOOKABLE_FROM, BOOKABLE_UNTIL) if bookable else (JOURNAL_FROM, JOURNAL_UNTIL)
    low, high = low.replace(tzinfo=None), high.replace(tzinfo=None)
    offset = value.utcoffset()
    assert offset is not None
    wall = value.replace(tzinfo=None)
    if not low + offset <= wall <= high + offset:
        raise InvalidAppointmentError(f"{name} out of bounds", field=name)


def _outcome(check: Callable[..., None], value: datetime, bookable: bool) -> bool:
    try:
        check("start", value, bookable=bookable)
    except InvalidAppointmentError as error:
        return "between" in str(error) or "out of bounds" in str(error)
    return False


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@given(
    value=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    zone=offsets,
    bookable=st.booleans(),
)
def test_time_bounds_refuse_exactly_what_the_wall_time_comparison_refused(
    value: datetime, zone: timezone, bookable: bool
) -> None:
    aware = value.replace(tzinfo=zone, microsecond=0)

    assert _outcome(check_time_now, aware, bookable) == _outcome(
        _check_time_before, aware, bookable
    )


BOUNDS = [
    (BOOKABLE_FROM, True, 1),
    (BOOKABLE_UNTIL, True, -1),
    (JOURNAL_FROM, False, 1),
    (JOURNAL_UNTIL, False, -1),
]


@given(
    bound=st.sampled_from(BOUNDS),
    minutes=st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
    seconds=st.integers(min_value=-2 * 86_400, max_value=2 * 86_400),
)
def test_a_time_near_a_bound_is_refused_exactly_when_its_instant_lies_outside(
    bound: tuple[datetime, bool, int], minutes: int, seconds: int
) -> None:
    at, bookable, inward = bound
    offset = timedelta(minutes=minutes)
    # The wall time whose instant lies ``seconds`` after the bound, at this offset.
    wall = at.replace(tzinfo=None) + offset + timedelta(seconds=seconds)
    aware = wall.replace(tzinfo=timezone(offset))
    outside = seconds * inward < 0

    assert _outcome(check_time_now, aware, bookable) == outside
    assert _outcome(_check_time_before, aware, bookable) == outside


@pytest.mark.parametrize("bookable", [False, True])
@pytest.mark.parametrize("hours", [-23, 0, 23])
def test_time_bounds_hold_to_the_second_at_both_ends(bookable: bool, hours: int) -> None:
    zone = timezone(timedelta(hours=hours))
    low, high = (BOOKABLE_FROM, BOOKABLE_UNTIL) if bookable else (JOURNAL_FROM, JOURNAL_UNTIL)
    for bound, inside in ((low, timedelta(0)), (high, timedelta(0))):
        at = (bound.replace(tzinfo=None) + timedelta(hours=hours) + inside).replace(tzinfo=zone)
        check_time_now("start", at, bookable=bookable)
    for outside in (
        (low.replace(tzinfo=None) + timedelta(hours=hours, seconds=-1)).replace(tzinfo=zone),
        (high.replace(tzinfo=None) + timedelta(hours=hours, seconds=1)).replace(tzinfo=zone),
    ):
        with pytest.raises(InvalidAppointmentError, match="must lie between"):
            check_time_now("start", outside, bookable=bookable)

"""The journal helpers: apply with retry on conflicts, load or not found, state as of."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from caljournal.adapters.journal_ops import apply, find, load_or_not_found, state_as_of
from caljournal.appointments import Booking
from caljournal.bootstrap import Container, bootstrap
from caljournal.domain.account import Account
from caljournal.domain.appointment import Appointment
from caljournal.errors import ConflictError, NotFoundError
from caljournal.settings import load_settings
from tests.conftest import open_tenant, operator, sqlite_url


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    built = bootstrap(
        load_settings(database_url=sqlite_url(tmp_path), secret_key_file=tmp_path / "k.key")
    )
    yield built
    built.close()


def booked(container: Container) -> dict[str, Any]:
    tenant = open_tenant(container, "acme")
    start = datetime(2026, 4, 6, 10, tzinfo=UTC)
    booking = Booking("Haircut", start, start + timedelta(hours=1), "UTC")
    return container.appointments.book(tenant.account_id, booking, operator()).state


def test_apply_runs_the_command_again_on_the_newer_state_after_losing_a_race(
    container: Container,
) -> None:
    state = booked(container)
    appointment_id = UUID(state["id"])
    seen: list[int] = []

    def rename(appointment: Appointment) -> None:
        seen.append(appointment.version)
        if len(seen) == 1:  # another writer records the next version first
            container.appointments.change_details(
                None, appointment_id, {"location": "Salon"}, operator()
            )
        appointment.change_details(changes={"title": "Colour"}, cause=operator())

    applied = apply(container.journal, appointment_id, rename, Appointment)

    assert applied.saved and seen == [seen[0], seen[0] + 1]
    now = container.appointments.get(None, appointment_id)
    assert (now["title"], now["location"]) == ("Colour", "Salon")
    assert applied.state == now


def test_apply_raises_after_its_last_attempt_instead_of_giving_up_quietly(
    container: Container,
) -> None:
    state = booked(container)
    appointment_id = UUID(state["id"])

    rooms = iter(range(100))

    def always_late(appointment: Appointment) -> None:
        room = {"location": f"Room {next(rooms)}"}
        container.appointments.change_details(None, appointment_id, room, operator())
        appointment.change_details(changes={"title": "Never"}, cause=operator())

    with pytest.raises(ConflictError, match="3 attempts"):
        apply(container.journal, appointment_id, always_late, Appointment, attempts=3)
    assert container.appointments.get(None, appointment_id)["title"] == "Haircut"


def test_apply_saves_nothing_when_the_command_says_so(container: Container) -> None:
    state = booked(container)

    applied = apply(container.journal, UUID(state["id"]), lambda a: False, Appointment)

    assert not applied.saved and applied.state["version"] == state["version"]


def test_load_or_not_found_names_what_is_missing(container: Container) -> None:
    state = booked(container)
    missing = uuid4()

    with pytest.raises(NotFoundError, match=f"no appointment {missing}"):
        load_or_not_found(container.journal, missing, Appointment)
    with pytest.raises(NotFoundError, match="no account"):  # another kind under that id
        load_or_not_found(container.journal, UUID(state["id"]), Account)
    assert find(container.journal, missing, Appointment) is None
    found = load_or_not_found(container.journal, UUID(state["id"]), Appointment)
    assert found.title == "Haircut"


def test_state_as_of_replays_the_events_up_to_the_moment(container: Container) -> None:
    state = booked(container)
    appointment_id = UUID(state["id"])
    between = datetime.now(UTC)
    container.appointments.change_details(None, appointment_id, {"title": "Later"}, operator())

    then = state_as_of(container.journal, appointment_id, between)

    assert then is not None and then.title == "Haircut"
    assert state_as_of(container.journal, appointment_id, None).title == "Later"
    assert state_as_of(container.journal, appointment_id, between - timedelta(days=1)) is None

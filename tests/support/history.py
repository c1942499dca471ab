"""A journal with a varied history, written fast: for the rebuild's tests and benchmark.

Accounts are opened and tokens issued and revoked through the application's
services; calendar links and appointments are recorded through their
aggregates and saved in batches (``Journal.save``, which writes their query
rows and personal-data keys as any save does). Appointments are booked, or
imported from a calendar as recurring series with changed instances; then, in
waves, moved, retitled, their series' instances changed, cancelled, and some
erased (after which they still move).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from caljournal.bootstrap import Container
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause, Origin
from caljournal.domain.link import CalendarLink
from caljournal.domain.values import RemoteFields

BERLIN = ZoneInfo("Europe/Berlin")
OPERATOR = Cause(Origin.OPERATOR, "operator:history", "history")
API = Cause(Origin.API, "token:history/default", "history-api")
CALDAV = Cause(Origin.CALDAV, "sync:history", "history-poll")


@dataclass
class History:
    """What :func:`write_history` recorded."""

    account_ids: list[uuid.UUID] = field(default_factory=list)
    appointments: list[Appointment] = field(default_factory=list)
    erased: list[uuid.UUID] = field(default_factory=list)
    cancelled: list[uuid.UUID] = field(default_factory=list)


def weekly(title: str, start: datetime, instances: int) -> dict[str, Any]:
    """Return a weekly recurrence whose second instance is moved and retitled."""
    moved = start + timedelta(days=7, hours=3)
    second = start + timedelta(days=7)
    overrides = [
        {
            "recurrence_id": f"RECURRENCE-ID;TZID=Europe/Berlin:{second:%Y%m%dT%H%M%S}",
            "start": moved.isoformat(),
            "end": (moved + timedelta(hours=1)).isoformat(),
            "title": f"{title} (moved)",
            "location": "Room 2",
            "description": None,
            "status": None,
        }
    ]
    return {
        "rrule": [f"RRULE:FREQ=WEEKLY;COUNT={instances}"],
        "rdate": [],
        "exdate": [],
        "overrides": overrides,
    }


def _new_appointment(account_id: uuid.UUID, i: int) -> Appointment:
    start = datetime(2026, 6, 1, 7, tzinfo=BERLIN) + timedelta(minutes=30 * (i % 5000))
    if i % 10 == 3:
        title = f"Series {i}"
        remote = RemoteFields(
            title=title,
            start=start,
            end=start + timedelta(hours=1),
            timezone="Europe/Berlin",
            location="Room 1",
            calendar_uid=f"series-{i}@example.org",
            recurrence=weekly(title, start, 4),
        )
        return Appointment.import_from_calendar(
            appointment_id=uuid.uuid4(), account_id=account_id, remote=remote, cause=CALDAV
        )
    return Appointment.book(
        appointment_id=uuid.uuid4(),
        account_id=account_id,
        title=f"Booking {i}",
        start=start,
        end=start + timedelta(minutes=30),
        timezone="Europe/Berlin",
        description="First visit" if i % 3 == 0 else None,
        customer_name=f"Customer {i}",
        customer_email=f"customer{i}@example.org",
        cause=API,
    )


def change(
    appointment: Appointment,
    wave: int,
    rng: random.Random,
    history: History,
    rates: tuple[float, float] = (0.04, 0.04),
) -> None:
    """Record one change of wave ``wave`` on a live (not cancelled) appointment.

    Then erase it, or cancel it, with the chances ``rates``.
    """
    # Erased series too: their changed instances' texts stay erased.
    if appointment.recurrence and wave % 2 == 0:
        recurrence = dict(appointment.recurrence)
        overrides = [dict(o) for o in recurrence["overrides"]]
        overrides[0]["title"] = f"{appointment.title} (moved, wave {wave})"
        recurrence["overrides"] = overrides
        remote = RemoteFields(
            title=appointment.title or "",
            start=appointment.start,
            end=appointment.end,
            timezone=appointment.timezone,
            location=appointment.location,
            calendar_uid=appointment.calendar_uid,
            recurrence=recurrence,
        )
        appointment.apply_calendar_change(remote=remote, cause=CALDAV)
    elif wave % 2 or appointment.erased:  # an erased one's title cannot change
        shift = timedelta(minutes=15 * (1 + rng.randrange(4)))
        appointment.move(start=appointment.start + shift, end=appointment.end + shift, cause=API)
    else:
        appointment.change_details(changes={"title": f"Booking / {wave}"}, cause=API)
    roll = rng.random()
    if roll < rates[0] and not appointment.erased:
        appointment.erase(reason="asked by the customer", cause=OPERATOR)
        history.erased.append(appointment.id)
    elif roll < rates[0] + rates[1]:
        appointment.cancel(cause=API, reason="no longer needed")
        history.cancelled.append(appointment.id)


def write_history(
    container: Container,
    *,
    accounts: int = 3,
    appointments: int = 120,
    events_each: int = 4,
    seed: int = 7,
    batch: int = 100,
    rates: tuple[float, float] = (0.04, 0.04),
) -> History:
    """Record a varied history: accounts, tokens, links, appointments changed in waves.

    ``events_each`` is how many events an appointment gets at most (fewer once
    cancelled); ``rates`` are the chances of erasing and of cancelling at each change.
    """
    rng = random.Random(seed)
    history = History()
    journal = container.journal
    for n in range(accounts):
        name = f"history-{n}"
        container.accounts.open_account(name, OPERATOR)
        account_id = container.accounts.find_account(name).id
        history.account_ids.append(account_id)
        second = container.accounts.issue_token(name, "second", OPERATOR)
        if n % 2 == 0:
            container.accounts.revoke_token(second.token_id, OPERATOR)
        link = CalendarLink.link(
            account_id=account_id,
            server_url=f"https://dav.example.org/{name}/",
            username=name,
            auth="basic",
            provider="generic",
            resolution="as given",
            cause=OPERATOR,
        )
        link.set_poll_interval(seconds=120 + n, cause=OPERATOR)
        if n % 3 == 1:
            link.pause(reason="maintenance", cause=OPERATOR)
        if n % 3 == 2:
            link.unlink(cause=OPERATOR)
        journal.save(link)
    container.accounts.issue_token(None, "operator", OPERATOR)
    made = history.appointments
    for i in range(appointments):
        made.append(_new_appointment(history.account_ids[i % accounts], i))
        if len(made) % batch == 0:
            journal.save(*made[-batch:])
    journal.save(*made[len(made) - len(made) % batch :])
    for wave in range(1, events_each):
        for first in range(0, len(made), batch):
            chunk = [a for a in made[first : first + batch] if not a.cancelled]
            for appointment in chunk:
                change(appointment, wave, rng, history, rates)
            journal.save(*chunk)
    return history

"""Application service for appointments: the commands the API and CLI call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import date, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5
from zoneinfo import ZoneInfo

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from caljournal.adapters.ical_expand import expand
from caljournal.adapters.journal import Journal
from caljournal.adapters.journal_ops import apply, load_or_not_found, state_as_of
from caljournal.adapters.readmodel import Window
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause
from caljournal.domain.values import clamp, period_in, rfc3339
from caljournal.errors import (
    IdempotencyKeyReusedError,
    InvalidInputError,
    NotFoundError,
    PreconditionFailedError,
)
from caljournal.history import history_of

IDEMPOTENCY_NAMESPACE = uuid5(NAMESPACE_URL, "https://caljournal.invalid/idempotency")
MAX_WRITE_ATTEMPTS = 30


@dataclass(frozen=True)
class Booking:
    """What a caller asks to book; two dates (``end`` exclusive) book a whole day."""

    title: str
    start: datetime | date
    end: datetime | date
    timezone: str
    location: str | None = None
    description: str | None = None
    customer_name: str | None = None
    customer_email: str | None = None


@dataclass(frozen=True)
class Booked:
    """The result of a booking: the appointment's state and whether it is new."""

    state: dict[str, Any]
    created: bool


def _same_booking(first: Appointment, booking: Booking) -> bool:
    if booking.timezone != first.timezone:
        return False
    # An all-day booking names dates; the appointment keeps the midnights.
    start, end, all_day = period_in(ZoneInfo(first.timezone), booking.start, booking.end)
    stated = replace(booking, start=start, end=end)
    kept = Booking(**{f.name: getattr(first, f.name) for f in fields(Booking)})
    return all_day == first.all_day and stated == kept


class AppointmentService:
    """Book, move, change, cancel, read and explain appointments.

    ``scope`` arguments are the caller's account id, or None for an operator who
    may see every account. An appointment outside the scope is reported as not
    found, so its existence does not leak.
    """

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    # -- commands ---------------------------------------------------------------

    def book(
        self,
        account_id: UUID,
        booking: Booking,
        cause: Cause,
        idempotency_key: str | None = None,
    ) -> Booked:
        """Book an appointment; a repeated ``idempotency_key`` returns the first result.

        :raises InvalidAppointmentError: when the booking breaks an invariant.
        :raises IdempotencyKeyReusedError: when the key came with a different booking.
        """
        if idempotency_key is None:
            appointment_id = uuid4()
        else:
            appointment_id = uuid5(IDEMPOTENCY_NAMESPACE, f"{account_id}:{idempotency_key}")
            replay = self._replay_booking(appointment_id, booking)
            if replay is not None:
                return replay
        appointment = Appointment.book(
            appointment_id=appointment_id,
            account_id=account_id,
            cause=cause,
            **booking.__dict__,
        )
        state = appointment.state()
        try:
            self.journal.save(appointment, states={appointment.id: state})
        except IntegrityError:
            # A concurrent request with the same key won the race.
            replay = self._replay_booking(appointment_id, booking)
            if replay is None:  # pragma: no cover - the row must exist after the conflict
                raise
            return replay
        return Booked(state, created=True)

    def _replay_booking(self, appointment_id: UUID, booking: Booking) -> Booked | None:
        try:
            first: Appointment = self.journal.repository.get(appointment_id, version=1)
        except AggregateNotFoundError:
            return None
        if not _same_booking(first, booking):
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was used before with a different request",
                field="Idempotency-Key",
            )
        return Booked(first.state(), created=False)

    def move(
        self,
        scope: UUID | None,
        appointment_id: UUID,
        start: datetime | date,
        end: datetime | date,
        cause: Cause,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Move an appointment and return its new state (two dates make it all-day).

        :raises NotFoundError, PreconditionFailedError, AppointmentCancelledError,
            InvalidAppointmentError:
        """
        return self._update(
            scope,
            appointment_id,
            expected_version,
            lambda a: a.move(start=start, end=end, cause=cause),
        )

    def change_details(
        self,
        scope: UUID | None,
        appointment_id: UUID,
        changes: dict[str, str | None],
        cause: Cause,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Change descriptive fields and return the new state.

        :raises NotFoundError, PreconditionFailedError, AppointmentCancelledError,
            InvalidAppointmentError:
        """
        return self._update(
            scope,
            appointment_id,
            expected_version,
            lambda a: a.change_details(changes=changes, cause=cause),
        )

    def cancel(
        self,
        scope: UUID | None,
        appointment_id: UUID,
        cause: Cause,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Cancel an appointment and return its final state.

        :raises NotFoundError, PreconditionFailedError:
        """
        return self._update(
            scope,
            appointment_id,
            expected_version,
            lambda a: a.cancel(cause=cause, reason=reason),
        )

    def _update(
        self,
        scope: UUID | None,
        appointment_id: UUID,
        expected_version: int | None,
        command: Callable[[Appointment], bool],
    ) -> dict[str, Any]:
        def checked(appointment: Appointment) -> bool:
            # Checked again on every attempt: when another writer recorded the
            # next version first, an If-Match version no longer matches.
            if expected_version is not None and appointment.version != expected_version:
                raise PreconditionFailedError(
                    f"appointment is at version {appointment.version}, "
                    f"not {expected_version} as If-Match says"
                )
            return command(appointment)

        return apply(
            self.journal,
            appointment_id,
            checked,
            Appointment,
            load=lambda i: self._load(scope, i),
            attempts=MAX_WRITE_ATTEMPTS,
        ).state

    # -- queries ----------------------------------------------------------------

    def _load(self, scope: UUID | None, appointment_id: UUID) -> Appointment:
        appointment = load_or_not_found(
            self.journal, appointment_id, Appointment, f"no appointment {appointment_id}"
        )
        if scope is not None and appointment.account_id != scope:
            raise NotFoundError(f"no appointment {appointment_id}")
        return appointment

    def get(
        self, scope: UUID | None, appointment_id: UUID, as_of: datetime | None = None
    ) -> dict[str, Any]:
        """Return an appointment's state, now or as it was at ``as_of``.

        :raises NotFoundError: when it does not exist (or did not exist yet at ``as_of``).
        """
        appointment = self._load(scope, appointment_id)
        if as_of is None:
            return appointment.state()
        as_of = clamp(as_of)
        state = state_as_of(self.journal, appointment_id, as_of)
        if state is None:
            raise NotFoundError(
                f"appointment {appointment_id} did not exist at {as_of.isoformat()}"
            )
        return state.state()

    def list_window(
        self,
        account_id: UUID,
        start: datetime,
        end: datetime,
        include_cancelled: bool = False,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """Return the account's appointments overlapping [start, end), earliest first.

        Bounds outside the journal's years (2–9998) mean its first or last moment.

        :raises InvalidInputError: when ``end`` is not after ``start``.
        """
        if end <= start:
            raise InvalidInputError("end must be after start", field="end")
        start, end = clamp(start), clamp(end)
        if end <= start:  # the whole window lies outside the journal's years
            return []
        window = Window(str(account_id), start, end, include_cancelled, limit)
        recorder = self.journal.journal_recorder
        found = recorder.select_window(window)
        for state in found:
            # Rows written before offsets with seconds were answered in UTC.
            for key in ("start", "end"):
                state[key] = rfc3339(datetime.fromisoformat(state[key]))
        for state in recorder.select_recurring(window):
            for occurrence in expand(state, start, end, limit):
                if occurrence.status and occurrence.status.upper() == "CANCELLED":
                    continue
                found.append(
                    {
                        **state,
                        "start": rfc3339(occurrence.start),
                        "end": rfc3339(occurrence.end),
                        "occurrence": occurrence.recurrence_id,
                        "title": occurrence.title or state["title"],
                    }
                )
        found.sort(key=lambda s: (datetime.fromisoformat(s["start"]), s["id"]))
        return found[:limit]

    def history(self, scope: UUID | None, appointment_id: UUID) -> list[dict[str, Any]]:
        """Return every recorded change: position, time, type, origin, actor, old → new.

        :raises NotFoundError: when the appointment is not visible.
        """
        self._load(scope, appointment_id)
        return history_of(self.journal, appointment_id)

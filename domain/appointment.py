"""The Appointment aggregate: a booked period of time in an account's calendar.

Commands validate first and then call a private ``@event`` method that only
assigns state; event bodies run again on every replay, so they hold no checks,
no I/O and no clock.

Personal data (``PERSONAL_FIELDS``: title, location, description, customer name
and e-mail) can be erased (:meth:`Appointment.erase`). The ``Erased`` event
replaces each held value by its erased form (:func:`erased_value`: the text
``"[erased]"``, and None for the e-mail, which must stay an address or nothing)
and from then on the appointment refuses local changes of those fields and
ignores the calendar's; times and status still change. The journal adapter
encrypts these fields with a key per appointment and destroys the key when the
``Erased`` event is written, so older events read back erased too.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from eventsourcing.domain import Aggregate, event

from caljournal.domain.cause import Cause, Origin
from caljournal.domain.errors import (
    AppointmentCancelledError,
    AppointmentErasedError,
    InvalidAppointmentError,
)
from caljournal.domain.personal import (
    OVERRIDE_TEXTS,
    PERSONAL_FIELDS,
    erased_value,
)
from caljournal.domain.values import (
    DETAIL_FIELDS,
    MAX_LOCATION,
    RemoteFields,
    check_details,
    check_period,
    check_text,
    period_in,
    remote_text,
    rfc3339,
    zone_for,
)


def erased_overrides(recurrence: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return ``recurrence`` with the texts of its changed instances erased."""
    if not recurrence or not recurrence.get("overrides"):
        return recurrence
    overrides = [
        {k: erased_value(k, v) if k in OVERRIDE_TEXTS else v for k, v in item.items()}
        for item in recurrence["overrides"]
    ]
    return {**recurrence, "overrides": overrides}


class Appointment(Aggregate):
    """An appointment of one account, from ``start`` up to (excluding) ``end``."""

    TOPIC = "caljournal:Appointment"

    class Event(Aggregate.Event):
        origin: str
        actor: str
        correlation_id: str

    class Created(Event, Aggregate.Created):
        # Unused (``Booked`` creates appointments); pinned so topics stay explicit.
        TOPIC = "caljournal:Appointment.Created"

    class Erased(Event):
        """The appointment's personal data was erased, by whom and why."""

        TOPIC = "caljournal:Appointment.Erased"
        reason: str

        def apply(self, aggregate: Any) -> None:
            """Replace the personal fields by their erased form and note when."""
            aggregate.show_erased(self)
            aggregate.sequence += 1

    @classmethod
    def book(
        cls,
        *,
        appointment_id: UUID,
        account_id: UUID,
        title: str,
        start: datetime | date,
        end: datetime | date,
        timezone: str,
        cause: Cause,
        location: str | None = None,
        description: str | None = None,
        customer_name: str | None = None,
        customer_email: str | None = None,
    ) -> Appointment:
        """Book a new appointment; two dates book it all-day (``end`` exclusive).

        :raises InvalidAppointmentError: when the period, zone or a text field is unusable.
        """
        zone = zone_for(timezone, bookable=True)
        start, end, all_day = period_in(zone, start, end)
        check_period(start, end, bookable=True)
        check_details(
            {
                "title": title,
                "location": location,
                "description": description,
                "customer_name": customer_name,
                "customer_email": customer_email,
            }
        )
        return cls(
            id=appointment_id,
            account_id=account_id,
            title=title,
            start=start.astimezone(zone),
            end=end.astimezone(zone),
            timezone=timezone,
            location=location,
            description=description,
            customer_name=customer_name,
            customer_email=customer_email,
            calendar_uid=None,
            all_day=all_day,
            floating=False,
            recurrence=None,
            **cause.fields(),
        )

    @event("Booked", topic="caljournal:Appointment.Booked")
    def __init__(
        self,
        *,
        id: UUID,  # noqa: A002 - the library takes the aggregate id by this name
        account_id: UUID,
        title: str,
        start: datetime,
        end: datetime,
        timezone: str,
        location: str | None,
        description: str | None,
        customer_name: str | None,
        customer_email: str | None,
        origin: str,
        actor: str,
        correlation_id: str,
        calendar_uid: str | None = None,
        all_day: bool = False,
        floating: bool = False,
        recurrence: dict[str, Any] | None = None,
    ) -> None:
        self.account_id = account_id
        self.timezone = timezone
        self.calendar_uid = calendar_uid
        self.all_day = all_day
        self.floating = floating
        self.recurrence = recurrence
        self.title = title
        self._set_period(start, end)
        self.location = location
        self.description = description
        self.customer_name = customer_name
        self.customer_email = customer_email
        self.cancelled = False
        self.cancel_reason: str | None = None
        # Where the cancellation came from: a calendar may take back only its own.
        self.cancel_origin: str | None = None
        # Counts changes of what a calendar shows; sync bookkeeping events below
        # do not count, so they never make a calendar copy look outdated.
        self.sequence = 0
        self.push_failure: str | None = None
        self.last_conflict: dict[str, Any] | None = None
        self.erased_on: datetime | None = None
        self.erasure_reason: str | None = None

    def _set_period(self, start: datetime, end: datetime) -> None:
        # The journal stores datetimes with a fixed offset; re-attach the IANA zone
        # so local wall time and later arithmetic follow the zone's DST rules.
        zone = ZoneInfo(self.timezone)
        self.start = start.astimezone(zone)
        self.end = end.astimezone(zone)

    # -- commands ---------------------------------------------------------------

    def move(self, *, start: datetime | date, end: datetime | date, cause: Cause) -> bool:
        """Move the appointment to a new period; return False when nothing changes.

        Two dates make it all-day (``end`` exclusive); two date-times make it timed.

        :raises AppointmentCancelledError: when the appointment is cancelled.
        :raises InvalidAppointmentError: when the period is unusable.
        """
        self._check_not_cancelled("moved")
        zone = ZoneInfo(self.timezone)
        start, end, all_day = period_in(zone, start, end)
        check_period(start, end, bookable=True)
        kind_changed = all_day != self.all_day
        if not kind_changed and _same_instant(start, self.start) and _same_instant(end, self.end):
            return False
        self._moved(
            start=start.astimezone(zone),
            end=end.astimezone(zone),
            timezone=None,
            all_day=all_day if kind_changed else None,
            floating=False if kind_changed and self.floating else None,
            **cause.fields(),
        )
        return True

    @event("Moved", topic="caljournal:Appointment.Moved")
    def _moved(
        self,
        *,
        start: datetime,
        end: datetime,
        origin: str,
        actor: str,
        correlation_id: str,
        timezone: str | None = None,
        all_day: bool | None = None,
        floating: bool | None = None,
    ) -> None:
        self._set_kind_and_period(start, end, timezone, all_day, floating)
        self.sequence += 1

    def _set_kind_and_period(
        self,
        start: datetime,
        end: datetime,
        timezone: str | None,
        all_day: bool | None,
        floating: bool | None,
    ) -> None:
        # Shared by event bodies: assigns state only (it runs again on every replay).
        if timezone is not None:
            self.timezone = timezone
        if all_day is not None:
            self.all_day = all_day
        if floating is not None:
            self.floating = floating
        self._set_period(start, end)

    def change_details(self, *, changes: dict[str, str | None], cause: Cause) -> bool:
        """Change descriptive fields; return False when nothing changes.

        ``changes`` maps field names (title, location, description, customer_name,
        customer_email) to new values; ``None`` clears an optional field.

        :raises AppointmentCancelledError: when the appointment is cancelled.
        :raises InvalidAppointmentError: naming the first unusable field.
        """
        self._check_not_cancelled("changed")
        check_details(changes, door=True)
        if self.erased_on is not None and set(changes) & set(PERSONAL_FIELDS):
            raise AppointmentErasedError(
                f"the personal data of appointment {self.id} was erased; "
                f"{', '.join(sorted(set(changes) & set(PERSONAL_FIELDS)))} cannot be set again",
                field=sorted(set(changes) & set(PERSONAL_FIELDS))[0],
            )
        effective = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if not effective:
            return False
        self._details_changed(
            changes=effective,
            **cause.fields(),
        )
        return True

    @event("DetailsChanged", topic="caljournal:Appointment.DetailsChanged")
    def _details_changed(
        self, *, changes: dict[str, Any], origin: str, actor: str, correlation_id: str
    ) -> None:
        for name, value in changes.items():
            setattr(self, name, value)
        self.sequence += 1

    def cancel(self, *, cause: Cause, reason: str | None = None) -> bool:
        """Cancel the appointment; return False when it was cancelled already.

        :raises InvalidAppointmentError: when the reason is too long.
        """
        check_text("reason", reason, MAX_LOCATION, door=True)
        if self.cancelled:
            return False
        self._cancelled(
            reason=reason,
            **cause.fields(),
        )
        return True

    @event("Cancelled", topic="caljournal:Appointment.Cancelled")
    def _cancelled(
        self, *, reason: str | None, origin: str, actor: str, correlation_id: str
    ) -> None:
        self.cancelled = True
        self.cancel_reason = reason
        self.cancel_origin = origin
        self.sequence += 1

    def erase(self, *, reason: str, cause: Cause) -> bool:
        """Erase the personal data (see the module docstring); False when erased already.

        Works on cancelled appointments too. The calendar copy is pushed again
        (``sequence`` rises) and then shows no personal data.

        :raises InvalidAppointmentError: when the reason is empty or too long.
        """
        check_text("reason", reason, MAX_LOCATION, required=True, door=True)
        if self.erased_on is not None:
            return False
        self.trigger_event(self.Erased, reason=reason, **cause.fields())
        return True

    def show_erased(self, erasure: Appointment.Erased) -> None:
        """Show the personal fields as ``erasure`` left them (also in a state before it).

        A past state (``as_of``) of an appointment erased later must not show
        what was erased: replays and time travel call this with the later event.
        """
        for name in PERSONAL_FIELDS:
            setattr(self, name, erased_value(name, getattr(self, name)))
        self.recurrence = erased_overrides(self.recurrence)
        self.erased_on = erasure.timestamp
        self.erasure_reason = erasure.reason

    @property
    def erased(self) -> bool:
        """Return whether the personal data was erased."""
        return self.erased_on is not None

    # -- changes that come from the customer's calendar --------------------------

    @classmethod
    def import_from_calendar(
        cls, *, appointment_id: UUID, account_id: UUID, remote: RemoteFields, cause: Cause
    ) -> Appointment:
        """Create an appointment for an event someone else put in the calendar.

        Remote data is kept as the calendar has it (an empty title, a floating
        time, an all-day date, a recurrence rule); only what would break the
        journal is refused.

        :raises InvalidAppointmentError: when the period or a text is unusable.
        """
        remote.check()
        return cls(
            id=appointment_id,
            account_id=account_id,
            title=remote.title,
            start=remote.start,
            end=remote.end,
            timezone=remote.timezone,
            location=remote.location,
            description=remote.description,
            customer_name=remote.customer_name,
            customer_email=remote.customer_email,
            calendar_uid=remote.calendar_uid,
            all_day=remote.all_day,
            floating=remote.floating,
            recurrence=remote.recurrence,
            **cause.fields(),
        )

    def apply_calendar_change(self, *, remote: RemoteFields, cause: Cause) -> list[str]:
        """Record what changed in the calendar copy; return the event types recorded.

        :raises InvalidAppointmentError: when the remote data is unusable.
        """
        remote.check()
        recorded: list[str] = []
        if remote.cancelled:
            if self.cancel(cause=cause, reason="deleted or cancelled in the calendar"):
                recorded.append("Cancelled")
            return recorded
        if self.cancelled:
            return recorded
        kind_changed = self._kind_changed(remote)
        same = _same_instant(remote.start, self.start) and _same_instant(remote.end, self.end)
        if kind_changed or not same:
            self._moved(
                start=remote.start,
                end=remote.end,
                timezone=remote.timezone if kind_changed else None,
                all_day=remote.all_day if kind_changed else None,
                floating=remote.floating if kind_changed else None,
                **cause.fields(),
            )
            recorded.append("Moved")
        # An erased appointment keeps its personal fields erased whatever the calendar
        # says, the texts of its changed instances included.
        changes = {} if self.erased else self._changed_details(remote)
        if changes:
            self._details_changed(changes=changes, **cause.fields())
            recorded.append("DetailsChanged")
        recurrence = erased_overrides(remote.recurrence) if self.erased else remote.recurrence
        if recurrence != self.recurrence:
            self._recurrence_changed(recurrence=recurrence, **cause.fields())
            recorded.append("RecurrenceChanged")
        return recorded

    def reinstate_from_calendar(self, *, remote: RemoteFields, cause: Cause) -> bool:
        """Take back a cancellation the calendar caused, now that it holds the appointment again.

        Another client restored the deleted calendar object (an undo, a trash
        bin). The appointment is booked again with the fields the restored object
        states. Return False when the appointment is not cancelled.

        :raises AppointmentCancelledError: when the cancellation was not the
            calendar's own (the booking system's cancellation wins).
        :raises InvalidAppointmentError: when the remote data is unusable or
            itself cancelled.
        """
        remote.check()
        if not self.cancelled:
            return False
        if self.cancel_origin != Origin.CALDAV.value:
            raise AppointmentCancelledError(
                f"appointment {self.id} was cancelled in the booking system "
                f"({self.cancel_origin}); the calendar cannot take that back"
            )
        if remote.cancelled:
            raise InvalidAppointmentError("the calendar object is cancelled itself", field="status")
        kind_changed = self._kind_changed(remote)
        changes: dict[str, Any] = {} if self.erased else self._changed_details(remote)
        recurrence = erased_overrides(remote.recurrence) if self.erased else remote.recurrence
        if recurrence != self.recurrence:
            changes["recurrence"] = recurrence
        self._reinstated_from_calendar(
            start=remote.start,
            end=remote.end,
            timezone=remote.timezone if kind_changed else None,
            all_day=remote.all_day if kind_changed else None,
            floating=remote.floating if kind_changed else None,
            changes=changes,
            **cause.fields(),
        )
        return True

    @event("ReinstatedFromCalendar", topic="caljournal:Appointment.ReinstatedFromCalendar")
    def _reinstated_from_calendar(
        self,
        *,
        start: datetime,
        end: datetime,
        changes: dict[str, Any],
        origin: str,
        actor: str,
        correlation_id: str,
        timezone: str | None = None,
        all_day: bool | None = None,
        floating: bool | None = None,
    ) -> None:
        self._set_kind_and_period(start, end, timezone, all_day, floating)
        for name, value in changes.items():
            setattr(self, name, value)
        self.cancelled = False
        self.cancel_reason = None
        self.cancel_origin = None
        self.sequence += 1

    @event("RecurrenceChanged", topic="caljournal:Appointment.RecurrenceChanged")
    def _recurrence_changed(
        self,
        *,
        recurrence: dict[str, Any] | None,
        origin: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.recurrence = recurrence
        self.sequence += 1

    # -- calendar sync bookkeeping (recorded so auditors see it in the history) --

    def record_push_failure(self, *, sequence: int, error: str, cause: Cause) -> None:
        """Record that pushing change ``sequence`` to the calendar failed for good."""
        self._push_failed(sequence=sequence, error=error[:1000], **cause.fields())

    @event("PushFailed", topic="caljournal:Appointment.PushFailed")
    def _push_failed(
        self, *, sequence: int, error: str, origin: str, actor: str, correlation_id: str
    ) -> None:
        self.push_failure = error

    def clear_push_failure(self, *, cause: Cause) -> bool:
        """Record that an operator asked to push again; return False if nothing failed."""
        if self.push_failure is None:
            return False
        self._push_retried(**cause.fields())
        return True

    @event("PushRetried", topic="caljournal:Appointment.PushRetried")
    def _push_retried(self, *, origin: str, actor: str, correlation_id: str) -> None:
        self.push_failure = None

    def record_conflict(
        self, *, local: dict[str, Any], remote: dict[str, Any], winner: str, cause: Cause
    ) -> None:
        """Record that the calendar copy had been changed and how it was resolved."""
        self._conflict_resolved(local=local, remote=remote, winner=winner, **cause.fields())

    @event("ConflictResolved", topic="caljournal:Appointment.ConflictResolved")
    def _conflict_resolved(
        self,
        *,
        local: dict[str, Any],
        remote: dict[str, Any],
        winner: str,
        origin: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.last_conflict = {"local": local, "remote": remote, "winner": winner}

    def _kind_changed(self, remote: RemoteFields) -> bool:
        return (remote.timezone, remote.all_day, remote.floating) != (
            self.timezone,
            self.all_day,
            self.floating,
        )

    def _changed_details(self, remote: RemoteFields) -> dict[str, Any]:
        stated = {name: getattr(remote, name) for name in DETAIL_FIELDS}
        # Compared in the canonical text form, which remote text is read into:
        # older journal entries may hold CRLF or trailing blanks.
        return {k: v for k, v in stated.items() if _canonical(k, getattr(self, k)) != v}

    def _check_not_cancelled(self, verb: str) -> None:
        if self.cancelled:
            raise AppointmentCancelledError(
                f"appointment {self.id} is cancelled and cannot be {verb}"
            )

    # -- views ------------------------------------------------------------------

    @property
    def status(self) -> str:
        """Return ``cancelled`` or ``booked``."""
        return "cancelled" if self.cancelled else "booked"

    def state(self) -> dict[str, Any]:
        """Return the appointment's fields as plain values (for views and diffs).

        ``erased_on`` is when the personal data was erased (None while it is held);
        the erased fields then show :func:`erased_value`.
        """
        return {
            "id": str(self.id),
            "account_id": str(self.account_id),
            "version": self.version,
            "status": self.status,
            "title": self.title,
            "start": rfc3339(self.start),
            "end": rfc3339(self.end),
            "timezone": self.timezone,
            "location": self.location,
            "description": self.description,
            "customer_name": self.customer_name,
            "customer_email": self.customer_email,
            "cancel_reason": self.cancel_reason,
            "cancel_origin": self.cancel_origin,
            "sequence": self.sequence,
            "push_failure": self.push_failure,
            "calendar_uid": self.calendar_uid,
            "all_day": self.all_day,
            "floating": self.floating,
            "recurrence": self.recurrence,
            "created_on": self.created_on.isoformat(),
            "modified_on": self.modified_on.isoformat(),
            "erased_on": self.erased_on.isoformat() if self.erased_on else None,
        }


def _same_instant(first: datetime, second: datetime) -> bool:
    """Tell whether two aware times are the same instant, also in a repeated DST hour.

    Aware datetimes in one zone compare by wall time and ignore ``fold``.
    """
    return _utc_wall(first) == _utc_wall(second)


def _utc_wall(value: datetime) -> datetime:
    offset = value.utcoffset()
    assert offset is not None  # the journal holds aware times only
    return value.replace(tzinfo=None) - offset


def _canonical(name: str, value: str | None) -> str | None:
    if name == "title":
        return remote_text(value) or ""
    return remote_text(value)

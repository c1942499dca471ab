"""Application service for erasing an appointment's personal data (crypto-erasure).

The journal keeps personal data encrypted with a key per appointment
(``adapters.personal_data``); erasing records an ``Erased`` event and destroys
the key in the same transaction. The rest of the appointment and its history
stay; the calendar copy is pushed again without the personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from caljournal.adapters.journal import Journal
from caljournal.adapters.journal_ops import apply, load_or_not_found
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause
from caljournal.errors import InvalidInputError, NotFoundError

PAGE = 500
MAX_WRITE_ATTEMPTS = 30


@dataclass(frozen=True)
class ErasureTarget:
    """An appointment that an erasure covers, as it is before the erasure."""

    appointment_id: UUID
    start: str
    status: str
    erased: bool
    #: Events recorded before personal data was encrypted: their stored bytes
    #: keep it in clear (every reader shows it erased all the same).
    clear_events: int


@dataclass(frozen=True)
class ErasureOutcome:
    """One erased appointment: its state afterwards, and whether this call erased it."""

    appointment_id: UUID
    state: dict[str, Any]
    erased_now: bool
    clear_events: int


class ErasureService:
    """Find and erase the personal data of appointments of one account.

    ``scope`` arguments are the caller's account id, or None for an operator; an
    appointment outside the scope is reported as not found.
    """

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def targets(
        self,
        account_id: UUID,
        *,
        appointment_id: UUID | None = None,
        customer_email: str | None = None,
    ) -> list[ErasureTarget]:
        """Return the appointments an erasure would cover (exactly one selector given).

        By customer e-mail: every appointment of the account whose customer
        e-mail matches, ignoring case.

        :raises InvalidInputError: unless exactly one of ``appointment_id`` and
            ``customer_email`` is given.
        :raises NotFoundError: when the appointment is not the account's.
        """
        if (appointment_id is None) == (customer_email is None):
            raise InvalidInputError("give exactly one of an appointment id or a customer e-mail")
        if appointment_id is not None:
            ids = [self._load(account_id, appointment_id).id]
        else:
            assert customer_email is not None
            ids = self._by_email(account_id, customer_email)
        return [self._target(self._load(account_id, i)) for i in ids]

    def erase(
        self, scope: UUID | None, appointment_id: UUID, reason: str, cause: Cause
    ) -> ErasureOutcome:
        """Erase one appointment's personal data; erasing twice changes nothing.

        :raises NotFoundError: when the appointment is not visible.
        :raises InvalidAppointmentError: when the reason is empty or too long.
        :raises ConflictError: when other writers keep winning.
        """
        erased_now = False

        def command(appointment: Appointment) -> bool:
            nonlocal erased_now
            erased_now = appointment.erase(reason=reason, cause=cause)
            return erased_now

        applied = apply(
            self.journal,
            appointment_id,
            command,
            Appointment,
            load=lambda i: self._load(scope, i),
            attempts=MAX_WRITE_ATTEMPTS,
        )
        return ErasureOutcome(
            appointment_id, applied.state, erased_now, self.clear_events(appointment_id)
        )

    def clear_events(self, appointment_id: UUID) -> int:
        """Return how many stored events of the appointment hold personal data in clear."""
        mapper = self.journal.personal_mapper
        stored = self.journal.recorder.select_events(appointment_id)
        return sum(1 for s in stored if mapper.holds_clear_personal_data(s))

    def _target(self, appointment: Appointment) -> ErasureTarget:
        return ErasureTarget(
            appointment.id,
            appointment.state()["start"],
            appointment.status,
            appointment.erased,
            self.clear_events(appointment.id),
        )

    def _by_email(self, account_id: UUID, email: str) -> list[UUID]:
        wanted = email.strip().casefold()
        recorder = self.journal.journal_recorder
        found: list[UUID] = []
        after = ""
        while True:
            page = recorder.appointment_page(str(account_id), after, PAGE)
            found += [
                UUID(doc["id"])
                for doc in page
                if (doc.get("customer_email") or "").strip().casefold() == wanted
            ]
            if len(page) < PAGE:
                return found
            after = page[-1]["id"]

    def _load(self, scope: UUID | None, appointment_id: UUID) -> Appointment:
        appointment = load_or_not_found(
            self.journal, appointment_id, Appointment, f"no appointment {appointment_id}"
        )
        if scope is not None and appointment.account_id != scope:
            raise NotFoundError(f"no appointment {appointment_id}")
        return appointment

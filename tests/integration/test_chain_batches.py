"""Saves of many events chain them as saves of one do, on both journals.

On PostgreSQL a save of a few events has each entry's hash computed by the
server; a larger one reads the heads once and computes the entries in Python.
Both must continue one unbroken chain per account.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from caljournal.bootstrap import Container
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause, Origin
from tests.conftest import open_tenant
from tests.integration.test_audit_chain_writes import recompute

CAUSE = Cause(Origin.CALDAV, "poller", "poll-batch")
START = datetime(2027, 5, 3, 8, tzinfo=UTC)


def _appointments(account_id: uuid.UUID, count: int, first: int) -> list[Appointment]:
    return [
        Appointment.book(
            appointment_id=uuid.uuid4(),
            account_id=account_id,
            title=f"Visit {first + n}",
            start=START + timedelta(hours=first + n),
            end=START + timedelta(hours=first + n, minutes=30),
            timezone="Europe/Berlin",
            location=None,
            description=None,
            customer_name=f"Customer {first + n}",
            customer_email=None,
            cause=CAUSE,
        )
        for n in range(count)
    ]


def test_large_and_small_saves_continue_one_chain_per_account(container: Container) -> None:
    acme = open_tenant(container, "acme-batches")
    globex = open_tenant(container, "globex-batches")
    journal = container.journal
    sizes = [1, 25, 3, 40, 9, 8, 1]
    for number, size in enumerate(sizes):
        # Two accounts in one save: each chain gets its own head.
        mixed = _appointments(acme.account_id, size, 100 * number)
        mixed += _appointments(globex.account_id, number % 3, 100 * number)
        journal.save(*mixed)

    acme_positions = recompute(container, str(acme.account_id))
    globex_positions = recompute(container, str(globex.account_id))

    assert acme_positions == sorted(acme_positions)
    assert globex_positions == sorted(globex_positions)
    recorder = journal.journal_recorder
    for tenant, expected in ((acme, sum(sizes)), (globex, sum(n % 3 for n in range(len(sizes))))):
        entries = recorder.audit_entries(str(tenant.account_id), limit=1_000_000)
        assert sum(e.topic.endswith(".Booked") for e in entries) == expected

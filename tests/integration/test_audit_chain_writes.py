"""The audit chain as the journal writes it: one entry per event, per account, in order."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from uuid import UUID

from caljournal.adapters.audit_chain import GENESIS, OPERATORS, entry_hash
from caljournal.appointments import Booking
from caljournal.bootstrap import Container
from caljournal.domain.cause import Cause, Origin
from tests.conftest import Tenant, open_tenant

API = Cause(Origin.API, "token:test", "req-chain")
START = datetime(2027, 3, 1, 9, tzinfo=UTC)


def booking(n: int) -> Booking:
    start = START + timedelta(hours=n)
    return Booking(f"Visit {n}", start, start + timedelta(minutes=30), "Europe/Berlin")


def recompute(container: Container, account_id: str) -> list[int]:
    """Walk one chain; return the journal positions of its entries after checking every hash."""
    recorder = container.journal.journal_recorder
    entries = recorder.audit_entries(account_id, limit=1_000_000)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    previous = GENESIS
    for entry in entries:
        assert entry.stored is not None and entry.stored_position == entry.position
        previous = entry_hash(
            previous,
            entry.originator_id,
            entry.originator_version,
            entry.stored.topic,
            entry.stored.state,
        )
        assert previous == entry.entry_hash, f"entry {entry.seq} does not recompute"
    head = recorder.chain_head(account_id)
    assert head is not None and (head.seq, head.entry_hash) == (len(entries), previous)
    return [e.position for e in entries]


def test_each_event_is_chained_once_under_its_account_in_journal_order(
    container: Container, acme: Tenant, globex: Tenant
) -> None:
    service = container.appointments
    for n in range(3):
        booked = service.book(acme.account_id, booking(n), API, f"acme-{n}")
        service.move(
            None,
            UUID(booked.state["id"]),
            START + timedelta(days=1, hours=n),
            START + timedelta(days=1, hours=n, minutes=45),
            API,
        )
    service.book(globex.account_id, booking(9), API, "globex-1")

    recorder = container.journal.journal_recorder
    acme_positions = recompute(container, str(acme.account_id))
    globex_positions = recompute(container, str(globex.account_id))
    assert acme_positions == sorted(acme_positions)
    # The account's own events, its token's and six appointment events.
    assert len(acme_positions) >= 6 + 2
    everything = recorder.select_notifications(start=1, limit=10_000)
    chained = set(acme_positions) | set(globex_positions)
    for account in recorder.chain_accounts():
        if account not in (str(acme.account_id), str(globex.account_id)):
            assert account == OPERATORS
            chained |= set(recompute(container, account))
    assert chained == {n.id for n in everything}


def test_writers_racing_on_one_account_leave_one_unbroken_chain(container: Container) -> None:
    tenant = open_tenant(container, "busy")
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for n in range(10):
                container.appointments.book(
                    tenant.account_id, booking(worker * 100 + n), API, f"w{worker}-{n}"
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    positions = recompute(container, str(tenant.account_id))
    assert positions == sorted(positions)
    assert len(positions) >= 40

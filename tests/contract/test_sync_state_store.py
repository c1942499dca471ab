"""One contract for the sync-state store, run over memory, SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from caljournal.adapters.journal_ops import load_or_not_found
from caljournal.adapters.syncstate import (
    CalendarCheck,
    CopyRecord,
    Quarantined,
    StateWrites,
    SyncStateStore,
)
from caljournal.adapters.syncstate_memory import MemorySyncState
from caljournal.adapters.syncstate_sql import SQLSyncState
from caljournal.appointments import Booking
from caljournal.bootstrap import Container, bootstrap
from caljournal.domain.appointment import Appointment
from caljournal.settings import load_settings
from tests.conftest import operator, sqlite_url

URL = "https://dav.example/cal/"
OTHER = "https://dav.example/other/"


@dataclass
class World:
    """A journal with one account, and the store under test."""

    container: Container
    store: SyncStateStore
    account: str

    def book(self, title: str = "Visit", day: int = 1) -> dict[str, Any]:
        start = datetime(2030, 1, day, 9, tzinfo=UTC)
        booked = self.container.appointments.book(
            uuid.UUID(self.account),
            Booking(title, start, start + timedelta(hours=1), "UTC"),
            operator(),
        )
        return booked.state

    def change(self, appointment_id: str, title: str) -> dict[str, Any]:
        return self.container.appointments.change_details(
            None, uuid.UUID(appointment_id), {"title": title}, operator()
        )

    def cancel(self, appointment_id: str) -> dict[str, Any]:
        return self.container.appointments.cancel(None, uuid.UUID(appointment_id), operator())

    def copy(self, state: dict[str, Any], **values: Any) -> CopyRecord:
        record = CopyRecord(
            appointment_id=state["id"],
            account_id=self.account,
            calendar_url=URL,
            href=f"{URL}{state['id']}.ics",
            etag='"1"',
            pushed_sequence=state["sequence"],
            content_hash="h1",
            present=True,
            updated_us=int(time.time() * 1e6),
        )
        return replace(record, **values)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else sqlite_url(tmp_path)
    container = bootstrap(
        load_settings(database_url=url, secret_key_file=tmp_path / "caljournal.key")
    )
    store: SyncStateStore = (
        MemorySyncState(container.journal)
        if request.param == "memory"
        else SQLSyncState(container.journal)
    )
    container.accounts.open_account("acme", operator())
    account = str(container.accounts.find_account("acme").id)
    yield World(container, store, account)
    container.close()


def ids(pending: list[Any]) -> list[str]:
    return [p.appointment["id"] for p in pending]


def test_a_booked_appointment_without_a_copy_waits_for_a_push(world: World) -> None:
    first, second = world.book("one", 1), world.book("two", 2)

    pending = world.store.pending_pushes(world.account, URL, 0, 10)

    assert ids(pending) == [first["id"], second["id"]]
    assert all(p.copy is None for p in pending)
    assert pending[0].appointment["title"] == "one"
    assert world.store.count_pending(world.account, URL, 0) == 2
    assert world.store.pending_pushes(world.account, URL, 0, 1)[0].appointment["id"] == first["id"]


def test_a_recorded_copy_ends_the_wait_until_the_next_change(world: World) -> None:
    state = world.book()
    world.store.record_copies([world.copy(state)])
    assert world.store.pending_pushes(world.account, URL, 0, 10) == []

    changed = world.change(state["id"], "moved")

    (pending,) = world.store.pending_pushes(world.account, URL, 0, 10)
    assert pending.appointment["sequence"] == changed["sequence"]
    assert pending.copy == world.copy(state, updated_us=pending.copy.updated_us)


def test_a_copy_on_another_calendar_counts_as_none(world: World) -> None:
    state = world.book()
    world.store.record_copies([world.copy(state, calendar_url=OTHER)])

    (pending,) = world.store.pending_pushes(world.account, URL, 0, 10)

    assert pending.copy is None
    assert world.store.pending_pushes(world.account, OTHER, 0, 10) == []


def test_a_cancelled_appointment_without_a_copy_needs_no_push(world: World) -> None:
    state = world.book()
    world.cancel(state["id"])

    assert world.store.pending_pushes(world.account, URL, 0, 10) == []


def test_a_failed_push_waits_for_a_newer_change_or_a_cleared_failure(world: World) -> None:
    state = world.book()
    changed = world.change(state["id"], "moved")
    failed = world.copy(state, failed_sequence=changed["sequence"], failure="refused")
    world.store.record_copies([failed])
    assert world.store.pending_pushes(world.account, URL, 0, 10) == []
    assert [c.failure for c in world.store.failed_copies(world.account)] == ["refused"]

    world.store.clear_failure(state["id"])

    assert ids(world.store.pending_pushes(world.account, URL, 0, 10)) == [state["id"]]
    assert world.store.failed_copies(world.account) == []


def test_only_changes_after_the_position_are_pending(world: World) -> None:
    first, second = world.book("one", 1), world.book("two", 2)
    positions = [p.position for p in world.store.pending_pushes(world.account, URL, 0, 10)]

    later = world.store.pending_pushes(world.account, URL, positions[0], 10)

    assert positions[0] < positions[1]
    assert ids(later) == [second["id"]]
    assert first["id"] not in ids(later)


def test_copies_are_found_by_appointment_and_by_href(world: World) -> None:
    one, two, gone = world.book("one", 1), world.book("two", 2), world.book("gone", 3)
    records = [world.copy(one), world.copy(two), world.copy(gone, present=False)]
    world.store.record_copies(records)

    assert world.store.copy_of(one["id"]) == records[0]
    assert world.store.copy_of(str(uuid.uuid4())) is None
    assert world.store.copies(world.account) == sorted(records, key=lambda c: c.appointment_id)
    assert world.store.count_copies(world.account) == 2
    assert world.store.copies_by_href(world.account, URL) == {
        records[0].href: records[0],
        records[1].href: records[1],
    }
    assert world.store.copies_by_href(world.account, URL, {records[1].href}) == {
        records[1].href: records[1]
    }
    assert world.store.copies_by_href(world.account, OTHER) == {}


def test_copies_in_doubt_claim_no_content_until_a_write_is_recorded(world: World) -> None:
    one, two, gone = world.book("one", 1), world.book("two", 2), world.book("gone", 3)
    records = [world.copy(one), world.copy(two), world.copy(gone, present=False)]
    world.store.record_copies(records)

    world.store.doubt_copies([one["id"], gone["id"], str(uuid.uuid4())])
    world.store.doubt_copies([])

    assert world.store.copy_of(one["id"]) == replace(records[0], content_hash=None)
    assert world.store.copy_of(two["id"]) == records[1]
    assert world.store.copy_of(gone["id"]) == records[2]
    confirmed = world.copy(one, etag='"2"', content_hash="h2")
    world.store.record_copies([confirmed])
    assert world.store.copy_of(one["id"]) == confirmed


def test_recording_copies_notes_that_caljournal_wrote_to_the_calendar(world: World) -> None:
    state = world.book()
    assert world.store.calendar_check(world.account) == CalendarCheck(world.account)

    world.store.record_copies(
        [world.copy(state, updated_us=1_000), world.copy(state, updated_us=5)]
    )

    assert world.store.calendar_check(world.account).written_us == 1_000


def test_absent_live_copies_are_those_no_push_would_bring_back(world: World) -> None:
    absent, pending, cancelled = world.book("a", 1), world.book("b", 2), world.book("c", 3)
    world.store.record_copies(
        [
            world.copy(absent, present=False),
            world.copy(pending, present=False, pushed_sequence=pending["sequence"] - 1),
            world.copy(cancelled, present=False),
        ]
    )
    world.cancel(cancelled["id"])

    found = world.store.absent_live_copies(world.account, URL)

    assert [c.appointment_id for c in found] == [absent["id"]]


def test_inbound_state_starts_empty_and_takes_known_fields_only(world: World) -> None:
    assert world.store.inbound_state(world.account).sync_token is None

    world.store.update_inbound(world.account, sync_token="t1", confirm_deletes=True)
    world.store.update_inbound(world.account, last_error="boom")

    state = world.store.inbound_state(world.account)
    assert (state.sync_token, state.confirm_deletes, state.last_error) == ("t1", True, "boom")
    with pytest.raises(ValueError, match="no field"):
        world.store.update_inbound(world.account, sync_tokn="t2")


def test_a_commit_writes_events_and_state_together(world: World) -> None:
    state = world.book()
    appointment = load_or_not_found(world.container.journal, uuid.UUID(state["id"]), Appointment)
    appointment.change_details(changes={"title": "from the calendar"}, cause=operator())
    world.store.commit(
        [],
        StateWrites(
            world.account,
            quarantine=[Quarantined(world.account, f"{URL}bad.ics", '"q"', "broken", 7)],
        ),
    )
    assert list(world.store.quarantined(world.account)) == [f"{URL}bad.ics"]  # no events
    world.store.record_copies([world.copy(state, updated_us=99)])
    check = CalendarCheck(world.account, last_us=10, checks=1, differences=2, last_found="{}")

    world.store.commit(
        [appointment],
        StateWrites(
            world.account,
            copies=[world.copy(state, pushed_sequence=appointment.sequence, etag='"2"')],
            released=[f"{URL}bad.ics"],
            inbound={"sync_token": "t9", "last_poll_us": 5},
            check=check,
        ),
    )

    assert world.container.appointments.get(None, appointment.id)["title"] == "from the calendar"
    copy = world.store.copy_of(state["id"])
    assert copy is not None and (copy.etag, copy.pushed_sequence) == ('"2"', appointment.sequence)
    assert world.store.quarantined(world.account) == {}
    assert world.store.inbound_state(world.account).sync_token == "t9"
    assert world.store.calendar_check(world.account) == replace(check, written_us=99)


def test_a_commit_that_loses_a_race_writes_nothing(world: World) -> None:
    state = world.book()
    journal = world.container.journal
    stale = load_or_not_found(journal, uuid.UUID(state["id"]), Appointment)
    world.change(state["id"], "first")
    stale.change_details(changes={"title": "second"}, cause=operator())
    quarantine = Quarantined(world.account, f"{URL}x.ics", None, "broken", 1)

    with pytest.raises(IntegrityError):
        world.store.commit(
            [stale],
            StateWrites(world.account, quarantine=[quarantine], inbound={"sync_token": "t"}),
        )

    assert world.store.quarantined(world.account) == {}
    assert world.store.inbound_state(world.account).sync_token is None


def test_a_lease_is_held_by_one_owner_until_it_expires_or_is_released(world: World) -> None:
    store = world.store
    assert store.claim_lease("a1", "w1", now_us=100, ttl_us=50)
    assert not store.claim_lease("a1", "w2", now_us=120, ttl_us=50)
    assert store.claim_lease("a1", "w1", now_us=140, ttl_us=50)
    assert store.leases()["a1"].expires_us == 190
    assert store.claim_lease("a1", "w2", now_us=200, ttl_us=50)
    assert store.leases()["a1"].owner == "w2"

    store.release_lease("a1", "w1")
    assert "a1" in store.leases()
    store.release_lease("a1", "w2")
    assert store.leases() == {}


def test_renewing_extends_every_lease_of_the_owner_and_no_other(world: World) -> None:
    store = world.store
    assert store.claim_lease("a1", "w1", now_us=100, ttl_us=50)
    assert store.claim_lease("a2", "w1", now_us=100, ttl_us=50)
    assert store.claim_lease("a3", "w2", now_us=100, ttl_us=50)

    store.renew_leases("w1", now_us=140, ttl_us=50)

    leases = store.leases()
    assert [leases[a].expires_us for a in ("a1", "a2", "a3")] == [190, 190, 150]
    assert {a: lease.owner for a, lease in leases.items()} == {"a1": "w1", "a2": "w1", "a3": "w2"}
    # Renewed, w1's leases are not free for w2 past their old expiry.
    assert not store.claim_lease("a1", "w2", now_us=160, ttl_us=50)


def test_a_batch_claim_takes_free_expired_and_own_leases_but_no_live_one(world: World) -> None:
    store = world.store
    assert store.claim_lease("mine", "w1", now_us=100, ttl_us=50)  # w1's, expires at 150
    assert store.claim_lease("live", "w2", now_us=100, ttl_us=100)  # w2's until 200
    assert store.claim_lease("expired", "w2", now_us=100, ttl_us=40)  # w2's until 140
    assert store.claim_lease("at_expiry", "w2", now_us=100, ttl_us=60)  # w2's until 160

    held = store.claim_leases(
        ["free", "mine", "live", "expired", "at_expiry"], "w1", now_us=160, ttl_us=50
    )

    # Expired means expires_us < now, as for one claim: "at_expiry" is still w2's.
    assert held == {"free", "mine", "expired"}
    leases = store.leases()
    assert {a: (lease.owner, lease.expires_us) for a, lease in leases.items()} == {
        "free": ("w1", 210),
        "mine": ("w1", 210),
        "expired": ("w1", 210),
        "live": ("w2", 200),
        "at_expiry": ("w2", 160),
    }
    assert store.claim_leases([], "w1", now_us=170, ttl_us=50) == set()


def test_a_batch_claim_takes_more_accounts_than_one_statement_holds(world: World) -> None:
    store = world.store
    accounts = [f"a{n:04d}" for n in range(1_234)]
    for account_id in accounts:
        assert store.claim_lease(account_id, "dead", now_us=100, ttl_us=50)

    held = store.claim_leases([*accounts, accounts[0]], "w1", now_us=151, ttl_us=50)

    assert held == set(accounts)
    assert {lease.owner for lease in store.leases().values()} == {"w1"}


def test_two_owners_claiming_the_same_expired_leases_at_once_never_share_one(
    world: World,
) -> None:
    store = world.store
    accounts = [f"a{n:04d}" for n in range(600)]
    for account_id in accounts:
        assert store.claim_lease(account_id, "dead", now_us=100, ttl_us=50)
    results: dict[str, set[str]] = {}
    ready = threading.Barrier(2)

    def claim(owner: str, order: list[str]) -> None:
        ready.wait(timeout=30)
        results[owner] = store.claim_leases(order, owner, now_us=200, ttl_us=50)

    threads = [
        threading.Thread(target=claim, args=("w1", accounts)),
        threading.Thread(target=claim, args=("w2", accounts[::-1])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not results["w1"] & results["w2"]
    assert results["w1"] | results["w2"] == set(accounts)
    owners = {a: lease.owner for a, lease in store.leases().items()}
    assert all(owners[a] == "w1" for a in results["w1"])
    assert all(owners[a] == "w2" for a in results["w2"])


def test_heartbeats_count_the_live_workers(world: World) -> None:
    store = world.store
    assert store.heartbeat("w1", now_us=100, ttl_us=50) == 1
    assert store.heartbeat("w2", now_us=120, ttl_us=50) == 2
    assert store.heartbeat("w2", now_us=170, ttl_us=50) == 1  # w1 expired at 150

    store.retire("w2")

    assert store.heartbeat("w3", now_us=171, ttl_us=50) == 1


def test_sync_status_keeps_what_was_set(world: World) -> None:
    store = world.store
    assert store.sync_status(world.account).pushed_position is None

    store.update_sync_status(world.account, pushed_position=7, worker="w1")
    store.update_sync_status(world.account, last_error="down", last_error_us=3)

    status = store.sync_status(world.account)
    assert (status.pushed_position, status.worker, status.last_error) == (7, "w1", "down")
    with pytest.raises(ValueError, match="no field"):
        store.update_sync_status(world.account, pushed=1)

"""Backfill and replay against a real Radicale."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import caldav
import httpx
import pytest

from caljournal.adapters.secrets import Credentials
from caljournal.appointments import Booking
from caljournal.bootstrap import Container
from caljournal.domain.cause import Cause, Origin
from caljournal.maintenance import rebuild_read_models
from caljournal.projections.push import href_for, render
from caljournal.sync import MassDeleteRefusedError
from tests.conftest import Tenant, operator
from tests.integration.test_outbound import FAST
from tests.support.calendars import differences, journal_appointments, remote_events, wait_until
from tests.support.faultproxy import FaultProxy
from tests.support.patience import HTTP_TIMEOUT
from tests.support.radicale import RadicaleProcess

BERLIN = ZoneInfo("Europe/Berlin")
API = Cause(Origin.API, "token:acme/default", "test")


def book_many(
    container: Container, tenant: Tenant, count: int, day: int = 1
) -> list[dict[str, Any]]:
    made = []
    for i in range(count):
        start = datetime(2026, 5, day, 8, tzinfo=BERLIN) + timedelta(hours=i % 10, days=i // 10)
        booking = Booking(f"Existing {i}", start, start + timedelta(minutes=45), "Europe/Berlin")
        made.append(container.appointments.book(tenant.account_id, booking, API).state)
    return made


def new_calendar(radicale: RadicaleProcess) -> tuple[caldav.Calendar, str]:
    cal_id = f"rs-{uuid.uuid4().hex[:8]}"
    return radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id), cal_id


@pytest.fixture
def proxied(radicale: RadicaleProcess) -> Iterator[FaultProxy]:
    with FaultProxy(radicale.url) as proxy:
        yield proxy


def link(container: Container, tenant: Tenant, proxy: FaultProxy, cal_id: str) -> str:
    url = f"{proxy.url}alice/{cal_id}/"
    result = container.links.link(
        tenant.account_id, url, Credentials("alice", "secret"), operator()
    )
    assert result.state["calendar_url"] == url, "a calendar URL is chosen at once"
    return url


def test_backfill_pushes_what_was_booked_before_the_link_once(
    container: Container, acme: Tenant, radicale: RadicaleProcess, proxied: FaultProxy
) -> None:
    made = book_many(container, acme, 25)
    calendar, cal_id = new_calendar(radicale)
    url = link(container, acme, proxied, cal_id)
    # One appointment is already there under its UID, at another href (an earlier product).
    stale = dict(made[3], title="Written by the old product")
    data, _ = render(stale)
    assert (
        httpx.put(
            f"{radicale.url}alice/{cal_id}/legacy-object.ics",
            content=data,
            auth=("alice", "secret"),
            timeout=HTTP_TIMEOUT,
        ).status_code
        == 201
    )
    exact, _ = render(made[4])
    assert (
        httpx.put(
            f"{radicale.url}alice/{cal_id}/legacy-exact.ics",
            content=exact,
            auth=("alice", "secret"),
            timeout=HTTP_TIMEOUT,
        ).status_code
        == 201
    )

    proxied.clear_log()
    dry = container.sync.backfill(acme.account_id, operator(), dry_run=True)
    assert (dry.created, dry.updated, dry.already_present) == (23, 1, 1)
    assert {r.method for r in proxied.requests()} <= {"PROPFIND", "REPORT", "GET"}
    assert len(remote_events(calendar)) == 2

    summary = container.sync.backfill(acme.account_id, operator(), concurrency=2)
    assert (summary.created, summary.updated, summary.already_present, summary.failed) == (
        23,
        1,
        1,
        [],
    )
    assert differences(container, acme.account_id, calendar) == []
    events = remote_events(calendar)
    assert len(events) == 25 and all(len(v) == 1 for v in events.values())
    assert str(events[f"{made[3]['id']}@caljournal"][0]["SUMMARY"]) == "Existing 3"

    again = container.sync.backfill(acme.account_id, operator())
    assert (again.created, again.updated, again.already_present) == (0, 0, 25)
    history = container.links.history(acme.account_id)
    runs = [e for e in history if e["type"] == "ResyncRan"]
    assert len(runs) == 2 and runs[0]["origin"] == "operator"
    status = container.sync.status(acme.account_id)
    assert status["pending"] == 0 and status["calendar_url"] == url


def test_a_backfill_killed_halfway_finishes_on_the_next_run_without_duplicates(
    database_url: str, tmp_path: Path, radicale: RadicaleProcess
) -> None:
    from caljournal.bootstrap import bootstrap
    from caljournal.settings import load_settings
    from tests.integration.test_worker_processes import worker_env

    key = tmp_path / "k.key"
    container = bootstrap(
        load_settings(database_url=database_url, secret_key_file=key, allow_private_addresses=True)
    )
    try:
        container.accounts.open_account("acme", operator())
        tenant = Tenant("acme", container.accounts.find_account("acme").id, "")
        book_many(container, tenant, 60)
        calendar, cal_id = new_calendar(radicale)
        container.links.link(
            tenant.account_id,
            f"{radicale.url}alice/{cal_id}/",
            Credentials("alice", "secret"),
            operator(),
        )
        env = worker_env(database_url, key)
        command = [
            sys.executable,
            "-m",
            "caljournal",
            "backfill",
            "--account",
            "acme",
            "--rate",
            "20",
        ]
        first = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: len(remote_events(calendar)) >= 15, timeout=30, interval=0.1)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        written = len(remote_events(calendar))
        assert 15 <= written < 60
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert differences(container, tenant.account_id, calendar) == []
        assert len(remote_events(calendar)) == 60
    finally:
        container.close()


def test_replay_into_a_second_calendar_switches_the_link(
    container: Container, acme: Tenant, radicale: RadicaleProcess, proxied: FaultProxy
) -> None:
    made = book_many(container, acme, 12)
    first, first_id = new_calendar(radicale)
    link(container, acme, proxied, first_id)
    container.sync.backfill(acme.account_id, operator())
    container.appointments.cancel(acme.account_id, UUID(made[0]["id"]), API)
    second, second_id = new_calendar(radicale)
    target = f"{proxied.url}alice/{second_id}/"
    summary = container.sync.replay(acme.account_id, operator(), to_calendar=target)
    assert summary.created == 11 and summary.deleted == 0
    assert container.links.get(acme.account_id)["calendar_url"] == target
    assert differences(container, acme.account_id, second) == []
    assert container.sync.status(acme.account_id)["pending"] == 0


def test_replay_repairs_damage_done_behind_our_back_and_asks_before_deleting(
    container: Container, acme: Tenant, radicale: RadicaleProcess, proxied: FaultProxy
) -> None:
    made = book_many(container, acme, 12)
    calendar, cal_id = new_calendar(radicale)
    link(container, acme, proxied, cal_id)
    container.sync.backfill(acme.account_id, operator())
    calendar.get_object_by_uid(f"{made[1]['id']}@caljournal").delete()
    damaged = calendar.get_object_by_uid(f"{made[2]['id']}@caljournal")
    damaged.icalendar_component["SUMMARY"] = "Damaged"
    damaged.save(increase_seqno=False)
    calendar.save_event(
        dtstart=datetime(2026, 5, 20, 9, tzinfo=BERLIN),
        dtend=datetime(2026, 5, 20, 10, tzinfo=BERLIN),
        summary="Foreign, left alone",
        uid="foreign@example.org",
    )
    # A cancellation the worker never pushed: its object is still on the calendar.
    copy = container.sync_state.copy_of(made[3]["id"])
    assert copy is not None
    container.sync_state.record_copies([replace(copy, pushed_sequence=99)])
    container.appointments.cancel(acme.account_id, UUID(made[3]["id"]), API)

    dry = container.sync.replay(acme.account_id, operator(), dry_run=True)
    assert (dry.created, dry.updated, dry.deleted, dry.foreign_left_alone) == (1, 1, 1, 1)
    with pytest.raises(Exception, match="not confirmed"):
        container.sync.replay(acme.account_id, operator())
    summary = container.sync.replay(acme.account_id, operator(), confirm=lambda preview: True)
    assert (summary.created, summary.updated, summary.deleted) == (1, 1, 1)
    assert differences(container, acme.account_id, calendar) == []
    assert "foreign@example.org" in remote_events(calendar)


def test_replay_as_of_rebuilds_the_state_the_journal_had(
    container: Container, acme: Tenant, radicale: RadicaleProcess, proxied: FaultProxy
) -> None:
    made = book_many(container, acme, 4)
    calendar, cal_id = new_calendar(radicale)
    link(container, acme, proxied, cal_id)
    container.sync.backfill(acme.account_id, operator())
    moment = datetime.now(UTC)
    time.sleep(0.01)
    container.appointments.change_details(None, UUID(made[0]["id"]), {"title": "Later title"}, API)
    container.appointments.cancel(acme.account_id, UUID(made[1]["id"]), API)
    later = book_many(container, acme, 1, day=20)[0]
    container.sync.backfill(acme.account_id, operator())
    # What the worker would have done with the cancellation:
    calendar.get_object_by_uid(f"{made[1]['id']}@caljournal").delete()

    with pytest.raises(Exception, match="pause the link first"):
        container.sync.replay(acme.account_id, operator(), as_of=moment)
    container.links.pause(acme.account_id, "replaying history", operator())
    summary = container.sync.replay(
        acme.account_id, operator(), as_of=moment, confirm=lambda preview: True
    )
    events = remote_events(calendar)
    assert str(events[f"{made[0]['id']}@caljournal"][0]["SUMMARY"]) == "Existing 0"
    assert f"{made[1]['id']}@caljournal" in events  # it was still booked then
    assert (summary.updated, summary.created, summary.deleted) == (1, 1, 0)
    assert f"{later['id']}@caljournal" in events  # did not exist then: left as it is


def test_replay_refuses_a_mass_delete_without_permission(
    container: Container, acme: Tenant, radicale: RadicaleProcess, proxied: FaultProxy
) -> None:
    made = book_many(container, acme, 12)
    calendar, cal_id = new_calendar(radicale)
    link(container, acme, proxied, cal_id)
    container.sync.backfill(acme.account_id, operator())
    container.links.pause(acme.account_id, "bulk cancel", operator())
    for appointment in made[:11]:
        container.appointments.cancel(acme.account_id, UUID(appointment["id"]), API)
    with pytest.raises(MassDeleteRefusedError):
        container.sync.replay(acme.account_id, operator(), confirm=lambda preview: True)
    assert len(remote_events(calendar)) == 12
    summary = container.sync.replay(
        acme.account_id, operator(), confirm=lambda preview: True, allow_mass_delete=True
    )
    assert summary.deleted == 11 and len(remote_events(calendar)) == 1


def test_rebuild_read_models_gives_back_the_same_answers(
    container: Container, acme: Tenant
) -> None:
    made = book_many(container, acme, 30)
    container.appointments.cancel(acme.account_id, UUID(made[5]["id"]), API)
    before = journal_appointments(container, acme.account_id)
    tokens = container.accounts.list_tokens("acme")
    recorder = container.journal.journal_recorder
    recorder.clear_read_model()
    assert journal_appointments(container, acme.account_id) == []
    read, seconds = rebuild_read_models(container.journal)
    assert read == recorder.max_notification_id() and seconds >= 0
    assert journal_appointments(container, acme.account_id) == before
    assert container.accounts.list_tokens("acme") == tokens
    assert container.accounts.authenticate(acme.token).account_id == acme.account_id
    assert href_for("http://x/cal/", made[0]["id"]).endswith(".ics")


def test_linking_with_backfill_through_the_api_pushes_existing_appointments(
    container: Container, client: Any, acme: Tenant, radicale: RadicaleProcess
) -> None:
    book_many(container, acme, 5)
    calendar, cal_id = new_calendar(radicale)
    response = client.post(
        "/link",
        json={
            "url": f"{radicale.url}alice/{cal_id}/",
            "username": "alice",
            "password": "secret",
            "backfill": True,
        },
        headers=acme.headers,
    )
    answer = response.json()
    assert response.status_code == 201 and answer["backfill"] == "requested"
    request_id = answer["backfill_request"]
    # Requested, not run: the API never runs a backfill itself.
    status = client.get("/link/status", headers=acme.headers).json()
    assert [(r["request_id"], r["state"]) for r in status["resyncs"]] == [(request_id, "requested")]
    worker = container.outbound_worker(FAST).start()
    try:
        wait_until(lambda: len(remote_events(calendar)) == 5, timeout=20)
        wait_until(
            lambda: any(e["type"] == "ResyncRan" for e in container.links.history(acme.account_id)),
            timeout=10,
        )
    finally:
        worker.stop()
    assert differences(container, acme.account_id, calendar) == []
    done = client.get("/link/status", headers=acme.headers).json()["resyncs"][0]
    assert (done["request_id"], done["state"], done["worker"]) == (request_id, "done", worker.owner)
    assert done["summary"]["created"] + done["summary"]["already_present"] == 5


def test_link_add_with_backfill_and_the_backfill_command_at_the_command_line(
    tmp_path: Path, radicale: RadicaleProcess
) -> None:
    from tests.integration.test_cli import commands_container, run
    from tests.integration.test_link import run_stdin

    env = {"CALJOURNAL_ALLOW_PRIVATE_ADDRESSES": "true"}
    assert run(["account", "create", "acme"], tmp_path, **env).returncode == 0
    container = commands_container(tmp_path)
    try:
        tenant = Tenant("acme", container.accounts.find_account("acme").id, "")
        book_many(container, tenant, 4)
    finally:
        container.close()
    calendar, cal_id = new_calendar(radicale)
    added = run_stdin(
        [
            "link",
            "add",
            "acme",
            f"{radicale.url}alice/{cal_id}/",
            "--username",
            "alice",
            "--password-stdin",
            "--backfill",
        ],
        tmp_path,
        "secret\n",
        **env,
    )
    assert added.returncode == 0, added.stderr
    assert "backfill: 4 created, 0 already present" in added.stderr
    assert len(remote_events(calendar)) == 4
    dry = run(["backfill", "--account", "acme", "--dry-run"], tmp_path, **env)
    assert dry.returncode == 0 and "dry run: nothing written" in dry.stdout
    again = run(["backfill", "--account", "acme"], tmp_path, **env)
    assert again.returncode == 0 and "already present" in again.stdout
    rebuilt = run(["rebuild-read-models"], tmp_path, **env)
    assert rebuilt.returncode == 0 and "events/s" in rebuilt.stderr

"""Backfills run under the account's lease: by the worker serving it, or by the command.

Real Radicale, a journal on SQLite and on PostgreSQL, the worker in this process
or none, and ``caljournal backfill`` as a real process.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from caljournal.adapters.secrets import Credentials
from caljournal.bootstrap import Container, bootstrap
from caljournal.projections.outbound import RunRecord
from caljournal.settings import load_settings
from tests.conftest import Tenant, operator
from tests.integration.test_outbound import FAST, book
from tests.integration.test_resync import API, book_many, new_calendar
from tests.integration.test_worker_processes import worker_env
from tests.support.calendars import differences, remote_events, wait_until
from tests.support.faultproxy import FaultProxy
from tests.support.radicale import RadicaleProcess


@pytest.fixture
def shared(database_url: str, tmp_path: Path) -> Iterator[tuple[Container, dict[str, str]]]:
    """Return a container and the environment of commands on the same journal and key."""
    key_file = tmp_path / "shared.key"
    built = bootstrap(
        load_settings(
            database_url=database_url, secret_key_file=key_file, allow_private_addresses=True
        )
    )
    yield built, worker_env(database_url, key_file)
    built.close()


def _lease_owner(container: Container, account_id: uuid.UUID) -> str | None:
    lease = container.sync_state.leases().get(str(account_id))
    return lease.owner if lease and lease.expires_us > time.time() * 1e6 else None


def test_a_backfill_requested_over_the_api_runs_in_the_worker_and_never_overlaps_a_push(
    container: Container, client: TestClient, acme: Tenant, radicale: RadicaleProcess
) -> None:
    before = book_many(container, acme, 40)
    calendar, cal_id = new_calendar(radicale)
    runs: list[RunRecord] = []
    with FaultProxy(radicale.url) as proxy:
        container.links.link(
            acme.account_id,
            f"{proxy.url}alice/{cal_id}/",
            Credentials("alice", "secret"),
            operator(),
        )
        worker = container.outbound_worker(FAST)
        worker.observers.append(runs.append)
        worker.start()
        try:
            wait_until(lambda: str(acme.account_id) in worker.served_accounts(), timeout=10)
            # A slow server: the backfill's 40 writes take a while.
            proxy.delay_next(40, 0.05, method="PUT")
            answer = client.post("/link/backfill", headers=acme.headers)
            assert answer.status_code == 202, answer.text
            request_id = answer.json()["request_id"]

            def state() -> str:
                row = container.resyncs.get(request_id)
                assert row is not None
                return str(row["state"])

            # Bookings while the backfill runs.
            wait_until(lambda: state() != "requested", timeout=30, interval=0.01)
            during = []
            while state() == "running" and len(during) < 20:
                during.append(book(client, acme, f"During {len(during)}", 1 + len(during) % 28))
            wait_until(lambda: state() in ("done", "failed"), timeout=60)
            wait_until(lambda: not differences(container, acme.account_id, calendar), timeout=60)
        finally:
            worker.stop()
    row = container.resyncs.get(request_id)
    assert row is not None and row["state"] == "done", row
    assert row["worker"] == worker.owner and row["error"] is None
    # Appointments booked before it read the journal are part of the backfill too.
    assert row["phase"] == "writing" and row["done"] == row["total"] >= 40
    assert during, "appointments were booked while the backfill ran"
    events = remote_events(calendar)
    wanted = {f"{a['id']}@caljournal" for a in before + during}
    assert set(events) == wanted and all(len(v) == 1 for v in events.values())

    # The worker ran the backfill as one job of the account's runtime ...
    jobs = [r for r in runs if r.reconciler == "resync" and r.ended - r.started > 0.5]
    assert len(jobs) == 1 and jobs[0].error is None
    job = jobs[0]
    pushes = [r for r in runs if r.reconciler == "push"]
    assert pushes and all(p.ended <= job.started or p.started >= job.ended for p in pushes)
    # ... and every write reached the server inside exactly one run: the backfill's
    # writes inside it, the pushes of what was booked meanwhile after it.
    writes = [r for r in proxy.requests(method="PUT") if r.status is not None]
    assert len(writes) == len(wanted)
    for write in writes:
        inside = [r for r in runs if r.started <= write.timestamp <= r.ended]
        assert [r.reconciler for r in inside] in (["push"], ["resync"]), (write, inside)
    backfilled = [w for w in writes if job.started <= w.timestamp <= job.ended]
    assert len(backfilled) >= 40
    history = [e for e in container.links.history(acme.account_id) if "Resync" in e["type"]]
    assert [e["type"] for e in history] == ["ResyncRequested", "ResyncRan"]
    assert history[1]["changes"]["last_resync"]["new"]["request_id"] == request_id


def test_a_backfill_request_for_a_link_without_a_calendar_is_refused_at_once(
    container: Container, client: TestClient, acme: Tenant, radicale: RadicaleProcess
) -> None:
    linked = client.post(
        "/link",
        json={"url": f"{radicale.url}alice/", "username": "alice", "password": "secret"},
        headers=acme.headers,
    )
    assert linked.status_code == 201 and linked.json()["link"]["status"] == "linked"
    refused = client.post("/link/backfill", headers=acme.headers)
    assert refused.status_code == 422
    assert refused.json()["message"] == (
        "the account's calendar link is linked; link a calendar first"
    )
    assert client.get("/link/status", headers=acme.headers).json()["resyncs"] == []


def _backfill_command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "caljournal", "backfill", "--account", "acme", *extra]


def _world(container: Container, radicale: RadicaleProcess, count: int) -> tuple[Tenant, Any]:
    container.accounts.open_account("acme", operator())
    tenant = Tenant("acme", container.accounts.find_account("acme").id, "")
    book_many(container, tenant, count)
    calendar, cal_id = new_calendar(radicale)
    container.links.link(
        tenant.account_id,
        f"{radicale.url}alice/{cal_id}/",
        Credentials("alice", "secret"),
        operator(),
    )
    return tenant, calendar


def test_a_cli_backfill_with_no_worker_runs_here_under_a_lease_no_worker_takes(
    shared: tuple[Container, dict[str, str]],
    radicale: RadicaleProcess,
    tmp_path: Path,
) -> None:
    container, env = shared
    tenant, calendar = _world(container, radicale, 40)
    command = subprocess.Popen(
        _backfill_command("--rate", "10"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = None
    try:
        wait_until(
            lambda: (_lease_owner(container, tenant.account_id) or "").startswith("cli:"),
            timeout=30,
            interval=0.02,
        )
        held_by = _lease_owner(container, tenant.account_id)
        worker = container.outbound_worker(FAST).start()
        seen_while_running = 0
        while command.poll() is None:
            if _lease_owner(container, tenant.account_id) == held_by:
                assert str(tenant.account_id) not in worker.served_accounts()
                seen_while_running += 1
            time.sleep(0.05)
        stdout, stderr = command.communicate(timeout=60)
        assert command.returncode == 0, stderr
        assert seen_while_running > 10
        assert "handed to worker" not in stderr
        # Given up at the end: the worker takes the account now.
        wait_until(lambda: str(tenant.account_id) in worker.served_accounts(), timeout=30)
        assert _lease_owner(container, tenant.account_id) == worker.owner
    finally:
        if command.poll() is None:
            command.kill()
        if worker is not None:
            worker.stop()
    assert "already present" in stdout
    events = remote_events(calendar)
    assert len(events) == 40 and all(len(v) == 1 for v in events.values())
    (row,) = container.journal.journal_recorder.recent_resyncs(str(tenant.account_id))
    assert (row["state"], row["worker"], row["summary"]["created"]) == ("done", held_by, 40)


def test_a_cli_backfill_while_a_worker_serves_the_account_is_run_by_the_worker(
    shared: tuple[Container, dict[str, str]],
    radicale: RadicaleProcess,
) -> None:
    container, env = shared
    tenant, calendar = _world(container, radicale, 30)
    worker = container.outbound_worker(FAST).start()
    try:
        wait_until(lambda: str(tenant.account_id) in worker.served_accounts(), timeout=30)
        finished = subprocess.run(
            _backfill_command(), env=env, capture_output=True, text=True, timeout=180
        )
        assert finished.returncode == 0, finished.stderr
        assert _lease_owner(container, tenant.account_id) == worker.owner
    finally:
        worker.stop()
    (row,) = container.journal.journal_recorder.recent_resyncs(str(tenant.account_id))
    assert (row["state"], row["worker"]) == ("done", worker.owner)
    assert f"backfill handed to worker {worker.owner}" in " ".join(finished.stderr.split())
    assert row["request_id"] in finished.stderr
    # The worker's progress, shown here; then the summary.
    assert "writing" in finished.stderr and "30/30" in finished.stderr
    assert "created" in finished.stdout and "30" in finished.stdout
    assert not differences(container, tenant.account_id, calendar)
    events = remote_events(calendar)
    assert len(events) == 30 and all(len(v) == 1 for v in events.values())


def test_a_replay_handed_to_the_worker_deletes_no_more_than_was_agreed_to(
    container: Container, client: TestClient, acme: Tenant, radicale: RadicaleProcess
) -> None:
    made = book_many(container, acme, 6)
    calendar, cal_id = new_calendar(radicale)
    url = f"{radicale.url}alice/{cal_id}/"
    container.links.link(acme.account_id, url, Credentials("alice", "secret"), operator())
    container.sync.backfill(acme.account_id, operator())
    store = container.sync_state
    for appointment in made[:2]:
        # Cancellations the worker will not push (their copies say they are pushed
        # already): only a replay deletes these objects.
        copy = store.copy_of(appointment["id"])
        assert copy is not None
        store.record_copies([dataclasses.replace(copy, pushed_sequence=99)])
        container.appointments.cancel(acme.account_id, uuid.UUID(appointment["id"]), API)
    worker = container.outbound_worker(FAST).start()
    try:
        wait_until(lambda: str(acme.account_id) in worker.served_accounts(), timeout=10)
        # Agreed to one deletion; the replay would make two.
        refused = container.resyncs.request(
            acme.account_id, "replay", {"delete_limit": 1}, operator()
        )
        wait_until(
            lambda: (container.resyncs.get(refused["request_id"]) or {}).get("state") == "failed",
            timeout=30,
        )
    finally:
        worker.stop()
    row = container.resyncs.get(refused["request_id"])
    assert row is not None
    status = client.get("/link/status", headers=acme.headers).json()["resyncs"][0]
    assert status["state"] == "failed" and status["error"] == row["error"]
    assert "more than the 1 confirmed; nothing written" in row["error"]
    ran = [e for e in container.links.history(acme.account_id) if e["type"] == "ResyncRan"][-1]
    assert ran["changes"]["last_resync"]["new"]["error"] == row["error"]
    assert len(remote_events(calendar)) == 6

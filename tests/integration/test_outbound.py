"""Outbound sync against a real Radicale, through a fault-injecting proxy."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import caldav
import pytest
from fastapi.testclient import TestClient

from caljournal.adapters.calendar_writer import RetryPolicy
from caljournal.adapters.secrets import Credentials
from caljournal.bootstrap import Container
from caljournal.projections.outbound import OutboundWorker, WorkerConfig
from tests.conftest import Tenant, open_tenant, operator
from tests.support.calendars import differences, remote_events, wait_until
from tests.support.faultproxy import FaultProxy
from tests.support.radicale import RadicaleProcess

BERLIN = ZoneInfo("Europe/Berlin")
FAST = WorkerConfig(
    lease_ttl=5.0,
    lease_renew=0.2,
    catch_up=1.0,
    poll=0.02,
    max_backoff=1.0,
    retry=RetryPolicy(attempts=3, initial=0.05, maximum=0.3),
)


@dataclass
class Synced:
    """An account linked to a fresh calendar (through a proxy), with a worker running."""

    tenant: Tenant
    calendar: caldav.Calendar
    proxy: FaultProxy
    calendar_url: str


def new_calendar(radicale: RadicaleProcess) -> tuple[caldav.Calendar, str]:
    cal_id = f"cal-{uuid.uuid4().hex[:8]}"
    calendar = radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    return calendar, f"alice/{cal_id}/"


def link_through(container: Container, tenant: Tenant, proxy: FaultProxy, path: str) -> str:
    result = container.links.link(
        tenant.account_id, proxy.url + path, Credentials("alice", "secret"), operator()
    )
    assert result.state["status"] == "active"
    return str(result.state["calendar_url"])


@pytest.fixture
def worker(container: Container) -> Iterator[OutboundWorker]:
    running = container.outbound_worker(FAST).start()
    yield running
    running.stop()


@pytest.fixture
def synced(
    container: Container, radicale: RadicaleProcess, acme: Tenant, worker: OutboundWorker
) -> Iterator[Synced]:
    calendar, path = new_calendar(radicale)
    with FaultProxy(radicale.url) as proxy:
        url = link_through(container, acme, proxy, path)
        wait_until(lambda: acme.account_id.__str__() in worker.served_accounts(), timeout=10)
        yield Synced(acme, calendar, proxy, url)


def slot(day: int, hour: int = 10) -> dict[str, str]:
    start = datetime(2026, 3, day, hour, tzinfo=BERLIN)
    return {"start": start.isoformat(), "end": (start + timedelta(minutes=45)).isoformat()}


def book(
    client: TestClient, tenant: Tenant, title: str, day: int, hour: int = 10
) -> dict[str, Any]:
    body = {"title": title, "timezone": "Europe/Berlin", **slot(day, hour)}
    response = client.post("/appointments", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return response.json()


def converged(container: Container, synced: Synced, timeout: float = 30.0) -> None:
    wait_until(
        lambda: not differences(container, synced.tenant.account_id, synced.calendar),
        timeout=timeout,
    )


def test_book_move_change_cancel_each_reach_the_calendar(
    container: Container, client: TestClient, synced: Synced
) -> None:
    tenant = synced.tenant
    created = book(client, tenant, "Haircut", 27)
    uid = f"{created['id']}@caljournal"
    event = wait_until(lambda: remote_events(synced.calendar).get(uid), timeout=5)[0]
    assert str(event["SUMMARY"]) == "Haircut"
    assert event.decoded("DTSTART") == datetime(2026, 3, 27, 10, tzinfo=BERLIN)
    assert event["DTSTART"].params["TZID"] == "Europe/Berlin"

    path = f"/appointments/{created['id']}"
    client.post(f"{path}/move", json=slot(30, 9), headers=tenant.headers)  # after the DST change
    event = wait_until(
        lambda: [
            e for e in remote_events(synced.calendar).get(uid, []) if e.decoded("DTSTART").day == 30
        ],
        timeout=5,
    )[0]
    assert event.decoded("DTSTART").utcoffset() == timedelta(hours=2)
    assert int(event["SEQUENCE"]) == 1

    client.patch(
        path, json={"title": "Haircut and colour", "location": "Salon"}, headers=tenant.headers
    )
    event = wait_until(
        lambda: [
            e for e in remote_events(synced.calendar).get(uid, []) if e.get("LOCATION") == "Salon"
        ],
        timeout=5,
    )[0]
    assert str(event["SUMMARY"]) == "Haircut and colour"

    client.post(f"{path}/cancel", headers=tenant.headers)
    wait_until(lambda: uid not in remote_events(synced.calendar), timeout=5)
    assert differences(container, tenant.account_id, synced.calendar) == []
    # The pass records its position after its copies: wait for it, not only for
    # nothing pending (which is true a moment earlier).
    status = wait_until(
        lambda: (
            (s := nothing_pending(client, synced))["pushed_position"] == s["journal_position"] and s
        )
    )
    assert status["failed"] == []


def _churn(client: TestClient, tenant: Tenant, count: int, day: int) -> list[dict[str, Any]]:
    made = [book(client, tenant, f"Fault run {day}/{i}", day, 8 + i % 10) for i in range(count)]
    for i, appointment in enumerate(made):
        path = f"/appointments/{appointment['id']}"
        if i % 3 == 0:
            client.post(f"{path}/move", json=slot(day + 1, 8 + i % 10), headers=tenant.headers)
        if i % 4 == 0:
            client.patch(path, json={"title": f"Renamed {day}/{i}"}, headers=tenant.headers)
        if i % 5 == 0:
            client.post(f"{path}/cancel", headers=tenant.headers)
    return made


@pytest.mark.parametrize(
    "fault",
    ["503 burst", "429 retry-after", "connection resets", "read timeouts", "server down"],
)
def test_after_each_fault_the_calendar_equals_the_journal(
    container: Container,
    client: TestClient,
    synced: Synced,
    radicale: RadicaleProcess,
    fault: str,
) -> None:
    proxy = synced.proxy
    if fault == "503 burst":
        proxy.fail_next(12, status=503)
    elif fault == "429 retry-after":
        proxy.fail_next(3, status=429, retry_after=1)
    elif fault == "connection resets":
        proxy.reset_next(6)
        proxy.reset_next(2, after_forward=True)  # the server wrote it, we never heard back
    elif fault == "read timeouts":
        container.links.policy = type(container.links.policy)(
            allow_private=True, verify_tls=True, timeout=1.0
        )
        proxy.delay_next(2, 1.5, method="PUT")
    elif fault == "server down":
        proxy_down_for_a_while(proxy)
    _churn(client, synced.tenant, 15, 3)
    converged(container, synced, timeout=60)
    requests = proxy.requests()
    if fault in ("503 burst", "429 retry-after"):
        assert any(r.status in (503, 429) for r in requests)
    if fault == "429 retry-after":
        retried = [r for r in requests if r.status == 429]
        after = [r for r in requests if r.timestamp > retried[-1].timestamp]
        assert after and after[0].timestamp - retried[-1].timestamp >= 0.9
    # The calendar can hold the latest state while the worker still walks the journal
    # behind it (coalesced changes): wait for it to catch up.
    status = nothing_pending(client, synced)
    assert status["failed"] == [], status


def nothing_pending(client: TestClient, synced: Synced) -> dict[str, Any]:
    """Wait until the worker has caught up with the journal; return the link status."""
    status: dict[str, Any] = wait_until(
        lambda: (
            (s := client.get("/link/status", headers=synced.tenant.headers).json())["pending"] == 0
            and s
        )
    )
    return status


def proxy_down_for_a_while(proxy: FaultProxy) -> None:
    """Answer 503 (no Retry-After) for two seconds: the server is away."""
    proxy.fail_for(2.0, status=503)


def test_radicale_stopped_and_restarted(
    container: Container, client: TestClient, synced: Synced, radicale: RadicaleProcess
) -> None:
    book(client, synced.tenant, "Before", 5)
    converged(container, synced)
    radicale.stop()
    try:
        _churn(client, synced.tenant, 8, 6)
        status = wait_until(
            lambda: (
                (s := client.get("/link/status", headers=synced.tenant.headers).json())[
                    "last_error"
                ]
                and s
            ),
            timeout=10,
        )
        # The changes wait for the server, and the status says why.
        assert status["pending"] > 0, status
        assert "server" in status["last_error"].lower(), status
        assert status["failed"] == [], status
    finally:
        radicale.start()
    converged(container, synced, timeout=60)
    assert nothing_pending(client, synced)["failed"] == []


def test_a_permanent_error_on_one_object_is_recorded_and_retried_on_request(
    container: Container, client: TestClient, synced: Synced
) -> None:
    # Fail the next PUT with a permanent 403, armed before the booking so the worker
    # cannot push it first: nothing else is pending, so that PUT is this object's.
    synced.proxy.fail_next(1, status=403, method="PUT")
    doomed = book(client, synced.tenant, "Will fail", 10)
    fine = book(client, synced.tenant, "Will pass", 11)
    wait_until(lambda: f"{fine['id']}@caljournal" in remote_events(synced.calendar), timeout=5)
    status = wait_until(
        lambda: (
            (s := client.get("/link/status", headers=synced.tenant.headers).json())["failed"] and s
        ),
        timeout=10,
    )
    assert status["failed"][0]["appointment_id"] == doomed["id"]
    assert "does not allow" in status["failed"][0]["error"]
    history = client.get(f"/appointments/{doomed['id']}/history", headers=synced.tenant.headers)
    failed = [e for e in history.json()["entries"] if e["type"] == "PushFailed"]
    assert failed and failed[0]["origin"] == "caldav" and failed[0]["actor"].startswith("worker:")
    assert f"{doomed['id']}@caljournal" not in remote_events(synced.calendar)

    retried = client.post("/link/retry", headers=synced.tenant.headers).json()
    assert retried == {"queued": 1}
    converged(container, synced, timeout=10)
    history = client.get(f"/appointments/{doomed['id']}/history", headers=synced.tenant.headers)
    assert "PushRetried" in [e["type"] for e in history.json()["entries"]]


def test_a_remote_edit_is_overwritten_and_recorded_as_a_conflict(
    container: Container, client: TestClient, synced: Synced
) -> None:
    created = book(client, synced.tenant, "Ours", 12)
    uid = f"{created['id']}@caljournal"
    wait_until(lambda: uid in remote_events(synced.calendar), timeout=5)
    remote = synced.calendar.get_object_by_uid(uid)
    component = remote.icalendar_component
    component["SUMMARY"] = "Changed in the calendar app"
    remote.save(increase_seqno=False)

    client.patch(
        f"/appointments/{created['id']}",
        json={"description": "note"},
        headers=synced.tenant.headers,
    )
    converged(container, synced, timeout=10)
    entries = client.get(
        f"/appointments/{created['id']}/history", headers=synced.tenant.headers
    ).json()["entries"]
    conflict = [e for e in entries if e["type"] == "ConflictResolved"]
    assert conflict, [e["type"] for e in entries]
    assert str(remote_events(synced.calendar)[uid][0]["SUMMARY"]) == "Ours"


def test_one_accounts_failing_server_does_not_delay_another(
    container: Container,
    client: TestClient,
    radicale: RadicaleProcess,
    worker: OutboundWorker,
) -> None:
    a, b = open_tenant(container, "alpha"), open_tenant(container, "bravo")
    cal_a, path_a = new_calendar(radicale)
    cal_b, path_b = new_calendar(radicale)
    with FaultProxy(radicale.url) as proxy_a, FaultProxy(radicale.url) as proxy_b:
        link_through(container, a, proxy_a, path_a)
        link_through(container, b, proxy_b, path_b)
        wait_until(
            lambda: {str(a.account_id), str(b.account_id)} <= worker.served_accounts(), timeout=10
        )
        proxy_a.fail_for(60.0, status=503)
        for i in range(5):
            book(client, a, f"A {i}", 14, 8 + i)
        lags = []
        for i in range(8):
            created = book(client, b, f"B {i}", 15, 8 + i)
            started = datetime.now()
            wait_until(
                lambda c=created: f"{c['id']}@caljournal" in remote_events(cal_b),
                timeout=5,
                interval=0.01,
            )
            lags.append((datetime.now() - started).total_seconds())
        assert max(lags) < 1.0, lags
        assert remote_events(cal_a) == {}
        assert any(r.status == 503 for r in proxy_a.requests())
        proxy_a.clear_rules()
        wait_until(lambda: len(remote_events(cal_a)) == 5, timeout=30)


def test_a_lease_won_while_the_worker_stops_starts_no_pusher(
    container: Container, radicale: RadicaleProcess, acme: Tenant
) -> None:
    """The lease keeper can win a lease just after stop() collected the pushers.

    A pusher started then would outlive the worker and write to a closed journal.
    """
    _, path = new_calendar(radicale)
    with FaultProxy(radicale.url) as proxy:
        link_through(container, acme, proxy, path)
        worker = container.outbound_worker(FAST)
        worker.stop()
        (link,) = [
            row
            for row in container.journal.journal_recorder.select_links("active")
            if row["account_id"] == str(acme.account_id)
        ]

        worker._hold(str(acme.account_id), link, int(FAST.lease_ttl * 1e6))

        assert worker.served_accounts() == set()
        lease = container.sync_state.leases().get(str(acme.account_id))
        assert lease is None or lease.owner != worker.owner

"""A requested poll runs now, even while the worker backs off from a failing server."""

from __future__ import annotations

import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient

from caljournal.adapters.retry import RetryPolicy
from caljournal.adapters.secrets import Credentials
from caljournal.bootstrap import Container
from caljournal.projections.outbound import WorkerConfig
from tests.conftest import Tenant, operator
from tests.support.calendars import wait_until
from tests.support.faultproxy import FaultProxy
from tests.support.radicale import RadicaleProcess

BERLIN = ZoneInfo("Europe/Berlin")
# The worker's backoff may grow long; the retries inside one request stay short.
PATIENT_WORKER = WorkerConfig(
    lease_ttl=5.0,
    lease_renew=0.2,
    catch_up=1.0,
    poll=0.02,
    max_backoff=600.0,
    retry=RetryPolicy(attempts=4, initial=0.05, maximum=0.3, longest_wait=30.0),
)


def test_a_requested_poll_runs_now_while_the_worker_backs_off(
    container: Container, client: TestClient, acme: Tenant, radicale: RadicaleProcess
) -> None:
    cal_id = f"ask-{uuid.uuid4().hex[:8]}"
    calendar = radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    records = container.sync_state
    account = str(acme.account_id)
    with FaultProxy(radicale.url) as proxy:
        container.links.link(
            acme.account_id,
            f"{proxy.url}alice/{cal_id}/",
            Credentials("alice", "secret"),
            operator(),
        )
        container.links.set_poll_interval(acme.account_id, 3600, operator())
        worker = container.outbound_worker(PATIENT_WORKER).start()
        try:
            wait_until(lambda: records.inbound_state(account).last_poll_us, timeout=30)
            # The server asks for five minutes' rest: the worker backs off that long.
            proxy.fail_next(1, 503, retry_after=300, method="REPORT")
            assert client.post("/link/poll", headers=acme.headers).status_code == 202
            wait_until(lambda: records.inbound_state(account).last_error, timeout=30)
            assert proxy.pending_rules() == 0
            polled_before = records.inbound_state(account).last_poll_us
            # Then it answers again, with a few transient faults of its own.
            proxy.fail_next(1, 503, retry_after=1, method="REPORT")
            proxy.reset_next(1, method="REPORT")
            proxy.fail_next(1, 429, retry_after=1, method="REPORT")
            calendar.save_event(
                dtstart=datetime(2026, 4, 12, 9, tzinfo=BERLIN),
                dtend=datetime(2026, 4, 12, 10, tzinfo=BERLIN),
                summary="Booked by phone",
                uid=f"phone-{cal_id}@example.org",
            )

            assert client.post("/link/poll", headers=acme.headers).status_code == 202

            # Well within the five minutes the backoff would last.
            wait_until(
                lambda: records.inbound_state(account).last_poll_us > polled_before,
                timeout=90,
            )
        finally:
            worker.stop()
    assert proxy.pending_rules() == 0  # the poll rode out all three faults
    assert records.inbound_state(account).last_error is None
    imported = container.appointments.list_window(
        acme.account_id, datetime(2026, 4, 12, tzinfo=BERLIN), datetime(2026, 4, 13, tzinfo=BERLIN)
    )
    assert [a["title"] for a in imported] == ["Booked by phone"]


def test_a_failing_poll_stays_in_the_status_while_pushes_go_through(
    container: Container, client: TestClient, acme: Tenant, radicale: RadicaleProcess
) -> None:
    cal_id = f"keep-{uuid.uuid4().hex[:8]}"
    radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    records = container.sync_state
    account = str(acme.account_id)
    with FaultProxy(radicale.url) as proxy:
        container.links.link(
            acme.account_id,
            f"{proxy.url}alice/{cal_id}/",
            Credentials("alice", "secret"),
            operator(),
        )
        container.links.set_poll_interval(acme.account_id, 3600, operator())
        worker = container.outbound_worker(PATIENT_WORKER).start()
        try:
            wait_until(lambda: records.inbound_state(account).last_poll_us, timeout=30)
            # A permanent refusal of the poll (not retried), while PUTs still work.
            proxy.fail_for(600, 400, method="REPORT")
            assert client.post("/link/poll", headers=acme.headers).status_code == 202
            wait_until(lambda: container.sync.status(acme.account_id)["last_error"], timeout=30)

            booked = client.post(
                "/appointments",
                headers=acme.headers,
                json={
                    "title": "Pushed while polls fail",
                    "start": "2026-04-14T09:00:00+02:00",
                    "end": "2026-04-14T10:00:00+02:00",
                    "timezone": "Europe/Berlin",
                },
            )
            assert booked.status_code == 201
            # The worker has run a clean push pass since the poll failed ...
            wait_until(
                lambda: (
                    container.sync.status(acme.account_id)["pending"] == 0
                    and proxy.requests(method="PUT")
                ),
                timeout=30,
            )
            status = container.sync.status(acme.account_id)
        finally:
            worker.stop()
    # ... and the poll's failure is still what the status shows.
    assert status["last_error"] is not None and "400" in status["last_error"]

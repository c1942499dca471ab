"""``GET /metrics`` over an API process and a worker process, and the worker's JSON log lines."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from caljournal.adapters.secrets import Credentials
from caljournal.bootstrap import Container
from tests.conftest import Tenant, open_tenant, operator
from tests.integration.test_worker_processes import WorkerProcess, worker_env
from tests.support.calendars import wait_until
from tests.support.patience import HTTP_TIMEOUT, MIN_WAIT
from tests.support.ports import free_port
from tests.support.radicale import RadicaleProcess


class ApiProcess:
    """``caljournal serve --no-worker`` as a child process on a free port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "caljournal", "serve", "--no-worker"]
                + ["--port", str(self.port)],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        self.log = log
        deadline = time.monotonic() + MIN_WAIT
        while True:
            try:
                httpx.get(f"{self.url}/healthz", timeout=HTTP_TIMEOUT)
                return
            except httpx.TransportError:
                assert self.process.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() < deadline, f"serve did not answer within {MIN_WAIT} s"
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture
def processes_env(container: Container, tmp_path: Path) -> dict[str, str]:
    """Return the environment of API and worker processes on the test's journal."""
    env = worker_env(container.settings.database_url, container.settings.key_file)
    env.pop("CALJOURNAL_LOG_FORMAT", None)  # the default: JSON, as the log goes to a file
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    (tmp_path / "metrics").mkdir()
    return env


@pytest.fixture
def api(processes_env: dict[str, str], tmp_path: Path) -> Iterator[ApiProcess]:
    server = ApiProcess(processes_env, tmp_path / "api.log")
    yield server
    server.stop()


@pytest.fixture
def worker(processes_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    running = WorkerProcess(processes_env, tmp_path / "worker.log")
    yield running
    running.stop()


def scrape(api: ApiProcess, token: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Return every sample of ``/metrics`` by name and labels."""
    answer = httpx.get(
        f"{api.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def total(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Return the sum of the samples of ``name`` that have ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def link_calendar(container: Container, radicale: RadicaleProcess, tenant: Tenant) -> str:
    cal_id = f"{tenant.name}-{uuid.uuid4().hex[:6]}"
    radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    return f"{radicale.url}alice/{cal_id}/"


BOOKING: dict[str, Any] = {
    "title": "Root canal for Jane Example",
    "start": "2026-07-01T10:00:00+02:00",
    "end": "2026-07-01T11:00:00+02:00",
    "timezone": "Europe/Berlin",
    "customer_name": "Jane Example",
    "customer_email": "jane@example.org",
}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_metrics_add_up_the_api_and_worker_processes(
    container: Container,
    radicale: RadicaleProcess,
    api: ApiProcess,
    processes_env: dict[str, str],
    tmp_path: Path,
) -> None:
    acme = open_tenant(container, "acme")
    ops = container.accounts.issue_token(None, "prometheus", operator()).secret
    linked = httpx.post(
        f"{api.url}/link",
        json={
            "url": link_calendar(container, radicale, acme),
            "username": "alice",
            "password": "secret",
        },
        headers=acme.headers,
        timeout=HTTP_TIMEOUT,
    )
    assert linked.status_code == 201, linked.text
    before = scrape(api, ops)
    by_api = total(before, "caljournal_caldav_requests_total")
    assert by_api > 0  # the link's discovery, made by the API process
    assert total(before, "caljournal_pushes_total") == 0
    assert total(before, "caljournal_accounts", link="active") == 1

    worker = WorkerProcess(processes_env, tmp_path / "worker.log").start()
    try:
        booked = httpx.post(
            f"{api.url}/appointments", json=BOOKING, headers=acme.headers, timeout=HTTP_TIMEOUT
        )
        assert booked.status_code == 201, booked.text

        def pushed_and_polled() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
            after = scrape(api, ops)
            done = total(after, "caljournal_pushes_total", action="create", outcome="ok") >= 1
            return after if done and total(after, "caljournal_polls_total", outcome="ok") else None

        after = wait_until(pushed_and_polled, timeout=60, interval=0.5)
        assert worker.process is not None
        files = {p.name for p in (tmp_path / "metrics").iterdir()}
        worker_pid = worker.process.pid
    finally:
        worker.stop()
    assert total(after, "caljournal_caldav_requests_total", method="PUT", status="2xx") >= 1
    assert total(after, "caljournal_caldav_requests_total") > by_api
    assert total(after, "caljournal_poll_duration_seconds_count") >= 1
    assert (
        total(after, "caljournal_journal_position")
        == container.journal.recorder.max_notification_id()
    )
    assert total(after, "caljournal_lag_seconds_count") == 1
    assert any(name.endswith(f"_{api.process.pid}.db") for name in files), files
    assert any(name.endswith(f"_{worker_pid}.db") for name in files), files
    refused = httpx.get(f"{api.url}/metrics", headers=acme.headers, timeout=HTTP_TIMEOUT)
    assert refused.status_code == 403
    assert httpx.get(f"{api.url}/metrics", timeout=HTTP_TIMEOUT).status_code == 401


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_request_id_leads_to_the_workers_push_and_its_put(
    container: Container,
    radicale: RadicaleProcess,
    api: ApiProcess,
    worker: WorkerProcess,
) -> None:
    acme = open_tenant(container, "acme")
    container.links.link(
        acme.account_id,
        link_calendar(container, radicale, acme),
        Credentials("alice", "secret"),
        operator(),
    )
    worker.start()
    request_id = f"trace-{uuid.uuid4().hex}"

    booked = httpx.post(
        f"{api.url}/appointments",
        json=BOOKING,
        headers={**acme.headers, "X-Request-ID": request_id},
        timeout=HTTP_TIMEOUT,
    )

    assert booked.status_code == 201, booked.text
    appointment_id = booked.json()["id"]

    def traced() -> list[dict[str, Any]] | None:
        lines = [
            json.loads(line)
            for line in worker.log.read_text(errors="replace").splitlines()
            if line.startswith("{")
        ]
        mine = [line for line in lines if line.get("correlation_id") == request_id]
        put = [line for line in mine if line["logger"] == "caljournal.caldav.http"]
        push = [line for line in mine if line["logger"] == "caljournal.outbound"]
        return mine if put and push else None

    mine = wait_until(traced, timeout=60, interval=0.2)
    put = next(line for line in mine if line["logger"] == "caljournal.caldav.http")
    assert put["method"] == "PUT" and put["status"] in (201, 204)
    assert put["path"].endswith(".ics") and put["ms"] >= 0
    for line in mine:
        assert line["account"] == str(acme.account_id)
        assert line["appointment"] == appointment_id
        assert {"time", "level", "message"} <= set(line)
    logged = worker.log.read_text(errors="replace")
    for private in ("Jane", "jane@example.org", "Root canal", "alice:secret"):
        assert private not in logged

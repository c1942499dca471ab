"""Linking works the first time: DAViCal's path-only hrefs, reverse proxies, flaky servers,
servers without authentication, secrets in the URL, and a rotated key ring."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from caljournal.adapters.readmodel import secret_row
from caljournal.adapters.secrets import Credentials, new_key
from caljournal.bootstrap import Container, bootstrap
from caljournal.domain.link import CalendarLink
from tests.conftest import Tenant, operator
from tests.integration.test_cli import run
from tests.integration.test_link import run_stdin
from tests.support.faultproxy import FaultProxy
from tests.support.pathonly_dav import PathOnlyDAV
from tests.support.radicale import RadicaleProcess


@pytest.fixture
def davical() -> Iterator[PathOnlyDAV]:
    """Return a server answering like DAViCal (path-only hrefs)."""
    with PathOnlyDAV(user="admin", password="pw") as server:
        yield server


@pytest.fixture
def davical_proxy(davical: PathOnlyDAV) -> Iterator[FaultProxy]:
    """Return a reverse proxy on another port that does not rewrite the backend's redirects."""
    # Named "localhost" upstream, the proxy leaves the backend's 127.0.0.1 Locations alone.
    upstream = davical.url.replace("127.0.0.1", "localhost")
    with FaultProxy(upstream) as proxy:
        yield proxy


def _link(client: TestClient, tenant: Tenant, url: str, **extra: Any) -> Any:
    return client.post("/link", json={"url": url, **extra}, headers=tenant.headers)


def test_a_davical_calendar_url_is_chosen_at_once(
    client: TestClient, acme: Tenant, davical: PathOnlyDAV
) -> None:
    calendar = davical.url.rstrip("/") + davical.calendar_path
    response = _link(client, acme, calendar, username="admin", password="pw")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["link"]["status"] == "active"
    assert body["link"]["calendar_url"] == calendar
    assert client.post("/link/test", headers=acme.headers).json()["ok"] is True


def test_a_davical_calendar_behind_a_reverse_proxy_on_another_port(
    client: TestClient,
    acme: Tenant,
    globex: Tenant,
    davical: PathOnlyDAV,
    davical_proxy: FaultProxy,
) -> None:
    proxied = f"http://127.0.0.1:{davical_proxy.port}"
    calendar = proxied + davical.calendar_path
    direct = _link(client, acme, calendar, username="admin", password="pw")
    assert direct.status_code == 201, direct.text
    assert direct.json()["link"]["calendar_url"] == calendar
    assert client.post("/link/test", headers=acme.headers).json()["ok"] is True

    # The server root: well-known redirects to the backend's own port on the same host.
    root = _link(client, globex, proxied + "/", username="admin", password="pw")
    assert root.status_code == 201, root.text
    listed = [c["url"] for c in root.json()["calendars"]]
    assert [u.endswith(davical.calendar_path) for u in listed] == [True]


def test_link_calendar_test_ride_out_a_flaky_server(
    client: TestClient, container: Container, radicale: RadicaleProcess
) -> None:
    cal_id = f"flaky-{uuid.uuid4().hex[:6]}"
    radicale.make_calendar("alice", "secret", "Flaky", cal_id=cal_id)
    with FaultProxy(radicale.url) as proxy:
        proxy.flaky(0.3, seed=11, retry_after=0)
        for round_ in range(3):
            tenant = _tenant(container, f"flaky{round_}")
            calendar = f"{proxy.url}alice/{cal_id}/"
            linked = _link(client, tenant, calendar, username="alice", password="secret")
            assert linked.status_code == 201, linked.text
            assert linked.json()["link"]["calendar_url"] == calendar
            tested = client.post("/link/test", headers=tenant.headers).json()
            assert tested["ok"] is True, tested
            listed = client.get("/link/calendars", headers=tenant.headers)
            assert listed.status_code == 200, listed.text
        statuses = [r.status for r in proxy.requests()]
    assert {503, 429, None} <= set(statuses), "the proxy injected every kind of fault"


def _tenant(container: Container, name: str) -> Tenant:
    issued = container.accounts.open_account(name, operator())
    return Tenant(name, container.accounts.find_account(name).id, issued.secret)


@pytest.fixture(scope="module")
def open_radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadicaleProcess]:
    """Return a Radicale that needs no authentication."""
    # Anyone, logged in or not, may read and write every collection.
    open_rights = "[all]\nuser: .*\ncollection: .*\npermissions: RrWw\n"
    with RadicaleProcess(
        tmp_path_factory.mktemp("open-radicale"), auth_type="none", rights_file_content=open_rights
    ) as server:
        yield server


def test_a_calendar_without_authentication_links_with_auth_none(
    client: TestClient, acme: Tenant, open_radicale: RadicaleProcess, tmp_path: Path
) -> None:
    cal_id = f"open-{uuid.uuid4().hex[:6]}"
    open_radicale.make_calendar("anyone", "", "Open", cal_id=cal_id)
    calendar = f"{open_radicale.url}anyone/{cal_id}/"
    refused = _link(client, acme, calendar)
    assert refused.status_code == 422 and refused.json()["field"] == "username"

    response = _link(client, acme, calendar, auth="none")
    assert response.status_code == 201, response.text
    assert response.json()["link"]["auth"] == "none"
    assert response.json()["link"]["username"] is None
    assert client.post("/link/test", headers=acme.headers).json()["ok"] is True
    rotate = client.put(
        "/link/credentials", json={"username": "a", "password": "b"}, headers=acme.headers
    )
    assert rotate.status_code == 422 and rotate.json()["field"] == "auth"


def test_the_command_line_names_missing_credentials_and_links_without_auth(
    tmp_path: Path, open_radicale: RadicaleProcess
) -> None:
    cal_id = f"cli-{uuid.uuid4().hex[:6]}"
    open_radicale.make_calendar("anyone", "", "Open", cal_id=cal_id)
    calendar = f"{open_radicale.url}anyone/{cal_id}/"
    env = {"CALJOURNAL_ALLOW_PRIVATE_ADDRESSES": "true"}
    assert run(["account", "create", "acme"], tmp_path, **env).returncode == 0

    no_user = run_stdin(
        ["link", "add", "acme", calendar, "--password-stdin"], tmp_path, "x\n", **env
    )
    assert no_user.returncode == 1
    assert "Traceback" not in no_user.stderr
    assert no_user.stderr.strip().splitlines() == [
        "error: give the login name with --username (or --no-auth for a calendar that needs no "
        "login)"
    ]

    added = run(["link", "add", "acme", calendar, "--no-auth", "--backfill"], tmp_path, **env)
    assert added.returncode == 0, added.stderr
    assert "backfill not run: the account has no appointments yet" in added.stderr
    assert run(["link", "test", "acme"], tmp_path, **env).returncode == 0


def test_backfill_asked_without_a_chosen_calendar_says_why_not(
    tmp_path: Path, open_radicale: RadicaleProcess
) -> None:
    open_radicale.make_calendar("anyone", "", "Open", cal_id=f"bf-{uuid.uuid4().hex[:6]}")
    env = {"CALJOURNAL_ALLOW_PRIVATE_ADDRESSES": "true"}
    assert run(["account", "create", "acme"], tmp_path, **env).returncode == 0
    added = run(
        ["link", "add", "acme", f"{open_radicale.url}anyone/", "--no-auth", "--backfill"],
        tmp_path,
        **env,
    )
    assert added.returncode == 0, added.stderr
    assert "backfill not run: no calendar is chosen yet" in added.stderr
    assert "caljournal link choose acme URL" in added.stderr


def test_a_secret_in_the_url_query_is_sealed_and_sent_only_when_connecting(
    client: TestClient,
    container: Container,
    acme: Tenant,
    radicale: RadicaleProcess,
) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    cal_id = f"q-{uuid.uuid4().hex[:6]}"
    radicale.make_calendar("alice", "secret", "Query", cal_id=cal_id)
    with FaultProxy(radicale.url) as proxy:
        calendar = f"{proxy.url}alice/{cal_id}/"
        linked = _link(
            client, acme, f"{calendar}?token={token}", username="alice", password="secret"
        )
        assert linked.status_code == 201, linked.text
        proxy.clear_log()
        assert client.post("/link/test", headers=acme.headers).json()["ok"] is True
        sent = [r.path for r in proxy.requests()]
        shown = [
            linked.text,
            client.get("/link", headers=acme.headers).text,
            client.get("/link/history", headers=acme.headers).text,
            client.get("/link/status", headers=acme.headers).text,
            client.get("/link/calendars", headers=acme.headers).text,
        ]
    assert sent and all(path.endswith(f"?token={token}") for path in sent), sent
    assert linked.json()["link"]["server_url"] == calendar
    for text in shown:
        assert token not in text
    for notification in container.journal.recorder.select_notifications(start=None, limit=10_000):
        assert token.encode() not in notification.state


def test_a_link_recorded_with_its_query_in_the_url_keeps_working_and_hides_it(
    client: TestClient, container: Container, acme: Tenant, radicale: RadicaleProcess
) -> None:
    token = f"old-{uuid.uuid4().hex}"
    cal_id = f"legacy-{uuid.uuid4().hex[:6]}"
    radicale.make_calendar("alice", "secret", "Legacy", cal_id=cal_id)
    with FaultProxy(radicale.url) as proxy:
        calendar = f"{proxy.url}alice/{cal_id}/"
        # What an older release stored: the query in the event, sealed credentials without it.
        link = CalendarLink.link(
            account_id=acme.account_id,
            server_url=f"{calendar}?token={token}",
            username="alice",
            auth="basic",
            provider="generic",
            resolution="kept the calendar URL as given",
            cause=operator(),
        )
        from datetime import UTC, datetime

        link.choose_calendar(
            calendar_url=calendar,
            name="Legacy",
            sync_tokens=True,
            chosen_at=datetime.now(UTC),
            cause=operator(),
        )
        legacy_secret = b'{"username": "alice", "password": "secret", "bearer_token": null}'
        sealed = container.secret_box().seal(legacy_secret)
        container.journal.save(link, extra_rows=[secret_row(link, sealed)])

        assert client.post("/link/test", headers=acme.headers).json()["ok"] is True
        assert all(r.path.endswith(f"?token={token}") for r in proxy.requests())
    shown = client.get("/link", headers=acme.headers).json()
    assert shown["server_url"] == calendar
    assert token not in client.get("/link/history", headers=acme.headers).text


def test_a_running_process_picks_up_a_rotated_key_ring(
    client: TestClient, container: Container, acme: Tenant, radicale: RadicaleProcess
) -> None:
    cal_id = f"keys-{uuid.uuid4().hex[:6]}"
    radicale.make_calendar("alice", "secret", "Keys", cal_id=cal_id)
    calendar = f"{radicale.url}alice/{cal_id}/"
    linked = _link(client, acme, calendar, username="alice", password="secret")
    assert linked.status_code == 201, linked.text
    key_file = container.settings.secret_key_file
    old = key_file.read_text().split()[0]
    fresh = new_key()

    def write_keys(*keys: str) -> None:
        temporary = key_file.with_suffix(".new")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write("\n".join(keys) + "\n")
        temporary.replace(key_file)

    # Another process (the operator's shell) rotates; the running API is not restarted.
    write_keys(fresh, old)
    operator_shell = bootstrap(container.settings)
    try:
        assert operator_shell.links.rotate_key() == (1, 1)
    finally:
        operator_shell.close()
    assert client.post("/link/test", headers=acme.headers).json()["ok"] is True
    write_keys(fresh)
    assert client.post("/link/test", headers=acme.headers).json()["ok"] is True
    assert container.secret_box().is_current(
        container.journal.journal_recorder.select_secret(str(CalendarLink.id_for(acme.account_id)))
    )


def test_credentials_sealed_before_url_queries_existed_still_open() -> None:
    old_format = b'{"username": "a", "password": "p", "bearer_token": null}'
    assert Credentials.from_json(old_format) == Credentials("a", "p", None, None)


def test_the_worker_pushes_through_a_link_without_login_with_a_url_secret(
    client: TestClient, container: Container, acme: Tenant, open_radicale: RadicaleProcess
) -> None:
    from tests.integration.test_outbound import FAST, book
    from tests.support.calendars import wait_until

    token = f"tok-{uuid.uuid4().hex}"
    cal_id = f"push-{uuid.uuid4().hex[:6]}"
    calendar = open_radicale.make_calendar("anyone", "", "Push", cal_id=cal_id)
    worker = container.outbound_worker(FAST).start()
    try:
        with FaultProxy(open_radicale.url) as proxy:
            url = f"{proxy.url}anyone/{cal_id}/"
            linked = _link(client, acme, f"{url}?token={token}", auth="none")
            assert linked.status_code == 201, linked.text
            booked = book(client, acme, "Sealed", day=3)
            wait_until(lambda: len(calendar.events()) == 1, timeout=30)
            # The proxy logs a PUT just after the server stored it: wait for the entry.
            puts = wait_until(
                lambda: [r for r in proxy.requests("PUT") if booked["id"] in r.path], timeout=30
            )
    finally:
        worker.stop()
    assert "Sealed" in calendar.events()[0].data
    assert puts and all(r.path.endswith(f"?token={token}") for r in puts)

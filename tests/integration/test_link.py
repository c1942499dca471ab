"""Linking an account to a real Radicale: discovery, choosing, testing, security."""

from __future__ import annotations

import http.server
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from caljournal.adapters.caldav_client import AccessDeniedError, ServerAccess
from caljournal.adapters.discovery import probe_write
from caljournal.adapters.secrets import Credentials, new_key
from caljournal.bootstrap import Container, bootstrap
from caljournal.domain.link import CalendarLink
from caljournal.links import LinkFailedError
from caljournal.settings import load_settings
from tests.conftest import Tenant, operator
from tests.support.openapi import OpenAPIValidatingClient
from tests.support.ports import free_port
from tests.support.radicale import RadicaleProcess


@pytest.fixture
def calendar(radicale: RadicaleProcess) -> str:
    """Return the URL of a fresh calendar of alice's."""
    cal_id = f"cal-{uuid.uuid4().hex[:8]}"
    radicale.make_calendar("alice", "secret", f"Work {cal_id}", cal_id=cal_id)
    return f"{radicale.url}alice/{cal_id}/"


def link(client: TestClient, tenant: Tenant, url: str, **extra: Any) -> Any:
    body = {"url": url, "username": "alice", "password": "secret", **extra}
    return client.post("/link", json=body, headers=tenant.headers)


@pytest.mark.parametrize(
    ("suffix", "reason_word"),
    [("", "calendar URL as given"), ("1/", "'/1/'"), ("event.ics", "object name")],
)
def test_link_by_calendar_url_chooses_it_and_says_why(
    client: TestClient, acme: Tenant, calendar: str, suffix: str, reason_word: str
) -> None:
    response = link(client, acme, calendar + suffix)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["link"]["status"] == "active"
    assert body["link"]["calendar_url"] == calendar
    assert body["used_url"] == calendar
    assert reason_word in body["explanation"]
    assert calendar in [c["url"] for c in body["calendars"]]


@pytest.mark.parametrize("path", ["", "alice/"])
def test_link_by_server_root_or_principal_lists_calendars_to_choose(
    client: TestClient, acme: Tenant, radicale: RadicaleProcess, calendar: str, path: str
) -> None:
    response = link(client, acme, radicale.url + path)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["link"]["status"] == "linked" and body["link"]["calendar_url"] is None
    listed = {c["url"]: c for c in body["calendars"]}
    assert listed[calendar]["accepts_events"] and listed[calendar]["sync_tokens"]
    assert listed[calendar]["writable"] is True

    chosen = client.put("/link/calendar", json={"calendar_url": calendar}, headers=acme.headers)
    assert chosen.status_code == 200 and chosen.json()["status"] == "active"

    tested = client.post("/link/test", headers=acme.headers).json()
    assert tested == {"ok": True, "message": f"Created and deleted a test event in {calendar}."}


def test_choosing_a_calendar_that_is_not_listed_names_the_field(
    client: TestClient, acme: Tenant, radicale: RadicaleProcess
) -> None:
    assert link(client, acme, radicale.url).status_code == 201
    wrong = client.put(
        "/link/calendar", json={"calendar_url": radicale.url + "bob/x/"}, headers=acme.headers
    )
    assert wrong.status_code == 422 and wrong.json()["field"] == "calendar_url"


def test_wrong_password_is_one_clear_sentence(
    client: TestClient, acme: Tenant, calendar: str
) -> None:
    response = link(client, acme, calendar, password="wrong")
    assert response.status_code == 422
    assert response.json()["field"] == "password"
    assert "refused the username or password" in response.json()["message"]
    assert client.get("/link", headers=acme.headers).status_code == 404


def test_read_only_calendar_is_refused_and_the_probe_says_so(
    client: TestClient, acme: Tenant, radicale: RadicaleProcess
) -> None:
    shared = f"{radicale.url}alice/shared/"
    response = link(client, acme, shared, username="reader", password="readonly")
    assert response.status_code == 422, response.text
    assert "read-only" in response.json()["message"]

    access = ServerAccess(shared, Credentials("reader", "readonly"), allow_private=True)
    with pytest.raises(AccessDeniedError) as info:
        probe_write(access, shared)
    assert "read-only" in info.value.message


@pytest.fixture
def plain_http_server(tmp_path: Path) -> Iterator[str]:
    """Serve an ordinary web site (not CalDAV) on loopback."""
    (tmp_path / "index.html").write_text("<html><body>hello</body></html>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_a_web_server_that_is_not_caldav_is_named_as_such(
    client: TestClient, acme: Tenant, plain_http_server: str
) -> None:
    response = link(client, acme, plain_http_server)
    assert response.status_code == 422
    message = response.json()["message"]
    assert message.startswith("No calendar found at")
    assert "HTTP 501" in message or "not CalDAV" in message or "not answer as a CalDAV" in message


def test_loopback_servers_are_refused_unless_allowed(
    tmp_path: Path, radicale: RadicaleProcess, calendar: str
) -> None:
    strict = bootstrap(
        load_settings(
            database_url=f"sqlite:///{tmp_path / 'strict.sqlite'}",
            secret_key_file=tmp_path / "strict.key",
        )
    )
    try:
        account = strict.accounts.open_account("acme", operator())
        with OpenAPIValidatingClient(create_app_for(strict)) as client:
            response = client.post(
                "/link",
                json={"url": calendar, "username": "alice", "password": "secret"},
                headers={"Authorization": f"Bearer {account.secret}"},
            )
        assert response.status_code == 422
        assert "loopback" in response.json()["message"]
    finally:
        strict.close()


def create_app_for(container: Container) -> Any:
    from caljournal.api.app import create_app

    return create_app(container)


def test_pause_resume_unlink_relink_are_recorded_for_auditors(
    client: TestClient, acme: Tenant, calendar: str
) -> None:
    assert link(client, acme, calendar).status_code == 201
    client.post("/link/pause", json={"reason": "holiday"}, headers=acme.headers)
    assert client.get("/link", headers=acme.headers).json()["status"] == "paused"
    client.post("/link/resume", headers=acme.headers)
    assert client.post("/link", json={"url": calendar}, headers=acme.headers).status_code == 409
    unlinked = client.delete("/link", headers=acme.headers).json()
    assert unlinked["status"] == "unlinked"
    assert link(client, acme, calendar).status_code == 201

    entries = client.get("/link/history", headers=acme.headers).json()["entries"]
    assert [e["type"] for e in entries] == [
        "Linked",
        "CalendarChosen",
        "Paused",
        "Resumed",
        "Unlinked",
        "Relinked",
        "CalendarChosen",
    ]
    assert all(e["actor"] == "token:acme/default" and e["origin"] == "api" for e in entries)
    assert entries[2]["changes"]["pause_reason"] == {"old": None, "new": "holiday"}


def test_another_account_cannot_see_the_link_but_an_operator_can(
    client: TestClient, container: Container, acme: Tenant, globex: Tenant, calendar: str
) -> None:
    assert link(client, acme, calendar).status_code == 201
    assert client.get("/link", headers=globex.headers).status_code == 404
    assert client.get("/link?account=acme", headers=globex.headers).status_code == 404
    ops = container.accounts.issue_token(None, "ops", operator()).secret
    seen = client.get("/link?account=acme", headers={"Authorization": f"Bearer {ops}"})
    assert seen.status_code == 200 and seen.json()["calendar_url"] == calendar


def test_rotating_credentials_checks_them_first(
    client: TestClient, container: Container, acme: Tenant, calendar: str
) -> None:
    assert link(client, acme, calendar).status_code == 201
    bad = client.put(
        "/link/credentials", json={"username": "alice", "password": "nope"}, headers=acme.headers
    )
    assert bad.status_code == 422 and bad.json()["field"] == "password"
    assert client.post("/link/test", headers=acme.headers).json()["ok"] is True
    good = client.put(
        "/link/credentials", json={"username": "alice", "password": "secret"}, headers=acme.headers
    )
    assert good.status_code == 200
    types = [e["type"] for e in client.get("/link/history", headers=acme.headers).json()["entries"]]
    assert types.count("CredentialsRotated") == 1


def test_secret_key_rotation_reseals_without_relinking(
    tmp_path: Path, database_url: str, calendar: str
) -> None:
    old, new = new_key(), new_key()

    def build(keys: str) -> Container:
        return bootstrap(
            load_settings(database_url=database_url, secret_keys=keys, allow_private_addresses=True)
        )

    first = build(old)
    first.accounts.open_account("acme", operator())
    account_id = first.accounts.find_account("acme").id
    first.links.link(account_id, calendar, Credentials("alice", "secret"), operator())
    first.close()

    rotating = build(f"{new},{old}")
    assert rotating.links.rotate_key() == (1, 1)
    assert rotating.links.rotate_key() == (0, 1)
    rotating.close()

    only_new = build(new)
    assert only_new.links.test(account_id)["ok"] is True
    only_new.close()
    only_old = build(old)
    stored = only_old.journal.repository.get(CalendarLink.id_for(account_id))
    with pytest.raises(LinkFailedError, match="not configured"):
        only_old.links.access(stored)
    only_old.close()


def test_no_secret_in_logs_journal_or_any_response(
    client: TestClient,
    container: Container,
    acme: Tenant,
    calendar: str,
    caplog: pytest.LogCaptureFixture,
    radicale: RadicaleProcess,
) -> None:
    password = "secret"  # alice's password on the test server
    caplog.set_level(logging.DEBUG)
    responses = [
        link(client, acme, radicale.url),
        client.get("/link", headers=acme.headers),
        client.get("/link/calendars", headers=acme.headers),
        client.put("/link/calendar", json={"calendar_url": calendar}, headers=acme.headers),
        client.post("/link/test", headers=acme.headers),
        client.put(
            "/link/credentials",
            json={"username": "alice", "password": "nope"},
            headers=acme.headers,
        ),
        client.put(
            "/link/credentials",
            json={"username": "alice", "password": password},
            headers=acme.headers,
        ),
        client.get("/link/history", headers=acme.headers),
        client.post("/link/pause", headers=acme.headers),
        client.delete("/link", headers=acme.headers),
        client.get("/openapi.json"),
    ]
    assert [r.status_code for r in responses][:5] == [201, 200, 200, 200, 200]
    import base64

    needles = [password, base64.b64encode(b"alice:secret").decode(), "nope"]
    for response in responses:
        blob = response.text + repr(dict(response.headers))
        for needle in needles[:2]:
            assert needle not in blob, response.request.url
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    assert caplog.records, "expected the HTTP libraries to log at DEBUG"
    for needle in needles:
        assert needle not in logged
    recorder = container.journal.recorder
    for notification in recorder.select_notifications(start=None, limit=10_000):
        for needle in needles:
            assert needle.encode() not in notification.state


def test_tls_failure_is_named(client: TestClient, acme: Tenant, radicale: RadicaleProcess) -> None:
    # Radicale speaks plain http: an https URL to it fails in the TLS handshake.
    response = link(client, acme, f"https://127.0.0.1:{radicale.port}/alice/")
    assert response.status_code == 422
    assert "TLS connection failed" in response.json()["message"]


@pytest.fixture
def redirecting_server() -> Iterator[tuple[str, list[str]]]:
    """A server that redirects every request to the same port on another host name."""
    seen: list[str] = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def _go(self) -> None:
            seen.append(self.command)
            self.send_response(301)
            self.send_header("Location", f"http://localhost:{self.server.server_address[1]}/x/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PROPFIND = _go  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cal/", seen
    server.shutdown()


def test_redirect_to_another_host_is_refused(
    client: TestClient, acme: Tenant, redirecting_server: tuple[str, list[str]]
) -> None:
    url, seen = redirecting_server
    response = link(client, acme, url)
    assert response.status_code == 422
    assert "does not follow redirects to another host" in response.json()["message"]
    assert seen, "the server was asked at least once"


def test_test_reports_a_calendar_that_disappeared(
    client: TestClient, acme: Tenant, radicale: RadicaleProcess
) -> None:
    cal_id = f"gone-{uuid.uuid4().hex[:6]}"
    doomed = radicale.make_calendar("alice", "secret", "Doomed", cal_id=cal_id)
    assert link(client, acme, f"{radicale.url}alice/{cal_id}/").status_code == 201
    doomed.delete()
    outcome = client.post("/link/test", headers=acme.headers).json()
    assert outcome["ok"] is False
    assert outcome["message"].startswith("Not found while opening the calendar")


def test_link_commands_at_the_command_line(
    tmp_path: Path, radicale: RadicaleProcess, calendar: str
) -> None:
    from tests.integration.test_cli import default_journal, run

    env = {"CALJOURNAL_ALLOW_PRIVATE_ADDRESSES": "true"}
    assert run(["account", "create", "acme"], tmp_path, **env).returncode == 0
    no_secret = run(["link", "add", "acme", calendar, "--username", "alice"], tmp_path, **env)
    assert no_secret.returncode == 1 and "--password-stdin" in no_secret.stderr
    added = run_stdin(
        ["link", "add", "acme", calendar, "--username", "alice", "--password-stdin"],
        tmp_path,
        "secret\n",
        **env,
    )
    assert added.returncode == 0, added.stderr
    assert "kept the calendar URL as given" in added.stdout
    assert "secret" not in added.stdout + added.stderr
    tested = run(["link", "test", "acme"], tmp_path, **env)
    assert tested.returncode == 0 and "Created and deleted a test event" in tested.stdout
    shown = run(["link", "show", "acme", "--json"], tmp_path, **env)
    assert '"status": "active"' in shown.stdout
    assert run(["link", "remove", "acme", "--yes"], tmp_path, **env).returncode == 0
    assert default_journal(tmp_path).with_name("caljournal.key").stat().st_mode & 0o777 == 0o600
    rotated = run(["secrets", "rotate-key"], tmp_path, **env)
    assert rotated.returncode == 0 and "re-sealed 0 of 1" in rotated.stderr


def run_stdin(args: list[str], cwd: Path, stdin: str, **env: str) -> Any:
    import os
    import subprocess
    import sys

    from tests.integration.test_cli import data_home

    environment = {k: v for k, v in os.environ.items() if not k.startswith("CALJOURNAL_")}
    environment["XDG_DATA_HOME"] = str(data_home(cwd))
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "caljournal", *args],
        cwd=cwd,
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )

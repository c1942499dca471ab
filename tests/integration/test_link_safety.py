"""Linking safely: the address guard before any connection, sealed URL secrets, clear input errors.

Refused addresses are proved unreached twice: a real listening loopback socket
records whether anything connected, and a ``socket.connect`` audit hook
records every connection attempt the process makes, to any port.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from caljournal.adapters import discovery
from caljournal.api.app import create_app
from caljournal.bootstrap import Container, bootstrap
from caljournal.settings import load_settings
from tests.conftest import Tenant, open_tenant

_AUDIT: dict[str, list[Any]] = {"connects": []}
_AUDIT_LOCK = threading.Lock()
_AUDIT_ON = threading.Event()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _AUDIT_ON.is_set():
        with _AUDIT_LOCK:
            _AUDIT["connects"].append(args[1])


sys.addaudithook(_audit)


@pytest.fixture
def connects() -> Iterator[list[Any]]:
    """Record the address of every socket connection attempted during the test."""
    with _AUDIT_LOCK:
        _AUDIT["connects"] = []
    _AUDIT_ON.set()
    yield _AUDIT["connects"]
    _AUDIT_ON.clear()


class Listener:
    """A real listening socket that counts the connections it accepted."""

    def __init__(self, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        # shutdown() wakes the blocked accept(); close() alone would not.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[Container]:
    """Return a container that refuses private addresses, as a multi-tenant deployment does."""
    built = bootstrap(
        load_settings(
            database_url=f"sqlite:///{tmp_path / 'strict.sqlite'}",
            secret_key_file=tmp_path / "strict.key",
            caldav_timeout=10,
        )
    )
    yield built
    built.close()


@pytest.fixture
def strict_client(strict: Container) -> Iterator[TestClient]:
    with TestClient(create_app(strict)) as client:
        yield client


def _link(client: TestClient, tenant: Tenant, url: str, **extra: Any) -> Any:
    body = {"url": url, "username": "alice", "password": "secret", **extra}
    return client.post("/link", json=body, headers=tenant.headers)


def _is_refused_target(address: Any) -> bool:
    host = str(address[0]) if isinstance(address, tuple) else str(address)
    return host in ("127.0.0.1", "::1", "169.254.169.254") or host.startswith("::ffff:127.")


@pytest.mark.parametrize(
    "template",
    [
        "127.0.0.1:{v4}",
        "localhost:{v4}",
        "[::1]:{v6}",
        "http://127.0.0.1:{v4}/",
        "user@127.0.0.1",
        "localhost",
        "[::1]",
        "169.254.169.254",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_a_refused_address_is_refused_before_any_connection(
    strict: Container, strict_client: TestClient, connects: list[Any], template: str
) -> None:
    tenant = open_tenant(strict, "acme")
    v4, v6 = Listener("127.0.0.1"), Listener("::1")
    try:
        response = _link(strict_client, tenant, template.format(v4=v4.port, v6=v6.port))
    finally:
        v4.close()
        v6.close()
    assert (v4.accepted, v6.accepted) == (0, 0)
    assert [a for a in connects if _is_refused_target(a)] == []
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "url"
    assert "refused" in body["message"].lower()
    assert "resolves" not in body["message"]


def test_a_refusal_never_says_what_a_name_resolves_to(
    strict: Container, strict_client: TestClient
) -> None:
    tenant = open_tenant(strict, "acme")
    message = _link(strict_client, tenant, "http://localhost:1/cal/").json()["message"]
    assert message == "Refused to connect to localhost: it is not a public address."
    assert "127.0.0.1" not in message and "::1" not in message and "loopback" not in message


class _SRV:
    def __init__(self, target: str, port: int) -> None:
        self.target, self.port, self.priority, self.weight = target, port, 0, 0


def test_an_srv_target_on_a_refused_address_is_never_contacted(
    strict: Container,
    strict_client: TestClient,
    connects: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listener = Listener("127.0.0.1")
    records = {
        "_caldavs._tcp.example.test": [_SRV("127.0.0.1.", listener.port)],
        "_caldav._tcp.example.test": [_SRV("localhost.", listener.port)],
    }

    def fake_dns(name: str, kind: str, timeout: float) -> Any:
        import dns.resolver

        if kind == "SRV" and name in records:
            return records[name]
        raise dns.resolver.NXDOMAIN()

    monkeypatch.setattr(discovery, "_resolve", fake_dns)
    tenant = open_tenant(strict, "acme")
    try:
        response = _link(strict_client, tenant, "anna@example.test")
    finally:
        listener.close()
    assert response.status_code == 422
    message = response.json()["message"]
    assert "SRV record's target was skipped: refused" in message
    assert "refused to connect to localhost: it is not a public address" in message
    assert listener.accepted == 0
    assert [a for a in connects if _is_refused_target(a)] == []


def test_missing_username_or_password_is_a_422_naming_the_field(
    client: TestClient, acme: Tenant, radicale: Any
) -> None:
    url = f"{radicale.url}alice/shared/"
    cases = [
        ({"url": url}, "username"),
        ({"url": url, "password": "secret"}, "username"),
        ({"url": url, "username": "alice"}, "password"),
        ({"url": url, "username": "alice", "password": ""}, "password"),
        ({"url": url, "auth": "none", "username": "alice", "password": "x"}, "auth"),
        ({"url": url, "auth": "kerberos", "username": "alice", "password": "x"}, "auth"),
    ]
    for body, field in cases:
        response = client.post("/link", json=body, headers=acme.headers)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["field"] == field, (body, response.json())
    assert client.get("/link", headers=acme.headers).status_code == 404

    calendar = f"cal-{uuid.uuid4().hex[:8]}"
    radicale.make_calendar("alice", "secret", "Work", cal_id=calendar)
    assert _link(client, acme, f"{radicale.url}alice/{calendar}/").status_code == 201
    for body, field in [({}, "username"), ({"username": "alice"}, "password")]:
        response = client.put("/link/credentials", json=body, headers=acme.headers)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["field"] == field
    assert client.post("/link/test", headers=acme.headers).json()["ok"] is True


def test_an_open_and_a_closed_local_port_get_the_same_answer(
    strict: Container, strict_client: TestClient, connects: list[Any]
) -> None:
    tenant = open_tenant(strict, "acme")
    listener = Listener("127.0.0.1")
    closed = Listener("127.0.0.1")
    closed.close()
    try:
        answers = [
            _link(strict_client, tenant, f"127.0.0.1:{port}").json()["message"]
            for port in (listener.port, closed.port)
        ]
    finally:
        listener.close()
    assert listener.accepted == 0
    assert [a for a in connects if _is_refused_target(a)] == []
    assert answers[0].replace(str(listener.port), "PORT") == answers[1].replace(
        str(closed.port), "PORT"
    )


def test_a_secret_in_the_url_never_shows_in_an_error(
    strict: Container, strict_client: TestClient
) -> None:
    tenant = open_tenant(strict, "acme")
    secret = f"tok-{uuid.uuid4().hex}"
    for url in (f"http://127.0.0.1:1/cal/?token={secret}", f"https://nowhere.invalid/?k={secret}"):
        response = _link(strict_client, tenant, url)
        assert response.status_code == 422
        assert secret not in response.text

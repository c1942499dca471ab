"""Shared fixtures: a journal on SQLite and on PostgreSQL, an API client, accounts.

PostgreSQL is required: when it cannot be reached the tests that need it fail
with a message saying so; they never skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from caljournal.api.app import create_app
from caljournal.bootstrap import Container, bootstrap
from caljournal.domain.cause import Cause, Origin
from caljournal.settings import load_settings
from tests.support.radicale import RadicaleProcess, read_only_share_rights
from tests.support.xandikos import XandikosProcess

PG_URL = os.environ.get("CALJOURNAL_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/test")


def operator() -> Cause:
    """Return a cause for changes made by the test suite as operator."""
    return Cause(Origin.OPERATOR, "operator:tests", f"test-{uuid.uuid4()}")


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[psycopg.Connection]:
    """Return an autocommit connection to the test PostgreSQL server (or fail)."""
    try:
        conn = psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is required at {PG_URL} but cannot be reached ({exc}); "
            "start it with: pg_ctlcluster --skip-systemctl-redirect "
            "$(ls /etc/postgresql) main start"
        )
    yield conn
    conn.close()


@pytest.fixture
def pg_url(pg_admin: psycopg.Connection) -> Iterator[str]:
    """Return a PostgreSQL URL whose schema is new and dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    pg_admin.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{PG_URL}?schema={schema}"
    pg_admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def sqlite_url(tmp_path: Path) -> str:
    """Return an SQLite URL of a fresh file in ``tmp_path``."""
    return f"sqlite:///{tmp_path / 'journal.sqlite'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return a fresh database URL, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def container(database_url: str, tmp_path: Path) -> Iterator[Container]:
    """Return a container on a fresh journal (loopback calendar servers allowed)."""
    built = bootstrap(
        load_settings(
            database_url=database_url,
            secret_key_file=tmp_path / "caljournal.key",
            allow_private_addresses=True,
            caldav_timeout=10,
        )
    )
    yield built
    built.close()


@dataclass
class Tenant:
    """An account and a bearer header for it."""

    name: str
    account_id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """Return the Authorization header of the account's token."""
        return {"Authorization": f"Bearer {self.token}"}


def open_tenant(container: Container, name: str) -> Tenant:
    """Open an account and return it with its first token."""
    issued = container.accounts.open_account(name, operator())
    return Tenant(name, container.accounts.find_account(name).id, issued.secret)


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    """Return an in-process HTTP client of the API."""
    with TestClient(create_app(container)) as test_client:
        yield test_client


@pytest.fixture
def acme(container: Container) -> Tenant:
    """Return the account 'acme'."""
    return open_tenant(container, "acme")


@pytest.fixture
def globex(container: Container) -> Tenant:
    """Return the account 'globex'."""
    return open_tenant(container, "globex")


@pytest.fixture(scope="session")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadicaleProcess]:
    """Return a real Radicale server for the session (users alice, bob, reader)."""
    base = tmp_path_factory.mktemp("radicale")
    rights = read_only_share_rights(owner="alice", calendar="shared", reader="reader")
    users = {"alice": "secret", "bob": "hunter2", "reader": "readonly"}
    with RadicaleProcess(base, users=users, rights_file_content=rights) as server:
        server.make_calendar("alice", "secret", "Shared", cal_id="shared")
        yield server


@pytest.fixture(scope="session")
def xandikos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XandikosProcess]:
    """Return a real Xandikos server for the session (one user, no authentication)."""
    with XandikosProcess(tmp_path_factory.mktemp("xandikos")) as server:
        yield server

"""Commands load only the libraries they use, so ``caljournal --help`` and the reads start at once.

Each command runs as a real process under ``python -X importtime``; the test
reads which top-level packages it imported. It checks the set of modules, not
the time: ``scripts/bench_cli.py`` measures the time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from caljournal.bootstrap import Container, bootstrap
from caljournal.domain.cause import Cause, Origin
from caljournal.domain.link import CalendarLink
from caljournal.settings import load_settings

# What no command below may load: the API server, the CalDAV client and its HTTP
# stack, the iCalendar parser and the metrics library.
SERVER_SIDE = {
    "fastapi",
    "starlette",
    "uvicorn",
    "caldav",
    "niquests",
    "icalendar",
    "recurring_ical_events",
    "lxml",
    "prometheus_client",
}
# What ``--help`` needs on top of nothing: the journal, the settings and the database drivers.
JOURNAL_SIDE = {
    "eventsourcing",
    "pydantic",
    "pydantic_settings",
    "psycopg",
    "psycopg_pool",
    "sqlite3",
    "tenacity",
    "cryptography",
    "Crypto",
    "orjson",
}
# What a command on an SQLite journal never needs.
POSTGRES_SIDE = {"psycopg", "psycopg_pool"}
OPERATOR = Cause(Origin.OPERATOR, "operator:test", "test-cli-imports")
_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$")


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Yield a folder holding an SQLite journal with the account ``acme``, linked to a calendar."""
    folder = tmp_path_factory.mktemp("cli-imports")
    container = _open(folder)
    try:
        container.accounts.open_account("acme", OPERATOR)
        account_id = container.accounts.find_account("acme").id
        link = CalendarLink.link(
            account_id=account_id,
            server_url="https://dav.example.org/calendars/acme/",
            username="acme",
            auth="basic",
            provider="generic",
            resolution="kept the calendar URL as given",
            cause=OPERATOR,
        )
        link.choose_calendar(
            calendar_url="https://dav.example.org/calendars/acme/work/",
            name="Work",
            sync_tokens=True,
            chosen_at=datetime.now(UTC),
            cause=OPERATOR,
        )
        container.journal.save(link)
    finally:
        container.close()
    yield folder


def _open(folder: Path) -> Container:
    return bootstrap(
        load_settings(
            database_url=f"sqlite:///{folder / 'caljournal.sqlite'}",
            secret_key_file=folder / "caljournal.key",
        )
    )


def imported(
    folder: Path, *args: str, **settings: str
) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Run ``caljournal ARGS`` on the journal in ``folder``; return the modules it imported."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CALJOURNAL_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(settings)
    env["CALJOURNAL_DATABASE_URL"] = f"sqlite:///{folder / 'caljournal.sqlite'}"
    env["CALJOURNAL_SECRET_KEY_FILE"] = str(folder / "caljournal.key")
    env["XDG_DATA_HOME"] = str(folder / "data-home")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "caljournal", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    modules = {
        match.group(1) for line in result.stderr.splitlines() if (match := _LINE.match(line))
    }
    assert "caljournal" in modules, result.stderr[-2000:]
    return modules, result


def packages(modules: set[str]) -> set[str]:
    """Return the top-level packages of ``modules``."""
    return {module.split(".")[0] for module in modules}


def test_help_loads_neither_the_journal_nor_the_settings_nor_any_server_library(
    journal: Path,
) -> None:
    modules, result = imported(journal, "--help")

    assert result.returncode == 0, result.stderr[-2000:]
    assert "status" in result.stdout and "rebuild-read-models" in result.stdout
    assert packages(modules) & (SERVER_SIDE | JOURNAL_SIDE) == set()


@pytest.mark.parametrize(
    "args",
    [
        ("status", "acme"),
        ("status", "acme", "--json"),
        ("status",),
        ("account", "list"),
        ("token", "list", "--account", "acme"),
    ],
    ids=" ".join,
)
def test_reading_commands_load_no_server_library(journal: Path, args: tuple[str, ...]) -> None:
    modules, result = imported(journal, *args)

    assert result.returncode == 0, result.stderr[-2000:]
    assert packages(modules) & SERVER_SIDE == set()
    # The journal is SQLite: neither PostgreSQL's driver nor its recorder loads.
    assert packages(modules) & POSTGRES_SIDE == set()
    assert "eventsourcing.postgres" not in modules


def test_one_accounts_status_is_read_without_the_calendar_server(journal: Path) -> None:
    modules, result = imported(journal, "status", "acme", "--json")

    assert result.returncode == 0, result.stderr[-2000:]
    assert '"link_status": "active"' in result.stdout
    assert '"calendar_url": "https://dav.example.org/calendars/acme/work/"' in result.stdout
    assert {
        "caljournal.sync",
        "caljournal.links",
        "caljournal.adapters.transport",
    } & modules == set()
    # A read of the query tables: no aggregate, so no event class is built.
    assert {
        "caljournal.domain.account",
        "caljournal.domain.appointment",
        "caljournal.domain.link",
        "caljournal.domain.quarantine",
    } & modules == set()


def test_status_of_an_unknown_account_names_it(journal: Path) -> None:
    _, result = imported(journal, "status", "nobody")

    assert result.returncode == 1
    assert "error: no account named 'nobody'" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_account_without_a_link_is_still_reported_as_having_none(journal: Path) -> None:
    container = _open(journal)
    try:
        container.accounts.open_account("unlinked", OPERATOR)
    finally:
        container.close()

    _, result = imported(journal, "status", "unlinked")

    assert result.returncode == 1
    assert "error: this account has no calendar link" in result.stderr


def test_an_unusable_credentials_key_is_one_line_of_error_without_a_traceback(
    journal: Path,
) -> None:
    modules, result = imported(journal, "secrets", "rotate-key", CALJOURNAL_SECRET_KEYS="not-a-key")

    assert result.returncode == 2
    assert "error: secret key #1 is not base64" in result.stderr
    assert "Traceback" not in result.stderr
    assert "caljournal.adapters.secrets" in modules


def test_the_help_names_the_operators_chain_as_the_audit_chain_does() -> None:
    from caljournal.adapters.audit_chain import OPERATORS as CHAIN
    from caljournal.scripts.audit_verify_cli import OPERATORS

    assert OPERATORS == CHAIN


def test_racing_threads_get_one_instance_of_each_service(journal: Path) -> None:
    container = _open(journal)
    names = ("sync_state", "accounts", "appointments", "erasure", "links", "sync", "resyncs")
    seen: dict[str, list[object]] = {name: [] for name in names}
    start = threading.Barrier(4)

    def use() -> None:
        start.wait(timeout=60)
        for name in reversed(names):
            seen[name].append(getattr(container, name))

    try:
        threads = [threading.Thread(target=use) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert all(not thread.is_alive() for thread in threads)
        for name in names:
            assert len(seen[name]) == 4
            assert all(service is seen[name][0] for service in seen[name]), name
        assert container.sync.links is container.links
    finally:
        container.close()


def test_the_postgresql_recorder_is_named_by_its_topic() -> None:
    from eventsourcing.utils import get_topic, resolve_topic

    from caljournal.adapters.journal import POSTGRES_RECORDER_TOPIC
    from caljournal.adapters.recorders_pg import PostgresJournalRecorder

    assert resolve_topic(POSTGRES_RECORDER_TOPIC) is PostgresJournalRecorder
    assert get_topic(PostgresJournalRecorder) == POSTGRES_RECORDER_TOPIC


_DECODE_ALONE = """
import sys
from uuid import UUID
from caljournal.adapters.journal import open_journal
from caljournal.settings import load_settings

settings = load_settings()
journal = open_journal(settings)
assert "caljournal.domain.link" not in sys.modules, "the journal loaded the event classes early"
link = journal.repository.get(UUID(sys.argv[1]))
notifications = journal.notification_log.select(1, 10)
events = [journal.mapper.to_domain_event(n) for n in notifications]
print(type(link).__name__, link.status, len(events))
"""


def test_a_process_that_opens_only_the_journal_decodes_its_events(journal: Path) -> None:
    """The event classes load when the first event is decoded, so their topics resolve."""
    container = _open(journal)
    try:
        account_id = container.accounts.find_account("acme").id
    finally:
        container.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALJOURNAL_")}
    env["CALJOURNAL_DATABASE_URL"] = f"sqlite:///{journal / 'caljournal.sqlite'}"
    env["CALJOURNAL_SECRET_KEY_FILE"] = str(journal / "caljournal.key")

    result = subprocess.run(
        [sys.executable, "-c", _DECODE_ALONE, str(CalendarLink.id_for(account_id))],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    name, status, count = result.stdout.split()
    assert (name, status) == ("CalendarLink", "active")
    assert int(count) >= 3  # the account's opening, the link and its calendar

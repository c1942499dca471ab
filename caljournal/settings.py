"""The one settings object, read from ``CALJOURNAL_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import platformdirs
from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from caljournal.adapters.transport import TransferLimits

JOURNAL_FILE = "caljournal.sqlite"
KEY_FILE = "caljournal.key"


class ConfigurationError(Exception):
    """The configuration cannot be used; the message says what to fix."""


def data_dir() -> Path:
    """Return the per-user data directory (``$XDG_DATA_HOME/caljournal`` on Linux)."""
    return Path(platformdirs.user_data_dir("caljournal", appauthor=False))


class Settings(BaseSettings):
    """Configuration of one caljournal process."""

    model_config = SettingsConfigDict(env_prefix="CALJOURNAL_", extra="ignore")

    database_url: str = Field(
        default="",
        description="sqlite:///PATH (relative to the working directory) or "
        "postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?schema=NAME]; unset: "
        "caljournal.sqlite in the per-user data directory, or ./caljournal.sqlite "
        "where that file exists already",
    )
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_lock_timeout: int = Field(default=10, ge=1, le=600, description="seconds")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    journal_cipher_key: SecretStr | None = Field(
        default=None, description="base64 AES key that encrypts the journal's event state"
    )
    max_request_bytes: int = Field(default=1_000_000, ge=1_000)
    secret_keys: SecretStr | None = Field(
        default=None,
        description="comma-separated base64 AES keys sealing calendar credentials; the first "
        "seals, all open (for rotation). Unset: a key file is used",
    )
    secret_key_file: Path | None = Field(
        default=None,
        description="local key file, created 0600 when missing; unset: ./caljournal.key "
        "where that file exists already, else caljournal.key beside an SQLite journal, "
        "else in the per-user data directory",
    )
    allow_private_addresses: bool = Field(
        default=False,
        description="allow calendar servers on loopback and private networks (never link-local)",
    )
    verify_tls: bool = True
    caldav_timeout: float = Field(
        default=15.0, gt=0, le=300, description="seconds to connect, and between two reads"
    )
    caldav_request_deadline: float = Field(
        default=60.0, gt=0, le=3600, description="seconds one calendar-server request may take"
    )
    caldav_listing_deadline: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="seconds a full listing of a calendar (first sync) may take",
    )
    caldav_link_deadline: float = Field(
        default=90.0,
        gt=0,
        le=3600,
        description="seconds one link operation (discovery, connection test) may take in all",
    )
    caldav_max_discovery_bytes: int = Field(
        default=4 * 1024 * 1024, ge=64 * 1024, description="largest discovery answer read"
    )
    caldav_max_listing_bytes: int = Field(
        default=32 * 1024 * 1024, ge=64 * 1024, description="largest calendar listing read"
    )
    caldav_max_multiget_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=64 * 1024,
        description="largest answer to one batch load of objects read",
    )
    caldav_max_object_bytes: int = Field(
        default=8 * 1024 * 1024, ge=64 * 1024, description="largest single object answer read"
    )
    link_operations_per_account: int = Field(
        default=2,
        ge=1,
        le=50,
        description="link operations that talk to a calendar server (link, calendars, test, "
        "credentials) one account may run at once; more are answered 429",
    )
    link_operation_threads: int = Field(
        default=16,
        ge=1,
        le=200,
        description="threads of the API that run link operations, apart from all other calls",
    )
    caldav_retry_budget: float = Field(
        default=300.0,
        ge=1,
        le=86_400,
        description="seconds a backfill or replay keeps retrying one request through transient "
        "server faults (5xx, 429, resets, timeouts) before it stops",
    )
    calendar_check_interval: float = Field(
        default=900.0,
        ge=10,
        le=7 * 86_400,
        description="seconds between full comparisons of a calendar's href/ETag listing with "
        "the copy records, whatever the server's sync delta says",
    )
    calendar_check_spacing: float = Field(
        default=60.0,
        ge=0,
        le=86_400,
        description="at least this many seconds between two full comparisons; a poll after "
        "caljournal's own writes compares as soon as this much time has passed",
    )
    worker_lease_ttl: float = Field(
        default=10.0, ge=1.0, le=600, description="seconds a dead worker keeps its accounts"
    )
    worker_poll: float = Field(
        default=0.1, gt=0, le=10, description="seconds between journal polls on SQLite"
    )
    worker_pool: int = Field(
        default=8,
        ge=1,
        le=256,
        description="threads a worker runs its accounts' pushes and polls in; one server "
        "gets at most half of them",
    )
    parse_processes: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="helper processes that parse the objects of large polls (a first import) "
        "ahead of the poll; 0 parses in the poll's thread (default: 1 on a machine with two "
        "or more CPUs, else 0)",
    )
    token_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="seconds the API trusts a checked token before looking it up again; a "
        "revocation by another process takes effect within this time (0: every request)",
    )
    api_threads: int | None = Field(
        default=None,
        ge=1,
        le=200,
        description="threads for the API's journal calls when they are not inline "
        "(default: twice the CPU count, at most the database pool size)",
    )
    api_commands: Literal["auto", "inline", "threads"] = Field(
        default="auto",
        description="where the API runs journal calls: on the event loop (inline), in worker "
        "threads, or auto (inline on SQLite, threads on PostgreSQL)",
    )

    log_format: Literal["auto", "json", "human"] = Field(
        default="auto",
        description="log lines as JSON objects, human-readable, or auto (JSON unless stderr "
        "is a terminal)",
    )
    metrics_top_accounts: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="accounts with the largest lag that /metrics names in "
        "caljournal_account_lag_seconds (all accounts are in caljournal_lag_seconds)",
    )

    _journal_origin: str = PrivateAttr(default="from CALJOURNAL_DATABASE_URL")
    _data_dir: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _fill_in_locations(self) -> Settings:
        # Files in the working directory are used where they exist, as before
        # the per-user default, so an existing installation keeps its journal.
        if not self.database_url:
            legacy = Path(JOURNAL_FILE)
            if legacy.is_file():
                journal = legacy.resolve()
                self._journal_origin = (
                    f"found in the working directory; new installations use "
                    f"{data_dir() / JOURNAL_FILE}"
                )
            else:
                journal = data_dir() / JOURNAL_FILE
                self._journal_origin = "the per-user default"
                self._data_dir = data_dir()
            self.database_url = f"sqlite:///{journal}"
        if self.secret_key_file is None:
            journal_path = self.sqlite_path
            if Path(KEY_FILE).is_file():
                self.secret_key_file = Path(KEY_FILE).resolve()
            elif journal_path is not None:
                self.secret_key_file = journal_path.parent / KEY_FILE
            else:
                self.secret_key_file = data_dir() / KEY_FILE
                if self.secret_keys is None:  # the file will be used, and maybe created
                    self._data_dir = data_dir()
        return self

    @property
    def key_file(self) -> Path:
        """Return the local key file (see ``secret_key_file``)."""
        assert self.secret_key_file is not None  # filled in by the validator
        return self.secret_key_file

    @property
    def sqlite_path(self) -> Path | None:
        """Return the SQLite journal's file (absolute), or None for PostgreSQL or memory."""
        parts = urlsplit(self.database_url)
        name = unquote(parts.path)[1:]
        if parts.scheme != "sqlite" or not name or name == ":memory:" or name.startswith("file:"):
            return None  # PostgreSQL, in memory, or an SQLite URI filename
        return Path(name).expanduser().resolve()

    @property
    def journal_description(self) -> str:
        """Return which journal this process uses, for people (no password)."""
        path = self.sqlite_path
        if path is not None:
            where = str(path)
        elif self.database_url.startswith("sqlite"):
            where = "SQLite in memory"
        else:
            where = _redact(self.database_url)
        return f"{where} ({self._journal_origin})"

    def create_data_dir(self) -> None:
        """Create the per-user data directory (0700) when a default location is in it."""
        if self._data_dir is not None:
            self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    @property
    def transfer_limits(self) -> TransferLimits:
        """Return the size caps and deadlines for calendar-server requests."""
        from caljournal.adapters.transport import TransferLimits

        return TransferLimits(
            discovery_bytes=self.caldav_max_discovery_bytes,
            listing_bytes=self.caldav_max_listing_bytes,
            multiget_bytes=self.caldav_max_multiget_bytes,
            object_bytes=self.caldav_max_object_bytes,
            request_seconds=self.caldav_request_deadline,
            listing_seconds=self.caldav_listing_deadline,
            operation_seconds=self.caldav_link_deadline,
        )

    @property
    def api_thread_count(self) -> int:
        """Return how many threads run the API's journal calls when they are not inline.

        By default twice the CPU count, and never more than the database pool
        has connections. The threads only help while calls wait on PostgreSQL;
        more of them contend for the GIL and for the journal's insert lock
        (8 clients on 2 cores: API/raw 0.52 with 10 threads, 0.58 with 4, 0.60
        with 2; see ``scripts/bench_api.py``).
        """
        if self.api_threads is not None:
            return self.api_threads
        return max(1, min(self.database_pool_size, 2 * (os.cpu_count() or 1)))

    @property
    def inline_api_calls(self) -> bool:
        """Return whether the API runs journal calls on its event loop.

        An SQLite call is local file work of a few hundred microseconds, less
        than handing it to a worker thread and back costs (120-400 µs measured
        on a 2-core VM; see ``scripts/bench_api.py``), and SQLite admits one
        writer at a time anyway. PostgreSQL calls wait on the network, so they
        run in worker threads and many requests overlap.
        """
        sqlite = self.database_url.startswith("sqlite")
        return self.api_commands == "inline" or (self.api_commands == "auto" and sqlite)

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value:  # empty: the default, filled in below
            database_config(value)
        return value


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment (``overrides`` win).

    :raises ConfigurationError: naming the variable to fix.
    """
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "CALJOURNAL_" + "_".join(str(p) for p in error["loc"]).upper()
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{name}: {message}")
        raise ConfigurationError("bad configuration: " + "; ".join(problems)) from None
    # The metrics library's own variable, read when it is first imported. The
    # library is loaded only when the variable is set: commands that count
    # nothing (``status``, ``account``, ``token``) start without it.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from caljournal.adapters.metrics import multiprocess_dir_problem

        problem = multiprocess_dir_problem()
        if problem is not None:
            raise ConfigurationError(f"bad configuration: PROMETHEUS_MULTIPROC_DIR: {problem}")
    return settings


def database_config(url: str) -> dict[str, str]:
    """Return the eventsourcing persistence settings for a database URL.

    :raises ValueError: when the URL is neither sqlite:/// nor postgresql://.
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc or not path.startswith("/") or len(path) < 2:
            raise ValueError(
                f"{url!r} is not an SQLite URL; write sqlite:///relative.db or "
                "sqlite:////absolute/path.db"
            )
        # sqlite:///x.db -> "x.db" (relative); sqlite:////abs/x.db -> "/abs/x.db"
        db_path = path[1:]
        if db_path != ":memory:":
            parent = Path(db_path).expanduser().resolve().parent
            if not parent.is_dir():
                raise ValueError(
                    f"the folder {str(parent)!r} of the SQLite database does not exist"
                )
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": db_path}
    if parts.scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        if not parts.hostname or not parts.path.strip("/"):
            raise ValueError(
                f"{_redact(url)!r} needs a host and a database name, e.g. "
                "postgresql://user@127.0.0.1:5432/caljournal"
            )
        schema = parse_qs(parts.query).get("schema", ["public"])[0]
        try:
            port = str(parts.port or 5432)
        except ValueError:
            raise ValueError(f"{_redact(url)!r} has an invalid port") from None
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(parts.path.strip("/")),
            "POSTGRES_HOST": parts.hostname,
            "POSTGRES_PORT": port,
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_SCHEMA": schema,
        }
    raise ValueError(
        f"{_redact(url)!r} is not a supported database URL; use sqlite:///caljournal.sqlite "
        "or postgresql://user@host:5432/dbname"
    )


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url

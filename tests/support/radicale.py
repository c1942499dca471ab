"""Run a real Radicale CalDAV server as a subprocess for integration tests.

Radicale 3.9 has no log-file option: it always logs to stderr.  The server's
stdout and stderr are therefore redirected into ``log_path`` (appended to on
every (re)start).  At the default ``[logging] level = info`` Radicale writes one
line per request when it arrives and one when it is answered::

    [INFO] PUT request for '/alice/cal/x.ics' received from 127.0.0.1 using ...
    [INFO] PUT response status for '/alice/cal/x.ics' in 0.004 seconds: 201 Created

Responses with status 401/404/409/412 and the responses to MKCALENDAR, MKCOL
and PROPPATCH are logged at the custom NOTICE level (between INFO and
WARNING), 5xx responses at CRITICAL; all of them are visible at ``info``.  The
``received`` line is always INFO, so ``info`` is the highest level that still
shows every request; ``warning`` or above hides them.  ``debug`` adds request
and response details and is much noisier.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.ports import free_port
from tests.support.process import ServerProcess, ServerStartError

if TYPE_CHECKING:
    from caldav.collection import Calendar
    from caldav.davclient import DAVClient

__all__ = [
    "DEFAULT_USERS",
    "RadicaleProcess",
    "RadicaleStartError",
    "make_calendar",
    "read_only_share_rights",
]

DEFAULT_USERS: Mapping[str, str] = {"alice": "secret"}

_REQUEST_LINE = re.compile(r"\] (?P<method>[A-Z-]+) request for (?P<path>'[^']*'|\"[^\"]*\")")


class RadicaleStartError(ServerStartError):
    """Raised when the Radicale subprocess does not come up in time."""


class RadicaleProcess(ServerProcess):
    """A Radicale server subprocess on a loopback port, usable as a context manager.

    ``base_dir`` receives the config file, the htpasswd file, the optional rights
    file, the collection storage (``storage/``) and the server log
    (``radicale.log``).  The port is chosen once; :meth:`start` after
    :meth:`stop` or :meth:`kill` reuses it and keeps the stored collections.
    The config, htpasswd and rights files are rewritten from the public
    attributes (``users``, ``max_sync_token_age``, ``extra_config``, ...) on
    every start, so a test may change them between :meth:`stop` and
    :meth:`start`.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        users: Mapping[str, str] | None = None,
        auth_type: str = "htpasswd",
        rights_type: str = "owner_only",
        rights_file_content: str | None = None,
        max_sync_token_age: int | None = None,
        log_level: str = "info",
        port: int | None = None,
        max_connections: int = 20,
        extra_config: Mapping[str, Mapping[str, str]] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        """Prepare (but do not start) a server.

        ``rights_file_content`` switches ``rights_type`` to ``from_file`` and is
        written verbatim to the rights file.  ``max_sync_token_age`` (seconds)
        is only written to the config when given, otherwise Radicale's default
        (2592000 s, 30 days) applies.  ``extra_config`` entries are merged into
        the generated config, section by section, and win over the defaults.
        """
        super().__init__(base_dir, port if port is not None else free_port(), startup_timeout)
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        self.auth_type = auth_type
        self.rights_type = "from_file" if rights_file_content is not None else rights_type
        self.rights_file_content = rights_file_content
        self.max_sync_token_age = max_sync_token_age
        self.log_level = log_level
        self.max_connections = max_connections
        self.extra_config: dict[str, dict[str, str]] = {
            section: dict(options) for section, options in (extra_config or {}).items()
        }
        self._port_fixed = port is not None
        self._ever_started = False

    # -- paths and addresses -------------------------------------------------

    @property
    def port(self) -> int:
        """TCP port the server listens on (stable across restarts)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the server, with a trailing slash."""
        return f"http://127.0.0.1:{self._port}/"

    @property
    def storage_path(self) -> Path:
        """Folder holding Radicale's collections."""
        return self.base_dir / "storage"

    @property
    def config_path(self) -> Path:
        """Generated Radicale config file."""
        return self.base_dir / "radicale.conf"

    @property
    def htpasswd_path(self) -> Path:
        """Plaintext htpasswd file with :attr:`users`."""
        return self.base_dir / "users.htpasswd"

    @property
    def rights_path(self) -> Path:
        """Rights file (only used with ``rights_type == "from_file"``)."""
        return self.base_dir / "rights.ini"

    @property
    def log_path(self) -> Path:
        """File receiving the server's stdout and stderr."""
        return self.base_dir / "radicale.log"

    # -- config ----------------------------------------------------------------

    def config_sections(self) -> dict[str, dict[str, str]]:
        """Return the config that :meth:`start` writes, as sections of options."""
        sections: dict[str, dict[str, str]] = {
            "server": {
                "hosts": f"127.0.0.1:{self._port}",
                "max_connections": str(self.max_connections),
                "delay_on_error": "0",
            },
            "auth": {"type": self.auth_type, "delay": "0"},
            "rights": {"type": self.rights_type},
            "storage": {"filesystem_folder": str(self.storage_path)},
            "web": {"type": "none"},
            "logging": {"level": self.log_level, "mask_passwords": "True"},
        }
        if self.auth_type == "htpasswd":
            sections["auth"]["htpasswd_filename"] = str(self.htpasswd_path)
            sections["auth"]["htpasswd_encryption"] = "plain"
        if self.rights_type == "from_file":
            sections["rights"]["file"] = str(self.rights_path)
        if self.max_sync_token_age is not None:
            sections["storage"]["max_sync_token_age"] = str(self.max_sync_token_age)
        for section, options in self.extra_config.items():
            sections.setdefault(section, {}).update(options)
        return sections

    def _write_files(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.storage_path.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        for section, options in self.config_sections().items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {value}" for key, value in options.items())
            lines.append("")
        self.config_path.write_text("\n".join(lines), encoding="utf-8")
        self.htpasswd_path.write_text(
            "".join(f"{user}:{password}\n" for user, password in self.users.items()),
            encoding="utf-8",
        )
        if self.rights_file_content is not None:
            self.rights_path.write_text(self.rights_file_content, encoding="utf-8")

    # -- lifecycle -------------------------------------------------------------

    name = "Radicale"
    start_error = RadicaleStartError

    def prepare(self) -> None:
        """Write the config, htpasswd and rights files."""
        self._write_files()

    def command(self) -> list[str]:
        """Return the command line that runs Radicale with the generated config."""
        return [sys.executable, "-m", "radicale", "--config", str(self.config_path)]

    def environment(self) -> dict[str, str]:
        """Return the environment without RADICALE_CONFIG, HOME in the base folder."""
        env = {k: v for k, v in os.environ.items() if k != "RADICALE_CONFIG"}
        env["HOME"] = str(self.base_dir)  # hide ~/.config/radicale/config
        return env

    def start(self) -> RadicaleProcess:
        """Start the server (no-op if running) and wait until the port answers."""
        if self.running:
            return self
        attempts = 1 if (self._port_fixed or self._ever_started) else 3
        for attempt in range(attempts):
            try:
                self._spawn_and_wait()
            except RadicaleStartError as exc:
                in_use = "Address already in use" in str(exc)
                if not in_use or attempt == attempts - 1:
                    raise
                self._port = free_port()
                continue
            break
        self._ever_started = True
        return self

    def restart(self) -> RadicaleProcess:
        """Stop and start again on the same port."""
        self.stop()
        return self.start()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RadicaleProcess {self.url} {state} base_dir={str(self.base_dir)!r}>"

    # -- log access --------------------------------------------------------------

    def logged_requests(self, since: int = 0) -> list[tuple[str, str]]:
        """Return ``(method, path)`` of every request Radicale logged as received."""
        return [
            (m.group("method"), m.group("path")[1:-1])
            for m in _REQUEST_LINE.finditer(self.log_text(since))
        ]

    # -- CalDAV helpers ----------------------------------------------------------

    def client(
        self,
        username: str = "alice",
        password: str = "secret",
        *,
        base_url: str | None = None,
        timeout: int | None = None,
    ) -> DAVClient:
        """Return a caldav client for ``username`` (``base_url`` e.g. a proxy URL)."""
        from caldav.davclient import DAVClient

        return DAVClient(
            url=base_url or self.url, username=username, password=password, timeout=timeout
        )

    def make_calendar(
        self,
        username: str = "alice",
        password: str = "secret",
        name: str = "Work",
        *,
        cal_id: str | None = None,
        base_url: str | None = None,
    ) -> Calendar:
        """Create a calendar for ``username`` via the caldav library and return it."""
        return make_calendar(base_url or self.url, username, password, name, cal_id=cal_id)


def make_calendar(
    url: str,
    username: str,
    password: str,
    name: str,
    *,
    cal_id: str | None = None,
    timeout: int | None = None,
) -> Calendar:
    """Create calendar ``name`` in ``username``'s home on the server at ``url``."""
    from caldav.davclient import DAVClient

    client = DAVClient(url=url, username=username, password=password, timeout=timeout)
    principal = client.principal()
    return principal.make_calendar(name=name, cal_id=cal_id)


def read_only_share_rights(*, owner: str, calendar: str, reader: str) -> str:
    """Rights-file content: everyone owns their calendars, ``reader`` may only read
    ``owner``'s calendar ``calendar``.

    Pass it as ``rights_file_content``; the owner creates the calendar, the
    reader then gets 403 on PUT/DELETE there.
    """
    return f"""\
[root]
user: .+
collection:
permissions: R

[principal]
user: .+
collection: {{user}}
permissions: RW

[read-only-share]
user: {re.escape(reader)}
collection: {re.escape(owner)}/{re.escape(calendar)}
permissions: r

[own-calendars]
user: .+
collection: {{user}}/[^/]+
permissions: rw
"""

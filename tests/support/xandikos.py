"""Run a real Xandikos CalDAV server as a subprocess for integration tests.

Xandikos serves one user without authentication over plain HTTP (its
``--htpasswd`` option requires TLS), so clients may send any credentials or
none. ``--defaults`` creates the principal ``/user/`` with a calendar
``/user/calendars/calendar/``; :meth:`XandikosProcess.make_calendar` adds more.

Xandikos behaves differently from Radicale in ways that matter to a sync
engine (see ../shared notes): an expired or bogus sync token is a 412, and a
sync-collection delta does not report an object that was created and deleted
after the client's token.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.ports import free_port
from tests.support.process import ServerProcess, ServerStartError

if TYPE_CHECKING:
    from caldav.collection import Calendar
    from caldav.davclient import DAVClient

__all__ = ["XandikosProcess", "XandikosStartError"]

PRINCIPAL = "/user/"


class XandikosStartError(ServerStartError):
    """Raised when the Xandikos subprocess does not come up in time."""


class XandikosProcess(ServerProcess):
    """A Xandikos server subprocess on a loopback port, usable as a context manager.

    ``base_dir`` holds the collections (``data/``) and the server log
    (``xandikos.log``). The port is chosen once; :meth:`start` after :meth:`stop`
    reuses it and keeps the stored collections.
    """

    name = "Xandikos"
    start_error = XandikosStartError

    def __init__(self, base_dir: str | os.PathLike[str], *, startup_timeout: float = 30.0) -> None:
        """Prepare (but do not start) a server."""
        super().__init__(base_dir, free_port(), startup_timeout)

    @property
    def url(self) -> str:
        """Base URL of the server, with a trailing slash."""
        return f"http://127.0.0.1:{self._port}/"

    @property
    def principal_url(self) -> str:
        """URL of the one user's principal."""
        return f"http://127.0.0.1:{self._port}{PRINCIPAL}"

    @property
    def default_calendar_url(self) -> str:
        """URL of the calendar ``--defaults`` creates."""
        return f"{self.principal_url}calendars/calendar/"

    @property
    def data_path(self) -> Path:
        """Folder holding the collections."""
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        """File receiving the server's stdout and stderr."""
        return self.base_dir / "xandikos.log"

    def prepare(self) -> None:
        """Make the folder of the collections."""
        self.data_path.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        """Return the command line that serves :attr:`data_path` on :attr:`port`."""
        return [
            sys.executable,
            "-m",
            "xandikos",
            "serve",
            "-d",
            str(self.data_path),
            "--defaults",
            "--current-user-principal",
            PRINCIPAL,
            "--no-detect-systemd",
            "-l",
            "127.0.0.1",
            "-p",
            str(self._port),
        ]

    def environment(self) -> dict[str, str]:
        """Return this process's environment with HOME and the state folder in ``base_dir``."""
        env = dict(os.environ)
        env["HOME"] = str(self.base_dir)
        env["XDG_DATA_HOME"] = str(self.base_dir / "state")
        return env

    def start(self) -> XandikosProcess:
        """Start the server (no-op if running) and wait until the port answers.

        :raises XandikosStartError: when the process exits or does not answer in time.
        """
        if self.running:
            return self
        for attempt in range(3):
            try:
                self._spawn_and_wait()
                return self
            except XandikosStartError:
                if attempt == 2:
                    raise
                self._port = free_port()
        return self

    def client(self, *, base_url: str | None = None, timeout: int | None = 60) -> DAVClient:
        """Return a caldav client of the server (``base_url`` e.g. a proxy URL)."""
        from caldav.davclient import DAVClient

        return DAVClient(url=base_url or self.principal_url, timeout=timeout)

    def make_calendar(self, name: str = "Work", *, cal_id: str | None = None) -> Calendar:
        """Create a new calendar in the user's home and return it."""
        principal = self.client().principal()
        return principal.make_calendar(name=name, cal_id=cal_id or uuid.uuid4().hex[:12])

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
import signal
import subprocess
import sys
import time
import uuid
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

from tests.support.ports import free_port, port_accepts

if TYPE_CHECKING:
    from caldav.collection import Calendar
    from caldav.davclient import DAVClient

__all__ = ["XandikosProcess", "XandikosStartError"]

PRINCIPAL = "/user/"


class XandikosStartError(RuntimeError):
    """Raised when the Xandikos subprocess does not come up in time."""


class XandikosProcess:
    """A Xandikos server subprocess on a loopback port, usable as a context manager.

    ``base_dir`` holds the collections (``data/``) and the server log
    (``xandikos.log``). The port is chosen once; :meth:`start` after :meth:`stop`
    reuses it and keeps the stored collections.
    """

    def __init__(self, base_dir: str | os.PathLike[str], *, startup_timeout: float = 30.0) -> None:
        """Prepare (but do not start) a server."""
        self.base_dir = Path(base_dir)
        self.startup_timeout = startup_timeout
        self._port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], XandikosProcess] | None = None

    @property
    def port(self) -> int:
        """TCP port the server listens on."""
        return self._port

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

    @property
    def running(self) -> bool:
        """True while the subprocess is alive."""
        return self._proc is not None and self._proc.poll() is None

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

    def _spawn_and_wait(self) -> None:
        if port_accepts(self._port):
            raise XandikosStartError(f"port {self._port} is already in use")
        self.data_path.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        start_offset = self._log_file.tell()
        env = dict(os.environ)
        env["HOME"] = str(self.base_dir)
        env["XDG_DATA_HOME"] = str(self.base_dir / "state")
        env["PYTHONUNBUFFERED"] = "1"
        self._proc = subprocess.Popen(
            [
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
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=str(self.base_dir),
            env=env,
        )
        self._finalizer = weakref.finalize(self, _kill_quietly, self._proc)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                self._close_log_file()
                raise XandikosStartError(
                    f"Xandikos exited with code {code} during startup on port {self._port}; "
                    f"log tail:\n{self._log_tail(start_offset)}"
                )
            if port_accepts(self._port):
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise XandikosStartError(
                    f"Xandikos did not answer on port {self._port} within "
                    f"{self.startup_timeout:.0f}s; log tail:\n{self._log_tail(start_offset)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM), killing it after ``timeout``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self._proc = None
        self._close_log_file()

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10.0)
        self._proc = None
        self._close_log_file()

    def _close_log_file(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _log_tail(self, since: int = 0, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as fh:
            fh.seek(since)
            text = fh.read().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> XandikosProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<XandikosProcess {self.url} {state}>"

    def client(self, *, base_url: str | None = None, timeout: int | None = 60) -> DAVClient:
        """Return a caldav client of the server (``base_url`` e.g. a proxy URL)."""
        from caldav.davclient import DAVClient

        return DAVClient(url=base_url or self.principal_url, timeout=timeout)

    def make_calendar(self, name: str = "Work", *, cal_id: str | None = None) -> Calendar:
        """Create a new calendar in the user's home and return it."""
        principal = self.client().principal()
        return principal.make_calendar(name=name, cal_id=cal_id or uuid.uuid4().hex[:12])


def _kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10.0)

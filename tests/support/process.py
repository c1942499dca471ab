"""A CalDAV server run as a subprocess on a loopback port, for integration tests.

:class:`ServerProcess` holds what every such server needs: spawning with the
output in a log file, waiting for the port, stop (SIGTERM, then SIGKILL), kill,
a finalizer so a dropped owner never leaves a server behind, and log access.
Subclasses say how to prepare their files and which command and environment
to run (see ``tests/support/radicale.py`` and ``tests/support/xandikos.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from tests.support.ports import port_accepts

__all__ = ["ServerProcess", "ServerStartError"]


class ServerStartError(RuntimeError):
    """Raised when a server subprocess does not come up in time."""


class ServerProcess:
    """A server subprocess listening on ``127.0.0.1:port``; subclasses fill in the command."""

    #: Shown in error messages.
    name = "server"
    #: Raised when the process does not start (a subclass of :class:`ServerStartError`).
    start_error: type[ServerStartError] = ServerStartError

    def __init__(self, base_dir: str | os.PathLike[str], port: int, startup_timeout: float) -> None:
        self.base_dir = Path(base_dir)
        self.startup_timeout = startup_timeout
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], ServerProcess] | None = None

    # -- what a subclass provides ------------------------------------------------

    @property
    def log_path(self) -> Path:
        """File receiving the server's stdout and stderr."""
        raise NotImplementedError

    def command(self) -> list[str]:
        """Return the command line that runs the server on :attr:`port`."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """Return the server's environment (default: this process's)."""
        return dict(os.environ)

    def prepare(self) -> None:
        """Write whatever the server reads at start (config, folders)."""

    # -- state -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """TCP port the server listens on."""
        return self._port

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the subprocess is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ---------------------------------------------------------------------

    def _spawn_and_wait(self) -> None:
        if port_accepts(self._port):
            raise self.start_error(f"port {self._port} is already in use (Address already in use)")
        self.prepare()
        self._close_log_file()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        start_offset = self._log_file.tell()
        env = self.environment()
        env["PYTHONUNBUFFERED"] = "1"
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=str(self.base_dir),
            env=env,
        )
        # Never leave a server behind if the owner is dropped without stop().
        self._finalizer = weakref.finalize(self, _kill_quietly, self._proc)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                self._close_log_file()
                raise self.start_error(
                    f"{self.name} exited with code {code} during startup on port "
                    f"{self._port}; log tail:\n{self._log_tail(start_offset)}"
                )
            if port_accepts(self._port):
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise self.start_error(
                    f"{self.name} did not answer on port {self._port} within "
                    f"{self.startup_timeout:.1f}s; log tail:\n{self._log_tail(start_offset)}"
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
        self._wait_port_released(timeout)

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
        self._wait_port_released(5.0)

    def _wait_port_released(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while port_accepts(self._port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _close_log_file(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        self.start()  # type: ignore[attr-defined]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} 127.0.0.1:{self._port} {state}>"

    # -- log access ----------------------------------------------------------------------

    def log_text(self, since: int = 0) -> str:
        """Return the server log from byte offset ``since`` (see :meth:`log_mark`)."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as fh:
            fh.seek(since)
            return fh.read().decode("utf-8", errors="replace")

    def log_mark(self) -> int:
        """Return the current size of the log, for use as ``since`` later."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def _log_tail(self, since: int = 0, lines: int = 40) -> str:
        return "\n".join(self.log_text(since).splitlines()[-lines:])


def _kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10.0)

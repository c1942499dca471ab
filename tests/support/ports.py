"""Loopback port helpers for tests that start real servers."""

from __future__ import annotations

import socket
from typing import Self

__all__ = ["ClosedOnExit", "free_port", "port_accepts"]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    The port is found by binding to port 0 and closing the socket again, so
    another process may grab it before the caller binds it; callers that start
    a server on it should be ready to retry with a new port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """Return True if a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ClosedOnExit:
    """A test server that is its own context manager: ``with`` closes it at the end."""

    def close(self) -> None:
        """Stop the server."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

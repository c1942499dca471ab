"""The HTTP API served by uvicorn on a free loopback port, in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from caljournal.api.app import create_app
from caljournal.bootstrap import Container
from tests.support.patience import HTTP_TIMEOUT, MIN_WAIT
from tests.support.ports import free_port


@contextmanager
def serve_api(container: Container) -> Iterator[str]:
    """Serve the API over a real socket; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(container), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + MIN_WAIT
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=HTTP_TIMEOUT)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start within {MIN_WAIT:g} s") from None
            time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)

"""An account's lease held by a process that is not a worker (a command's own run).

Workers take and renew leases in their lease keeper (``projections.worker``);
a command that runs a backfill or replay itself holds the account's lease the
same way for the length of the run, so no worker serves the account meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from caljournal.adapters.syncstate import SyncStateStore
from caljournal.errors import ConflictError

log = logging.getLogger("caljournal.lease")


class AccountBusyError(ConflictError):
    """Another process that is not a worker (another command) holds the account's lease."""


def _now_us() -> int:
    return int(time.time() * 1e6)


class Lease:
    """An account's lease held by this process, renewed by a thread until released."""

    def __init__(self, store: SyncStateStore, account_id: str, owner: str, ttl: float) -> None:
        self.store = store
        self.account_id = account_id
        self.owner = owner
        self.ttl = ttl
        self.deadline = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)

    def claim(self) -> bool:
        """Take or renew the lease; return whether this process holds it."""
        asked = time.monotonic()
        if self.store.claim_lease(self.account_id, self.owner, _now_us(), int(self.ttl * 1e6)):
            self.deadline = asked + self.ttl - 1.0
            return True
        return False

    def held(self) -> bool:
        """Return True while the lease is certainly still ours."""
        return time.monotonic() < self.deadline

    def start(self) -> None:
        """Renew the lease in a thread from now on."""
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(max(self.ttl / 5, 0.2)):
            try:
                self.claim()
            except Exception:  # held() turns False in time, and the run stops
                log.exception("renewing the lease on %s failed", self.account_id)

    def release(self) -> None:
        """Stop renewing and give the lease up."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.store.release_lease(self.account_id, self.owner)


@contextmanager
def hold_lease(
    store: SyncStateStore, account_id: str, owner: str, ttl: float, wait: float | None = None
) -> Iterator[Lease]:
    """Hold the account's lease (renewed in a thread) while the block runs.

    A lease held by another process that is not a worker (a command killed
    moments ago) is waited for until it expires, at most ``wait`` seconds
    (default: the lease's time to live and a bit).

    :raises AccountBusyError: when the lease stays taken.
    """
    lease = Lease(store, account_id, owner, ttl)
    deadline = time.monotonic() + (wait if wait is not None else ttl + 2.0)
    while not lease.claim():
        if time.monotonic() >= deadline:
            held = store.leases().get(account_id)
            holder = held.owner if held else "another process"
            raise AccountBusyError(
                f"the account is busy: {holder} holds it; wait for it to finish, then try again"
            )
        time.sleep(0.2)
    lease.start()
    try:
        yield lease
    finally:
        lease.release()

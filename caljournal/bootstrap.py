"""The composition root: builds everything from settings, nothing at import time.

Each service is built, and its module imported, when it is first used: a
command that reads one account's status loads neither the CalDAV client nor
the outbound worker (see ``tests/unit/test_cli_imports.py``).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from caljournal.adapters.journal import Journal, open_journal
from caljournal.settings import Settings, load_settings

if TYPE_CHECKING:
    from caljournal.accounts import AccountService
    from caljournal.adapters.cpu_pool import CpuPool
    from caljournal.adapters.secrets import SecretBox
    from caljournal.adapters.syncstate import SyncStateStore
    from caljournal.appointments import AppointmentService
    from caljournal.erasure import ErasureService
    from caljournal.links import LinkService
    from caljournal.projections.outbound import OutboundWorker, WorkerConfig
    from caljournal.resyncs import ResyncService
    from caljournal.sync import SyncService

T = TypeVar("T")


@dataclass
class Container:
    """The running parts of one caljournal process."""

    settings: Settings
    journal: Journal
    _box: SecretBox | None = field(init=False, default=None, repr=False)
    _box_stamp: bytes | None = field(init=False, default=None, repr=False)
    _box_lock: threading.Lock = field(init=False, default_factory=threading.Lock, repr=False)
    _services: dict[str, Any] = field(init=False, default_factory=dict, repr=False)
    # Re-entrant: building the sync service builds the link service first.
    _build_lock: threading.RLock = field(init=False, default_factory=threading.RLock, repr=False)

    def _once(self, name: str, build: Callable[[], T]) -> T:
        """Return the service ``name``, built by ``build`` once even when threads race."""
        service = self._services.get(name)
        if service is None:
            with self._build_lock:
                service = self._services.get(name)
                if service is None:
                    service = self._services[name] = build()
        return cast(T, service)

    @property
    def sync_state(self) -> SyncStateStore:
        """Return the store of push, poll and lease state."""
        return self._once("sync_state", self._new_sync_state)

    @property
    def accounts(self) -> AccountService:
        """Return the accounts and API tokens service."""
        return self._once("accounts", self._new_accounts)

    @property
    def appointments(self) -> AppointmentService:
        """Return the appointments service."""
        return self._once("appointments", self._new_appointments)

    @property
    def erasure(self) -> ErasureService:
        """Return the service that erases personal data."""
        return self._once("erasure", self._new_erasure)

    @property
    def links(self) -> LinkService:
        """Return the calendar links service."""
        return self._once("links", self._new_links)

    @property
    def sync(self) -> SyncService:
        """Return the sync service (backfill, replay, retries, one account's status)."""
        return self._once("sync", self._new_sync)

    @property
    def resyncs(self) -> ResyncService:
        """Return the service that runs and hands off backfills and replays."""
        return self._once("resyncs", self._new_resyncs)

    # The builders import their modules: only a service in use is loaded.

    def _new_sync_state(self) -> SyncStateStore:
        from caljournal.adapters.syncstate_sql import SQLSyncState

        return SQLSyncState(self.journal)

    def _new_accounts(self) -> AccountService:
        from caljournal.accounts import AccountService

        return AccountService(self.journal, self.settings.token_cache_seconds)

    def _new_appointments(self) -> AppointmentService:
        from caljournal.appointments import AppointmentService

        return AppointmentService(self.journal)

    def _new_erasure(self) -> ErasureService:
        from caljournal.erasure import ErasureService

        return ErasureService(self.journal)

    def _new_links(self) -> LinkService:
        from caljournal.links import LinkPolicy, LinkService

        policy = LinkPolicy(
            allow_private=self.settings.allow_private_addresses,
            verify_tls=self.settings.verify_tls,
            timeout=self.settings.caldav_timeout,
            limits=self.settings.transfer_limits,
        )
        return LinkService(self.journal, self.secret_box, policy)

    def _new_sync(self) -> SyncService:
        from caljournal.adapters.retry import RetryPolicy
        from caljournal.sync import SyncService

        retry = RetryPolicy.patient(self.settings.caldav_retry_budget)
        return SyncService(self.journal, self.links, retry, self.sync_state)

    def _new_resyncs(self) -> ResyncService:
        from caljournal.resyncs import ResyncService

        return ResyncService(self.journal, self.links, self.sync, self.settings.worker_lease_ttl)

    def outbound_worker(self, config: WorkerConfig | None = None) -> OutboundWorker:
        """Return a (not yet started) outbound worker on this container's journal."""
        from caljournal.adapters.retry import RetryPolicy
        from caljournal.projections.inbound import CheckPolicy
        from caljournal.projections.outbound import OutboundWorker, WorkerConfig

        if config is None:
            ttl = self.settings.worker_lease_ttl
            config = WorkerConfig(
                lease_ttl=ttl,
                lease_renew=max(ttl / 5, 0.2),
                poll=self.settings.worker_poll,
                pool=self.settings.worker_pool,
                check=CheckPolicy(
                    interval=self.settings.calendar_check_interval,
                    spacing=self.settings.calendar_check_spacing,
                ),
                resync_retry=RetryPolicy.patient(self.settings.caldav_retry_budget),
            )
        return OutboundWorker(
            self.journal,
            self.links,
            config=config,
            postgres_listen=self.journal.listener,
            store=self.sync_state,
            pool=self.cpu_pool,
        )

    def secret_box(self) -> SecretBox:
        """Return the box sealing calendar credentials (keys are loaded on first use).

        Keys from a key file are loaded again whenever the file changes, so a
        running process picks up a rotated key ring (``secrets rotate-key``)
        without a restart. Keys from the environment cannot change under a
        running process; the README says how to rotate them.

        :raises SecretKeyError: when the keys are missing, malformed or exposed.
        """
        from caljournal.adapters.secrets import SecretBox, load_keys

        configured = self.settings.secret_keys
        with self._box_lock:
            stamp = None if configured else _file_stamp(self.settings.key_file)
            if self._box is None or (stamp is not None and stamp != self._box_stamp):
                keys = load_keys(
                    configured.get_secret_value() if configured else None,
                    self.settings.key_file,
                )
                self._box = SecretBox(keys)
                self._box_stamp = stamp
            return self._box

    @property
    def backend(self) -> str:
        """Return ``sqlite`` or ``postgresql``."""
        return "sqlite" if self.settings.database_url.startswith("sqlite") else "postgresql"

    @property
    def inline_commands(self) -> bool:
        """Return whether the API runs journal calls on its event loop (see settings)."""
        return self.settings.inline_api_calls

    @functools.cached_property
    def api_executor(self) -> ThreadPoolExecutor:
        """Return the threads that run the API's journal calls (when not inline).

        See ``Settings.api_thread_count`` for how many.
        """
        return ThreadPoolExecutor(
            max_workers=self.settings.api_thread_count, thread_name_prefix="caljournal-api"
        )

    @property
    def cpu_pool(self) -> CpuPool:
        """Return the pool that parses the objects of large polls (helpers start on first use)."""
        from caljournal.adapters.cpu_pool import default_processes, make_pool

        return self._once(
            "cpu_pool", lambda: make_pool(default_processes(self.settings.parse_processes))
        )

    def close(self) -> None:
        """Release the API's threads, the helper processes and the database connections."""
        if "api_executor" in self.__dict__:
            self.api_executor.shutdown(wait=True)
        pool = self._services.get("cpu_pool")
        if pool is not None:
            pool.close()
        self.journal.close()


def _file_stamp(path: Path) -> bytes | None:
    """Return a digest of the key file's content, or None when it is absent.

    The content, not the modification time: two writes within the file
    system's timestamp granularity would look alike.
    """
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except FileNotFoundError:
        return None


def bootstrap(settings: Settings | None = None) -> Container:
    """Build the container from ``settings`` (read from the environment when None).

    :raises ConfigurationError: when the configuration is unusable.
    :raises JournalUnavailableError: when the journal cannot be opened.
    """
    settings = settings or load_settings()
    settings.create_data_dir()
    return Container(settings=settings, journal=open_journal(settings))

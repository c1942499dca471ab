"""Application service for sync status and operator retries."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from caljournal.adapters.caldav_client import ServerAccess
from caljournal.adapters.caldav_storage import CalDAVStorage
from caljournal.adapters.journal import Journal
from caljournal.adapters.journal_ops import apply
from caljournal.adapters.providers import ProviderProfile, get_profile
from caljournal.adapters.readmodel import Row
from caljournal.adapters.resync_store import DONE, FAILED, resync_row
from caljournal.adapters.retry import RetryPolicy
from caljournal.adapters.storage import StorageError
from caljournal.adapters.syncstate import SyncStateStore
from caljournal.adapters.syncstate_sql import SQLSyncState
from caljournal.domain.appointment import Appointment
from caljournal.domain.cause import Cause
from caljournal.domain.link import CalendarLink
from caljournal.links import LinkFailedError, LinkService
from caljournal.projections.executor import ActionKind
from caljournal.projections.resync import MassDeleteRefusedError, Resync, Step, Summary
from caljournal.status import account_report


class SyncService:
    """Report how far each account's calendar is behind, and retry failed pushes."""

    def __init__(
        self,
        journal: Journal,
        links: LinkService,
        retry: RetryPolicy | None = None,
        store: SyncStateStore | None = None,
    ) -> None:
        self.journal = journal
        self.links = links
        self.store = store or SQLSyncState(journal)
        # Backfill and replay requests (adapters.resync_store), kept with the journal.
        self.recorder = journal.journal_recorder
        # Operator runs wait out a flaky server (minutes); see Settings.caldav_retry_budget.
        self.retry = retry or RetryPolicy.patient(300.0)

    def status(self, account_id: UUID) -> dict[str, Any]:
        """Return the account's outbound status (see :func:`caljournal.status.account_report`).

        :raises NotFoundError: when the account has no calendar link.
        """
        return account_report(self.journal, self.store, account_id)

    def backfill(
        self,
        account_id: UUID,
        cause: Cause,
        *,
        dry_run: bool = False,
        concurrency: int = 1,
        rate: float | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        request: dict[str, Any] | None = None,
    ) -> Summary:
        """Push every live appointment missing from (or differing in) the linked calendar.

        Transient server faults are retried as ``self.retry`` allows; a server
        that keeps failing while writing stops the run (``Summary.stopped``).
        ``request`` is the resync request this run serves (see ``caljournal.resyncs``):
        its row is finished with the recorded outcome.

        :raises LinkFailedError: when the account has no active calendar, or the
            calendar cannot be read (nothing is written then).
        """
        link, url, access, profile = self._target(account_id)
        open_storage = self._storage(access, url, profile)
        storage = open_storage()
        try:
            run = Resync(
                self.journal,
                storage,
                self.store,
                str(account_id),
                url,
                lambda: cause,
                delete=False,
                record=True,
                dry_run=dry_run,
                concurrency=concurrency,
                rate=rate,
                progress=progress,
                open_storage=open_storage,
            )
            steps, summary = self._plan(run, "backfill")
            summary = run.run(steps, summary)
        finally:
            storage.close()
        if not dry_run:
            self._record_run(account_id, "backfill", summary, cause, request)
        return summary

    def replay(
        self,
        account_id: UUID,
        cause: Cause,
        *,
        to_calendar: str | None = None,
        as_of: datetime | None = None,
        dry_run: bool = False,
        confirm: Callable[[Summary], bool] = lambda summary: False,
        allow_mass_delete: bool = False,
        concurrency: int = 1,
        rate: float | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        request: dict[str, Any] | None = None,
    ) -> Summary:
        """Make a calendar equal to the journal (now, or at ``as_of``).

        ``to_calendar`` writes into another calendar of the same server and switches
        the link to it when done (not with ``as_of``). Deletions need ``confirm``;
        more than half of the account's objects (and at least 10) also need
        ``allow_mass_delete``. ``request``: see :meth:`backfill`.

        :raises LinkFailedError: when the target cannot be used.
        :raises MassDeleteRefusedError: when the deletions exceed the limit.
        """
        link, url, access, profile = self._target(account_id, allow_paused=True)
        target = to_calendar or url
        if as_of is not None and to_calendar is None and link.status != "paused":
            raise LinkFailedError(
                "pause the link first (caljournal link pause), or the worker would bring the "
                "calendar back to the present; or replay into another calendar with --to-calendar"
            )
        switching = to_calendar is not None and to_calendar.rstrip("/") != url.rstrip("/")
        open_storage = self._storage(access, target, profile)
        storage = open_storage()
        try:
            run = Resync(
                self.journal,
                storage,
                self.store,
                str(account_id),
                target,
                lambda: cause,
                delete=True,
                # Copies are recorded for the target calendar; an as-of run records
                # nothing, so the worker later brings the calendar back to the present.
                record=as_of is None,
                as_of=as_of,
                dry_run=dry_run,
                concurrency=concurrency,
                rate=rate,
                progress=progress,
                open_storage=open_storage,
            )
            steps, summary = self._plan(run, "replay")
            self._confirm_deletes(run, steps, dry_run, confirm, allow_mass_delete)
            summary = run.run(steps, summary)
        finally:
            storage.close()
        if dry_run:
            return summary
        if switching and as_of is None and summary.stopped is None:
            self.links.choose(account_id, target, cause)
        self._record_run(account_id, "replay", summary, cause, request)
        return summary

    @staticmethod
    def _confirm_deletes(
        run: Resync,
        steps: list[Step],
        dry_run: bool,
        confirm: Callable[[Summary], bool],
        allow_mass_delete: bool,
    ) -> None:
        """Refuse a replay's deletions unless confirmed (and allowed, when they are many).

        :raises MassDeleteRefusedError: when the deletions exceed the limit.
        :raises LinkFailedError: when they were not confirmed.
        """
        deletes = sum(1 for s in steps if s.kind is ActionKind.DELETE)
        on_calendar = sum(
            1 for s in steps if s.kind in (ActionKind.RECORD, ActionKind.UPDATE, ActionKind.DELETE)
        )
        if dry_run or not deletes:
            return
        if deletes >= 10 and deletes > 0.5 * max(on_calendar, 1) and not allow_mass_delete:
            raise MassDeleteRefusedError(
                f"the replay would delete {deletes} of {on_calendar} objects; "
                "add --allow-mass-delete if that is meant"
            )
        preview = run.run(steps, Summary(dry_run=True), write=False)
        if not confirm(preview):
            raise LinkFailedError(
                "the replay deletes objects and was not confirmed; nothing written"
            )

    def _storage(
        self, access: ServerAccess, calendar_url: str, profile: ProviderProfile
    ) -> Callable[[], CalDAVStorage]:
        """Return a maker of storages for the calendar (one per writing thread)."""
        return lambda: CalDAVStorage(access, calendar_url, profile, self.retry)

    @staticmethod
    def _plan(run: Resync, kind: str) -> tuple[list[Step], Summary]:
        try:
            return run.plan()
        except StorageError as exc:
            raise LinkFailedError(
                f"the {kind} stopped before writing anything: {exc.message}"
            ) from None

    def _target(
        self, account_id: UUID, allow_paused: bool = False
    ) -> tuple[CalendarLink, str, ServerAccess, ProviderProfile]:
        """Return the account's link, its calendar URL, its server access and profile."""
        link = self.links._get(account_id)  # noqa: SLF001
        usable = ("active", "paused") if allow_paused else ("active",)
        if link.status not in usable or not link.calendar_url:
            raise LinkFailedError(
                f"the account's calendar link is {link.status}; link a calendar first"
            )
        return link, link.calendar_url, self.links.access(link), get_profile(link.provider)

    def _record_run(
        self,
        account_id: UUID,
        kind: str,
        summary: Summary,
        cause: Cause,
        request: dict[str, Any] | None = None,
    ) -> None:
        """Record the run as ``ResyncRan``; finish its request's row in the same transaction.

        :raises ConflictError: when the link kept changing under every attempt.
        """
        counts = summary.as_dict()
        counts["failed"] = len(summary.failed)
        counts.pop("sample", None)
        request_id = request["request_id"] if request else None

        def finished() -> list[Row]:
            if request is None:
                return []
            current = self.recorder.resync(request["request_id"]) or request
            return [
                resync_row(
                    {
                        **current,
                        "state": FAILED if summary.stopped else DONE,
                        "finished_us": int(time.time() * 1e6),
                        "summary": summary.as_dict(),
                        "error": summary.stopped,
                    }
                )
            ]

        apply(
            self.journal,
            CalendarLink.id_for(account_id),
            lambda link: link.record_resync(
                kind=kind, summary=counts, cause=cause, request_id=request_id, error=summary.stopped
            ),
            CalendarLink,
            extra_rows=finished,
        )

    def retry_failed(self, account_id: UUID, cause: Cause) -> int:
        """Clear the account's failed pushes so the worker tries them again; return how many.

        :raises NotFoundError: when the account has no link.
        """
        self.links.get(account_id)
        failed = self.store.failed_copies(str(account_id))
        for copy in failed:
            self.store.clear_failure(copy.appointment_id)
            # Returns False (nothing saved) when no failure is recorded on the appointment.
            apply(
                self.journal,
                UUID(copy.appointment_id),
                lambda appointment: appointment.clear_push_failure(cause=cause),
                Appointment,
            )
        return len(failed)


__all__ = ["MassDeleteRefusedError", "SyncService"]

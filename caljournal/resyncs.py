"""Backfill and replay requests: recorded on the link, run under the account's lease.

A request is a ``ResyncRequested`` event on the account's ``CalendarLink``
with a row in the resync requests table (``adapters.resync_store``), written
together. Whoever holds the account's lease runs it: the worker serving the
account (as a job of the account's runtime, never at the same time as its
pushes and polls), or, with no worker serving it, the command line in its own
process after taking the lease itself. The API only records requests. The run
writes its phase and counts to the row for the status, and its outcome as a
``ResyncRan`` event (with the request id, and the error when it failed) in the
same transaction that finishes the row.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any
from uuid import UUID

from caljournal.adapters.journal import Journal
from caljournal.adapters.journal_ops import apply
from caljournal.adapters.resync_store import DONE, FAILED, REQUESTED, RUNNING, resync_row
from caljournal.domain.cause import Cause
from caljournal.domain.errors import DomainError
from caljournal.domain.link import CalendarLink
from caljournal.errors import ApplicationError
from caljournal.lease import AccountBusyError, Lease, hold_lease
from caljournal.links import LinkFailedError, LinkService
from caljournal.projections.resync import Summary
from caljournal.sync import MassDeleteRefusedError, SyncService

#: Seconds between two progress writes of a running request.
PROGRESS_EVERY = 0.5

Progress = Callable[[str, int, int], None]


class ResyncInterruptedError(Exception):
    """The lease may have passed to another process: the run stopped (it is resumable)."""


def _now_us() -> int:
    return int(time.time() * 1e6)


def cause_of(request: dict[str, Any]) -> Cause:
    """Return the cause of a request (its outcome is recorded with it)."""
    return Cause(request["origin"], request["actor"], request["correlation_id"])


class ResyncService:
    """Record backfill and replay requests, run them under the lease, and report on them."""

    def __init__(
        self, journal: Journal, links: LinkService, sync: SyncService, lease_ttl: float = 10.0
    ) -> None:
        self.journal = journal
        self.links = links
        self.sync = sync
        self.lease_ttl = lease_ttl
        self.recorder = journal.journal_recorder

    # -- requests ---------------------------------------------------------------

    def request(
        self,
        account_id: UUID,
        kind: str,
        options: dict[str, Any],
        cause: Cause,
        *,
        worker: str | None = None,
    ) -> dict[str, Any]:
        """Record a request for a backfill or replay; return its row.

        ``worker`` records that the caller, holding the lease, runs it at once.

        :raises NotFoundError: when the account has no link.
        :raises LinkStateError: when the link's state does not allow the kind.
        """
        request_id = str(uuid.uuid4())
        values: dict[str, Any] = {
            "request_id": request_id,
            "account_id": str(account_id),
            "kind": kind,
            "options": options,
            **cause.fields(),
            "state": RUNNING if worker else REQUESTED,
            "requested_us": _now_us(),
            "worker": worker,
            "started_us": _now_us() if worker else None,
        }
        apply(
            self.journal,
            CalendarLink.id_for(account_id),
            lambda link: link.request_resync(
                request_id=request_id, kind=kind, options=options, cause=cause
            ),
            CalendarLink,
            load=lambda _: self.links._get(account_id),  # noqa: SLF001 - its not-found message
            extra_rows=lambda: [resync_row(values)],
        )
        found = self.recorder.resync(request_id)
        assert found is not None
        return found

    def get(self, request_id: str) -> dict[str, Any] | None:
        """Return a request's row (state, phase, done, total, summary, error), or None."""
        return self.recorder.resync(request_id)

    def open_requests(self, account_id: str) -> list[dict[str, Any]]:
        """Return the account's requests still to run (or interrupted), oldest first."""
        return self.recorder.open_resyncs(account_id)

    def serving_worker(self, account_id: UUID) -> str | None:
        """Return the live worker holding the account's lease, or None."""
        now_us = _now_us()
        lease = self.sync.store.leases().get(str(account_id))
        if lease is None or lease.expires_us <= now_us:
            return None
        return lease.owner if lease.owner in self.recorder.live_workers(now_us) else None

    # -- running ------------------------------------------------------------------

    def run(
        self,
        request: dict[str, Any],
        owner: str,
        leased: Callable[[], bool],
        progress: Progress | None = None,
        confirm: Callable[[Summary], bool] | None = None,
    ) -> Summary:
        """Run a request here; the caller holds the account's lease.

        A replay's deletions are confirmed by ``confirm`` (a person answering
        here), else up to the request's ``delete_limit`` option (None: any).
        The outcome is recorded (``ResyncRan`` and the row) whether it succeeds or
        fails; a failure is raised again after that.

        :raises ResyncInterruptedError: when the lease may be lost; the row stays
            open and the next lease holder runs the request again.
        :raises LinkFailedError: when the calendar cannot be used.
        :raises MassDeleteRefusedError: when a replay would delete too much.
        """
        self.recorder.update_resync(
            request["request_id"],
            state=RUNNING,
            worker=owner,
            started_us=_now_us(),
            phase=None,
            done=None,
            total=None,
            error=None,
        )
        reporter = _Reporter(self, request["request_id"], leased, progress)
        cause = cause_of(request)
        try:
            return self._execute(request, cause, reporter, confirm)
        except ResyncInterruptedError:
            raise
        except (ApplicationError, DomainError, MassDeleteRefusedError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            self._record_failure(request, cause, message)
            raise

    def _execute(
        self,
        request: dict[str, Any],
        cause: Cause,
        progress: Progress,
        confirm: Callable[[Summary], bool] | None,
    ) -> Summary:
        options = request["options"]
        account_id = UUID(request["account_id"])
        common: dict[str, Any] = {
            "concurrency": int(options.get("concurrency") or 1),
            "rate": options.get("rate"),
            "progress": progress,
            "request": request,
        }
        if request["kind"] == "backfill":
            return self.sync.backfill(account_id, cause, **common)
        as_of = options.get("as_of")
        limit = options.get("delete_limit")
        return self.sync.replay(
            account_id,
            cause,
            to_calendar=options.get("to_calendar"),
            as_of=datetime.fromisoformat(as_of) if as_of else None,
            confirm=confirm or (lambda preview: _confirmed(preview, limit)),
            allow_mass_delete=bool(options.get("allow_mass_delete")),
            **common,
        )

    def _record_failure(self, request: dict[str, Any], cause: Cause, message: str) -> None:
        row = resync_row(
            {**request, "state": FAILED, "finished_us": _now_us(), "error": message}
            | _progress_of(self.recorder.resync(request["request_id"]) or request)
        )
        account_id = UUID(request["account_id"])
        apply(
            self.journal,
            CalendarLink.id_for(account_id),
            lambda link: link.record_resync(
                kind=request["kind"],
                summary={},
                cause=cause,
                request_id=request["request_id"],
                error=message,
            ),
            CalendarLink,
            load=lambda _: self.links._get(account_id),  # noqa: SLF001 - its not-found message
            extra_rows=lambda: [row],
        )

    # -- the command line's own runs ------------------------------------------------

    def run_here(
        self,
        account_id: UUID,
        kind: str,
        options: dict[str, Any],
        cause: Cause,
        owner: str,
        progress: Progress | None = None,
        confirm: Callable[[Summary], bool] | None = None,
    ) -> Summary:
        """Take the account's lease, then run the request in this process and give it up.

        An open request of the same kind and options (one whose run was
        interrupted, e.g. a command killed halfway) is taken over instead of
        recording another.

        :raises AccountBusyError: when another command holds the lease.
        """
        with self.lease(account_id, owner) as held:
            same = json.loads(json.dumps(options, sort_keys=True))
            open_requests = [
                r
                for r in self.open_requests(str(account_id))
                if r["kind"] == kind and r["options"] == same
            ]
            if open_requests:
                request = open_requests[0]
            else:
                request = self.request(account_id, kind, options, cause, worker=owner)
            return self.run(request, owner, held.held, progress, confirm)

    def wait(
        self,
        request_id: str,
        owner: str,
        progress: Progress | None = None,
        confirm: Callable[[Summary], bool] | None = None,
    ) -> Summary:
        """Wait for a request handed to a worker; return its outcome.

        Shows the run's progress through ``progress``. When no worker serves
        the account any more (longer than a lease lasts), the request is taken
        over and run here.

        :raises LinkFailedError: when the run failed before writing (its error).
        """
        orphaned_since: float | None = None
        while True:
            row = self.get(request_id)
            assert row is not None
            if progress is not None and row["phase"] is not None and row["total"] is not None:
                progress(row["phase"], int(row["done"] or 0), int(row["total"]))
            if row["state"] in (DONE, FAILED):
                return _finished(row)
            account_id = UUID(row["account_id"])
            if self.serving_worker(account_id) is not None:
                orphaned_since = None
            elif orphaned_since is None:
                orphaned_since = time.monotonic()
            elif time.monotonic() - orphaned_since > self.lease_ttl + 2.0:
                with self.lease(account_id, owner) as held:
                    return self.run(row, owner, held.held, progress, confirm)
            time.sleep(0.2)

    def lease(self, account_id: UUID, owner: str) -> AbstractContextManager[Lease]:
        """Hold the account's lease for a run in this process (see ``caljournal.lease``).

        :raises AccountBusyError: when another command keeps holding it.
        """
        return hold_lease(self.sync.store, str(account_id), owner, self.lease_ttl)


class _Reporter:
    """Writes a running request's progress (throttled) and stops it when the lease is gone."""

    def __init__(
        self,
        service: ResyncService,
        request_id: str,
        leased: Callable[[], bool],
        also: Progress | None,
    ) -> None:
        self.service = service
        self.request_id = request_id
        self.leased = leased
        self.also = also
        self._phase: str | None = None
        self._written = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.leased():
            raise ResyncInterruptedError("the account's lease may have passed to another process")
        if self.also is not None:
            self.also(phase, done, total)
        now = time.monotonic()
        if phase != self._phase or done >= total or now - self._written >= PROGRESS_EVERY:
            self._phase = phase
            self._written = now
            self.service.recorder.update_resync(
                self.request_id, phase=phase, done=done, total=total
            )


def _finished(row: dict[str, Any]) -> Summary:
    """Return the outcome of a finished request as a summary.

    :raises LinkFailedError: when it failed before writing anything.
    """
    found = row["summary"]
    if found is None:
        raise LinkFailedError(row["error"] or f"the {row['kind']} failed")
    return Summary(
        created=found["created"],
        already_present=found["already_present"],
        updated=found["updated"],
        deleted=found["deleted"],
        failed=[(f["appointment_id"], f["reason"]) for f in found["failed"]],
        foreign_left_alone=found["foreign_left_alone"],
        dry_run=found["dry_run"],
        sample=list(found["sample"]),
        seconds=found["seconds"],
        stopped=found["stopped"],
    )


def _progress_of(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("worker", "started_us", "phase", "done", "total")}


def _confirmed(preview: Summary, limit: int | None) -> bool:
    """Return True when the deletions a replay would make were confirmed by the requester.

    ``limit`` None: any number (``--yes``); otherwise at most that many (the
    number the requester saw in a preview and agreed to).

    :raises LinkFailedError: when the replay would now delete more than that.
    """
    if limit is None or preview.deleted <= int(limit):
        return True
    raise LinkFailedError(
        f"the replay would now delete {preview.deleted} objects, more than the {limit} "
        "confirmed; nothing written"
    )


__all__ = [
    "AccountBusyError",
    "Lease",
    "ResyncInterruptedError",
    "ResyncService",
    "cause_of",
]

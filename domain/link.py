"""CalendarLink: an account's connection to its CalDAV calendar.

The lifecycle (linked, calendar chosen, credentials rotated, paused, resumed,
unlinked) is recorded as events so auditors can see who linked what and when.
Secrets never enter these events: only the fact that credentials were set.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from caljournal.domain import ids
from caljournal.domain.cause import Cause
from caljournal.domain.errors import DomainError

DEFAULT_POLL_INTERVAL = 60
MIN_POLL_INTERVAL = 5
MAX_POLL_INTERVAL = 86_400
#: What a resync request can ask for, and the link states each may run in.
RESYNC_KINDS = {"backfill": ("active",), "replay": ("active", "paused")}


class LinkStateError(DomainError):
    """The link is not in a state that allows this command."""


class CalendarLink(Aggregate):
    """The one calendar link of an account."""

    TOPIC = "caljournal:CalendarLink"

    class Event(Aggregate.Event):
        origin: str
        actor: str
        correlation_id: str

    class Created(Event, Aggregate.Created):
        TOPIC = "caljournal:CalendarLink.Created"

    @staticmethod
    def id_for(account_id: UUID) -> UUID:
        """Return the link id of an account."""
        return ids.link_id(account_id)

    @classmethod
    def link(
        cls,
        *,
        account_id: UUID,
        server_url: str,
        username: str | None,
        auth: str,
        provider: str,
        resolution: str,
        cause: Cause,
    ) -> CalendarLink:
        """Record a first link of the account to a server."""
        return cls(
            id=cls.id_for(account_id),
            account_id=account_id,
            server_url=server_url,
            username=username,
            auth=auth,
            provider=provider,
            resolution=resolution,
            **cause.fields(),
        )

    @event("Linked", topic="caljournal:CalendarLink.Linked")
    def __init__(
        self,
        *,
        id: UUID,  # noqa: A002
        account_id: UUID,
        server_url: str,
        username: str | None,
        auth: str,
        provider: str,
        resolution: str,
        origin: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.account_id = account_id
        self._apply_link(server_url, username, auth, provider, resolution)

    def _apply_link(
        self, server_url: str, username: str | None, auth: str, provider: str, resolution: str
    ) -> None:
        # Links recorded before query strings were sealed carry theirs in the
        # event: keep it out of ``server_url`` and ``state()``, for connecting only.
        self.server_url, _, query = server_url.partition("#")[0].partition("?")
        self.legacy_url_query: str | None = query or None
        self.username = username
        self.auth = auth
        self.provider = provider
        self.resolution = resolution
        self.calendar_url: str | None = None
        self.calendar_name: str | None = None
        self.calendar_chosen_on: datetime | None = None
        self.sync_tokens = False
        self.paused = False
        self.pause_reason: str | None = None
        self.unlinked = False
        self.credentials_serial = getattr(self, "credentials_serial", 0) + 1
        self.poll_interval = getattr(self, "poll_interval", DEFAULT_POLL_INTERVAL)
        self.poll_requests = getattr(self, "poll_requests", 0)
        self.last_resync: dict[str, Any] | None = getattr(self, "last_resync", None)
        self.resync_requests: int = getattr(self, "resync_requests", 0)
        self.resync_requested: dict[str, Any] | None = getattr(self, "resync_requested", None)

    def relink(
        self,
        *,
        server_url: str,
        username: str | None,
        auth: str,
        provider: str,
        resolution: str,
        cause: Cause,
    ) -> None:
        """Link again (after an unlink, or to another server); the calendar must be chosen again."""
        self._relinked(
            server_url=server_url,
            username=username,
            auth=auth,
            provider=provider,
            resolution=resolution,
            **cause.fields(),
        )

    @event("Relinked", topic="caljournal:CalendarLink.Relinked")
    def _relinked(
        self,
        *,
        server_url: str,
        username: str | None,
        auth: str,
        provider: str,
        resolution: str,
        origin: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self._apply_link(server_url, username, auth, provider, resolution)

    def choose_calendar(
        self,
        *,
        calendar_url: str,
        name: str | None,
        sync_tokens: bool,
        chosen_at: datetime,
        cause: Cause,
    ) -> bool:
        """Choose the calendar to sync with; return False when it is chosen already.

        :raises LinkStateError: when the link is unlinked.
        """
        self._check_linked("choose a calendar")
        if calendar_url == self.calendar_url:
            return False
        self._calendar_chosen(
            calendar_url=calendar_url,
            name=name,
            sync_tokens=sync_tokens,
            chosen_at=chosen_at,
            **cause.fields(),
        )
        return True

    @event("CalendarChosen", topic="caljournal:CalendarLink.CalendarChosen")
    def _calendar_chosen(
        self,
        *,
        calendar_url: str,
        name: str | None,
        sync_tokens: bool,
        chosen_at: datetime,
        origin: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.calendar_url = calendar_url
        self.calendar_name = name
        self.sync_tokens = sync_tokens
        # Changes from this moment on are pushed; older appointments need a backfill.
        self.calendar_chosen_on = chosen_at

    def rotate_credentials(self, *, username: str | None, cause: Cause) -> None:
        """Record that new credentials were stored (the secret itself is not recorded).

        :raises LinkStateError: when the link is unlinked.
        """
        self._check_linked("rotate credentials")
        self._credentials_rotated(username=username, **cause.fields())

    @event("CredentialsRotated", topic="caljournal:CalendarLink.CredentialsRotated")
    def _credentials_rotated(
        self, *, username: str | None, origin: str, actor: str, correlation_id: str
    ) -> None:
        self.username = username
        self.credentials_serial += 1

    def set_poll_interval(self, *, seconds: int, cause: Cause) -> bool:
        """Poll the calendar every ``seconds``; return False when unchanged.

        :raises LinkStateError: when unlinked, or the interval is outside 5 s .. 1 day.
        """
        self._check_linked("set the poll interval")
        if not MIN_POLL_INTERVAL <= seconds <= MAX_POLL_INTERVAL:
            raise LinkStateError(
                f"the poll interval must be {MIN_POLL_INTERVAL} to {MAX_POLL_INTERVAL} seconds",
                field="seconds",
            )
        if seconds == self.poll_interval:
            return False
        self._poll_interval_changed(seconds=seconds, **cause.fields())
        return True

    @event("PollIntervalChanged", topic="caljournal:CalendarLink.PollIntervalChanged")
    def _poll_interval_changed(
        self, *, seconds: int, origin: str, actor: str, correlation_id: str
    ) -> None:
        self.poll_interval = seconds

    def request_poll(self, *, cause: Cause) -> None:
        """Ask the worker to poll the calendar now.

        :raises LinkStateError: when the link is unlinked.
        """
        self._check_linked("poll")
        self._poll_requested(**cause.fields())

    @event("PollRequested", topic="caljournal:CalendarLink.PollRequested")
    def _poll_requested(self, *, origin: str, actor: str, correlation_id: str) -> None:
        self.poll_requests += 1

    def request_resync(
        self, *, request_id: str, kind: str, options: dict[str, Any], cause: Cause
    ) -> None:
        """Ask for a backfill or replay, run by whoever holds the account's lease.

        :raises LinkStateError: when the kind is unknown, or the link is not in a
            state the kind can run in (a backfill needs an active link; a replay
            an active or paused one).
        """
        self._check_linked(kind)
        states = RESYNC_KINDS.get(kind)
        if states is None:
            raise LinkStateError(
                f"unknown resync kind {kind!r}; expected one of {', '.join(RESYNC_KINDS)}",
                field="kind",
            )
        if self.status not in states or not self.calendar_url:
            raise LinkStateError(
                f"the account's calendar link is {self.status}; "
                + ("resume it first" if self.status == "paused" else "link a calendar first")
            )
        self._resync_requested(request_id=request_id, kind=kind, options=options, **cause.fields())

    @event("ResyncRequested", topic="caljournal:CalendarLink.ResyncRequested")
    def _resync_requested(
        self,
        *,
        request_id: str,
        kind: str,
        options: dict[str, Any],
        origin: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.resync_requests += 1
        self.resync_requested = {"request_id": request_id, "kind": kind, "options": options}

    def record_resync(
        self,
        *,
        kind: str,
        summary: dict[str, Any],
        cause: Cause,
        request_id: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record that a backfill or replay ran against the calendar, with its outcome.

        ``request_id`` names the request it ran for (None: run directly);
        ``error`` says why it failed or stopped.
        """
        self._resync_ran(
            kind=kind, summary=summary, request_id=request_id, error=error, **cause.fields()
        )

    @event("ResyncRan", topic="caljournal:CalendarLink.ResyncRan")
    def _resync_ran(
        self,
        *,
        kind: str,
        summary: dict[str, Any],
        origin: str,
        actor: str,
        correlation_id: str,
        request_id: str | None = None,
        error: str | None = None,
    ) -> None:
        # Runs recorded before requests existed carry neither field.
        outcome: dict[str, Any] = {"kind": kind, **summary}
        if request_id is not None:
            outcome["request_id"] = request_id
        if error is not None:
            outcome["error"] = error
        self.last_resync = outcome

    def pause(self, *, reason: str, cause: Cause) -> bool:
        """Pause syncing; return False when paused already.

        :raises LinkStateError: when the link is unlinked.
        """
        self._check_linked("pause")
        if self.paused:
            return False
        self._paused(reason=reason, **cause.fields())
        return True

    @event("Paused", topic="caljournal:CalendarLink.Paused")
    def _paused(self, *, reason: str, origin: str, actor: str, correlation_id: str) -> None:
        self.paused = True
        self.pause_reason = reason

    def resume(self, *, cause: Cause) -> bool:
        """Resume syncing; return False when not paused.

        :raises LinkStateError: when the link is unlinked.
        """
        self._check_linked("resume")
        if not self.paused:
            return False
        self._resumed(**cause.fields())
        return True

    @event("Resumed", topic="caljournal:CalendarLink.Resumed")
    def _resumed(self, *, origin: str, actor: str, correlation_id: str) -> None:
        self.paused = False
        self.pause_reason = None

    def unlink(self, *, cause: Cause) -> bool:
        """Unlink; return False when unlinked already."""
        if self.unlinked:
            return False
        self._unlinked(**cause.fields())
        return True

    @event("Unlinked", topic="caljournal:CalendarLink.Unlinked")
    def _unlinked(self, *, origin: str, actor: str, correlation_id: str) -> None:
        self.unlinked = True
        self.calendar_url = None
        self.calendar_name = None

    def _check_linked(self, verb: str) -> None:
        if self.unlinked:
            raise LinkStateError(f"the calendar link is unlinked; link again to {verb}")

    @property
    def status(self) -> str:
        """Return unlinked, paused, active (calendar chosen) or linked (no calendar yet)."""
        if self.unlinked:
            return "unlinked"
        if self.paused:
            return "paused"
        return "active" if self.calendar_url else "linked"

    def state(self) -> dict[str, object]:
        """Return the link as plain values (never secrets: there are none here)."""
        return {
            "account_id": str(self.account_id),
            "status": self.status,
            "version": self.version,
            "server_url": self.server_url,
            "username": self.username,
            "auth": self.auth,
            "provider": self.provider,
            "resolution": self.resolution,
            "calendar_url": self.calendar_url,
            "calendar_name": self.calendar_name,
            "calendar_chosen_on": (
                self.calendar_chosen_on.isoformat() if self.calendar_chosen_on else None
            ),
            "sync_tokens": self.sync_tokens,
            "pause_reason": self.pause_reason,
            "poll_interval": self.poll_interval,
            "poll_requests": self.poll_requests,
            "credentials_serial": self.credentials_serial,
            "last_resync": self.last_resync,
            "resync_requests": self.resync_requests,
            "resync_requested": self.resync_requested,
            "modified_on": self.modified_on.isoformat(),
        }

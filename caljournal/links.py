"""Application service for calendar links: link, list, choose, test, rotate, unlink."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from caljournal.adapters.caldav_client import CalDAVError, ServerAccess
from caljournal.adapters.calendar_url import CalendarURLError, normalise, split_secret_query
from caljournal.adapters.discovery import Discovery, discover, probe_write
from caljournal.adapters.journal import Journal
from caljournal.adapters.journal_ops import find, load_or_not_found
from caljournal.adapters.providers import ProviderProfile, get_profile
from caljournal.adapters.readmodel import secret_row
from caljournal.adapters.secrets import Credentials, SecretBox, SecretKeyError
from caljournal.adapters.syncstate_sql import SQLSyncState
from caljournal.adapters.transport import DISCOVERY, TransferLimits
from caljournal.domain.cause import Cause
from caljournal.domain.link import CalendarLink
from caljournal.errors import ApplicationError, ConflictError
from caljournal.history import history_of

#: How a link logs in to its server: the provider styles, or none at all.
AUTH_STYLES = ("basic", "digest", "oauth2_bearer", "none")


class LinkFailedError(ApplicationError):
    """Linking, choosing or testing failed; ``message`` says precisely why."""


@dataclass(frozen=True)
class LinkPolicy:
    """Network rules for calendar servers, from configuration."""

    allow_private: bool = False
    verify_tls: bool = True
    timeout: float = 15.0
    limits: TransferLimits = field(default_factory=TransferLimits)


@dataclass(frozen=True)
class LinkResult:
    """A link's state and what discovery found."""

    state: dict[str, Any]
    discovery: Discovery

    def as_dict(self) -> dict[str, Any]:
        """Return plain values for the API and CLI (no secrets anywhere)."""
        return {
            "link": self.state,
            "used_url": self.discovery.used_url,
            "explanation": self.discovery.explanation(),
            "steps": list(self.discovery.steps),
            "calendars": [c.as_dict() for c in self.discovery.calendars],
        }


class LinkService:
    """Keep each account's calendar link and its sealed credentials."""

    def __init__(
        self,
        journal: Journal,
        box: Callable[[], SecretBox],
        policy: LinkPolicy,
        discover_fn: Callable[..., Discovery] = discover,
        probe_fn: Callable[[ServerAccess, str], str] = probe_write,
    ) -> None:
        self.journal = journal
        self._box = box
        self.policy = policy
        self._discover = discover_fn
        self._probe = probe_fn

    # -- commands ---------------------------------------------------------------

    def link(
        self,
        account_id: UUID,
        url: str,
        credentials: Credentials,
        cause: Cause,
        provider: str | None = None,
        auth: str | None = None,
    ) -> LinkResult:
        """Discover the server behind ``url``, store the link and sealed credentials.

        When ``url`` points at a calendar, that calendar is chosen at once.
        ``auth`` overrides the provider's way of logging in; ``"none"`` links a
        calendar that needs no authentication. A query string in ``url`` is
        sealed with the credentials (see ``split_secret_query``).

        :raises LinkFailedError: naming the field and the precise failure.
        :raises ConflictError: when the account is linked already (unlink first).
        """
        url, query = split_secret_query(url)
        profile = self._profile(provider, url)
        auth = auth or profile.auth
        if auth not in AUTH_STYLES:
            raise LinkFailedError(
                f"auth must be one of {', '.join(AUTH_STYLES)}, not {auth!r}", field="auth"
            )
        existing = self._find(account_id)
        if existing is not None and not existing.unlinked:
            raise ConflictError(
                "the account is linked already; unlink it first or rotate credentials"
            )
        credentials = self._with_embedded(url, profile, credentials)
        _check_credentials(credentials, auth, profile.display_name)
        credentials = replace(credentials, url_query=query)
        access = self._access(url, credentials, profile, auth)
        found = self._run_discovery(url, access, profile)
        fields: dict[str, Any] = {
            "server_url": found.used_url,
            "username": credentials.username,
            "auth": auth,
            "provider": profile.key,
            "resolution": found.explanation(),
        }
        if existing is None:
            link = CalendarLink.link(account_id=account_id, cause=cause, **fields)
        else:
            link = existing
            link.relink(cause=cause, **fields)
        if found.selected is not None:
            self._check_usable(found.selected.as_dict())
            link.choose_calendar(
                calendar_url=found.selected.url,
                name=found.selected.name,
                sync_tokens=found.selected.sync_tokens,
                chosen_at=datetime.now(UTC),
                cause=cause,
            )
        self._save(link, credentials)
        return LinkResult(link.state(), found)

    def calendars(self, account_id: UUID) -> LinkResult:
        """Ask the linked server for its calendars again.

        :raises NotFoundError: when the account has no link.
        :raises LinkFailedError: when the server cannot be asked.
        """
        link = self._get(account_id)
        access = self.access(link)
        found = self._run_discovery(link.server_url, access, get_profile(link.provider))
        return LinkResult(link.state(), found)

    def choose(self, account_id: UUID, calendar_url: str, cause: Cause) -> dict[str, Any]:
        """Choose one of the server's calendars.

        :raises LinkFailedError: when it is not one of the calendars, or takes no events.
        """
        link = self._get(account_id)
        found = self.calendars(account_id).discovery
        match = next((c for c in found.calendars if _same_url(c.url, calendar_url)), None)
        if match is None:
            known = ", ".join(c.url for c in found.calendars)
            raise LinkFailedError(
                f"{calendar_url} is not one of this account's calendars ({known})",
                field="calendar_url",
            )
        self._check_usable(match.as_dict())
        if link.choose_calendar(
            calendar_url=match.url,
            name=match.name,
            sync_tokens=match.sync_tokens,
            chosen_at=datetime.now(UTC),
            cause=cause,
        ):
            self.journal.save(link)
        return link.state()

    def test(self, account_id: UUID) -> dict[str, Any]:
        """Create and delete a probe event in the chosen calendar; report the outcome."""
        link = self._get(account_id)
        if link.calendar_url is None:
            return {"ok": False, "message": "no calendar is chosen yet"}
        try:
            done = self._probe(self.access(link).within(), link.calendar_url)
        except CalDAVError as exc:
            return {"ok": False, "message": _sentence(exc.message)}
        return {"ok": True, "message": _sentence(done)}

    def rotate_credentials(
        self, account_id: UUID, credentials: Credentials, cause: Cause
    ) -> dict[str, Any]:
        """Check new credentials against the server, then store them.

        :raises LinkFailedError: when the server refuses them (nothing is stored).
        """
        link = self._get(account_id)
        profile = get_profile(link.provider)
        if link.auth == "none":
            raise LinkFailedError(
                "this link uses no authentication; unlink and link again to add credentials",
                field="auth",
            )
        _check_credentials(credentials, link.auth, profile.display_name)
        # The sealed query string belongs to the URL, not to the login: keep it
        # (new credentials can replace ones that no configured key opens).
        try:
            query = self._unseal(link).url_query
        except LinkFailedError:
            query = link.legacy_url_query
        credentials = replace(credentials, url_query=query)
        access = self._access(link.server_url, credentials, profile, link.auth)
        self._run_discovery(link.server_url, access, profile)
        link.rotate_credentials(username=credentials.username, cause=cause)
        self._save(link, credentials)
        return link.state()

    def pause(self, account_id: UUID, reason: str, cause: Cause) -> dict[str, Any]:
        """Pause syncing for the account."""
        link = self._get(account_id)
        if link.pause(reason=reason, cause=cause):
            self.journal.save(link)
        return link.state()

    def resume(
        self, account_id: UUID, cause: Cause, confirm_deletes: bool = False
    ) -> dict[str, Any]:
        """Resume syncing; ``confirm_deletes`` lets the next poll cancel in bulk.

        The mass-delete breaker pauses a link when one poll would cancel too much;
        resuming with ``confirm_deletes`` says the deletions were meant.
        """
        link = self._get(account_id)
        if confirm_deletes:
            SQLSyncState(self.journal).update_inbound(
                str(account_id), confirm_deletes=True, breaker=None
            )
        if link.resume(cause=cause):
            self.journal.save(link)
        return link.state()

    def set_poll_interval(self, account_id: UUID, seconds: int, cause: Cause) -> dict[str, Any]:
        """Poll the account's calendar every ``seconds``.

        :raises LinkStateError: when the interval is out of range.
        """
        link = self._get(account_id)
        if link.set_poll_interval(seconds=seconds, cause=cause):
            self.journal.save(link)
        return link.state()

    def request_poll(self, account_id: UUID, cause: Cause) -> dict[str, Any]:
        """Ask the worker serving the account to poll its calendar now."""
        link = self._get(account_id)
        link.request_poll(cause=cause)
        self.journal.save(link)
        return link.state()

    def unlink(self, account_id: UUID, cause: Cause) -> dict[str, Any]:
        """Unlink and erase the stored credentials."""
        link = self._get(account_id)
        if link.unlink(cause=cause):
            self.journal.save(link, extra_rows=[secret_row(link, "")])
        return link.state()

    # -- queries ----------------------------------------------------------------

    def get(self, account_id: UUID) -> dict[str, Any]:
        """Return the account's link.

        :raises NotFoundError: when it has none.
        """
        return self._get(account_id).state()

    def history(self, account_id: UUID) -> list[dict[str, Any]]:
        """Return the link's recorded lifecycle (who linked, chose, rotated, paused…)."""
        return history_of(self.journal, self._get(account_id).id)

    def access(self, link: CalendarLink) -> ServerAccess:
        """Return how to reach a link's server, with its credentials unsealed.

        :raises LinkFailedError: when no credentials are stored or the key is missing.
        """
        return self._access(
            link.server_url, self._unseal(link), get_profile(link.provider), link.auth
        )

    def _unseal(self, link: CalendarLink) -> Credentials:
        """Return the link's stored credentials.

        :raises LinkFailedError: when none are stored or no key opens them.
        """
        sealed = self.journal.journal_recorder.select_secret(str(link.id))
        if not sealed:
            raise LinkFailedError("no credentials are stored for this link; link again")
        try:
            credentials = Credentials.from_json(self._box().open(sealed))
        except SecretKeyError as exc:
            raise LinkFailedError(str(exc)) from None
        if credentials.url_query is None and link.legacy_url_query:
            credentials = replace(credentials, url_query=link.legacy_url_query)
        return credentials

    def rotate_key(self) -> tuple[int, int]:
        """Re-seal every stored secret with the current key; return (resealed, total)."""
        box = self._box()
        rows = self.journal.journal_recorder.select_secrets()
        done = 0
        for row in rows:
            if not row["sealed"] or box.is_current(row["sealed"]):
                continue
            fresh = box.seal(box.open(row["sealed"]))
            if self.journal.journal_recorder.reseal(row["id"], row["sealed"], fresh):
                done += 1
        return done, len(rows)

    # -- helpers ----------------------------------------------------------------

    def _find(self, account_id: UUID) -> CalendarLink | None:
        return find(self.journal, CalendarLink.id_for(account_id), CalendarLink)

    def _get(self, account_id: UUID) -> CalendarLink:
        return load_or_not_found(
            self.journal,
            CalendarLink.id_for(account_id),
            CalendarLink,
            "this account has no calendar link",
        )

    def _save(self, link: CalendarLink, credentials: Credentials) -> None:
        sealed = self._box().seal(credentials.to_json())
        self.journal.save(link, extra_rows=[secret_row(link, sealed)])

    def _profile(self, provider: str | None, url: str) -> ProviderProfile:
        if provider:
            try:
                return get_profile(provider)
            except KeyError as exc:
                raise LinkFailedError(str(exc.args[0]), field="provider") from None
        try:
            return normalise(url).profile
        except CalendarURLError as exc:
            raise LinkFailedError(str(exc), field="url") from None

    def _with_embedded(
        self, url: str, profile: ProviderProfile, credentials: Credentials
    ) -> Credentials:
        try:
            embedded = normalise(url, profile).credentials
        except CalendarURLError as exc:
            raise LinkFailedError(str(exc), field="url") from None
        if embedded and not credentials.username and not credentials.password:
            return Credentials(embedded.username, embedded.password, credentials.bearer_token)
        return credentials

    def _access(
        self, url: str, credentials: Credentials, profile: ProviderProfile, auth: str
    ) -> ServerAccess:
        return ServerAccess(
            url=url,
            credentials=credentials,
            auth=auth,
            verify_tls=self.policy.verify_tls,
            allow_private=self.policy.allow_private,
            timeout=self.policy.timeout,
            caldav_hints=profile.caldav_hints,
            limits=self.policy.limits,
        )

    def _run_discovery(self, url: str, access: ServerAccess, profile: ProviderProfile) -> Discovery:
        try:
            # One deadline for the whole discovery, however many candidates.
            return self._discover(url, access.within(kind=DISCOVERY), profile)
        except CalendarURLError as exc:
            raise LinkFailedError(str(exc), field="url") from None
        except CalDAVError as exc:
            field = "password" if exc.status == 401 else "url"
            raise LinkFailedError(_sentence(exc.message), field=field) from None

    @staticmethod
    def _check_usable(calendar: dict[str, Any]) -> None:
        if not calendar["accepts_events"]:
            raise LinkFailedError(
                f"the calendar {calendar['name'] or calendar['url']!r} does not take events "
                "(only tasks or journal entries)",
                field="calendar_url",
            )
        if calendar["writable"] is False:
            raise LinkFailedError(
                f"the calendar {calendar['name'] or calendar['url']!r} is read-only for this user",
                field="calendar_url",
            )


def _check_credentials(credentials: Credentials, auth: str, provider: str) -> None:
    """Refuse credentials that cannot log in the way ``auth`` says.

    :raises LinkFailedError: naming the missing (or superfluous) field.
    """
    if auth == "none":
        if credentials.username or credentials.password or credentials.bearer_token:
            raise LinkFailedError(
                "credentials were given for a link without authentication; "
                "leave them out or choose another auth",
                field="auth",
            )
        return
    if auth == "oauth2_bearer":
        if not credentials.bearer_token:
            raise LinkFailedError(f"{provider} needs an OAuth2 bearer token", field="bearer_token")
        return
    hint = "; for a calendar without authentication link with auth none"
    if not credentials.username:
        raise LinkFailedError("the username is missing" + hint, field="username")
    if not credentials.password:
        raise LinkFailedError("the password is missing" + hint, field="password")


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."

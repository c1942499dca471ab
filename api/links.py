"""Calendar-link endpoints: link, list calendars, choose, test, rotate, pause, unlink."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from caljournal.adapters.secrets import Credentials
from caljournal.api.deps import CauseDep, ContainerDep, TargetAccountDep
from caljournal.api.schemas import ErrorOut
from caljournal.errors import TooManyRequestsError

T = TypeVar("T")

router = APIRouter(prefix="/link", tags=["calendar link"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing, unknown or revoked token"},
    404: {"model": ErrorOut, "description": "the account has no link"},
    409: {"model": ErrorOut, "description": "the link's state does not allow it (linked already)"},
    422: {"model": ErrorOut, "description": "the server, URL or credentials did not work"},
    503: {"model": ErrorOut, "description": "the keys sealing credentials are unusable"},
}
_SERVER_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    429: {
        "model": ErrorOut,
        "description": "the account already has as many calendar-server operations running "
        "as allowed",
    },
}


class ServerCalls:
    """Run the link operations that talk to a calendar server.

    They run on threads of their own (not the pool every other endpoint
    shares), and one account may have only ``per_account`` of them running:
    a slow or hostile server of one account then ties up at most that many
    threads and never delays another account's calls.
    """

    def __init__(self, per_account: int, threads: int) -> None:
        self.per_account = per_account
        self.threads = threads
        self._limiter: anyio.CapacityLimiter | None = None
        self._running: dict[UUID, int] = {}

    def running(self, account_id: UUID) -> int:
        """Return how many operations of the account are running."""
        return self._running.get(account_id, 0)

    async def run(self, account_id: UUID, call: Callable[[], T]) -> T:
        """Run ``call`` in a thread for the account.

        :raises TooManyRequestsError: when the account is at its limit.
        """
        # Only the event loop's thread touches the counters: no lock needed.
        if self.running(account_id) >= self.per_account:
            raise TooManyRequestsError(
                f"this account already has {self.per_account} calendar-server operations "
                "running; wait for them to finish, then try again"
            )
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        self._running[account_id] = self.running(account_id) + 1
        try:
            return await anyio.to_thread.run_sync(call, limiter=self._limiter)
        finally:
            left = self._running[account_id] - 1
            if left:
                self._running[account_id] = left
            else:
                del self._running[account_id]


async def get_server_calls(request: Request) -> ServerCalls:
    """Return the application's runner of calendar-server operations."""
    calls: ServerCalls | None = getattr(request.app.state, "server_calls", None)
    if calls is None:
        settings = request.app.state.container.settings
        calls = ServerCalls(settings.link_operations_per_account, settings.link_operation_threads)
        request.app.state.server_calls = calls
    return calls


ServerCallsDep = Annotated[ServerCalls, Depends(get_server_calls)]


class LinkIn(BaseModel):
    """Where the calendar is and how to log in. Secrets are never shown again."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://cloud.example.org/remote.php/dav/calendars/anna/personal/",
                    "username": "anna",
                    "password": "app-password",
                },
                {"url": "anna@icloud.com", "username": "anna@icloud.com", "password": "app-pw"},
            ]
        },
    )

    url: str = Field(
        min_length=1,
        max_length=2000,
        description="a calendar, principal or server URL, a domain, or an e-mail address",
    )
    username: str | None = Field(default=None, max_length=320)
    password: SecretStr | None = Field(default=None, max_length=1000)
    bearer_token: SecretStr | None = Field(
        default=None, max_length=8000, description="OAuth2 access token (Google)"
    )
    provider: str | None = Field(
        default=None, max_length=40, description="provider profile key; guessed from the URL"
    )
    auth: Literal["basic", "digest", "oauth2_bearer", "none"] | None = Field(
        default=None,
        description="how to log in (default: the provider's way); `none` links a calendar "
        "without authentication, and then no username or password may be given",
    )
    backfill: bool = Field(
        default=False,
        description="also request a backfill of the account's existing appointments (run by "
        "the worker serving the account; progress in /link/status, the outcome as ResyncRan "
        "in /link/history)",
    )


class CredentialsIn(BaseModel):
    """New credentials for the linked server (checked before they are stored)."""

    model_config = ConfigDict(extra="forbid")

    username: str | None = Field(default=None, max_length=320)
    password: SecretStr | None = Field(default=None, max_length=1000)
    bearer_token: SecretStr | None = Field(default=None, max_length=8000)


class ChooseIn(BaseModel):
    """The calendar to sync with (one of those listed)."""

    model_config = ConfigDict(extra="forbid")

    calendar_url: str = Field(min_length=1, max_length=2000)


class PauseIn(BaseModel):
    """Why syncing is paused."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="paused by the account", min_length=1, max_length=500)


def _credentials(body: LinkIn | CredentialsIn) -> Credentials:
    return Credentials(
        username=body.username,
        password=body.password.get_secret_value() if body.password else None,
        bearer_token=body.bearer_token.get_secret_value() if body.bearer_token else None,
    )


@router.post("", status_code=status.HTTP_201_CREATED, responses=_SERVER_ERRORS)
async def link(
    body: LinkIn,
    container: ContainerDep,
    cause: CauseDep,
    account_id: TargetAccountDep,
    calls: ServerCallsDep,
) -> dict[str, Any]:
    """Discover the server behind ``url`` and link the account to it.

    When ``url`` is a calendar it is chosen at once; otherwise choose one of the
    listed ``calendars`` with ``PUT /link/calendar``.
    """
    credentials = _credentials(body)
    result = await calls.run(
        account_id,
        lambda: container.links.link(
            account_id, body.url, credentials, cause, body.provider, body.auth
        ),
    )
    answer = result.as_dict()
    answer["backfill"] = "not requested"
    answer["backfill_request"] = None
    if body.backfill:
        if result.state["status"] != "active":
            answer["backfill"] = (
                "not started: choose a calendar first (PUT /link/calendar), "
                "then POST /link/backfill"
            )
        else:
            request = await run_in_threadpool(
                container.resyncs.request, account_id, "backfill", {}, cause
            )
            answer["backfill"] = "requested"
            answer["backfill_request"] = request["request_id"]
    return answer


@router.post("/backfill", status_code=status.HTTP_202_ACCEPTED, responses=_ERRORS)
async def backfill(
    container: ContainerDep, cause: CauseDep, account_id: TargetAccountDep
) -> dict[str, Any]:
    """Request a push of the account's existing appointments to the calendar.

    The worker serving the account runs it (never at the same time as its
    pushes); its phase and counts show in ``GET /link/status`` under
    ``resyncs``, its outcome as ``ResyncRan`` in ``GET /link/history``.
    A link without an active calendar is refused (422).
    """
    request = await run_in_threadpool(container.resyncs.request, account_id, "backfill", {}, cause)
    return {"backfill": "requested", "request_id": request["request_id"], "status": "/link/status"}


@router.get("", responses=_ERRORS)
async def get_link(container: ContainerDep, account_id: TargetAccountDep) -> dict[str, Any]:
    """Return the account's link (never its credentials)."""
    return await run_in_threadpool(container.links.get, account_id)


@router.get("/history", responses=_ERRORS)
async def history(container: ContainerDep, account_id: TargetAccountDep) -> dict[str, Any]:
    """Every recorded change of the link: who linked, chose, rotated, paused, unlinked."""
    entries = await run_in_threadpool(container.links.history, account_id)
    return {"entries": entries}


@router.get("/status", responses=_ERRORS)
async def sync_status(container: ContainerDep, account_id: TargetAccountDep) -> dict[str, Any]:
    """Outbound status: journal and pushed positions, pending, lag, failures, last success."""
    return await run_in_threadpool(container.sync.status, account_id)


@router.post("/retry", responses=_ERRORS)
async def retry_failed(
    container: ContainerDep, cause: CauseDep, account_id: TargetAccountDep
) -> dict[str, Any]:
    """Push the failed appointments again (after fixing the cause)."""
    count = await run_in_threadpool(container.sync.retry_failed, account_id, cause)
    return {"queued": count}


@router.get("/calendars", responses=_SERVER_ERRORS)
async def calendars(
    container: ContainerDep, account_id: TargetAccountDep, calls: ServerCallsDep
) -> dict[str, Any]:
    """Ask the linked server for its calendars."""
    result = await calls.run(account_id, lambda: container.links.calendars(account_id))
    return result.as_dict()


@router.put("/calendar", responses=_SERVER_ERRORS)
async def choose(
    body: ChooseIn,
    container: ContainerDep,
    cause: CauseDep,
    account_id: TargetAccountDep,
    calls: ServerCallsDep,
) -> dict[str, Any]:
    """Choose the calendar to sync with."""
    return await calls.run(
        account_id, lambda: container.links.choose(account_id, body.calendar_url, cause)
    )


@router.post("/test", responses=_SERVER_ERRORS)
async def test(
    container: ContainerDep, account_id: TargetAccountDep, calls: ServerCallsDep
) -> dict[str, Any]:
    """Prove caljournal can write: create and delete a probe event in the chosen calendar."""
    return await calls.run(account_id, lambda: container.links.test(account_id))


@router.put("/credentials", responses=_SERVER_ERRORS)
async def rotate(
    body: CredentialsIn,
    container: ContainerDep,
    cause: CauseDep,
    account_id: TargetAccountDep,
    calls: ServerCallsDep,
) -> dict[str, Any]:
    """Replace the stored credentials after checking them against the server."""
    credentials = _credentials(body)
    return await calls.run(
        account_id, lambda: container.links.rotate_credentials(account_id, credentials, cause)
    )


@router.post("/pause", responses=_ERRORS)
async def pause(
    container: ContainerDep,
    cause: CauseDep,
    account_id: TargetAccountDep,
    body: PauseIn | None = None,
) -> dict[str, Any]:
    """Pause syncing."""
    reason = body.reason if body else "paused by the account"
    return await run_in_threadpool(container.links.pause, account_id, reason, cause)


@router.post("/resume", responses=_ERRORS)
async def resume(
    container: ContainerDep,
    cause: CauseDep,
    account_id: TargetAccountDep,
    confirm_deletes: bool = False,
) -> dict[str, Any]:
    """Resume syncing; ``confirm_deletes=true`` lets a paused mass deletion through."""
    return await run_in_threadpool(container.links.resume, account_id, cause, confirm_deletes)


class IntervalIn(BaseModel):
    """How often to poll the calendar for remote changes."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"seconds": 60}]})

    seconds: int = Field(ge=5, le=86_400)


@router.post("/poll", status_code=status.HTTP_202_ACCEPTED, responses=_ERRORS)
async def poll_now(
    container: ContainerDep, cause: CauseDep, account_id: TargetAccountDep
) -> dict[str, Any]:
    """Ask the worker to poll the calendar now (it answers in the status)."""
    return await run_in_threadpool(container.links.request_poll, account_id, cause)


@router.put("/poll-interval", responses=_ERRORS)
async def poll_interval(
    body: IntervalIn, container: ContainerDep, cause: CauseDep, account_id: TargetAccountDep
) -> dict[str, Any]:
    """Set how often the calendar is polled (default 60 s)."""
    return await run_in_threadpool(
        container.links.set_poll_interval, account_id, body.seconds, cause
    )


@router.delete("", responses=_ERRORS)
async def unlink(
    response: Response, container: ContainerDep, cause: CauseDep, account_id: TargetAccountDep
) -> dict[str, Any]:
    """Unlink the account and erase its stored credentials."""
    return await run_in_threadpool(container.links.unlink, account_id, cause)

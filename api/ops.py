"""Operator endpoints: the sync status of every account, and Prometheus metrics.

``GET /status`` lists every account for an operator token and only its own
account for an account token. ``GET /metrics`` needs an operator token (a
scraper sends it as ``Authorization: Bearer``): it names accounts, and every
scrape reads the state of all accounts from the database.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from caljournal.adapters.metrics import CONTENT_TYPE, StateCollector, exposition
from caljournal.api.deps import AuthenticatedDep, ContainerDep
from caljournal.api.schemas import ErrorOut
from caljournal.errors import PermissionDeniedError
from caljournal.status import StatusService, sort_rows

router = APIRouter(tags=["operations"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing, unknown or revoked token"},
    422: {"model": ErrorOut, "description": "an unknown sort order"},
}


class AccountStatusOut(BaseModel):
    """One account's sync status (see ``caljournal.status.AccountStatus``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    account_id: str
    link_status: str
    calendar_url: str | None
    lag_seconds: float
    pending: int
    failed: int
    quarantined: int
    last_poll: str | None
    next_poll: str | None
    last_success: str | None
    last_error: str | None
    last_error_at: str | None
    worker: str | None


class StatusOut(BaseModel):
    """The sync status of the accounts the caller may see."""

    model_config = ConfigDict(extra="forbid")

    journal_position: int
    accounts: list[AccountStatusOut]
    resyncs_running: int


SortQuery = Annotated[
    str, Query(pattern="^(lag|failures|name)$", description="lag, failures or name")
]


@router.get("/status", response_model=StatusOut, responses=_ERRORS)
async def all_status(
    container: ContainerDep, caller: AuthenticatedDep, sort: SortQuery = "name"
) -> dict[str, Any]:
    """Every account's link, lag, pending and failed pushes, polls and worker (operators).

    An account token sees its own account only.
    """
    scope = caller.scope()
    overview = await run_in_threadpool(
        StatusService(container.journal).overview, None if scope is None else str(scope)
    )
    body = overview.as_dict()
    body["accounts"] = [r.as_dict() for r in sort_rows(overview.rows, sort)]
    return body


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format", "content": {CONTENT_TYPE: {}}},
        401: _ERRORS[401],
        403: {"model": ErrorOut, "description": "not an operator token"},
    },
)
async def metrics(container: ContainerDep, caller: AuthenticatedDep) -> Response:
    """Prometheus metrics of every process sharing ``PROMETHEUS_MULTIPROC_DIR`` (operators)."""
    if caller.scope() is not None:
        raise PermissionDeniedError("metrics need an operator token")
    service = StatusService(container.journal)
    state = StateCollector(service.overview, container.settings.metrics_top_accounts)
    body = await run_in_threadpool(exposition, state)
    return Response(content=body, media_type=CONTENT_TYPE)


__all__ = ["router"]

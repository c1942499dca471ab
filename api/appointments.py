"""Appointment endpoints: translate HTTP to service calls and back, nothing more."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Body, Header, Query, Response, status
from fastapi.responses import JSONResponse

from caljournal.api.deps import AccountQuery, CallerDep, IfMatchHeader, expected_version
from caljournal.api.schemas import (
    AppointmentList,
    AppointmentOut,
    BookIn,
    CancelIn,
    DetailsIn,
    EraseIn,
    ErrorOut,
    History,
    Moment,
    MoveIn,
)
from caljournal.appointments import Booking

router = APIRouter(prefix="/appointments", tags=["appointments"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing, unknown or revoked token"},
    404: {"model": ErrorOut, "description": "no such appointment in your account"},
    422: {"model": ErrorOut, "description": "invalid input; `field` names it"},
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    409: {"model": ErrorOut, "description": "the appointment is cancelled"},
    412: {"model": ErrorOut, "description": "If-Match names an older version"},
}


class _JSON(JSONResponse):
    """A JSON response rendered by orjson: the same compact JSON, several times faster."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _appointment(state: dict[str, Any]) -> dict[str, Any]:
    """Return an appointment's state as ``AppointmentOut`` documents it.

    The service returns JSON-ready values in the documented shape (times as the
    journal writes them); answering with them directly skips a second
    validation pass per request. Only a listed occurrence of a recurring
    appointment names its ``occurrence``.
    """
    return state if "occurrence" in state else {**state, "occurrence": None}


def _with_etag(
    state: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return _JSON(
        _appointment(state),
        status_code=status_code,
        headers={**(headers or {}), "ETag": f'"{state["version"]}"'},
    )


# The endpoints are coroutines that hand their journal work to ``Caller.run``,
# which runs it inline on SQLite and in a worker thread on PostgreSQL.


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AppointmentOut,
    responses=_ERRORS,
    summary="Book an appointment",
)
async def book(
    body: BookIn,
    caller: CallerDep,
    account: AccountQuery = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description="send the same key when retrying; the first result is returned",
        ),
    ] = None,
) -> Response:
    """Book an appointment. With ``Idempotency-Key`` a retried request books nothing new."""
    booked = await caller.run(
        lambda: caller.container.appointments.book(
            caller.target_account(account),
            Booking(**body.model_dump()),
            caller.cause(),
            idempotency_key,
        )
    )
    headers = {"Location": f"/appointments/{booked.state['id']}"}
    if not booked.created:
        headers["Idempotent-Replayed"] = "true"
    return _with_etag(booked.state, status.HTTP_201_CREATED, headers)


@router.get("", response_model=AppointmentList, responses=_ERRORS, summary="List a time window")
async def list_window(
    caller: CallerDep,
    start: Annotated[Moment, Query(description="window start (inclusive)")],
    end: Annotated[Moment, Query(description="window end (exclusive)")],
    include_cancelled: bool = False,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    account: AccountQuery = None,
) -> Response:
    """List the appointments that overlap [start, end), earliest first."""
    items = await caller.run(
        lambda: caller.container.appointments.list_window(
            caller.target_account(account), start, end, include_cancelled, limit
        )
    )
    return _JSON({"items": [_appointment(item) for item in items], "count": len(items)})


@router.get("/{appointment_id}", response_model=AppointmentOut, responses=_ERRORS)
async def get(
    appointment_id: UUID,
    caller: CallerDep,
    as_of: Annotated[
        Moment | None, Query(description="return the state as it was at this moment")
    ] = None,
) -> Response:
    """Return an appointment, now or as it was at ``as_of``."""
    state = await caller.run(
        lambda: caller.container.appointments.get(caller.scope(), appointment_id, as_of)
    )
    return _with_etag(state)


@router.post("/{appointment_id}/move", response_model=AppointmentOut, responses=_WRITE_ERRORS)
async def move(
    appointment_id: UUID,
    body: MoveIn,
    caller: CallerDep,
    if_match: IfMatchHeader = None,
) -> Response:
    """Move an appointment to a new period (two dates make it all-day)."""
    state = await caller.run(
        lambda: caller.container.appointments.move(
            caller.scope(),
            appointment_id,
            body.start,
            body.end,
            caller.cause(),
            expected_version(if_match),
        )
    )
    return _with_etag(state)


@router.patch("/{appointment_id}", response_model=AppointmentOut, responses=_WRITE_ERRORS)
async def change_details(
    appointment_id: UUID,
    body: DetailsIn,
    caller: CallerDep,
    if_match: IfMatchHeader = None,
) -> Response:
    """Change title, location, description or customer fields."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    state = await caller.run(
        lambda: caller.container.appointments.change_details(
            caller.scope(), appointment_id, changes, caller.cause(), expected_version(if_match)
        )
    )
    return _with_etag(state)


@router.post("/{appointment_id}/cancel", response_model=AppointmentOut, responses=_WRITE_ERRORS)
async def cancel(
    appointment_id: UUID,
    caller: CallerDep,
    if_match: IfMatchHeader = None,
    body: Annotated[CancelIn | None, Body()] = None,
) -> Response:
    """Cancel an appointment (cancelling twice changes nothing)."""
    reason = body.reason if body else None
    state = await caller.run(
        lambda: caller.container.appointments.cancel(
            caller.scope(), appointment_id, caller.cause(), reason, expected_version(if_match)
        )
    )
    return _with_etag(state)


@router.post("/{appointment_id}/erase", response_model=AppointmentOut, responses=_ERRORS)
async def erase(appointment_id: UUID, body: EraseIn, caller: CallerDep) -> Response:
    """Erase the personal data (title, location, description, customer) for good.

    The rest of the appointment and its history stay; the calendar copy is
    written again without the erased fields. Erasing twice changes nothing.
    """
    outcome = await caller.run(
        lambda: caller.container.erasure.erase(
            caller.scope(), appointment_id, body.reason, caller.cause()
        )
    )
    return _with_etag(outcome.state)


@router.get("/{appointment_id}/history", response_model=History, responses=_ERRORS)
async def history(appointment_id: UUID, caller: CallerDep) -> Response:
    """Every recorded change: journal position, time, type, origin, actor, old → new."""
    entries = await caller.run(
        lambda: caller.container.appointments.history(caller.scope(), appointment_id)
    )
    return _JSON({"appointment_id": str(appointment_id), "entries": entries})


__all__ = ["router", "datetime"]

"""``GET /audit``: an account's change log, a page of JSON at a time or all of it as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from caljournal.api.deps import CallerDep, TargetAccountDep
from caljournal.api.schemas import ErrorOut, Moment
from caljournal.audit import CSV_HEADER, MAX_LIMIT, AuditQuery, AuditService, csv_rows

router = APIRouter(tags=["audit"])

_OUT = ConfigDict(extra="forbid")
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing, unknown or revoked token"},
    404: {"model": ErrorOut, "description": "no such account (operators must name one)"},
    422: {"model": ErrorOut, "description": "invalid filter; `field` names it"},
}
# Rows written to the CSV stream per chunk handed to the server.
_CSV_CHUNK = 500


class FieldChange(BaseModel):
    """One field's value before and after a change (null: not set)."""

    model_config = _OUT

    field: str = Field(description="the field; nested values use dotted names")
    old: Any
    new: Any


class AuditEntry(BaseModel):
    """One recorded change of the account."""

    model_config = _OUT

    position: int = Field(description="the event's journal position (the cursor)")
    seq: int = Field(description="the event's number in the account's audit chain")
    time: str | None = Field(description="when the change was made (RFC 3339)")
    account_id: str
    aggregate_type: str = Field(description="Appointment, CalendarLink, Account or ApiToken")
    aggregate_id: str
    version: int
    event_type: str = Field(examples=["Moved"])
    topic: str = Field(examples=["caljournal:Appointment.Moved"])
    origin: str = Field(description="api, caldav, backfill or operator; empty when unrecorded")
    actor: str
    correlation_id: str
    missing: bool = Field(description="the chain names an event the journal no longer holds")
    changes: list[FieldChange]


class AuditPage(BaseModel):
    """A page of the change log, in journal order."""

    model_config = _OUT

    items: list[AuditEntry]
    next_after: int | None = Field(
        description="pass as `after` for the next page; null when there is none"
    )


_CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a page as JSON, or with `Accept: text/csv` the whole range as CSV "
        "(a header, then one row per changed field)",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    },
    **_ERRORS,
}


@router.get("/audit", response_model=AuditPage, responses=_CSV_RESPONSE)
async def audit(
    request: Request,
    caller: CallerDep,
    account_id: TargetAccountDep,
    appointment: Annotated[UUID | None, Query(description="only this aggregate's changes")] = None,
    since: Annotated[Moment | None, Query(description="only changes at or after")] = None,
    until: Annotated[Moment | None, Query(description="only changes at or before")] = None,
    origin: Annotated[
        Literal["api", "caldav", "backfill", "operator"] | None,
        Query(description="only changes from this origin"),
    ] = None,
    actor: Annotated[
        str | None, Query(max_length=200, description="only changes by this actor")
    ] = None,
    type: Annotated[  # noqa: A002
        str | None,
        Query(max_length=200, description="only this event type (Moved) or full topic"),
    ] = None,
    after: Annotated[int, Query(ge=0, description="the journal position to start after")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="changes per page")] = 500,
) -> Response:
    """List the account's recorded changes in journal order, with old → new values.

    Account tokens see their own account; operator tokens name one with
    ``?account=NAME``. Credentials, token hashes and sealed values are never
    part of it.
    """
    query = AuditQuery(
        account_id=account_id,
        appointment_id=appointment,
        since=since,
        until=until,
        origin=origin,
        actor=actor,
        event_type=type,
    )
    service = AuditService(caller.container.journal)
    if "text/csv" in request.headers.get("accept", ""):
        return StreamingResponse(
            _csv_chunks(service, query, after),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
        )
    items, next_after = await caller.run(lambda: service.page(query, after, limit))
    body = {"items": [item.as_dict() for item in items], "next_after": next_after}
    return Response(orjson.dumps(body, default=str), media_type="application/json")


def _csv_chunks(service: AuditService, query: AuditQuery, after: int) -> Iterator[str]:
    """Yield the CSV in chunks of a few hundred rows (run in a worker thread by Starlette)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    rows = 0
    for record in service.stream(query, after):
        for row in csv_rows(record):
            writer.writerow(row)
            rows += 1
        if rows >= _CSV_CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            rows = 0
    yield buffer.getvalue()


__all__ = ["AuditEntry", "AuditPage", "router"]

"""Request-scoped dependencies: the container, the caller and the change's cause.

Each request is described by one ``Caller``: the bearer secret, the
correlation id and the container, read from the request without I/O. The
token is looked up the first time the caller is asked who it is, inside
``Caller.run`` together with the request's journal work, so a request costs
at most one hop to a worker thread, and none on SQLite (each dependency and
each hop is a measurable share of a write's cost; see ``scripts/bench_api.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, TypeVar
from uuid import UUID

from fastapi import Depends, Header, Query, Request

from caljournal.accounts import Principal
from caljournal.adapters.logs import bind_correlation_id
from caljournal.bootstrap import Container
from caljournal.domain.cause import Cause, Origin
from caljournal.errors import (
    AuthenticationError,
    NotFoundError,
    PreconditionFailedError,
)

T = TypeVar("T")

_ETAG = re.compile(r'^(?:W/)?"?(\d{1,12})"?$')
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class Caller:
    """Who sent the request, resolved on first use."""

    container: Container
    secret: str
    correlation_id: str
    _principal: Principal | None = field(default=None, repr=False)

    async def run(self, call: Callable[[], T]) -> T:
        """Run ``call`` (journal work, token check included) where the container says.

        Inline on the event loop for SQLite, in a worker thread for PostgreSQL
        (see ``Container.inline_commands``): one hop at most per request.
        """
        if self.container.inline_commands:
            return call()
        # The container's executor rather than Starlette's run_in_threadpool:
        # anyio's hand-over costs about 100 µs against 60 µs for the event
        # loop's own (measured on a 2-core VM), and its size is set for journal
        # calls (``Settings.api_thread_count``).
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.container.api_executor, context.run, call)

    def principal(self) -> Principal:
        """Return the caller's principal (looked up once per request).

        :raises AuthenticationError: when the token is unknown or revoked.
        """
        if self._principal is None:
            self._principal = self.container.accounts.authenticate(self.secret)
        return self._principal

    def cause(self) -> Cause:
        """Return the cause recorded with changes made by this request."""
        return Cause(Origin.API, self.principal().actor, self.correlation_id)

    def scope(self) -> UUID | None:
        """Return the account the caller may see, or None for an operator."""
        return self.principal().account_id

    def target_account(self, name: str | None) -> UUID:
        """Return the account a create or list acts on.

        :raises NotFoundError: for another account's name, or an unknown one.
        """
        principal = self.principal()
        if principal.account_id is not None:
            if name is not None and name.casefold() != (principal.account_name or "").casefold():
                raise NotFoundError(f"no account named {name!r}")
            return principal.account_id
        if name is None:
            raise NotFoundError("operator tokens must name the account: add ?account=NAME")
        return self.container.accounts.find_account(name).id


async def get_container(request: Request) -> Container:
    """Return the application's container."""
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def get_caller(request: Request) -> Caller:
    """Return the caller; the token is checked when the endpoint first asks.

    The Authorization and X-Request-ID headers are read here rather than
    through FastAPI's security and header parameters: each parameter and
    sub-dependency FastAPI resolves costs tens of microseconds per request.
    ``api.app.document_auth`` describes both headers in the OpenAPI schema.

    :raises AuthenticationError: without a bearer token.
    """
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise AuthenticationError("send an 'Authorization: Bearer cj_…' header")
    given = request.headers.get("x-request-id")
    correlation_id = given if given and _REQUEST_ID.match(given) else str(uuid.uuid4())
    request.state.correlation_id = correlation_id
    # Log lines of this request (and of the threads its calls run in) carry the id.
    bind_correlation_id(correlation_id)
    return Caller(request.app.state.container, secret, correlation_id)


CallerDep = Annotated[Caller, Depends(get_caller)]
"""The token is checked inside ``Caller.run``, with the request's journal work."""


async def get_authenticated(caller: CallerDep) -> Caller:
    """Return the caller with the token checked (for endpoints on the event loop).

    :raises AuthenticationError: when the token is unknown or revoked.
    """
    await caller.run(caller.principal)
    return caller


AuthenticatedDep = Annotated[Caller, Depends(get_authenticated)]


async def get_cause(caller: AuthenticatedDep) -> Cause:
    """Return the cause recorded with changes made by this request."""
    return caller.cause()


CauseDep = Annotated[Cause, Depends(get_cause)]

AccountQuery = Annotated[
    str | None,
    Query(description="account name; required for operator tokens, optional otherwise"),
]


async def get_target_account(caller: AuthenticatedDep, account: AccountQuery = None) -> UUID:
    """Return the account a call acts on (see ``Caller.target_account``)."""
    if caller.scope() is not None:  # an account token: no lookup needed
        return caller.target_account(account)
    return await caller.run(lambda: caller.target_account(account))


TargetAccountDep = Annotated[UUID, Depends(get_target_account)]

IfMatchHeader = Annotated[str | None, Header(description='the ETag you read, e.g. "3"')]


def expected_version(if_match: str | None) -> int | None:
    """Return the version named by If-Match, None when absent or ``*``.

    :raises PreconditionFailedError: when the header names no version of ours.
    """
    if if_match is None or if_match.strip() == "*":
        return None
    match = _ETAG.match(if_match.strip())
    if not match:
        raise PreconditionFailedError(f"If-Match {if_match!r} is not an ETag of this API")
    return int(match.group(1))

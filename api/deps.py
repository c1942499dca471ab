"""Request-scoped dependencies: the container, the caller and the change's cause."""

from __future__ import annotations

import re
import uuid
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from caljournal.accounts import Principal
from caljournal.bootstrap import Container
from caljournal.domain.cause import Cause, Origin
from caljournal.errors import (
    AuthenticationError,
    NotFoundError,
    PreconditionFailedError,
)

_bearer = HTTPBearer(auto_error=False, description="an account or operator token (cj_…)")
_ETAG = re.compile(r'^(?:W/)?"?(\d{1,12})"?$')
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


async def get_container(request: Request) -> Container:
    """Return the application's container."""
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def get_principal(
    container: ContainerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Return the caller.

    :raises AuthenticationError: without a valid bearer token.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationError("send an 'Authorization: Bearer cj_…' header")
    return await run_in_threadpool(container.accounts.authenticate, credentials.credentials)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_correlation_id(
    request: Request,
    x_request_id: Annotated[str | None, Header(description="correlation id to record")] = None,
) -> str:
    """Return the caller's X-Request-ID when usable, else a new one."""
    value = x_request_id if x_request_id and _REQUEST_ID.match(x_request_id) else None
    correlation_id = value or str(uuid.uuid4())
    request.state.correlation_id = correlation_id
    return correlation_id


async def get_cause(
    principal: PrincipalDep, correlation_id: Annotated[str, Depends(get_correlation_id)]
) -> Cause:
    """Return the cause recorded with changes made by this request."""
    return Cause(Origin.API, principal.actor, correlation_id)


CauseDep = Annotated[Cause, Depends(get_cause)]


async def get_scope(principal: PrincipalDep) -> UUID | None:
    """Return the account the caller may see, or None for an operator."""
    return principal.account_id


ScopeDep = Annotated[UUID | None, Depends(get_scope)]


async def get_target_account(
    principal: PrincipalDep,
    container: ContainerDep,
    account: Annotated[
        str | None,
        Query(description="account name; required for operator tokens, optional otherwise"),
    ] = None,
) -> UUID:
    """Return the account a create or list acts on.

    :raises NotFoundError: for another account's name, or an unknown one.
    """
    if principal.account_id is not None:
        if account is not None and account.casefold() != (principal.account_name or "").casefold():
            raise NotFoundError(f"no account named {account!r}")
        return principal.account_id
    if account is None:
        raise NotFoundError("operator tokens must name the account: add ?account=NAME")
    found = await run_in_threadpool(container.accounts.find_account, account)
    return found.id


TargetAccountDep = Annotated[UUID, Depends(get_target_account)]


async def get_expected_version(
    if_match: Annotated[str | None, Header(description='the ETag you read, e.g. "3"')] = None,
) -> int | None:
    """Return the version named by If-Match, None when absent or ``*``.

    :raises PreconditionFailedError: when the header names no version of ours.
    """
    if if_match is None or if_match.strip() == "*":
        return None
    match = _ETAG.match(if_match.strip())
    if not match:
        raise PreconditionFailedError(f"If-Match {if_match!r} is not an ETag of this API")
    return int(match.group(1))


ExpectedVersionDep = Annotated[int | None, Depends(get_expected_version)]

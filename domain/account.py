"""Accounts (tenants) and the API tokens that act for them.

Only a token's hash is ever recorded; the token itself is shown once, when it is
issued, and is not kept anywhere.
"""

from __future__ import annotations

import re
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from caljournal.domain import ids
from caljournal.domain.cause import Cause
from caljournal.domain.errors import InvalidAccountError, TokenRevokedError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a usable account or token name.

    :raises InvalidAccountError: when it is empty, too long or has odd characters.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidAccountError(
            f"{kind} name {name!r} is not usable: use 1-63 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit",
            field="name",
        )
    return name


class Account(Aggregate):
    """A tenant: owns appointments, tokens and (later) a calendar link."""

    TOPIC = "caljournal:Account"

    class Event(Aggregate.Event):
        origin: str
        actor: str
        correlation_id: str

    class Created(Event, Aggregate.Created):
        TOPIC = "caljournal:Account.Created"

    @staticmethod
    def id_for(name: str) -> UUID:
        """Return the account id for ``name`` (case-insensitive, so names are unique)."""
        return ids.account_id(name)

    @classmethod
    def open(cls, *, name: str, cause: Cause) -> Account:
        """Open a new account.

        :raises InvalidAccountError: when the name is unusable.
        """
        check_name("account", name)
        return cls(
            id=cls.id_for(name),
            name=name,
            **cause.fields(),
        )

    @event("Opened", topic="caljournal:Account.Opened")
    def __init__(
        self,
        *,
        id: UUID,
        name: str,
        origin: str,
        actor: str,
        correlation_id: str,  # noqa: A002
    ) -> None:
        self.name = name
        self.last_rebuild: dict[str, int] | None = None

    def record_rebuild(self, *, events_read: int, cause: Cause) -> None:
        """Record that an operator rebuilt the query tables from the journal."""
        self._read_models_rebuilt(events_read=events_read, **cause.fields())

    @event("ReadModelsRebuilt", topic="caljournal:Account.ReadModelsRebuilt")
    def _read_models_rebuilt(
        self, *, events_read: int, origin: str, actor: str, correlation_id: str
    ) -> None:
        self.last_rebuild = {"events_read": events_read}


class ApiToken(Aggregate):
    """A bearer token acting for one account, or for the operator (all accounts)."""

    TOPIC = "caljournal:ApiToken"

    class Event(Aggregate.Event):
        origin: str
        actor: str
        correlation_id: str

    class Created(Event, Aggregate.Created):
        TOPIC = "caljournal:ApiToken.Created"

    @classmethod
    def issue(
        cls,
        *,
        token_id: UUID,
        name: str,
        account_id: UUID | None,
        token_hash: str,
        cause: Cause,
        account_name: str | None = None,
    ) -> ApiToken:
        """Issue a token; ``account_id`` None makes it an operator token.

        :raises InvalidAccountError: when the name is unusable.
        """
        check_name("token", name)
        return cls(
            id=token_id,
            name=name,
            account_id=account_id,
            account_name=account_name,
            token_hash=token_hash,
            **cause.fields(),
        )

    @event("Issued", topic="caljournal:ApiToken.Issued")
    def __init__(
        self,
        *,
        id: UUID,  # noqa: A002
        name: str,
        account_id: UUID | None,
        account_name: str | None,
        token_hash: str,
        origin: str,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.name = name
        self.account_id = account_id
        self.account_name = account_name
        self.token_hash = token_hash
        self.revoked = False

    @property
    def is_operator(self) -> bool:
        """Return True for a token that may act on every account."""
        return self.account_id is None

    def revoke(self, *, cause: Cause) -> None:
        """Revoke the token.

        :raises TokenRevokedError: when it was revoked already.
        """
        if self.revoked:
            raise TokenRevokedError(f"token {self.name!r} is revoked already")
        self._revoked(
            **cause.fields(),
        )

    @event("Revoked", topic="caljournal:ApiToken.Revoked")
    def _revoked(self, *, origin: str, actor: str, correlation_id: str) -> None:
        self.revoked = True

"""The ids of the aggregates that exist once per name or per account.

Deterministic (UUID 5), so a name or an account id finds its aggregate without a
lookup. Kept apart from the aggregates so read-side code (status, audit) can
compute them without loading the event classes.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

ACCOUNT_NAMESPACE = uuid5(NAMESPACE_URL, "https://caljournal.invalid/account")
LINK_NAMESPACE = uuid5(NAMESPACE_URL, "https://caljournal.invalid/calendar-link")
QUARANTINE_NAMESPACE = uuid5(NAMESPACE_URL, "https://caljournal.invalid/quarantine-log")


def account_id(name: str) -> UUID:
    """Return the account id for ``name`` (case-insensitive, so names are unique)."""
    return uuid5(ACCOUNT_NAMESPACE, name.casefold())


def link_id(account: UUID | str) -> UUID:
    """Return the id of an account's calendar link."""
    return uuid5(LINK_NAMESPACE, str(account))


def quarantine_log_id(account: UUID | str) -> UUID:
    """Return the id of an account's quarantine log."""
    return uuid5(QUARANTINE_NAMESPACE, str(account))

"""The journal's aggregate classes, imported on first use.

Defining an aggregate class registers the topics its stored events carry, so
whatever decodes or writes events needs these classes; whatever reads only the
query tables (``caljournal status``) does not, and starts without building
them (see :func:`aggregate_classes`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from caljournal.domain.account import Account, ApiToken
    from caljournal.domain.appointment import Appointment
    from caljournal.domain.link import CalendarLink
    from caljournal.domain.quarantine import QuarantineLog


class AggregateClasses(NamedTuple):
    """The journal's aggregate classes (see :func:`aggregate_classes`)."""

    Account: type[Account]
    ApiToken: type[ApiToken]
    Appointment: type[Appointment]
    CalendarLink: type[CalendarLink]
    QuarantineLog: type[QuarantineLog]


@lru_cache(maxsize=1)
def aggregate_classes() -> AggregateClasses:
    """Return the aggregate classes, importing (and so registering) them the first time."""
    from caljournal.domain.account import Account, ApiToken
    from caljournal.domain.appointment import Appointment
    from caljournal.domain.link import CalendarLink
    from caljournal.domain.quarantine import QuarantineLog

    return AggregateClasses(Account, ApiToken, Appointment, CalendarLink, QuarantineLog)

"""Who caused a change, from where, and as part of which request.

Every event in the journal carries these three values, so the journal itself is
the audit log: no separate log is needed to answer "who changed what".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from caljournal.domain.errors import InvalidCauseError

MAX_ACTOR_LENGTH = 200
MAX_CORRELATION_LENGTH = 200


class Origin(StrEnum):
    """Where a change came from."""

    API = "api"
    CALDAV = "caldav"
    BACKFILL = "backfill"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Cause:
    """The origin, actor and correlation id of one change.

    :raises InvalidCauseError: when a value is empty, too long or unknown.
    """

    origin: Origin
    actor: str
    correlation_id: str

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "origin", Origin(self.origin))
        except ValueError:
            known = ", ".join(o.value for o in Origin)
            raise InvalidCauseError(
                f"unknown origin {self.origin!r}; expected one of {known}", field="origin"
            ) from None
        if not self.actor or not self.actor.strip():
            raise InvalidCauseError("actor must not be empty", field="actor")
        if len(self.actor) > MAX_ACTOR_LENGTH:
            raise InvalidCauseError(
                f"actor is longer than {MAX_ACTOR_LENGTH} characters", field="actor"
            )
        if not self.correlation_id or len(self.correlation_id) > MAX_CORRELATION_LENGTH:
            raise InvalidCauseError(
                f"correlation id must be 1 to {MAX_CORRELATION_LENGTH} characters",
                field="correlation_id",
            )

    def fields(self) -> dict[str, str]:
        """Return the origin, actor and correlation id as event fields."""
        return {
            "origin": self.origin.value,
            "actor": self.actor,
            "correlation_id": self.correlation_id,
        }

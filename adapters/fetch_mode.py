"""How one calendar's server is best asked for its objects (part of the storage port).

Kept apart from ``adapters.storage`` so provider profiles, which the CalDAV
client imports, can preset it without an import cycle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

#: Objects per multiget: where a calendar starts, and the largest any may ask.
MULTIGET_START = 100
MULTIGET_MOST = 1000


@dataclass(frozen=True)
class FetchMode:
    """How one calendar's server is best asked for its objects.

    ``inline_data``: whether a sync-collection may ask for the calendar data
    with the ETags (False once the server refused it); ``multiget_batch``: how
    many objects one calendar-multiget asks for (adapted to how fast the server
    answers). Provider profiles preset the starting mode; the poll records what
    it learned with the link's inbound state (``InboundState.fetch_mode``).
    """

    inline_data: bool = True
    multiget_batch: int = MULTIGET_START

    def __post_init__(self) -> None:
        if not 1 <= self.multiget_batch <= MULTIGET_MOST:
            raise ValueError(
                f"a multiget asks for 1 to {MULTIGET_MOST} objects, not {self.multiget_batch}"
            )

    def as_text(self) -> str:
        """Return the mode as the JSON text the inbound state records."""
        return json.dumps(
            {"inline_data": self.inline_data, "multiget_batch": self.multiget_batch},
            sort_keys=True,
        )

    @classmethod
    def from_text(cls, text: str) -> FetchMode:
        """Return the mode recorded as ``text`` (see :meth:`as_text`).

        :raises ValueError: when ``text`` is not such a record.
        """
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"a fetch mode is JSON: {exc}") from None
        if (
            not isinstance(values, dict)
            or set(values) != {"inline_data", "multiget_batch"}
            or not isinstance(values["inline_data"], bool)
            or type(values["multiget_batch"]) is not int
        ):
            raise ValueError(f"not a fetch mode: {text[:200]!r}")
        return cls(values["inline_data"], values["multiget_batch"])

"""Which appointment fields hold personal data, and what they show once erased.

Kept apart from the aggregate so the journal's mapper, which seals these fields,
loads without the event classes.
"""

from __future__ import annotations

from caljournal.domain.values import DETAIL_FIELDS

#: The fields that can hold personal data; erasure removes exactly these.
PERSONAL_FIELDS = DETAIL_FIELDS
#: The texts of a recurring appointment's changed instance (in ``recurrence["overrides"]``).
OVERRIDE_TEXTS = ("title", "location", "description")
#: What an erased text field shows.
ERASED_TEXT = "[erased]"


def erased_value(name: str, value: str | None) -> str | None:
    """Return what personal field ``name`` shows once erased (None stays None)."""
    if value is None or name == "customer_email":
        return None
    return ERASED_TEXT

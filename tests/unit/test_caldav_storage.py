"""Building the CalDAV calendar storage from a stored link (no server is asked)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from caljournal.adapters.caldav_client import ServerAccess
from caljournal.adapters.caldav_storage import CalDAVStorage
from caljournal.adapters.providers import UnknownProviderError, get_profile
from caljournal.adapters.secrets import Credentials
from caljournal.adapters.storage import CalendarStorage

ACCESS = ServerAccess("https://dav.example.org/", Credentials("alice", "secret"))


@dataclass
class Link:
    calendar_url: str | None
    provider: str


def test_a_link_gives_the_storage_of_its_calendar_with_its_providers_profile() -> None:
    storage = CalDAVStorage.of_link(ACCESS, Link("https://dav.example.org/alice/work", "radicale"))

    assert isinstance(storage, CalendarStorage)
    assert storage.calendar_url == "https://dav.example.org/alice/work/"
    assert storage.profile == get_profile("radicale")
    assert storage.writer.access.url == storage.calendar_url
    storage.close()


def test_a_link_without_a_chosen_calendar_has_no_storage() -> None:
    with pytest.raises(ValueError, match="no calendar chosen"):
        CalDAVStorage.of_link(ACCESS, Link(None, "radicale"))


def test_a_link_naming_an_unknown_provider_has_no_storage() -> None:
    with pytest.raises(UnknownProviderError):
        CalDAVStorage.of_link(ACCESS, Link("https://dav.example.org/alice/work/", "nowhere"))

"""What the in-memory calendar does beyond the port's contract (tests/contract).

It plays the other clients of the calendar and the server's lapses: unconditional
writes, forgotten changes and tokens, short-lived objects left out of deltas,
and it counts the requests the sync code makes.
"""

from __future__ import annotations

import pytest

from caljournal.adapters.memory_storage import MemoryStorage
from caljournal.adapters.storage import CalendarStorage, SyncTokenInvalid

URL = "https://calendar.example/calendars/alice/work/"
DATA = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"


def test_it_is_a_calendar_storage() -> None:
    assert isinstance(MemoryStorage(URL), CalendarStorage)


def test_another_clients_writes_show_in_the_next_delta() -> None:
    storage = MemoryStorage(URL)
    storage.create(URL + "ours.ics", DATA)
    token = storage.changes_since(None).token
    assert token

    etag = storage.put(URL + "theirs.ics", DATA)
    storage.remove(URL + "ours.ics")
    delta = storage.changes_since(token)

    assert delta.changed == {URL + "theirs.ics": etag}
    assert delta.deleted == {URL + "ours.ics"}


def test_removing_what_is_not_there_is_an_error() -> None:
    with pytest.raises(KeyError):
        MemoryStorage(URL).remove(URL + "missing.ics")


def test_lost_changes_are_left_out_of_deltas_but_not_of_listings() -> None:
    storage = MemoryStorage(URL)
    token = storage.changes_since(None).token
    assert token
    etag = storage.put(URL + "restored.ics", DATA)

    storage.lose_changes()

    assert storage.changes_since(token).changed == {}
    assert storage.listing().changed == {URL + "restored.ics": etag}


def test_expired_tokens_are_refused_and_a_new_one_works() -> None:
    storage = MemoryStorage(URL)
    old = storage.changes_since(None).token
    assert old
    storage.put(URL + "one.ics", DATA)

    storage.expire_tokens()

    with pytest.raises(SyncTokenInvalid):
        storage.changes_since(old)
    fresh = storage.changes_since(None).token
    assert fresh and storage.changes_since(fresh).changed == {}


def test_a_short_lived_object_is_dropped_from_deltas_only_when_asked() -> None:
    for drops, expected in ((True, frozenset()), (False, {URL + "brief.ics"})):
        storage = MemoryStorage(URL, drops_short_lived=drops)
        token = storage.changes_since(None).token
        assert token
        storage.put(URL + "brief.ics", DATA)
        storage.remove(URL + "brief.ics")

        assert storage.changes_since(token).deleted == expected


def test_an_object_deleted_after_the_token_is_reported_even_when_dropping_short_lived() -> None:
    storage = MemoryStorage(URL, drops_short_lived=True)
    storage.put(URL + "old.ics", DATA)
    token = storage.changes_since(None).token
    assert token

    storage.remove(URL + "old.ics")

    assert storage.changes_since(token).deleted == {URL + "old.ics"}


def test_every_request_of_the_sync_code_is_counted_by_kind() -> None:
    storage = MemoryStorage(URL)
    written = storage.create(URL + "a.ics", DATA)
    storage.update(URL + "a.ics", DATA, written.etag)
    storage.fetch(URL + "a.ics")
    storage.listing()
    storage.changes_since(None)
    storage.state_tag()
    storage.load([f"{URL}{i}.ics" for i in range(201)])
    storage.delete(URL + "a.ics", None)
    storage.put(URL + "theirs.ics", DATA)  # another client: not ours to count

    assert storage.requests == [
        "create",
        "update",
        "get",
        "listing",
        "sync-collection",
        "ctag",
        "multiget",
        "multiget",
        "multiget",
        "delete",
    ]


def test_calendar_data_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="bytes"):
        MemoryStorage(URL).create(URL + "a.ics", DATA.decode())  # type: ignore[arg-type]

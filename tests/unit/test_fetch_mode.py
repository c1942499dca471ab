"""How a calendar's server is best asked for objects: recorded by a poll, reused by the next.

The calendar is the storage port in memory; the journal and the sync state are real
(SQLite and PostgreSQL).
"""

from __future__ import annotations

import logging
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caljournal.adapters.fetch_mode import MULTIGET_MOST, FetchMode
from caljournal.adapters.memory_storage import MemoryStorage
from caljournal.adapters.providers import PROFILES
from caljournal.bootstrap import Container
from caljournal.domain.cause import Cause, Origin
from caljournal.projections.inbound import Poller, PollReport
from tests.conftest import open_tenant

URL = "https://calendar.example/user/calendars/work/"


def event(n: int) -> bytes:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:fetch-{n}@example.org\r\nDTSTAMP:20260101T000000Z\r\n"
        f"DTSTART:202604{10 + n:02d}T080000Z\r\nDTEND:202604{10 + n:02d}T090000Z\r\n"
        f"SUMMARY:Event {n}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


@given(st.booleans(), st.integers(1, MULTIGET_MOST))
def test_a_mode_reads_back_as_it_was_recorded(inline: bool, batch: int) -> None:
    mode = FetchMode(inline, batch)
    assert FetchMode.from_text(mode.as_text()) == mode


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "[]",
        '{"inline_data": true}',
        '{"inline_data": "yes", "multiget_batch": 100}',
        '{"inline_data": true, "multiget_batch": 1.5}',
        '{"inline_data": true, "multiget_batch": true}',
        '{"inline_data": true, "multiget_batch": 0}',
        f'{{"inline_data": true, "multiget_batch": {MULTIGET_MOST + 1}}}',
        '{"inline_data": true, "multiget_batch": 100, "more": 1}',
    ],
)
def test_a_record_that_is_no_mode_is_refused_in_words(text: str) -> None:
    with pytest.raises(ValueError, match="fetch mode|multiget asks for"):
        FetchMode.from_text(text)


def test_every_provider_starts_from_a_valid_mode() -> None:
    for profile in PROFILES:
        assert FetchMode.from_text(profile.fetch_mode.as_text()) == profile.fetch_mode


def poll(container: Container, account: str, calendar: MemoryStorage) -> PollReport:
    link = {"calendar_url": URL, "sync_tokens": True, "provider": "radicale"}
    return Poller(
        container.journal,
        calendar,
        container.sync_state,
        account,
        link,
        lambda: Cause(Origin.CALDAV, "worker:test", f"poll-{uuid.uuid4()}"),
    ).poll()


def test_a_poll_records_the_mode_and_a_new_storage_starts_from_it(container: Container) -> None:
    account = str(open_tenant(container, "acme").account_id)
    calendar = MemoryStorage(URL)
    for n in range(3):
        calendar.put(f"{URL}e{n}.ics", event(n))
    learned = FetchMode(inline_data=False, multiget_batch=2)
    calendar.use_fetch_mode(learned)  # as if the storage had found this out

    first = poll(container, account, calendar)

    assert first.counts == {"import": 3}
    assert calendar.requests.count("multiget") == 2  # no data inline: multigets of 2
    recorded = container.sync_state.inbound_state(account).fetch_mode
    assert recorded is not None and FetchMode.from_text(recorded) == learned

    calendar.use_fetch_mode(FetchMode())  # a new process: the provider's preset again
    for n in range(3, 6):
        calendar.put(f"{URL}e{n}.ics", event(n))
    calendar.requests.clear()
    second = poll(container, account, calendar)

    assert second.counts == {"import": 3}
    assert calendar.fetch_mode == learned
    # Asked as recorded: ETags only (the preset would have had the data inline), then
    # multigets of 2 (the preset asks for 100 at a time).
    assert calendar.requests.count("multiget") == 2


def test_an_unreadable_record_is_logged_and_replaced(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    account = str(open_tenant(container, "acme").account_id)
    calendar = MemoryStorage(URL)
    calendar.put(f"{URL}e0.ics", event(0))
    container.sync_state.update_inbound(account, fetch_mode='{"inline_data": 1}')

    with caplog.at_level(logging.WARNING):
        report = poll(container, account, calendar)

    assert report.counts == {"import": 1}
    assert "recorded fetch mode ignored" in caplog.text
    assert calendar.fetch_mode == FetchMode()
    recorded = container.sync_state.inbound_state(account).fetch_mode
    assert recorded is not None and FetchMode.from_text(recorded) == FetchMode()

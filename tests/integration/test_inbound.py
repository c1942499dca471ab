"""Inbound sync against a real Radicale: remote edits become events, our writes don't."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import caldav
import pytest

from caljournal.adapters.caldav_storage import CalDAVStorage
from caljournal.adapters.cpu_pool import INLINE
from caljournal.adapters.fetch_mode import FetchMode
from caljournal.adapters.providers import get_profile
from caljournal.adapters.secrets import Credentials
from caljournal.appointments import Booking
from caljournal.bootstrap import Container
from caljournal.domain.cause import Cause, Origin
from caljournal.domain.link import CalendarLink
from caljournal.domain.quarantine import QuarantineLog
from caljournal.projections.inbound import Poller, PollReport
from caljournal.projections.inbound_decider import ChunkDecider
from caljournal.projections.inbound_record import KnownAppointments
from caljournal.projections.outbound import OutboundWorker, PushReconciler
from caljournal.status import account_report
from tests.conftest import Tenant, operator
from tests.integration.test_outbound import FAST
from tests.support.calendars import differences, remote_events, wait_until
from tests.support.faultproxy import FaultProxy
from tests.support.patience import HTTP_TIMEOUT
from tests.support.radicale import RadicaleProcess

BERLIN = ZoneInfo("Europe/Berlin")
API = Cause(Origin.API, "token:acme/default", "test")


class Linked:
    """An account linked (through a counting proxy) to a fresh calendar."""

    def __init__(
        self,
        container: Container,
        tenant: Tenant,
        calendar: caldav.Calendar,
        proxy: FaultProxy,
        url: str,
    ):
        self.container = container
        self.tenant = tenant
        self.calendar = calendar
        self.proxy = proxy
        self.url = url
        self.account = str(tenant.account_id)

    def link_state(self) -> dict[str, Any]:
        return self.container.links.get(self.tenant.account_id)

    def poll(self) -> PollReport:
        stored = self.container.journal.repository.get(CalendarLink.id_for(self.tenant.account_id))
        reader = CalDAVStorage(
            self.container.links.access(stored), self.url, get_profile(stored.provider)
        )
        try:
            return Poller(
                self.container.journal,
                reader,
                self.container.sync_state,
                self.account,
                self.link_state(),
                lambda: Cause(Origin.CALDAV, "worker:test", f"poll-{uuid.uuid4()}"),
            ).poll()
        finally:
            reader.close()

    def push(self) -> int:
        worker = OutboundWorker(self.container.journal, self.container.links, FAST)
        push = PushReconciler(worker, self.account, self.link_state(), lambda: True)
        try:
            return push.run_pass()
        finally:
            push.close()

    def book(self, title: str, day: int, hour: int = 10) -> dict[str, Any]:
        start = datetime(2026, 4, day, hour, tzinfo=BERLIN)
        booking = Booking(title, start, start + timedelta(hours=1), "Europe/Berlin")
        return self.container.appointments.book(self.tenant.account_id, booking, API).state

    def state(self, appointment_id: str) -> dict[str, Any]:
        return self.container.appointments.get(None, UUID(appointment_id))

    def history(self, appointment_id: str) -> list[dict[str, Any]]:
        return self.container.appointments.history(None, UUID(appointment_id))

    def caldav_events(self) -> int:
        """Return how many events with origin caldav the journal holds for this account."""
        count = 0
        for n in self.container.journal.recorder.select_notifications(start=None, limit=100_000):
            if n.topic.startswith("caljournal:Appointment.") and b'"origin":"caldav"' in n.state:
                count += 1
        return count


@pytest.fixture
def linked(container: Container, radicale: RadicaleProcess, acme: Tenant) -> Iterator[Linked]:
    cal_id = f"in-{uuid.uuid4().hex[:8]}"
    calendar = radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    with FaultProxy(radicale.url) as proxy:
        result = container.links.link(
            acme.account_id,
            f"{proxy.url}alice/{cal_id}/",
            Credentials("alice", "secret"),
            operator(),
        )
        yield Linked(container, acme, calendar, proxy, str(result.state["calendar_url"]))


def edit_remote(calendar: caldav.Calendar, uid: str, **props: Any) -> None:
    obj = calendar.get_object_by_uid(uid)
    component = obj.icalendar_component
    for name, value in props.items():
        component.pop(name, None)
        component.add(name, value)
    obj.save(increase_seqno=False)


def test_our_own_pushes_produce_no_inbound_events(linked: Linked) -> None:
    for i in range(5):
        linked.book(f"Ours {i}", 6 + i)
    linked.poll()  # first poll: the calendar is empty; sets the sync token
    assert linked.push() == 5
    before = linked.container.journal.recorder.max_notification_id()
    report = linked.poll()
    assert report.counts.get("import", 0) == 0 and report.counts.get("apply", 0) == 0
    assert linked.container.journal.recorder.max_notification_id() == before
    assert linked.caldav_events() == 0
    idle = linked.poll()
    assert idle.requests == 1 and not idle.counts


def test_remote_move_retitle_delete_and_create_become_caldav_events(linked: Linked) -> None:
    a, b, c = (linked.book(t, d) for t, d in (("Move me", 6), ("Rename me", 7), ("Delete me", 8)))
    linked.poll()
    linked.push()
    linked.poll()
    uid = lambda s: f"{s['id']}@caljournal"  # noqa: E731

    edit_remote(
        linked.calendar,
        uid(a),
        dtstart=datetime(2026, 4, 20, 15, tzinfo=BERLIN),
        dtend=datetime(2026, 4, 20, 16, tzinfo=BERLIN),
    )
    edit_remote(linked.calendar, uid(b), summary="Renamed in the calendar app")
    linked.calendar.get_object_by_uid(uid(c)).delete()
    linked.calendar.save_event(
        dtstart=datetime(2026, 4, 21, 9, tzinfo=BERLIN),
        dtend=datetime(2026, 4, 21, 9, 30, tzinfo=BERLIN),
        summary="Dentist (private)",
        uid="foreign-1@example.org",
    )
    linked.proxy.clear_log()
    report = linked.poll()
    assert report.counts == {"apply": 2, "cancel": 1, "import": 1}, report.counts
    assert report.requests <= 3, linked.proxy.requests()

    assert linked.state(a["id"])["start"] == "2026-04-20T15:00:00+02:00"
    assert linked.history(a["id"])[-1]["type"] == "Moved"
    assert linked.history(a["id"])[-1]["origin"] == "caldav"
    assert linked.state(b["id"])["title"] == "Renamed in the calendar app"
    assert linked.history(b["id"])[-1]["type"] == "DetailsChanged"
    assert linked.state(c["id"])["status"] == "cancelled"
    assert linked.history(c["id"])[-1]["origin"] == "caldav"

    window = linked.container.appointments.list_window(
        linked.tenant.account_id,
        datetime(2026, 4, 21, tzinfo=BERLIN),
        datetime(2026, 4, 22, tzinfo=BERLIN),
    )
    assert [w["title"] for w in window] == ["Dentist (private)"]
    assert linked.history(window[0]["id"])[0]["origin"] == "caldav"

    # Nothing to push back: imported changes are what the calendar already holds.
    assert linked.push() == 0
    assert linked.poll().counts == {}
    assert differences(linked.container, linked.tenant.account_id, linked.calendar, False) == []


def test_one_remote_change_costs_at_most_three_requests(linked: Linked) -> None:
    made = [linked.book(f"Load {i}", 6 + i % 20, 8 + i % 8) for i in range(30)]
    linked.poll()
    linked.push()
    linked.poll()
    edit_remote(linked.calendar, f"{made[7]['id']}@caljournal", summary="Just this one")
    linked.proxy.clear_log()
    report = linked.poll()
    assert report.counts == {"apply": 1}
    assert len(linked.proxy.requests()) == report.requests <= 3


def test_a_recurring_event_with_an_override_is_kept_and_expanded(linked: Linked) -> None:
    linked.poll()
    linked.calendar.save_event(
        ical=(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
            "BEGIN:VEVENT\r\nUID:weekly@example.org\r\nDTSTAMP:20260101T000000Z\r\n"
            "DTSTART;TZID=Europe/Berlin:20260326T100000\r\n"
            "DTEND;TZID=Europe/Berlin:20260326T110000\r\n"
            "RRULE:FREQ=WEEKLY;COUNT=4\r\nSUMMARY:Team call\r\nEND:VEVENT\r\n"
            "BEGIN:VEVENT\r\nUID:weekly@example.org\r\nDTSTAMP:20260101T000000Z\r\n"
            "RECURRENCE-ID;TZID=Europe/Berlin:20260409T100000\r\n"
            "DTSTART;TZID=Europe/Berlin:20260409T140000\r\n"
            "DTEND;TZID=Europe/Berlin:20260409T150000\r\n"
            "SUMMARY:Team call (moved)\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
    )
    assert linked.poll().counts == {"import": 1}
    occurrences = linked.container.appointments.list_window(
        linked.tenant.account_id,
        datetime(2026, 3, 1, tzinfo=BERLIN),
        datetime(2026, 5, 1, tzinfo=BERLIN),
    )
    starts = [o["start"] for o in occurrences]
    assert starts == [
        "2026-03-26T10:00:00+01:00",
        "2026-04-02T10:00:00+02:00",  # 10:00 local across the DST change
        "2026-04-09T14:00:00+02:00",  # the override
        "2026-04-16T10:00:00+02:00",
    ]
    assert occurrences[2]["title"] == "Team call (moved)"
    state = linked.state(occurrences[0]["id"])
    assert state["recurrence"]["rrule"] == ["RRULE:FREQ=WEEKLY;COUNT=4"]
    assert state["calendar_uid"] == "weekly@example.org"


def test_all_day_and_floating_events_are_imported(linked: Linked) -> None:
    linked.poll()
    linked.calendar.save_event(
        ical=(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
            "BEGIN:VEVENT\r\nUID:holiday@example.org\r\nDTSTAMP:20260101T000000Z\r\n"
            "DTSTART;VALUE=DATE:20260501\r\nDTEND;VALUE=DATE:20260502\r\n"
            "SUMMARY:Holiday\r\nEND:VEVENT\r\n"
            "END:VCALENDAR\r\n"
        )
    )
    linked.calendar.save_event(
        ical=(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
            "BEGIN:VEVENT\r\nUID:floating@example.org\r\nDTSTAMP:20260101T000000Z\r\n"
            "DTSTART:20260503T090000\r\nDTEND:20260503T100000\r\n"
            "SUMMARY:Gym\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
    )
    assert linked.poll().counts == {"import": 2}
    found = linked.container.appointments.list_window(
        linked.tenant.account_id,
        datetime(2026, 4, 30, tzinfo=BERLIN),
        datetime(2026, 5, 5, tzinfo=BERLIN),
    )
    by_title = {f["title"]: f for f in found}
    assert by_title["Holiday"]["all_day"] is True
    assert by_title["Holiday"]["start"].startswith("2026-05-01T00:00:00")
    assert by_title["Gym"]["floating"] is True
    assert by_title["Gym"]["start"].startswith("2026-05-03T09:00:00")


def test_a_bogus_sync_token_falls_back_to_a_full_compare_that_finds_deletions(
    linked: Linked,
) -> None:
    kept, deleted = linked.book("Kept", 6), linked.book("Deleted", 7)
    linked.poll()
    linked.push()
    linked.poll()
    linked.container.sync_state.update_inbound(
        linked.account, sync_token="http://radicale.org/ns/sync/bogus"
    )
    linked.calendar.get_object_by_uid(f"{deleted['id']}@caljournal").delete()
    report = linked.poll()
    assert report.full and report.counts == {"cancel": 1}
    assert linked.state(deleted["id"])["status"] == "cancelled"
    assert linked.state(kept["id"])["status"] == "booked"
    assert linked.poll().counts == {}  # and the new token works


def test_a_foreign_event_whose_href_needs_escaping_is_tracked_by_one_spelling(
    linked: Linked,
) -> None:
    """Radicale lists ``phone-1%40example.org.ics`` but answers a multiget with ``@``."""
    linked.poll()
    linked.calendar.save_event(
        dtstart=datetime(2026, 4, 23, 9, tzinfo=BERLIN),
        dtend=datetime(2026, 4, 23, 10, tzinfo=BERLIN),
        summary="Booked by phone",
        uid="phone-1@example.org",
    )
    assert linked.poll().counts == {"import": 1}
    (copy,) = linked.container.sync_state.copies(linked.account)
    assert copy.href.endswith("/phone-1%40example.org.ics")
    linked.container.sync_state.update_inbound(
        linked.account, sync_token="http://radicale.org/ns/sync/bogus"
    )
    full = linked.poll()
    assert full.full and full.counts == {}  # still there: neither cancelled nor re-imported
    linked.calendar.get_object_by_uid("phone-1@example.org").delete()
    assert linked.poll().counts == {"cancel": 1}
    assert linked.state(copy.appointment_id)["status"] == "cancelled"


def test_a_crash_between_fetching_and_committing_imports_nothing_twice(
    linked: Linked, monkeypatch: pytest.MonkeyPatch
) -> None:
    linked.poll()
    for i in range(3):
        linked.calendar.save_event(
            dtstart=datetime(2026, 4, 10 + i, 9, tzinfo=BERLIN),
            dtend=datetime(2026, 4, 10 + i, 10, tzinfo=BERLIN),
            summary=f"Foreign {i}",
            uid=f"foreign-{i}@example.org",
        )
    journal = linked.container.journal
    real_save = journal.save

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("power cut")

    monkeypatch.setattr(journal, "save", crash)
    with pytest.raises(RuntimeError):
        linked.poll()
    monkeypatch.setattr(journal, "save", real_save)
    assert linked.poll().counts == {"import": 3}
    assert linked.poll().counts == {}
    imported = linked.container.appointments.list_window(
        linked.tenant.account_id,
        datetime(2026, 4, 1, tzinfo=BERLIN),
        datetime(2026, 5, 1, tzinfo=BERLIN),
    )
    assert len(imported) == 3
    for appointment in imported:
        assert [e["type"] for e in linked.history(appointment["id"])] == ["Booked"]


def test_mass_deletion_pauses_the_link_instead_of_cancelling(linked: Linked) -> None:
    made = [linked.book(f"Many {i}", 6 + i) for i in range(12)]
    linked.poll()
    linked.push()
    linked.poll()
    for appointment in made[:10]:
        linked.calendar.get_object_by_uid(f"{appointment['id']}@caljournal").delete()
    report = linked.poll()
    assert report.paused and "10 of 12" in report.paused
    assert all(linked.state(a["id"])["status"] == "booked" for a in made)
    assert linked.link_state()["status"] == "paused"
    inbound = linked.container.sync_state.inbound_state(linked.account)
    assert "confirm" in (inbound.breaker or "")

    linked.container.links.resume(linked.tenant.account_id, operator(), confirm_deletes=True)
    assert linked.poll().counts == {"cancel": 10}
    assert sum(linked.state(a["id"])["status"] == "cancelled" for a in made) == 10


def test_bad_remote_objects_are_quarantined_and_the_rest_syncs(linked: Linked) -> None:
    linked.poll()
    url = linked.url
    bad = {
        "todo.ics": "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VTODO\r\nUID:t1\r\n"
        "DTSTAMP:20260101T000000Z\r\nSUMMARY:Buy milk\r\nEND:VTODO\r\nEND:VCALENDAR\r\n",
        "tz.ics": "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:z1\r\n"
        "DTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Mars/Olympus:20260410T100000\r\n"
        "DTEND;TZID=Mars/Olympus:20260410T110000\r\nSUMMARY:x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        "huge.ics": "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:h1\r\n"
        "DTSTAMP:20260101T000000Z\r\nDTSTART:20260410T100000Z\r\nDTEND:20260410T110000Z\r\n"
        "DESCRIPTION:" + "x" * 5_100_000 + "\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    }
    import httpx

    with httpx.Client(auth=("alice", "secret"), timeout=HTTP_TIMEOUT) as raw:
        for name, body in bad.items():
            raw.put(url + name, content=body.encode(), headers={"Content-Type": "text/calendar"})
        good = (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n"
            "DTSTAMP:20260101T000000Z\r\nDTSTART:20260411T100000Z\r\nDTEND:20260411T110000Z\r\n"
            "SUMMARY:{title}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
        raw.put(url + "good.ics", content=good.format(uid="g1", title="Fine").encode())
        raw.put(url + "dup-a.ics", content=good.format(uid="dup", title="Dup A").encode())
        # Radicale itself refuses a second object with the same UID (SabreDAV, DAViCal
        # and Posteo accept it; see test_duplicate_uids_are_quarantined below).
        refused = raw.put(url + "dup-b.ics", content=good.format(uid="dup", title="Dup B").encode())
        assert refused.status_code == 409
    report = linked.poll()
    assert report.counts.get("import") == 2, report.counts
    quarantined = linked.container.sync_state.quarantined(linked.account)
    reasons = {href.rsplit("/", 1)[1]: q.reason for href, q in quarantined.items()}
    assert set(reasons) == {"todo.ics", "tz.ics", "huge.ics"}
    assert "VTODO" in reasons["todo.ics"]
    assert "Mars/Olympus" in reasons["tz.ics"]
    assert "5 MB" in reasons["huge.ics"] or "long" in reasons["huge.ics"]
    assert linked.poll().counts == {}  # quarantined objects are not read again until they change

    # Auditors find each decision in the journal, with the object's version and the reason;
    # an object that is fixed leaves the quarantine, and that is recorded too.
    log_id = QuarantineLog.id_for(linked.tenant.account_id)
    events = list(linked.container.journal.events.get(log_id))
    held = {e.href: (e.etag, e.reason) for e in events if type(e).__name__ == "ObjectQuarantined"}
    assert held == {href: (q.etag, q.reason) for href, q in quarantined.items()}
    assert {e.origin for e in events} == {"caldav"}
    with httpx.Client(auth=("alice", "secret"), timeout=HTTP_TIMEOUT) as raw:
        raw.put(url + "todo.ics", content=good.format(uid="t1", title="Fixed").encode())
    assert linked.poll().counts == {"import": 1}
    events = list(linked.container.journal.events.get(log_id))
    assert [e.href for e in events if type(e).__name__ == "ObjectReleased"] == [url + "todo.ics"]
    assert url + "todo.ics" not in linked.container.sync_state.quarantined(linked.account)


def test_a_remote_change_against_a_newer_local_change_is_a_conflict_the_booking_wins(
    linked: Linked,
) -> None:
    appointment = linked.book("Local", 9)
    linked.poll()
    linked.push()
    linked.poll()
    linked.container.appointments.change_details(
        None, UUID(appointment["id"]), {"title": "Local, newer"}, API
    )
    edit_remote(linked.calendar, f"{appointment['id']}@caljournal", summary="Remote edit")
    report = linked.poll()
    assert report.counts == {"conflict": 1}
    conflict = [e for e in linked.history(appointment["id"]) if e["type"] == "ConflictResolved"]
    assert conflict and conflict[0]["origin"] == "caldav"
    assert linked.push() == 1
    assert (
        str(remote_events(linked.calendar)[f"{appointment['id']}@caljournal"][0]["SUMMARY"])
        == "Local, newer"
    )
    assert linked.poll().counts == {}


def test_poll_now_through_the_api_reaches_the_worker(
    container: Container, linked: Linked, client: Any
) -> None:
    container.links.set_poll_interval(linked.tenant.account_id, 3600, operator())
    worker = container.outbound_worker(FAST).start()
    try:
        wait_until(lambda: linked.account in worker.served_accounts(), timeout=10)
        wait_until(
            lambda: container.sync_state.inbound_state(linked.account).last_poll_us,
            timeout=10,
        )
        linked.calendar.save_event(
            dtstart=datetime(2026, 4, 12, 9, tzinfo=BERLIN),
            dtend=datetime(2026, 4, 12, 10, tzinfo=BERLIN),
            summary="Booked by phone",
            uid="phone@example.org",
        )
        response = client.post("/link/poll", headers=linked.tenant.headers)
        assert response.status_code == 202
        wait_until(
            lambda: container.appointments.list_window(
                linked.tenant.account_id,
                datetime(2026, 4, 12, tzinfo=BERLIN),
                datetime(2026, 4, 13, tzinfo=BERLIN),
            ),
            timeout=5,
        )
    finally:
        worker.stop()


def test_duplicate_uids_are_quarantined(linked: Linked) -> None:
    """Servers that accept one UID at two hrefs: the second object is quarantined."""
    body = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:dup\r\n"
        "DTSTAMP:20260101T000000Z\r\nDTSTART:20260411T100000Z\r\nDTEND:20260411T110000Z\r\n"
        "SUMMARY:{title}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    stored = linked.container.journal.repository.get(CalendarLink.id_for(linked.tenant.account_id))
    reader = CalDAVStorage(
        linked.container.links.access(stored), linked.url, get_profile(stored.provider)
    )
    journal = linked.container.journal
    decider = ChunkDecider(
        journal,
        linked.container.sync_state,
        reader,
        INLINE,
        linked.account,
        linked.url,
        KnownAppointments(journal, linked.account),
        trips=lambda cancels, live, confirmed: False,
        pause=lambda reason: None,
    )
    data = {
        linked.url + "a.ics": body.format(title="A"),
        linked.url + "b.ics": body.format(title="B"),
    }
    batches = decider.decisions(
        sorted(data),
        {href: text.encode() for href, text in data.items()},
        {linked.url + "a.ics": '"1"', linked.url + "b.ics": '"2"'},
        set(),
        {},
        {},
        None,
        PollReport(),
        0,
        False,
    )
    decisions = [decision for batch in batches for decision in batch]
    reader.close()
    assert [d.kind for d in decisions] == ["import", "quarantine"]
    assert "duplicate UID" in (decisions[1].reason or "")


def test_a_stream_of_api_changes_through_the_worker_produces_no_inbound_events(
    container: Container, linked: Linked, client: Any
) -> None:
    worker = container.outbound_worker(FAST).start()
    try:
        wait_until(lambda: linked.account in worker.served_accounts(), timeout=10)
        made = [linked.book(f"Stream {i}", 6 + i % 20, 8 + i % 8) for i in range(12)]
        for i, appointment in enumerate(made):
            path = f"/appointments/{appointment['id']}"
            client.patch(
                path, json={"title": f"Stream {i} (edited)"}, headers=linked.tenant.headers
            )
            if i % 3 == 0:
                client.post(f"{path}/cancel", headers=linked.tenant.headers)
        wait_until(
            lambda: not differences(container, linked.tenant.account_id, linked.calendar),
            timeout=30,
        )
        store = container.sync_state
        for _ in range(2):
            before = store.inbound_state(linked.account).last_poll_us or 0
            container.links.request_poll(linked.tenant.account_id, operator())
            wait_until(
                lambda b=before: (store.inbound_state(linked.account).last_poll_us or 0) > b,
                timeout=10,
            )
        assert linked.caldav_events() == 0
        status = client.get("/link/status", headers=linked.tenant.headers).json()
        assert status["pending"] == 0 and status["inbound"]["quarantined"] == []
    finally:
        worker.stop()


def test_poll_at_the_command_line_waits_and_reports(
    tmp_path: Any, radicale: RadicaleProcess
) -> None:
    from tests.integration.test_cli import data_home, run
    from tests.integration.test_link import run_stdin

    env = {"CALJOURNAL_ALLOW_PRIVATE_ADDRESSES": "true"}
    cal_id = f"cli-{uuid.uuid4().hex[:6]}"
    calendar = radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
    for i in range(3):
        calendar.save_event(
            dtstart=datetime(2026, 4, 10 + i, 9, tzinfo=BERLIN),
            dtend=datetime(2026, 4, 10 + i, 10, tzinfo=BERLIN),
            summary=f"Existing {i}",
        )
    assert run(["account", "create", "acme"], tmp_path, **env).returncode == 0
    added = run_stdin(
        [
            "link",
            "add",
            "acme",
            f"{radicale.url}alice/{cal_id}/",
            "--username",
            "alice",
            "--password-stdin",
        ],
        tmp_path,
        "secret\n",
        **env,
    )
    assert added.returncode == 0, added.stderr
    no_worker = run(["link", "poll", "acme", "--wait", "--timeout", "2"], tmp_path, **env)
    assert no_worker.returncode == 1 and "is 'caljournal worker' running" in no_worker.stderr
    import subprocess
    import sys

    worker = subprocess.Popen(
        [sys.executable, "-m", "caljournal", "worker"],
        cwd=tmp_path,
        env={
            **{
                k: v for k, v in __import__("os").environ.items() if not k.startswith("CALJOURNAL_")
            },
            **env,
            "XDG_DATA_HOME": str(data_home(tmp_path)),  # the journal the commands use
        },
    )
    try:
        polled = run(["link", "poll", "acme", "--wait", "--timeout", "30"], tmp_path, **env)
        assert polled.returncode == 0, polled.stderr
        assert '"done": 3' in polled.stdout and '"total": 3' in polled.stdout
        status = run(["status", "acme"], tmp_path, **env)
        assert "inbound last_poll" in status.stdout
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_servers_that_hide_bad_tokens_get_a_periodic_full_compare(linked: Linked) -> None:
    """DAViCal-like servers answer a stale token with an empty 207: compare now and then."""
    kept, gone = linked.book("Kept", 6), linked.book("Gone", 7)
    linked.poll()
    linked.push()
    linked.poll()
    recorder = linked.container.sync_state
    # Pretend the server is one that hides expired tokens and the token silently died:
    # Radicale's answer to a token from before the deletion still lists it, so simulate
    # the blind server by handing the poller a profile without detection.
    link = {**linked.link_state(), "provider": "davical"}
    linked.calendar.get_object_by_uid(f"{gone['id']}@caljournal").delete()
    recorder.update_inbound(linked.account, last_full_us=0)
    stored = linked.container.journal.repository.get(CalendarLink.id_for(linked.tenant.account_id))
    reader = CalDAVStorage(
        linked.container.links.access(stored), linked.url, get_profile(stored.provider)
    )
    try:
        poller = Poller(
            linked.container.journal,
            reader,
            linked.container.sync_state,
            linked.account,
            link,
            lambda: Cause(Origin.CALDAV, "worker:test", "full"),
        )
        report = poller.poll()
        assert report.full and report.counts == {"cancel": 1}
        again = poller.poll()  # not due again for hours: a plain delta
        assert not again.full and again.requests == 1
    finally:
        reader.close()
    assert linked.state(gone["id"])["status"] == "cancelled"
    assert linked.state(kept["id"])["status"] == "booked"


def take_out(calendar: caldav.Calendar, uid: str) -> tuple[str, bytes]:
    """Delete an object as a calendar app with a trash bin does; return its href and data."""
    obj = calendar.get_object_by_uid(uid)
    href, data = str(obj.url), obj.data.encode()
    obj.delete()
    return href, data


def put_back(calendar: caldav.Calendar, href: str, data: bytes, *, raise_sequence: bool) -> None:
    """Restore a deleted object at its href, as an undo or a trash bin does."""
    restored = caldav.Event(client=calendar.client, url=href, data=data, parent=calendar)
    restored.save(increase_seqno=raise_sequence)


def test_a_deletion_undone_in_the_calendar_reinstates_the_appointment(linked: Linked) -> None:
    ours = linked.book("Ours, deleted by mistake", 9)
    linked.poll()
    linked.calendar.save_event(
        dtstart=datetime(2026, 4, 22, 9, tzinfo=BERLIN),
        dtend=datetime(2026, 4, 22, 10, tzinfo=BERLIN),
        summary="Foreign, deleted by mistake",
        uid="undo-1@example.org",
    )
    linked.push()
    assert linked.poll().counts == {"import": 1}
    foreign = linked.container.appointments.list_window(
        linked.tenant.account_id,
        datetime(2026, 4, 22, tzinfo=BERLIN),
        datetime(2026, 4, 23, tzinfo=BERLIN),
    )[0]
    trash = [
        take_out(linked.calendar, f"{ours['id']}@caljournal"),
        take_out(linked.calendar, "undo-1@example.org"),
    ]
    assert linked.poll().counts == {"cancel": 2}
    for appointment in (ours, foreign):
        assert linked.state(appointment["id"])["status"] == "cancelled"
        assert linked.history(appointment["id"])[-1]["origin"] == "caldav"

    put_back(linked.calendar, *trash[0], raise_sequence=True)
    put_back(linked.calendar, *trash[1], raise_sequence=False)
    assert linked.poll().counts == {"reinstate": 2}
    for appointment in (ours, foreign):
        state = linked.state(appointment["id"])
        assert state["status"] == "booked" and state["title"] == appointment["title"]
        last = linked.history(appointment["id"])[-1]
        assert (last["type"], last["origin"]) == ("ReinstatedFromCalendar", "caldav")
        assert last["changes"]["status"] == {"old": "cancelled", "new": "booked"}
    assert linked.push() == 0
    assert linked.poll().counts == {}
    assert differences(linked.container, linked.tenant.account_id, linked.calendar, False) == []


def test_a_copy_restored_after_a_booking_system_cancellation_is_deleted_again(
    linked: Linked,
) -> None:
    appointment = linked.book("Cancelled by the customer", 9)
    uid = f"{appointment['id']}@caljournal"
    linked.poll()
    linked.push()
    linked.poll()
    obj = linked.calendar.get_object_by_uid(uid)
    href, data = str(obj.url), obj.data.encode()
    linked.container.appointments.cancel(None, UUID(appointment["id"]), API, "customer cancelled")
    assert linked.push() == 1
    assert uid not in remote_events(linked.calendar)

    put_back(linked.calendar, href, data, raise_sequence=True)
    assert linked.poll().counts == {"conflict": 1}
    assert linked.state(appointment["id"])["status"] == "cancelled"
    assert linked.history(appointment["id"])[-1]["type"] == "ConflictResolved"
    assert linked.push() == 1
    assert uid not in remote_events(linked.calendar)
    assert linked.poll().counts == {}
    assert differences(linked.container, linked.tenant.account_id, linked.calendar) == []


def test_a_refusal_learned_by_one_poll_is_not_asked_again_by_the_next_storage(
    linked: Linked,
) -> None:
    """A server that refuses calendar data in sync-collection is asked for ETags from then on.

    The refusal is learned once and recorded with the account's inbound state:
    the next poll, through a new storage (as after a restart), asks as recorded.
    """
    for day in (21, 22):
        linked.calendar.save_event(
            dtstart=datetime(2026, 4, day, 9, tzinfo=BERLIN),
            dtend=datetime(2026, 4, day, 9, 30, tzinfo=BERLIN),
            summary=f"Foreign {day}",
            uid=f"foreign-{day}@example.org",
        )
    linked.proxy.fail_next(1, 403, method="REPORT")
    linked.proxy.clear_log()

    first = linked.poll()

    assert first.counts == {"import": 2}, first
    assert [r.status for r in linked.proxy.requests("REPORT")][0] == 403
    recorded = linked.container.sync_state.inbound_state(linked.account).fetch_mode
    assert recorded is not None and FetchMode.from_text(recorded).inline_data is False
    shown = account_report(
        linked.container.journal, linked.container.sync_state, linked.tenant.account_id
    )
    assert shown["inbound"]["fetch_mode"] == {"inline_data": False, "multiget_batch": 100}

    linked.calendar.save_event(
        dtstart=datetime(2026, 4, 23, 9, tzinfo=BERLIN),
        dtend=datetime(2026, 4, 23, 9, 30, tzinfo=BERLIN),
        summary="Foreign 23",
        uid="foreign-23@example.org",
    )
    linked.proxy.clear_log()
    second = linked.poll()  # a new CalDAVStorage, which starts from the record

    assert second.counts == {"import": 1}, second
    statuses = [r.status for r in linked.proxy.requests("REPORT")]
    assert statuses == [207, 207], statuses  # the delta with ETags, then one multiget

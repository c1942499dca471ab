"""Backfill and replay through a flaky server: transient faults are ridden out, and what
cannot be is one sentence, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import caldav
import pytest

from caljournal.adapters.secrets import Credentials
from caljournal.bootstrap import Container
from caljournal.links import LinkFailedError
from tests.conftest import Tenant, operator
from tests.integration.test_cli import commands_container, run
from tests.integration.test_resync import API, book_many, new_calendar
from tests.support.calendars import differences, remote_events
from tests.support.faultproxy import FaultProxy
from tests.support.radicale import RadicaleProcess


def link(container: Container, tenant: Tenant, proxy: FaultProxy, cal_id: str) -> None:
    container.links.link(
        tenant.account_id, f"{proxy.url}alice/{cal_id}/", Credentials("alice", "secret"), operator()
    )


def test_a_backfill_through_a_server_failing_a_third_of_requests_fails_nothing(
    container: Container, acme: Tenant, radicale: RadicaleProcess
) -> None:
    book_many(container, acme, 20)
    calendar, cal_id = new_calendar(radicale)
    with FaultProxy(radicale.url) as flaky:
        link(container, acme, flaky, cal_id)  # linking is not what this test is about
        assert container.sync.backfill(acme.account_id, operator()).created == 20
        book_many(container, acme, 40, day=10)
        flaky.clear_log()
        flaky.flaky(0.3, seed=11, retry_after=1)

        summary = container.sync.backfill(acme.account_id, operator())

        assert summary.failed == [] and summary.stopped is None
        assert (summary.created, summary.already_present) == (40, 20)
        assert sum(flaky.injected.values()) >= 10, flaky.injected  # faults did happen
        assert {"PROPFIND", "REPORT", "PUT"} <= {r.method for r in flaky.requests()}
    assert differences(container, acme.account_id, calendar) == []


def test_backfill_and_replay_ride_out_single_faults_while_reading_and_writing(
    container: Container, acme: Tenant, radicale: RadicaleProcess
) -> None:
    made = book_many(container, acme, 12)
    calendar, cal_id = new_calendar(radicale)
    with FaultProxy(radicale.url) as proxy:
        link(container, acme, proxy, cal_id)
        proxy.fail_next(1, 503, method="PROPFIND")  # the calendar is empty: no multiget
        proxy.reset_next(1, method="PUT", after_forward=True)
        proxy.fail_next(1, 429, retry_after=1, method="PUT")
        backfill = container.sync.backfill(acme.account_id, operator())
        assert (backfill.created, backfill.failed, backfill.stopped) == (12, [], None)
        assert proxy.pending_rules() == 0

        for appointment in made[:3]:
            container.appointments.cancel(acme.account_id, UUID(appointment["id"]), API)
        proxy.reset_next(1, method="PROPFIND")
        proxy.fail_next(1, 503, retry_after=1, method="REPORT")
        proxy.fail_next(2, 502, method="DELETE")
        proxy.reset_next(1, method="DELETE", after_forward=True)
        replay = container.sync.replay(acme.account_id, operator(), confirm=lambda _: True)
        assert (replay.deleted, replay.failed, replay.stopped) == (3, [], None)
        assert proxy.pending_rules() == 0
    assert differences(container, acme.account_id, calendar) == []


def _cli_world(
    tmp_path: Path, radicale: RadicaleProcess, proxy: FaultProxy, count: int
) -> caldav.Calendar:
    """Open an account with ``count`` appointments, linked through ``proxy``."""
    env = {"CALJOURNAL_ALLOW_PRIVATE_ADDRESSES": "true"}
    assert run(["account", "create", "acme"], tmp_path, **env).returncode == 0
    container = commands_container(tmp_path)
    try:
        tenant = Tenant("acme", container.accounts.find_account("acme").id, "")
        book_many(container, tenant, count)
        calendar, cal_id = new_calendar(radicale)
        link(container, tenant, proxy, cal_id)
    finally:
        container.close()
    return calendar


def test_a_server_failing_past_the_retry_budget_is_one_sentence_and_exit_1(
    tmp_path: Path, radicale: RadicaleProcess
) -> None:
    env = {"CALJOURNAL_ALLOW_PRIVATE_ADDRESSES": "true", "CALJOURNAL_CALDAV_RETRY_BUDGET": "3"}
    with FaultProxy(radicale.url) as proxy:
        calendar = _cli_world(tmp_path, radicale, proxy, 3)
        proxy.fail_for(120, 503, method="PROPFIND")
        reading = run(["backfill", "--account", "acme"], tmp_path, **env)
        assert reading.returncode == 1
        assert "Traceback" not in reading.stderr
        errors = [line for line in reading.stderr.splitlines() if "error:" in line]
        assert errors == [
            "error: the backfill stopped before writing anything: the server failed (HTTP 503) "
            "while listing the calendar's objects"
        ]
        replaying = run(["replay", "--account", "acme", "--yes"], tmp_path, **env)
        assert replaying.returncode == 1 and "Traceback" not in replaying.stderr
        assert "error: the replay stopped before writing anything" in replaying.stderr

        proxy.clear_rules()
        proxy.fail_for(120, 503, retry_after=1, method="PUT")
        writing = run(["backfill", "--account", "acme"], tmp_path, **env)
        assert writing.returncode == 1 and "Traceback" not in writing.stderr
        assert (
            "error: the backfill stopped, the calendar server kept failing: the server asked "
            "to slow down while creating the calendar object; run it again to finish"
        ) in " ".join(writing.stderr.split())
        # One attempt a second (Retry-After: 1) for at most the 3 s budget, then it stopped.
        assert 1 <= len(proxy.requests(method="PUT")) <= 3

        proxy.clear_rules()
        again = run(["backfill", "--account", "acme"], tmp_path, **env)
        assert again.returncode == 0, again.stderr
    assert len(remote_events(calendar)) == 3


def test_a_listing_that_is_not_xml_stops_the_backfill_with_one_sentence(
    container: Container, acme: Tenant, radicale: RadicaleProcess
) -> None:
    book_many(container, acme, 2)
    calendar, cal_id = new_calendar(radicale)
    with FaultProxy(radicale.url) as proxy:
        link(container, acme, proxy, cal_id)
        proxy.fail_next(1, 207, body="<html>a proxy's error page", method="PROPFIND")
        with pytest.raises(LinkFailedError) as raised:
            container.sync.backfill(acme.account_id, operator())
    assert raised.value.message == (
        "the backfill stopped before writing anything: the server's answer was not CalDAV "
        "XML while listing the calendar's objects"
    )
    assert remote_events(calendar) == {}


def test_link_add_with_a_backfill_the_server_stops_says_so_and_exits_1(
    tmp_path: Path, radicale: RadicaleProcess
) -> None:
    from tests.integration.test_link import run_stdin

    env = {"CALJOURNAL_ALLOW_PRIVATE_ADDRESSES": "true", "CALJOURNAL_CALDAV_RETRY_BUDGET": "2"}
    assert run(["account", "create", "acme"], tmp_path, **env).returncode == 0
    container = commands_container(tmp_path)
    try:
        book_many(container, Tenant("acme", container.accounts.find_account("acme").id, ""), 2)
    finally:
        container.close()
    _, cal_id = new_calendar(radicale)
    with FaultProxy(radicale.url) as proxy:
        proxy.fail_for(120, 503, retry_after=1, method="PUT")
        added = run_stdin(
            ["link", "add", "acme", f"{proxy.url}alice/{cal_id}/", "--username", "alice"]
            + ["--password-stdin", "--backfill"],
            tmp_path,
            "secret\n",
            **env,
        )
    assert added.returncode == 1 and "Traceback" not in added.stderr
    assert "error: the backfill stopped, the calendar server kept failing" in added.stderr

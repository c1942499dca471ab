"""The status of every account: the service, ``caljournal status`` and ``GET /status``."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from caljournal.adapters.secrets import Credentials
from caljournal.adapters.syncstate import CopyRecord
from caljournal.appointments import Booking
from caljournal.bootstrap import Container
from caljournal.domain.cause import Cause, Origin
from caljournal.status import StatusService
from tests.conftest import Tenant, open_tenant, operator
from tests.integration.test_cli import run
from tests.support.radicale import RadicaleProcess

BERLIN = ZoneInfo("Europe/Berlin")
API = Cause(Origin.API, "token:test/default", "test")


def book(container: Container, account_id: uuid.UUID, hour: int) -> str:
    start = datetime(2026, 7, 1, hour, tzinfo=BERLIN)
    booked = container.appointments.book(
        account_id,
        Booking(f"Visit {hour}", start, start + timedelta(hours=1), "Europe/Berlin"),
        API,
    )
    return str(booked.state["id"])


@pytest.fixture
def three_accounts(container: Container, radicale: RadicaleProcess) -> dict[str, Tenant]:
    """acme: linked, two bookings waiting; globex: no link; initech: linked, a failed push."""
    tenants = {name: open_tenant(container, name) for name in ("acme", "globex", "initech")}
    for name in ("acme", "initech"):
        cal_id = f"{name}-{uuid.uuid4().hex[:6]}"
        radicale.make_calendar("alice", "secret", cal_id, cal_id=cal_id)
        container.links.link(
            tenants[name].account_id,
            f"{radicale.url}alice/{cal_id}/",
            Credentials("alice", "secret"),
            operator(),
        )
    book(container, tenants["acme"].account_id, 9)
    book(container, tenants["acme"].account_id, 11)
    initech = str(tenants["initech"].account_id)
    failed = book(container, tenants["initech"].account_id, 10)
    calendar_url = container.links.get(tenants["initech"].account_id)["calendar_url"]
    container.sync_state.record_copies(
        [
            CopyRecord(
                appointment_id=failed,
                account_id=initech,
                calendar_url=calendar_url,
                href=f"{calendar_url}{failed}.ics",
                etag=None,
                pushed_sequence=-1,
                content_hash=None,
                present=False,
                failed_sequence=0,
                failure="the server refused the request (HTTP 507)",
                updated_us=int(time.time() * 1e6),
            )
        ]
    )
    container.sync_state.update_sync_status(
        initech, last_error="the server failed (HTTP 503)", last_error_us=int(time.time() * 1e6)
    )
    return tenants


def test_the_overview_agrees_with_each_accounts_own_report(
    container: Container, three_accounts: dict[str, Tenant]
) -> None:
    overview = StatusService(container.journal).overview()

    rows = {r.name: r for r in overview.rows}
    assert sorted(rows) == ["acme", "globex", "initech"]
    assert overview.position == container.journal.recorder.max_notification_id()
    for name in ("acme", "initech"):
        own = container.sync.status(three_accounts[name].account_id)
        assert rows[name].link_status == own["link_status"] == "active"
        assert rows[name].calendar_url == own["calendar_url"]
        assert rows[name].pending == own["pending"]
        assert rows[name].failed == len(own["failed"])
        assert rows[name].last_error == own["last_error"]
        assert abs(rows[name].lag_seconds - own["lag_seconds"]) < 5
    assert rows["acme"].pending == 2 and rows["acme"].lag_seconds > 0
    assert rows["initech"].pending == 0 and rows["initech"].failed == 1
    assert rows["globex"].link_status == "none" and rows["globex"].calendar_url is None
    assert rows["globex"].pending == rows["globex"].failed == 0


def test_the_command_lists_every_account_sorted_as_asked(
    container: Container, three_accounts: dict[str, Tenant], tmp_path: Path
) -> None:
    env = {
        "CALJOURNAL_DATABASE_URL": container.settings.database_url,
        "CALJOURNAL_SECRET_KEY_FILE": str(container.settings.key_file),
    }

    def names(*args: str) -> list[str]:
        result = run(["status", "--json", *args], tmp_path, **env)
        assert result.returncode == 0, result.stderr
        return [a["name"] for a in json.loads(result.stdout)["accounts"]]

    assert names() == ["acme", "globex", "initech"]
    assert names("--sort", "failures")[0] == "initech"
    assert names("--sort", "lag")[0] == "acme"
    shown = run(["status"], tmp_path, **env)
    assert shown.returncode == 0, shown.stderr
    for name in ("acme", "globex", "initech"):
        assert name in shown.stdout
    one = run(["status", "acme", "--json"], tmp_path, **env)
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["pending"] == 2
    wrong = run(["status", "--sort", "size"], tmp_path, **env)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr


def test_operators_see_every_account_and_an_account_only_itself(
    container: Container, three_accounts: dict[str, Tenant], client: TestClient
) -> None:
    secret = container.accounts.issue_token(None, "ops", operator()).secret
    as_operator = {"Authorization": f"Bearer {secret}"}

    everyone = client.get("/status?sort=failures", headers=as_operator)
    own = client.get("/status", headers=three_accounts["acme"].headers)

    assert everyone.status_code == 200
    assert [a["name"] for a in everyone.json()["accounts"]][0] == "initech"
    assert {a["name"] for a in everyone.json()["accounts"]} == {"acme", "globex", "initech"}
    assert own.status_code == 200
    assert [a["name"] for a in own.json()["accounts"]] == ["acme"]
    assert own.json()["accounts"][0]["pending"] == 2
    assert client.get("/status").status_code == 401
    assert client.get("/status?sort=size", headers=as_operator).status_code == 422

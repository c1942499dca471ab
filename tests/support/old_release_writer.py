"""Write a database with an earlier release of caljournal (run by ``old_release.py``).

Usage: ``python old_release_writer.py PACKAGES ARGUMENTS_JSON``. PACKAGES holds
the release's ``caljournal`` package and goes first on ``sys.path``; the
arguments name the database, the key file and a calendar URL of a real server
(user alice). Books, moves, changes and cancels appointments through the API,
issues a second token, links the calendar and lets the release's own worker
push and poll; prints one JSON line with what a later release must find.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, sys.argv[1])

import caljournal  # noqa: E402

assert caljournal.__file__ and caljournal.__file__.startswith(sys.argv[1]), caljournal.__file__

from fastapi.testclient import TestClient  # noqa: E402

from caljournal.adapters.secrets import Credentials  # noqa: E402
from caljournal.api.app import create_app  # noqa: E402
from caljournal.bootstrap import bootstrap  # noqa: E402
from caljournal.domain.cause import Cause, Origin  # noqa: E402
from caljournal.projections.outbound import WorkerConfig  # noqa: E402
from caljournal.settings import load_settings  # noqa: E402

WINDOW = {"start": "2026-01-01T00:00:00+00:00", "end": "2027-01-01T00:00:00+00:00"}


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    """Return ``check()``'s first truthy result, or exit with an error after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    arguments = json.loads(sys.argv[2])
    container = bootstrap(
        load_settings(
            database_url=arguments["database_url"],
            secret_key_file=arguments["key_file"],
            allow_private_addresses=True,
            caldav_timeout=60,
        )
    )
    cause = Cause(Origin.OPERATOR, "operator:tests", "old-release")
    issued = container.accounts.open_account("acme", cause)
    second = container.accounts.issue_token("acme", "second", cause)
    account_id = container.accounts.find_account("acme").id
    headers = {"Authorization": f"Bearer {issued.secret}"}
    container.links.link(
        account_id, arguments["calendar_url"], Credentials("alice", "secret"), cause
    )
    with TestClient(create_app(container)) as client:
        made = []
        for day in range(3, 8):
            body = {
                "title": f"Old release {day}",
                "timezone": "Europe/Berlin",
                "start": f"2026-06-{day:02d}T10:00:00+02:00",
                "end": f"2026-06-{day:02d}T10:45:00+02:00",
            }
            answer = client.post("/appointments", json=body, headers=headers, timeout=60)
            assert answer.status_code == 201, answer.text
            made.append(answer.json()["id"])
        moved = {"start": "2026-06-20T09:00:00+02:00", "end": "2026-06-20T09:30:00+02:00"}
        client.post(f"/appointments/{made[0]}/move", json=moved, headers=headers, timeout=60)
        client.patch(
            f"/appointments/{made[1]}", json={"location": "Salon"}, headers=headers, timeout=60
        )
        client.post(f"/appointments/{made[2]}/cancel", headers=headers, timeout=60)

        worker = container.outbound_worker(
            WorkerConfig(lease_ttl=5.0, lease_renew=0.2, catch_up=1.0, poll=0.02)
        ).start()
        try:
            recorder = container.journal.journal_recorder
            wait_for(
                lambda: (
                    container.sync.status(account_id)["pending"] == 0
                    and len(recorder.copies(str(account_id))) == len(made) - 1
                    and recorder.inbound_state(str(account_id)).get("sync_token")
                ),
                "the release's worker to push and poll",
            )
        finally:
            worker.stop()
        listing = client.get(
            "/appointments",
            params={**WINDOW, "include_cancelled": "true"},
            headers=headers,
            timeout=60,
        )
        assert listing.status_code == 200, listing.text
    report = {
        "account_id": str(account_id),
        "tokens": [issued.secret, second.secret],
        "appointments": listing.json()["items"],
        "link": container.links.get(account_id),
        "module": caljournal.__file__,
    }
    container.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()

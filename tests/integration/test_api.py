"""The HTTP API end to end, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from caljournal.api.app import create_app
from caljournal.bootstrap import Container, bootstrap
from caljournal.settings import load_settings
from tests.conftest import Tenant, open_tenant, operator
from tests.support.openapi import OpenAPIValidatingClient

BOOKING = {
    "title": "Haircut with Anna",
    "start": "2026-03-27T10:00:00+01:00",
    "end": "2026-03-27T10:45:00+01:00",
    "timezone": "Europe/Berlin",
    "location": "Salon Mitte",
    "customer_name": "Jonas Weber",
    "customer_email": "jonas@example.org",
}


def create(client: TestClient, tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    response = client.post("/appointments", json={**BOOKING, **overrides}, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_book_get_move_change_cancel_round_trip(client: TestClient, acme: Tenant) -> None:
    created = create(client, acme)
    assert created["version"] == 1 and created["status"] == "booked"

    got = client.get(f"/appointments/{created['id']}", headers=acme.headers)
    assert got.status_code == 200 and got.headers["etag"] == '"1"'
    assert got.json()["start"] == "2026-03-27T10:00:00+01:00"

    moved = client.post(
        f"/appointments/{created['id']}/move",
        json={"start": "2026-04-03T08:00:00Z", "end": "2026-04-03T08:45:00Z"},
        headers={**acme.headers, "If-Match": '"1"'},
    )
    assert moved.status_code == 200, moved.text
    # Sent as UTC, kept in the appointment's zone: 10:00 Berlin summer time.
    assert moved.json()["start"] == "2026-04-03T10:00:00+02:00"
    assert moved.headers["etag"] == '"2"'

    changed = client.patch(
        f"/appointments/{created['id']}",
        json={"title": "Haircut and colour", "location": None},
        headers=acme.headers,
    )
    assert changed.status_code == 200
    assert changed.json()["title"] == "Haircut and colour" and changed.json()["location"] is None

    cancelled = client.post(
        f"/appointments/{created['id']}/cancel", json={"reason": "ill"}, headers=acme.headers
    )
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["version"] == 4

    refused = client.post(
        f"/appointments/{created['id']}/move",
        json={"start": "2026-04-04T08:00:00Z", "end": "2026-04-04T08:45:00Z"},
        headers=acme.headers,
    )
    assert refused.status_code == 409 and "cancelled" in refused.json()["message"]


def test_stale_if_match_gets_412_and_records_nothing(client: TestClient, acme: Tenant) -> None:
    created = create(client, acme)
    path = f"/appointments/{created['id']}"
    assert client.patch(path, json={"title": "A"}, headers=acme.headers).status_code == 200
    stale = client.patch(path, json={"title": "B"}, headers={**acme.headers, "If-Match": '"1"'})
    assert stale.status_code == 412
    assert client.get(path, headers=acme.headers).json()["title"] == "A"
    garbage = client.patch(path, json={"title": "C"}, headers={**acme.headers, "If-Match": "xyz"})
    assert garbage.status_code == 412


def test_idempotency_key_returns_the_first_result_and_books_nothing_new(
    client: TestClient, acme: Tenant
) -> None:
    headers = {**acme.headers, "Idempotency-Key": "booking-42"}
    first = client.post("/appointments", json=BOOKING, headers=headers)
    client.patch(
        f"/appointments/{first.json()['id']}", json={"title": "later"}, headers=acme.headers
    )
    again = client.post("/appointments", json=BOOKING, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    listed = client.get(
        "/appointments",
        params={"start": "2026-03-01T00:00:00Z", "end": "2026-04-01T00:00:00Z"},
        headers=acme.headers,
    )
    assert listed.json()["count"] == 1

    different = client.post("/appointments", json={**BOOKING, "title": "other"}, headers=headers)
    assert different.status_code == 422
    assert different.json()["field"] == "Idempotency-Key"


def test_same_idempotency_key_in_two_accounts_books_two(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    a = client.post("/appointments", json=BOOKING, headers={**acme.headers, "Idempotency-Key": "k"})
    b = client.post(
        "/appointments", json=BOOKING, headers={**globex.headers, "Idempotency-Key": "k"}
    )
    assert a.json()["id"] != b.json()["id"]


def test_list_returns_only_the_window_and_only_own_account(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    inside = create(
        client, acme, start="2026-05-04T09:00:00+02:00", end="2026-05-04T10:00:00+02:00"
    )
    spanning = create(
        client, acme, start="2026-05-01T09:00:00+02:00", end="2026-05-05T10:00:00+02:00"
    )
    create(client, acme, start="2026-05-08T09:00:00+02:00", end="2026-05-08T10:00:00+02:00")
    create(client, globex, start="2026-05-04T09:00:00+02:00", end="2026-05-04T10:00:00+02:00")
    cancelled = create(
        client, acme, start="2026-05-04T11:00:00+02:00", end="2026-05-04T12:00:00+02:00"
    )
    client.post(f"/appointments/{cancelled['id']}/cancel", headers=acme.headers)

    window = {"start": "2026-05-04T00:00:00+02:00", "end": "2026-05-05T00:00:00+02:00"}
    listed = client.get("/appointments", params=window, headers=acme.headers).json()
    assert [i["id"] for i in listed["items"]] == [spanning["id"], inside["id"]]
    with_cancelled = client.get(
        "/appointments", params={**window, "include_cancelled": "true"}, headers=acme.headers
    ).json()
    assert with_cancelled["count"] == 3


def test_another_accounts_appointment_is_a_404(
    client: TestClient, acme: Tenant, globex: Tenant
) -> None:
    theirs = create(client, globex)
    for method, path, body in [
        ("GET", f"/appointments/{theirs['id']}", None),
        ("GET", f"/appointments/{theirs['id']}/history", None),
        ("PATCH", f"/appointments/{theirs['id']}", {"title": "mine now"}),
        ("POST", f"/appointments/{theirs['id']}/cancel", None),
    ]:
        response = client.request(method, path, json=body, headers=acme.headers)
        assert response.status_code == 404, (method, path)
    window = {"start": "2026-03-01T00:00:00Z", "end": "2026-04-01T00:00:00Z", "account": "globex"}
    assert client.get("/appointments", params=window, headers=acme.headers).status_code == 404


def test_operator_token_sees_every_account(
    client: TestClient, container: Container, acme: Tenant
) -> None:
    issued = container.accounts.issue_token(None, "ops", operator())
    headers = {"Authorization": f"Bearer {issued.secret}"}
    created = client.post(
        "/appointments", json=BOOKING, params={"account": "acme"}, headers=headers
    )
    assert created.status_code == 201
    assert created.json()["account_id"] == str(acme.account_id)
    history = client.get(f"/appointments/{created.json()['id']}/history", headers=headers)
    assert history.json()["entries"][0]["actor"] == "operator-token:ops"
    assert client.post("/appointments", json=BOOKING, headers=headers).status_code == 404


def test_missing_unknown_and_revoked_tokens_get_401(
    client: TestClient, container: Container, acme: Tenant
) -> None:
    assert client.get("/appointments/00000000-0000-0000-0000-000000000000").status_code == 401
    bad = {"Authorization": "Bearer cj_nope"}
    assert client.post("/appointments", json=BOOKING, headers=bad).status_code == 401
    secret = acme.token
    for header in (f"Basic {secret}", "Bearer ", "Bearer", secret):
        answer = client.post("/appointments", json=BOOKING, headers={"Authorization": header})
        assert answer.status_code == 401, header
        assert "Authorization: Bearer" in answer.json()["message"]
    lower = client.get(
        "/appointments/00000000-0000-0000-0000-000000000000",
        headers={"Authorization": f"bearer {secret}"},
    )
    assert lower.status_code == 404  # the scheme is case-insensitive; the token was accepted
    (token,) = container.accounts.list_tokens("acme")
    from uuid import UUID

    # The token is valid and now cached; a revocation in this process ends it at once.
    assert client.post("/appointments", json=BOOKING, headers=acme.headers).status_code == 201
    container.accounts.revoke_token(UUID(token["id"]), operator())
    response = client.post("/appointments", json=BOOKING, headers=acme.headers)
    assert response.status_code == 401 and "revoked" in response.json()["message"]


@pytest.mark.parametrize("ttl", [0.0, 0.5])
def test_a_revocation_by_another_process_takes_effect_within_the_token_cache_time(
    database_url: str, tmp_path: Path, ttl: float
) -> None:
    def build() -> Container:
        return bootstrap(
            load_settings(
                database_url=database_url,
                secret_key_file=tmp_path / "k",
                token_cache_seconds=ttl,
            )
        )

    api, cli = build(), build()  # two processes' containers on one journal
    try:
        tenant = open_tenant(cli, "acme")
        path = "/appointments/00000000-0000-0000-0000-000000000000"
        with OpenAPIValidatingClient(create_app(api)) as client:
            assert client.get(path, headers=tenant.headers).status_code == 404
            (token,) = cli.accounts.list_tokens("acme")
            cli.accounts.revoke_token(uuid.UUID(token["id"]), operator())
            revoked_at = time.monotonic()
            while client.get(path, headers=tenant.headers).status_code != 401:
                assert time.monotonic() - revoked_at < ttl + 0.5, "still accepted"
                time.sleep(0.02)
            took = time.monotonic() - revoked_at
        assert took <= ttl + 0.5
        if ttl == 0:
            assert took < 0.2  # no cache: refused on the first request after the revocation
    finally:
        api.close()
        cli.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BOOKING, "end": "2026-03-27T09:00:00+01:00"}, "end"),
        ({**BOOKING, "timezone": "Europe/Atlantis"}, "timezone"),
        ({**BOOKING, "start": "2026-03-27T10:00:00"}, "start"),
        ({**BOOKING, "colour": "red"}, "colour"),
        ({**BOOKING, "description": "x" * 20_000}, "description"),
        ({**BOOKING, "title": ""}, "title"),
        ({**BOOKING, "customer_email": "nobody"}, "customer_email"),
        ({k: v for k, v in BOOKING.items() if k != "title"}, "title"),
    ],
)
def test_bad_input_gets_422_naming_the_field(
    client: TestClient, acme: Tenant, body: dict, field: str
) -> None:
    response = client.post("/appointments", json=body, headers=acme.headers)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    message = response.json()["message"]
    # One sentence that names the field or the value it refuses.
    assert message and "\n" not in message
    assert field in message or str(body.get(field)) in message, message


def test_oversized_body_is_refused_before_parsing(client: TestClient, acme: Tenant) -> None:
    response = client.post(
        "/appointments",
        content=b'{"title": "' + b"x" * 2_000_000 + b'"}',
        headers={**acme.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 413


def test_history_shows_position_origin_actor_and_old_new(client: TestClient, acme: Tenant) -> None:
    created = create(client, acme)
    path = f"/appointments/{created['id']}"
    client.post(
        f"{path}/move",
        json={"start": "2026-03-28T10:00:00+01:00", "end": "2026-03-28T10:45:00+01:00"},
        headers={**acme.headers, "X-Request-ID": "req-move-1"},
    )
    changed = client.patch(path, json={"title": "Colour"}, headers=acme.headers)
    assert changed.headers["x-request-id"]  # a generated correlation id is echoed
    entries = client.get(f"{path}/history", headers=acme.headers).json()["entries"]
    assert [e["type"] for e in entries] == ["Booked", "Moved", "DetailsChanged"]
    assert all(e["origin"] == "api" and e["actor"] == "token:acme/default" for e in entries)
    positions = [e["position"] for e in entries]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert entries[1]["correlation_id"] == "req-move-1"
    assert entries[2]["correlation_id"] == changed.headers["x-request-id"]
    assert entries[1]["changes"]["start"] == {
        "old": "2026-03-27T10:00:00+01:00",
        "new": "2026-03-28T10:00:00+01:00",
    }
    assert entries[2]["changes"] == {
        "title": {"old": "Haircut with Anna", "new": "Colour"},
        "sequence": {"old": 1, "new": 2},
    }


def test_as_of_returns_the_state_at_that_moment(client: TestClient, acme: Tenant) -> None:
    created = create(client, acme)
    path = f"/appointments/{created['id']}"
    client.patch(path, json={"title": "Second"}, headers=acme.headers)
    entries = client.get(f"{path}/history", headers=acme.headers).json()["entries"]
    client.patch(path, json={"title": "Third"}, headers=acme.headers)

    at_second = client.get(path, params={"as_of": entries[1]["timestamp"]}, headers=acme.headers)
    assert at_second.json()["title"] == "Second" and at_second.json()["version"] == 2
    at_first = client.get(path, params={"as_of": entries[0]["timestamp"]}, headers=acme.headers)
    assert at_first.json()["title"] == "Haircut with Anna"
    before = client.get(path, params={"as_of": "2000-01-01T00:00:00Z"}, headers=acme.headers)
    assert before.status_code == 404
    naive = client.get(path, params={"as_of": "2026-01-01T00:00:00"}, headers=acme.headers)
    assert naive.status_code == 422 and naive.json()["field"] == "as_of"
    assert datetime.fromisoformat(entries[0]["timestamp"]) <= datetime.now(UTC)


def test_healthz_and_openapi_with_examples(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    book_schema = spec["components"]["schemas"]["BookIn"]
    assert book_schema["examples"][0]["timezone"] == "Europe/Berlin"
    assert "/appointments/{appointment_id}/history" in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    move = spec["paths"]["/appointments/{appointment_id}/move"]["post"]
    assert move["security"] == [{"bearer": []}]
    headers = {p["name"] for p in move["parameters"] if p["in"] == "header"}
    assert headers == {"X-Request-ID", "if-match"}
    assert "security" not in spec["paths"]["/healthz"]["get"]


@pytest.mark.parametrize("mode", ["inline", "threads"])
def test_api_calls_run_where_the_setting_says_and_close_stops_the_threads(
    database_url: str, tmp_path: Path, mode: str
) -> None:
    built = bootstrap(
        load_settings(database_url=database_url, secret_key_file=tmp_path / "k", api_commands=mode)
    )

    def names() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name.startswith("caljournal-api")}

    try:
        tenant = open_tenant(built, "acme")
        with OpenAPIValidatingClient(create_app(built)) as client:
            created = client.post("/appointments", json=BOOKING, headers=tenant.headers)
            assert created.status_code == 201, created.text
            assert (len(names()) > 0) is (mode == "threads")
    finally:
        built.close()
    assert names() == set()

"""Concurrent writers over a real socket never lose an update."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from caljournal.bootstrap import Container, bootstrap
from caljournal.settings import load_settings
from tests.conftest import Tenant
from tests.integration.test_api import BOOKING
from tests.support.apiserver import serve_api
from tests.support.patience import HTTP_TIMEOUT

MOVES = 50


@pytest.fixture(params=["auto", "other"])
def container(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[Container]:
    """Each journal with its default and its other way of running API calls.

    On SQLite the default runs them on the event loop and "other" in worker
    threads (where writers really race); on PostgreSQL the other way round.
    """
    mode = request.param
    if mode == "other":
        mode = "threads" if database_url.startswith("sqlite") else "inline"
    built = bootstrap(
        load_settings(
            database_url=database_url,
            secret_key_file=tmp_path / "caljournal.key",
            api_commands=mode,
        )
    )
    yield built
    built.close()


def _targets() -> list[tuple[str, str]]:
    base = datetime(2026, 6, 1, 9, tzinfo=ZoneInfo("Europe/Berlin"))
    return [
        (
            (base + timedelta(hours=i)).isoformat(),
            (base + timedelta(hours=i, minutes=30)).isoformat(),
        )
        for i in range(MOVES)
    ]


def test_fifty_concurrent_moves_all_land(container: Container, acme: Tenant) -> None:
    with (
        serve_api(container) as url,
        httpx.Client(base_url=url, headers=acme.headers, timeout=HTTP_TIMEOUT) as http,
    ):
        created = http.post("/appointments", json=BOOKING).json()

        def move(target: tuple[str, str]) -> httpx.Response:
            with httpx.Client(base_url=url, headers=acme.headers, timeout=60) as own:
                return own.post(
                    f"/appointments/{created['id']}/move",
                    json={"start": target[0], "end": target[1]},
                )

        with ThreadPoolExecutor(max_workers=MOVES) as pool:
            responses = list(pool.map(move, _targets()))

        succeeded = [r for r in responses if r.status_code == 200]
        assert len(succeeded) == MOVES, {r.status_code for r in responses}
        final = http.get(f"/appointments/{created['id']}").json()
        assert final["version"] == 1 + len(succeeded)
        history = http.get(f"/appointments/{created['id']}/history").json()["entries"]
        moved_to = sorted(e["changes"]["start"]["new"] for e in history if e["type"] == "Moved")
        assert moved_to == sorted(t[0] for t in _targets())
        # The versions each writer saw are all distinct: no two writes merged.
        assert sorted(r.json()["version"] for r in succeeded) == list(range(2, MOVES + 2))


def test_fifty_concurrent_moves_with_the_same_if_match_let_exactly_one_win(
    container: Container, acme: Tenant
) -> None:
    with (
        serve_api(container) as url,
        httpx.Client(base_url=url, headers=acme.headers, timeout=HTTP_TIMEOUT) as http,
    ):
        created = http.post("/appointments", json=BOOKING).json()

        def move(target: tuple[str, str]) -> int:
            with httpx.Client(base_url=url, headers=acme.headers, timeout=60) as own:
                return own.post(
                    f"/appointments/{created['id']}/move",
                    json={"start": target[0], "end": target[1]},
                    headers={"If-Match": '"1"'},
                ).status_code

        with ThreadPoolExecutor(max_workers=MOVES) as pool:
            codes = list(pool.map(move, _targets()))

        assert codes.count(200) == 1 and codes.count(412) == MOVES - 1
        assert http.get(f"/appointments/{created['id']}").json()["version"] == 2

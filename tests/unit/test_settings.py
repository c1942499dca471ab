"""Settings: where the API runs journal calls, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from caljournal.settings import ConfigurationError, load_settings


@pytest.mark.parametrize(
    ("url", "mode", "inline"),
    [
        ("sqlite:///journal.sqlite", "auto", True),
        ("postgresql://u@127.0.0.1/db", "auto", False),
        ("sqlite:///journal.sqlite", "threads", False),
        ("postgresql://u@127.0.0.1/db", "inline", True),
    ],
)
def test_api_calls_run_inline_on_sqlite_and_in_threads_on_postgres_unless_set(
    url: str, mode: str, inline: bool
) -> None:
    assert load_settings(database_url=url, api_commands=mode).inline_api_calls is inline


def test_an_unknown_api_commands_mode_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALJOURNAL_API_COMMANDS", "fibers")
    with pytest.raises(ConfigurationError, match="CALJOURNAL_API_COMMANDS") as raised:
        load_settings(database_url="sqlite:///journal.sqlite")
    assert "'auto', 'inline' or 'threads'" in str(raised.value)


def test_the_environment_selects_the_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CALJOURNAL_API_COMMANDS", "threads")
    assert (
        load_settings(database_url=f"sqlite:///{tmp_path / 'j.sqlite'}").api_commands == "threads"
    )


def test_api_threads_default_to_twice_the_cpus_within_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert load_settings(database_url="sqlite:///j.sqlite").api_thread_count == 4
    small_pool = load_settings(database_url="sqlite:///j.sqlite", database_pool_size=3)
    assert small_pool.api_thread_count == 3
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert load_settings(database_url="sqlite:///j.sqlite").api_thread_count == 2
    chosen = load_settings(database_url="sqlite:///j.sqlite", api_threads=7)
    assert chosen.api_thread_count == 7


def test_a_bad_thread_count_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALJOURNAL_API_THREADS", "0")
    with pytest.raises(ConfigurationError, match="CALJOURNAL_API_THREADS"):
        load_settings(database_url="sqlite:///j.sqlite")


def test_calendar_server_limits_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALJOURNAL_CALDAV_MAX_LISTING_BYTES", "1000000")
    monkeypatch.setenv("CALJOURNAL_CALDAV_REQUEST_DEADLINE", "7.5")
    limits = load_settings(database_url="sqlite:///journal.sqlite").transfer_limits
    assert limits.max_bytes("listing") == 1_000_000
    assert limits.seconds("object") == 7.5
    assert limits.seconds("listing") == 300.0
    assert limits.max_bytes("discovery") == 4 * 1024 * 1024


def test_a_size_cap_too_small_to_work_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALJOURNAL_CALDAV_MAX_OBJECT_BYTES", "10")
    with pytest.raises(ConfigurationError, match="CALJOURNAL_CALDAV_MAX_OBJECT_BYTES"):
        load_settings(database_url="sqlite:///journal.sqlite")

"""Log formats and context, the lag metrics' bounded labels, and the overview's orders."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from caljournal.adapters.caldav_client import RateLimitedError, ServerFailedError
from caljournal.adapters.logs import LazyId, LogFormat, configure_logging, sync_context
from caljournal.adapters.metrics import StateCollector, status_label
from caljournal.adapters.retry import RetryPolicy, retry_cause
from caljournal.settings import ConfigurationError, load_settings
from caljournal.status import AccountStatus, Overview, sort_rows


def row(name: str, lag: float = 0.0, failed: int = 0, error: str | None = None) -> AccountStatus:
    return AccountStatus(
        name=name,
        account_id=f"id-{name}",
        link_status="active",
        calendar_url=f"https://dav.example/{name}/",
        lag_seconds=lag,
        pending=1 if lag else 0,
        failed=failed,
        quarantined=0,
        last_poll=None,
        next_poll=None,
        last_success=None,
        last_error=error,
        last_error_at=None,
        worker=None,
    )


def lines_logged(fmt: LogFormat, write: Callable[[], None]) -> list[str]:
    """Return the lines ``write`` logs through ``configure_logging`` (root logger restored)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging(logging.INFO, fmt, stream)
    try:
        write()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    return stream.getvalue().splitlines()


def test_json_lines_carry_the_context_ids_and_extras() -> None:
    log = logging.getLogger("caljournal.test")

    def write() -> None:
        with sync_context(account="a-1", correlation_id="req-7"):
            with sync_context(appointment="p-3"):
                log.info("PUT %s", "/cal/p-3.ics", extra={"status": 201})
            log.info("after")
        log.info("outside")

    inner, after, outside = (json.loads(line) for line in lines_logged("json", write))

    assert inner["message"] == "PUT /cal/p-3.ics" and inner["status"] == 201
    assert (inner["account"], inner["appointment"], inner["correlation_id"]) == (
        "a-1",
        "p-3",
        "req-7",
    )
    assert (after["appointment"], after["correlation_id"]) == (None, "req-7")
    assert outside["account"] is None and outside["level"] == "INFO"


def test_auto_writes_json_off_a_terminal_and_human_lines_name_the_ids() -> None:
    log = logging.getLogger("caljournal.test")

    def write() -> None:
        with sync_context(account="a-1"):
            log.warning("slow")

    (auto,) = lines_logged("auto", write)
    (human,) = lines_logged("human", write)

    assert json.loads(auto)["account"] == "a-1"
    assert human.endswith("WARNING caljournal.test slow [account=a-1]")


def test_a_thread_starts_without_the_context_of_its_creator() -> None:
    seen: list[str | None] = []
    log = logging.getLogger("caljournal.test")

    def write() -> None:
        with sync_context(account="a-1"):
            thread = threading.Thread(target=lambda: log.info("in thread"))
            thread.start()
            thread.join()

    for line in lines_logged("json", write):
        seen.append(json.loads(line)["account"])
    assert seen == [None]


def test_only_the_accounts_furthest_behind_are_named() -> None:
    rows = [row(f"acct{i:02d}", lag=float(i)) for i in range(30)]
    overview = Overview(position=99, rows=rows, resyncs_running=0, resync_done=0, resync_total=0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(lambda: overview, top=5))

    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }

    named = {
        s.labels["account"]: s.value for s in families["caljournal_account_lag_seconds"].samples
    }
    assert named == {f"acct{i:02d}": float(i) for i in range(25, 30)}
    histogram = {
        s.name: s.value
        for s in families["caljournal_lag_seconds"].samples
        if not s.labels.get("le")
    }
    assert histogram["caljournal_lag_seconds_count"] == 30
    assert histogram["caljournal_lag_seconds_sum"] == sum(range(30))


def test_rows_sort_by_lag_failures_or_name() -> None:
    rows = [row("b", lag=5), row("a", failed=2), row("c", error="HTTP 503"), row("d", lag=50)]

    assert [r.name for r in sort_rows(rows, "lag")][:2] == ["d", "b"]
    assert [r.name for r in sort_rows(rows, "failures")][:2] == ["a", "c"]
    assert [r.name for r in sort_rows(rows, "name")] == ["a", "b", "c", "d"]


def test_labels_come_from_fixed_sets() -> None:
    assert [status_label(s) for s in (201, 404, 503, None, 999)] == [
        "2xx",
        "4xx",
        "5xx",
        "error",
        "error",
    ]
    assert retry_cause(RateLimitedError("slow down", status=429)) == "rate_limited"
    assert retry_cause(ServerFailedError("HTTP 502", status=502)) == "server_error"
    assert retry_cause(ValueError("?")) == "other"


def test_each_retry_is_counted_under_its_cause() -> None:
    attempts = iter(
        [ServerFailedError("HTTP 502", status=502), RateLimitedError("429", status=429)]
    )

    def flaky() -> str:
        failure = next(attempts, None)
        if failure is not None:
            raise failure
        return "done"

    def count(cause: str) -> float:
        value = REGISTRY.get_sample_value("caljournal_caldav_retries_total", {"cause": cause})
        return value or 0.0

    before = {cause: count(cause) for cause in ("server_error", "rate_limited")}

    assert RetryPolicy(attempts=5).call(flaky, sleep=lambda _: None) == "done"
    assert count("server_error") == before["server_error"] + 1
    assert count("rate_limited") == before["rate_limited"] + 1


def test_a_lazy_correlation_id_is_looked_up_once_and_only_for_a_written_line() -> None:
    looked_up: list[int] = []
    log = logging.getLogger("caljournal.test")

    def load() -> str:
        looked_up.append(1)
        return "req-9"

    def write() -> None:
        with sync_context(account="a-1", correlation_id=LazyId(load)):
            log.debug("not written at INFO")
            assert looked_up == []
            log.info("first")
            log.info("second")

    lines = [json.loads(line) for line in lines_logged("json", write)]

    assert [line["correlation_id"] for line in lines] == ["req-9", "req-9"]
    assert looked_up == [1]


def test_a_missing_metrics_directory_is_named_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))

    with pytest.raises(ConfigurationError, match="PROMETHEUS_MULTIPROC_DIR: .*missing.* is not a"):
        load_settings(database_url=f"sqlite:///{tmp_path / 'j.sqlite'}")

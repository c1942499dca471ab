"""Prometheus metrics: what the sync code counts, and what the API's ``/metrics`` serves.

Two kinds:

* **counted** in the code paths that do the work (the executor's writes, the
  poller, the runtime's failures, the retry policy, the HTTP transport, backfill
  and replay writes): counters and histograms below, kept per process. When
  ``PROMETHEUS_MULTIPROC_DIR`` is set (before the process starts: the library
  chooses its storage when first imported) each process writes them to files
  there, and ``/metrics`` adds up the files of every process: ``serve`` and any
  ``worker`` processes must then be given the same directory. Without it,
  ``/metrics`` shows the serving process only (which includes the worker that
  ``serve`` runs unless ``--no-worker``).
* **read** from the database when ``/metrics`` is scraped
  (:class:`StateCollector`): journal position, accounts by link state,
  pending/failed/quarantined totals, lag, backfill progress. These are the same
  for every process, so they are never kept in the files.

Label cardinality stays bounded: labels take values from small fixed sets
(action, outcome, cause, HTTP method and status class, reconciler), except
``caljournal_account_lag_seconds``, labelled by account name for only the
``top`` accounts with the largest lag (``CALJOURNAL_METRICS_TOP_ACCOUNTS``,
default 20); the lag of all accounts is in the unlabelled histogram
``caljournal_lag_seconds``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from caljournal.status import Overview

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LAG_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 86_400.0)
HTTP_METHODS = frozenset(
    {"GET", "PUT", "DELETE", "PROPFIND", "REPORT", "OPTIONS", "HEAD", "MKCALENDAR", "POST"}
)

PUSHES = Counter(
    "caljournal_pushes",
    "Calendar writes by push, backfill and replay, by action and outcome "
    "(ok, failed: for good, transient: retried later)",
    ["action", "outcome"],
)
POLLS = Counter("caljournal_polls", "Polls of linked calendars, by outcome", ["outcome"])
# Every metric has labels: an unlabelled one would write its file in the shared
# directory when this module is imported, before the configuration is checked.
POLL_SECONDS = Histogram(
    "caljournal_poll_duration_seconds",
    "Time one poll of a calendar took (all its requests and the journal writes), by outcome",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
FAILURES = Counter(
    "caljournal_sync_failures",
    "Failed runs of an account's sync work, by reconciler (push, poll, resync) and kind "
    "(transient: server unavailable; link: unusable link; internal: a bug or database outage)",
    ["reconciler", "kind"],
)
RETRIES = Counter(
    "caljournal_caldav_retries",
    "Calendar requests tried again after a transient failure, by cause",
    ["cause"],
)
REQUESTS = Counter(
    "caljournal_caldav_requests",
    "HTTP requests to calendar servers, by method and status class (error: no answer)",
    ["method", "status"],
)
REQUEST_SECONDS = Histogram(
    "caljournal_caldav_request_duration_seconds",
    "Time one HTTP request to a calendar server took, by method",
    ["method"],
)
RESYNC_WRITES = Counter(
    "caljournal_resync_writes",
    "Objects written by backfills and replays, by kind of run and outcome",
    ["kind", "outcome"],
)

CPU_HELPERS = Counter(
    "caljournal_cpu_helpers",
    "Helper processes that parse large polls, by event (started; lost: ended before it "
    "answered, its work done in the poll; failed: did not start)",
    ["event"],
)


def method_label(method: str) -> str:
    """Return ``method`` as a label value (unknown methods count as ``other``)."""
    upper = method.upper()
    return upper if upper in HTTP_METHODS else "other"


def status_label(status: int | None) -> str:
    """Return an HTTP status as its class (``2xx`` …), ``error`` when there was no answer."""
    if status is None or not 100 <= status < 600:
        return "error"
    return f"{status // 100}xx"


def multiprocess_dir() -> str | None:
    """Return the shared metrics directory, or None when each process keeps its own."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def multiprocess_dir_problem() -> str | None:
    """Return why the shared metrics directory cannot be used, or None when it can (or is unset)."""
    folder = multiprocess_dir()
    if folder is None:
        return None
    if not os.path.isdir(folder):
        return f"{folder!r} is not a directory; create it (empty) for serve and worker to share"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder!r} is not writable by this user"
    return None


class StateCollector(Collector):
    """Metrics read from the database at scrape time (see the module's docstring)."""

    def __init__(self, overview: Callable[[], Overview], top: int = 20) -> None:
        self.overview = overview
        self.top = top

    def collect(self) -> Iterable[Metric]:
        """Return the metrics of one overview of all accounts."""
        seen = self.overview()
        yield _gauge(
            "caljournal_journal_position",
            "Notification id of the journal's latest event",
            seen.position,
        )
        by_state = GaugeMetricFamily(
            "caljournal_accounts", "Accounts by the state of their calendar link", labels=["link"]
        )
        counts: dict[str, int] = {}
        for row in seen.rows:
            counts[row.link_status] = counts.get(row.link_status, 0) + 1
        for state, count in sorted(counts.items()):
            by_state.add_metric([state], count)
        yield by_state
        yield _gauge(
            "caljournal_pending_pushes",
            "Appointment changes waiting to be pushed, all accounts",
            sum(r.pending for r in seen.rows),
        )
        yield _gauge(
            "caljournal_failed_pushes",
            "Appointments whose push failed for good, all accounts",
            sum(r.failed for r in seen.rows),
        )
        yield _gauge(
            "caljournal_quarantined_objects",
            "Calendar objects the poller would not import, all accounts",
            sum(r.quarantined for r in seen.rows),
        )
        linked = [r for r in seen.rows if r.calendar_url]
        yield _lag_histogram([r.lag_seconds for r in linked])
        largest = GaugeMetricFamily(
            "caljournal_account_lag_seconds",
            f"Age of the oldest pending change, for the {self.top} accounts with the largest lag",
            labels=["account"],
        )
        behind = sorted((r for r in linked if r.lag_seconds > 0), key=lambda r: -r.lag_seconds)
        for row in behind[: self.top]:
            largest.add_metric([row.name], row.lag_seconds)
        yield largest
        yield _gauge(
            "caljournal_resyncs_running", "Backfills and replays running now", seen.resyncs_running
        )
        yield _gauge(
            "caljournal_resync_objects_done",
            "Objects written so far by the running backfills and replays",
            seen.resync_done,
        )
        yield _gauge(
            "caljournal_resync_objects_planned",
            "Objects the running backfills and replays plan to write",
            seen.resync_total,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _lag_histogram(lags: Sequence[float]) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = [
        (str(bound), float(sum(1 for lag in lags if lag <= bound))) for bound in LAG_BUCKETS
    ]
    buckets.append(("+Inf", float(len(lags))))
    family = HistogramMetricFamily(
        "caljournal_lag_seconds",
        "Age of the oldest pending change of every linked account (0: up to date)",
    )
    family.add_metric([], buckets, sum_value=float(sum(lags)))
    return family


def exposition(state: Collector | None = None) -> bytes:
    """Return the metrics in Prometheus' text format: counted ones, then ``state``'s.

    Counted metrics are added up over every process writing to
    ``PROMETHEUS_MULTIPROC_DIR`` when it is set, else taken from this process.
    """
    if multiprocess_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    if state is not None:
        read = CollectorRegistry(auto_describe=False)
        read.register(state)
        body += generate_latest(read)
    return body


__all__ = [
    "CONTENT_TYPE",
    "FAILURES",
    "POLLS",
    "POLL_SECONDS",
    "PUSHES",
    "REQUESTS",
    "REQUEST_SECONDS",
    "RESYNC_WRITES",
    "RETRIES",
    "StateCollector",
    "exposition",
    "method_label",
    "multiprocess_dir",
    "multiprocess_dir_problem",
    "status_label",
]

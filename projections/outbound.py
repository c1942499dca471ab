"""Outbound sync: the worker, its account runtimes and their reconcilers.

Split by concern: ``projections.worker`` (reader and lease keeper),
``projections.runtime`` (one thread per leased account: lease, wake-ups,
backoff, error reporting) and ``projections.reconcilers`` (push, poll, and
backfill/replay requests). This module keeps the names other code imports.
"""

from __future__ import annotations

from caljournal.projections.reconcilers import (
    PollReconciler,
    PushReconciler,
    ResyncJob,
    reconcilers_for,
)
from caljournal.projections.runtime import (
    ASKED,
    AccountRuntime,
    Reconciler,
    RunRecord,
    Wakeup,
    WorkerConfig,
)
from caljournal.projections.worker import APPOINTMENT_TOPIC, LINK_TOPIC, OutboundWorker

__all__ = [
    "APPOINTMENT_TOPIC",
    "ASKED",
    "LINK_TOPIC",
    "AccountRuntime",
    "OutboundWorker",
    "PollReconciler",
    "PushReconciler",
    "Reconciler",
    "ResyncJob",
    "RunRecord",
    "Wakeup",
    "WorkerConfig",
    "reconcilers_for",
]

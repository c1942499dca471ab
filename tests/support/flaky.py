"""A fault proxy that fails a share of all requests at random (seeded, so repeatable).

Each failed request gets one of: 503 with ``Retry-After``, 429 with
``Retry-After``, a bare 503, a connection reset before the request reaches the
server, or a reset after it did (the write happened, its answer is lost).
Rules queued with the usual ``fail_next``/``reset_next`` come first.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

from tests.support.faultproxy import FaultProxy, _body, _retry_after, _Rule

__all__ = ["FlakyProxy"]


class FlakyProxy(FaultProxy):
    """Fail about ``share`` of the requests with a transient fault."""

    def __init__(
        self, upstream_url: str, share: float, *, seed: int = 11, retry_after: float = 1
    ) -> None:
        self.share = share
        self.retry_after = retry_after
        self.injected: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._dice = threading.Lock()
        super().__init__(upstream_url)

    def _take_rule(self, method: str, path: str) -> _Rule | None:
        queued = super()._take_rule(method, path)
        if queued is not None:
            return queued
        with self._dice:
            if self._random.random() >= self.share:
                return None
            kind = self._random.choice(["503+retry-after", "429", "503", "reset", "reset-after"])
        self.injected[kind] += 1
        if kind.startswith("reset"):
            return _Rule(
                "reset",
                remaining=1,
                deadline=None,
                methods=None,
                path_contains=None,
                after_forward=kind == "reset-after",
            )
        status = 429 if kind == "429" else 503
        asked = self.retry_after if kind != "503" else None
        return _Rule(
            "fail",
            remaining=1,
            deadline=None,
            methods=None,
            path_contains=None,
            status=status,
            retry_after=_retry_after(asked),
            body=_body(None, status),
        )
